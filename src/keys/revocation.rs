//! Revocations an admin imports with `sealgate keys import`, apart from keys: a bare
//! OpenPGP revocation certificate (the `openpgp-revocs.d/*.rev` kind GnuPG makes, once
//! its `:` guard is removed) and an X.509 CRL (PEM or DER). Each marks the cached keys it
//! names as revoked: they are never encrypted to again, and `keys list` shows it.
//!
//! An OpenPGP revocation counts only when it verifies against the cached key it names
//! (sequoia checks the signature when it computes the key's revocation status). A CRL
//! is taken on the admin's word: the admin chose to import it, and the issuer's
//! certificate may not be in the cache to check it with.

use std::time::SystemTime;

use der::{Decode, Encode};
use openpgp::Packet;
use openpgp::packet::Signature;
use openpgp::parse::{PacketParserResult, Parse};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::types::{RevocationStatus, SignatureType};
use sequoia_openpgp as openpgp;
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;

use super::entry::{KeyEntry, KeyKind};
use super::material::{MAX_KEY_BYTES, Refusal};
use super::store::{KeyStore, KeyStoreError};

/// The most signatures one revocation file may hold.
const MAX_SIGNATURES: usize = 16;

/// What a file holds, when it is a revocation and not a key.
pub enum Revocations {
    /// Key revocation signatures, with nothing else.
    OpenPgp(Vec<Signature>),
    /// A certificate revocation list.
    Crl(Box<CertificateList>),
}

impl Revocations {
    /// The revocations in `bytes`, or `None` when it holds something else (keys).
    pub fn read(bytes: &[u8]) -> Option<Revocations> {
        if bytes.len() > MAX_KEY_BYTES {
            return None;
        }
        if let Some(crl) = crl(bytes) {
            return Some(Revocations::Crl(Box::new(crl)));
        }
        key_revocations(bytes).map(Revocations::OpenPgp)
    }

    /// Marks the cached keys these revocations name, and returns their entries.
    pub fn apply(&self, store: &dyn KeyStore) -> Result<Vec<KeyEntry>, ApplyError> {
        match self {
            Revocations::OpenPgp(signatures) => apply_openpgp(store, signatures),
            Revocations::Crl(crl) => apply_crl(store, crl),
        }
    }
}

/// Why revocations could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The admin's file names no cached key, or does not verify against it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The key cache failed. Ours; a retry may help.
    #[error(transparent)]
    Store(#[from] KeyStoreError),
}

/// A PEM or DER certificate revocation list.
fn crl(bytes: &[u8]) -> Option<CertificateList> {
    let text = bytes.trim_ascii_start();
    if text.starts_with(b"-----BEGIN X509 CRL-----") {
        let (label, der) = der::pem::decode_vec(text).ok()?;
        return (label == "X509 CRL")
            .then(|| CertificateList::from_der(&der).ok())
            .flatten();
    }
    (bytes.first() == Some(&0x30))
        .then(|| CertificateList::from_der(bytes).ok())
        .flatten()
}

/// The key revocation signatures of a file that holds those and nothing else.
fn key_revocations(bytes: &[u8]) -> Option<Vec<Signature>> {
    let mut result = openpgp::parse::PacketParser::from_bytes(bytes).ok()?;
    let mut signatures = Vec::new();
    while let PacketParserResult::Some(pp) = result {
        let (packet, next) = pp.next().ok()?;
        match packet {
            Packet::Signature(sig) if sig.typ() == SignatureType::KeyRevocation => {
                signatures.push(sig);
                if signatures.len() > MAX_SIGNATURES {
                    return None;
                }
            }
            _ => return None,
        }
        result = next;
    }
    (!signatures.is_empty()).then_some(signatures)
}

fn apply_openpgp(
    store: &dyn KeyStore,
    signatures: &[Signature],
) -> Result<Vec<KeyEntry>, ApplyError> {
    let entries = store.list()?;
    let policy = StandardPolicy::new();
    let mut marked = Vec::new();
    for sig in signatures {
        let issuers: Vec<String> = sig
            .issuer_fingerprints()
            .map(|f| f.to_hex())
            .chain(sig.issuers().map(|id| id.to_hex()))
            .collect();
        // The cached keys the signature names, by fingerprint or by key ID (the low 64
        // bits of a v4 fingerprint).
        let mut named: Vec<&KeyEntry> = entries
            .iter()
            .filter(|e| e.kind == KeyKind::Pgp)
            .filter(|e| issuers.iter().any(|i| e.fingerprint.ends_with(i.as_str())))
            .collect();
        named.dedup_by(|a, b| a.fingerprint == b.fingerprint);
        let Some(first) = named.first() else {
            return Err(Refusal(format!(
                "no cached key is revoked by it (issuer {})",
                issuers.join(", ")
            ))
            .into());
        };
        let material = store
            .material(&first.address, &first.fingerprint)?
            .ok_or_else(|| Refusal(format!("key {} vanished", first.fingerprint)))?;
        let cert = openpgp::Cert::from_bytes(&material)
            .map_err(|e| Refusal(format!("cached key {}: {e}", first.fingerprint)))?;
        let (cert, _) = cert
            .insert_packets(sig.clone())
            .map_err(|e| Refusal(format!("cannot add the revocation: {e}")))?;
        // sequoia verifies the signature against the primary key here.
        if !matches!(
            cert.revocation_status(&policy, SystemTime::now()),
            RevocationStatus::Revoked(_)
        ) {
            return Err(Refusal(format!(
                "the revocation does not verify against key {}",
                first.fingerprint
            ))
            .into());
        }
        let merged = cert.to_vec().map_err(|e| {
            Refusal(format!(
                "key {} cannot be serialized: {e}",
                first.fingerprint
            ))
        })?;
        marked.extend(store.mark_revoked(&first.fingerprint, Some(&merged))?);
    }
    Ok(marked)
}

fn apply_crl(store: &dyn KeyStore, crl: &CertificateList) -> Result<Vec<KeyEntry>, ApplyError> {
    let tbs = &crl.tbs_cert_list;
    let revoked: Vec<Vec<u8>> = tbs
        .revoked_certificates
        .iter()
        .flatten()
        .filter_map(|r| r.serial_number.to_der().ok())
        .collect();
    let mut marked = Vec::new();
    for entry in store
        .list()?
        .into_iter()
        .filter(|e| e.kind == KeyKind::Smime)
    {
        if entry.revoked
            || marked
                .iter()
                .any(|m: &KeyEntry| m.fingerprint == entry.fingerprint)
        {
            continue;
        }
        let Some(material) = store.material(&entry.address, &entry.fingerprint)? else {
            continue;
        };
        let Ok(cert) = Certificate::from_der(&material) else {
            continue;
        };
        let serial = cert.tbs_certificate.serial_number.to_der().ok();
        if cert.tbs_certificate.issuer == tbs.issuer
            && serial.is_some_and(|serial| revoked.contains(&serial))
        {
            marked.extend(store.mark_revoked(&entry.fingerprint, None)?);
        }
    }
    Ok(marked)
}
