//! SCKM keys (Server Client Key Mode): an internal user's own key, of which the gateway
//! holds only the secret of the encryption (sub)key, sealed at rest. This turns an
//! import file into cache entries; `crypto::pgp` and `crypto::smime` decide what a file
//! holds and refuse any secret signing material.

use der::Encode;
use sequoia_openpgp::serialize::SerializeInto;
use time::OffsetDateTime;

use super::entry::{KeyKind, Source};
use super::material::{self, Refusal};
use super::secrets::Sealer;
use super::store::Candidate;
use crate::crypto::{pgp, smime};

/// Entries for an SCKM import file, with their secrets sealed, and warnings for the
/// admin. The whole file is refused if any key in it is. `held` gives the sealed secret
/// the gateway already holds for a fingerprint: an OpenPGP key imported again keeps
/// every secret subkey it had (a user who adds an encryption subkey exports only the
/// new one), until the admin deletes the key.
pub fn candidates(
    bytes: &[u8],
    passphrase: Option<&str>,
    sealer: &Sealer,
    held: &dyn Fn(&str) -> Option<Vec<u8>>,
    now: OffsetDateTime,
) -> Result<(Vec<Candidate>, Vec<String>), Refusal> {
    let text = bytes.trim_ascii_start();
    let looks_pgp =
        text.starts_with(b"-----BEGIN PGP") || bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut candidates = Vec::new();
    let mut warnings = Vec::new();
    if looks_pgp {
        for mut key in pgp::import_sckm(bytes, passphrase, now)? {
            if let Some(sealed) = held(&key.fingerprint) {
                match sealer.open_sealed(&key.fingerprint, &sealed) {
                    Ok(old) => {
                        key.cert = pgp::merge_held(key.cert, &old)
                            .map_err(|e| Refusal(format!("key {}: {e}", key.fingerprint)))?;
                    }
                    Err(e) => warnings.push(format!(
                        "key {}: the secret held until now cannot be opened ({e}); only the imported one is kept",
                        key.fingerprint
                    )),
                }
            }
            let decrypt_subkeys = pgp::secret_keys(&key.cert);
            let public = key
                .cert
                .clone()
                .strip_secret_key_material()
                .to_vec()
                .map_err(|e| {
                    Refusal(format!("key {} cannot be serialized: {e}", key.fingerprint))
                })?;
            let sealed = sealer.seal(&key.fingerprint, &pgp::serialize_tsk(&key.cert));
            warnings.extend(key.warnings.iter().cloned());
            for address in &key.addresses {
                candidates.push(Candidate {
                    address: address.clone(),
                    kind: KeyKind::Pgp,
                    fingerprint: key.fingerprint.clone(),
                    source: Source::Sckm,
                    message_id: None,
                    sender: None,
                    // A legacy key decrypts, but never encrypts.
                    can_encrypt: !key.legacy,
                    can_decrypt: true,
                    key_created: key.key_created,
                    key_expires: key.key_expires,
                    material: public.clone(),
                    legacy: key.legacy,
                    sealed_secret: Some(sealed.clone()),
                    authenticated: false,
                    chain_validated: false,
                    revoked: false,
                    decrypt_subkeys: decrypt_subkeys.clone(),
                    reads_aes_gcm: false,
                    carried: None,
                });
            }
        }
    } else {
        for key in smime::import_sckm(bytes, passphrase)? {
            let der = key
                .cert
                .to_der()
                .map_err(|e| Refusal(format!("certificate cannot be encoded: {e}")))?;
            let fingerprint = material::x509_fingerprint(&der);
            let sealed = sealer.seal(&fingerprint, key.private_key.pkcs8());
            let validity = &key.cert.tbs_certificate.validity;
            for address in material::x509_addresses(&key.cert) {
                candidates.push(Candidate {
                    address,
                    kind: KeyKind::Smime,
                    fingerprint: fingerprint.clone(),
                    source: Source::Sckm,
                    message_id: None,
                    sender: None,
                    can_encrypt: true,
                    can_decrypt: true,
                    key_created: OffsetDateTime::from(validity.not_before.to_system_time()),
                    key_expires: Some(OffsetDateTime::from(validity.not_after.to_system_time())),
                    material: der.clone(),
                    legacy: false,
                    sealed_secret: Some(sealed.clone()),
                    authenticated: false,
                    chain_validated: false,
                    revoked: false,
                    decrypt_subkeys: vec![fingerprint.clone()],
                    reads_aes_gcm: false,
                    carried: None,
                });
            }
        }
    }
    if candidates.is_empty() {
        return Err(Refusal("no key with an e-mail address in it".into()));
    }
    Ok((candidates, warnings))
}
