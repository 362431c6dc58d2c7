//! From the key cache to a bundle: which entries go, and each SCKM secret unsealed in
//! memory only, to travel inside the encrypted bundle.

use base64::Engine;
use der::Decode;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::TransferError;
use super::bundle::{Bundle, BundleEntry, FORMAT};
use crate::keys::secrets::Sealer;
use crate::keys::{KeyEntry, KeyKind, KeyStore, Source};

/// Which entries an admin exports (`keys export --to PEER [--sckm] [--cache] [--admin]
/// [ADDRESS...]`). No kind named means every kind; no address, every address.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    /// SCKM keys, with their secrets.
    pub sckm: bool,
    /// Keys the cache found in mail or by lookup.
    pub cache: bool,
    /// Keys an admin imported.
    pub admin: bool,
    /// Normalised addresses.
    pub addresses: Vec<String>,
}

impl Selection {
    fn picks(&self, entry: &KeyEntry) -> bool {
        let every_kind = !(self.sckm || self.cache || self.admin);
        let kind = match entry.source {
            Source::Sckm => self.sckm,
            Source::Mailflow | Source::Lookup => self.cache,
            Source::Admin => self.admin,
        };
        (every_kind || kind)
            && (self.addresses.is_empty() || self.addresses.contains(&entry.address))
    }
}

/// The entries of `keys` that `selection` picks and whose cache lifetime has not passed,
/// as a bundle from `from` to `to` (transport certificate fingerprints).
pub fn collect(
    keys: &dyn KeyStore,
    sealer: &Sealer,
    selection: &Selection,
    (from, to): (&str, &str),
    sequence: u64,
    now: OffsetDateTime,
) -> Result<Bundle, TransferError> {
    let store_error = |e: crate::keys::KeyStoreError| TransferError::Internal(e.to_string());
    let mut entries = Vec::new();
    for entry in keys.list().map_err(store_error)? {
        if !selection.picks(&entry) || entry.is_expired(now) {
            continue;
        }
        let Some(material) = keys
            .material(&entry.address, &entry.fingerprint)
            .map_err(store_error)?
        else {
            continue;
        };
        let secret = match entry.source {
            Source::Sckm => Some(secret_file(keys, sealer, &entry, &material)?),
            _ => None,
        };
        entries.push(BundleEntry {
            entry,
            material,
            secret,
        });
    }
    Ok(Bundle {
        format: FORMAT.into(),
        from: from.into(),
        to: to.into(),
        sequence,
        created: now,
        entries,
    })
}

/// An SCKM entry's secret as `keys import-sckm` takes it, base64: the binary OpenPGP key
/// as held (its only secrets the encryption subkeys, retired ones included), or the
/// certificate and its PKCS#8 key as PEM.
fn secret_file(
    keys: &dyn KeyStore,
    sealer: &Sealer,
    entry: &KeyEntry,
    material: &[u8],
) -> Result<String, TransferError> {
    let sealed = keys
        .sealed_secret(&entry.fingerprint)
        .map_err(|e| TransferError::Internal(e.to_string()))?
        .ok_or_else(|| {
            TransferError::Internal(format!(
                "SCKM key {} is stored without its secret",
                entry.fingerprint
            ))
        })?;
    let secret = sealer
        .open_sealed(&entry.fingerprint, &sealed)
        .map_err(|e| TransferError::Internal(format!("SCKM key {}: {e}", entry.fingerprint)))?;
    let file = match entry.kind {
        KeyKind::Pgp => secret,
        KeyKind::Smime => {
            use der::pem::{LineEnding, encode_string};
            x509_cert::Certificate::from_der(material).map_err(|e| {
                TransferError::Internal(format!("SCKM certificate {}: {e}", entry.fingerprint))
            })?;
            let pem = |label, der: &[u8]| {
                encode_string(label, LineEnding::LF, der)
                    .expect("PEM encoding of bytes in memory cannot fail")
            };
            let mut file = Zeroizing::new(pem("CERTIFICATE", material).into_bytes());
            file.extend_from_slice(Zeroizing::new(pem("PRIVATE KEY", &secret)).as_bytes());
            file
        }
    };
    Ok(base64::engine::general_purpose::STANDARD.encode(file.as_slice()))
}
