//! SCKM import: check an OpenPGP key file (encryption subkeys' secrets only, never a
//! signing secret), unlock it, and keep it in the stored (TSK) form decryption reads back.

use std::time::SystemTime;

use openpgp::Cert;
use openpgp::cert::CertParser;
use openpgp::crypto::{Password, S2K};
use openpgp::packet::key::SecretKeyMaterial;
use openpgp::packet::{Key, Packet};
use openpgp::parse::Parse;
use openpgp::policy::{Policy, StandardPolicy};
use openpgp::serialize::SerializeInto;
use openpgp::types::RevocationStatus;
use sequoia_openpgp as openpgp;
use time::OffsetDateTime;

use super::policy::{legacy_policy, purpose};
use crate::crypto::CryptoError;
use crate::keys::address;
use crate::keys::material::{MAX_CERTS, MAX_KEY_BYTES, Refusal};

// ---------------------------------------------------------------------------------------
// Stored keys

/// Reads TSKs back (binary or armored), as [`serialize_tsk`] wrote them, for decryption.
/// This is our own stored material, so it is not size-bounded.
pub fn parse_tsks(bytes: &[u8]) -> Result<Vec<Cert>, CryptoError> {
    let parser = CertParser::from_bytes(bytes)
        .map_err(|e| CryptoError::Key(format!("not an OpenPGP key: {e}")))?;
    let certs = parser
        .collect::<openpgp::Result<Vec<Cert>>>()
        .map_err(|e| CryptoError::Key(format!("malformed OpenPGP key: {e}")))?;
    if certs.is_empty() {
        return Err(CryptoError::Key("no OpenPGP key in it".into()));
    }
    Ok(certs)
}

/// The binary cert including its secret key material, to be sealed at rest.
pub fn serialize_tsk(cert: &Cert) -> Vec<u8> {
    // Serializing into memory fails only on packets sequoia cannot write, and
    // import_sckm() refuses a key whose serialization fails. Should it happen anyway,
    // the empty result fails loudly in parse_tsks() rather than panicking here.
    cert.as_tsk().to_vec().unwrap_or_default()
}

/// Merges the secret subkeys the gateway already held for this cert (`held`, the
/// sealed form's plaintext) into `cert`, the one being imported: a user who adds a new
/// encryption subkey imports a file with only that one's secret, and mail still in
/// flight to the old subkey must keep opening.
pub fn merge_held(cert: Cert, held: &[u8]) -> Result<Cert, CryptoError> {
    let mut merged = cert;
    for old in parse_tsks(held)? {
        if old.fingerprint() == merged.fingerprint() {
            merged = merged
                .merge_public_and_secret(old)
                .map_err(|e| CryptoError::Key(format!("cannot merge the held key: {e}")))?;
        }
    }
    Ok(merged)
}

/// The fingerprints of the (sub)keys whose secret the cert carries, newest first: the
/// keys the gateway can decrypt with.
pub fn secret_keys(cert: &Cert) -> Vec<String> {
    let mut keys: Vec<_> = cert
        .keys()
        .secret()
        .map(|k| (k.key().creation_time(), k.key().fingerprint().to_hex()))
        .collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.0));
    keys.into_iter()
        .map(|(_, fingerprint)| fingerprint)
        .collect()
}

// ---------------------------------------------------------------------------------------
// SCKM import

/// An OpenPGP SCKM key ready to store: the cert with secret material only on
/// encryption-capable subkeys, that material unencrypted (the caller seals it at rest).
#[derive(Debug, Clone)]
pub struct SckmKey {
    /// The cert; its only secrets are the unlocked encryption subkeys.
    pub cert: Cert,
    /// Primary fingerprint, upper hex.
    pub fingerprint: String,
    /// The e-mail addresses of its valid user IDs, normalized, sorted, without duplicates.
    pub addresses: Vec<String>,
    /// Valid only under [`legacy_policy`] (SHA-1 self-signatures, 1024-bit keys): for
    /// decryption only, never to encrypt to.
    pub legacy: bool,
    /// Things the admin should know at import (legacy, expired, revoked).
    pub warnings: Vec<String>,
    /// Creation time of the primary key.
    pub key_created: OffsetDateTime,
    /// When the primary key expires, if it does.
    pub key_expires: Option<OffsetDateTime>,
}

/// Parses an SCKM import file (armored or binary; may hold several TSKs), and refuses
/// the whole file, naming the key and the reason, if any key in it:
/// - holds the secret of its primary key (a primary key can always certify and sign; a
///   GnuPG stub, S2K 101 as `gpg --export-secret-subkeys ENCSUBKEY!` writes, holds no
///   secret and is fine);
/// - holds a secret on a subkey that can sign, certify or authenticate, or on one that
///   is not an encryption subkey;
/// - holds no secret encryption subkey;
/// - has passphrase-protected secrets and `passphrase` is `None`, or the passphrase
///   does not unlock them.
///
/// With a passphrase, the encryption subkeys' secrets are unlocked in the returned cert.
/// Keys valid only under [`legacy_policy`] (PGP Desktop 9/10, GnuPG 1.4) are accepted
/// with `legacy = true` and a warning. Expired and revoked keys are accepted with a
/// warning: they still open old mail.
pub fn import_sckm(
    bytes: &[u8],
    passphrase: Option<&str>,
    now: OffsetDateTime,
) -> Result<Vec<SckmKey>, Refusal> {
    if bytes.len() > MAX_KEY_BYTES {
        return Err(Refusal(format!(
            "key file of {} bytes is over the {MAX_KEY_BYTES}-byte limit",
            bytes.len()
        )));
    }
    let parser = CertParser::from_bytes(bytes)
        .map_err(|e| Refusal(format!("not an OpenPGP key file: {e}")))?;
    let mut certs = Vec::new();
    for cert in parser {
        if certs.len() == MAX_CERTS {
            return Err(Refusal(format!(
                "more than {MAX_CERTS} keys in one file; import them in smaller files"
            )));
        }
        certs.push(cert.map_err(|e| Refusal(format!("malformed OpenPGP key: {e}")))?);
    }
    if certs.is_empty() {
        return Err(Refusal("no OpenPGP key in the file".into()));
    }
    let now = SystemTime::from(now);
    certs
        .into_iter()
        .map(|cert| import_one(cert, passphrase, now))
        .collect()
}

/// Where a key's secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secret {
    /// Public key only.
    Absent,
    /// A GnuPG stub (S2K 101: gnu-dummy or divert-to-card): no secret in the file.
    Stub,
    /// A secret, unencrypted.
    Clear,
    /// A secret under a passphrase.
    Protected,
}

fn secret_of<P: openpgp::packet::key::KeyParts, R: openpgp::packet::key::KeyRole>(
    key: &Key<P, R>,
) -> Secret {
    match key.optional_secret() {
        None => Secret::Absent,
        Some(SecretKeyMaterial::Unencrypted(_)) => Secret::Clear,
        Some(SecretKeyMaterial::Encrypted(e)) => match e.s2k() {
            S2K::Private { tag: 101, .. } => Secret::Stub,
            _ => Secret::Protected,
        },
    }
}

fn import_one(cert: Cert, passphrase: Option<&str>, now: SystemTime) -> Result<SckmKey, Refusal> {
    let fpr = cert.fingerprint().to_hex();
    if matches!(
        secret_of(cert.primary_key().key()),
        Secret::Clear | Secret::Protected
    ) {
        return Err(Refusal(format!(
            "key {fpr}: the file holds the secret of the primary key, which can certify and \
             sign; SCKM keeps signing keys with the user. Export only the encryption \
             subkey: gpg --export-secret-subkeys ENCSUBKEYID!"
        )));
    }
    let secret_subkeys: Vec<_> = cert
        .keys()
        .subkeys()
        .filter(|ka| matches!(secret_of(ka.key()), Secret::Clear | Secret::Protected))
        .map(|ka| ka.key().fingerprint())
        .collect();
    if secret_subkeys.is_empty() {
        return Err(Refusal(format!(
            "key {fpr} holds no secret encryption subkey; export it with \
             gpg --export-secret-subkeys ENCSUBKEYID!"
        )));
    }

    // Standard first; the legacy policy only when the standard one will not do.
    let standard = StandardPolicy::new();
    let legacy_policy = legacy_policy();
    let (policy, legacy): (&dyn Policy, bool) =
        match check_validity(&cert, &secret_subkeys, &standard, now) {
            Ok(()) => (&standard, false),
            Err(standard_reason) => {
                match check_validity(&cert, &secret_subkeys, &legacy_policy, now) {
                    Ok(()) => (&legacy_policy, true),
                    Err(_) => return Err(Refusal(format!("key {fpr}: {standard_reason}"))),
                }
            }
        };
    let valid = cert
        .with_policy(policy, now)
        .map_err(|e| Refusal(format!("key {fpr}: {e}")))?;

    // First what the secrets are for, so that a signing secret is named as such even
    // when the file's secrets are also locked.
    let mut secret_keys = Vec::new();
    for ka in valid.keys().subkeys() {
        let secret = secret_of(ka.key());
        if !matches!(secret, Secret::Clear | Secret::Protected) {
            continue;
        }
        let sub = ka.key().fingerprint().to_hex();
        let purpose = purpose(
            ka.key().parts_as_public().role_as_unspecified(),
            ka.key_flags(),
        );
        if purpose.sign {
            return Err(Refusal(format!(
                "key {fpr}: the file holds the secret of subkey {sub}, which can sign, \
                 certify or authenticate; SCKM keeps signing keys with the user"
            )));
        }
        if !purpose.encrypt {
            return Err(Refusal(format!(
                "key {fpr}: the file holds the secret of subkey {sub}, which is not an \
                 encryption subkey"
            )));
        }
        let key = ka
            .key()
            .clone()
            .parts_into_secret()
            .map_err(|e| Refusal(format!("key {fpr}: subkey {sub}: {e}")))?;
        secret_keys.push((sub, secret, key));
    }
    // A key we cannot decrypt with would be listed as able to decrypt, and never would.
    if let Some((sub, _, key)) = secret_keys
        .iter()
        .find(|(_, _, k)| !k.pk_algo().is_supported())
    {
        return Err(Refusal(format!(
            "key {fpr}: subkey {sub} uses {}, which this build cannot decrypt with",
            key.pk_algo()
        )));
    }

    let mut unlocked = Vec::new();
    for (sub, secret, key) in secret_keys {
        let key = match (secret, passphrase) {
            (Secret::Protected, None) => {
                return Err(Refusal(format!(
                    "key {fpr}: the secret of subkey {sub} is protected by a passphrase; \
                     import it with --passphrase-file FILE"
                )));
            }
            (Secret::Protected, Some(passphrase)) => key
                .decrypt_secret(&Password::from(passphrase))
                .map_err(|_| {
                    // Sequoia reports a wrong passphrase and an unreadable secret alike,
                    // on purpose: no oracle.
                    Refusal(format!(
                        "key {fpr}: the passphrase does not unlock the secret of subkey \
                         {sub}: wrong passphrase, or secret material that cannot be read \
                         (as in exports by early GnuPG 2.1 of ECC keys; exporting the key \
                         again with a current GnuPG helps)"
                    ))
                })?,
            _ => key,
        };
        unlocked.push(Packet::SecretSubkey(key));
    }

    let mut addresses: Vec<String> = valid
        .userids()
        .revoked(false)
        .filter_map(|ua| {
            ua.userid()
                .email()
                .ok()
                .flatten()
                .and_then(address::normalize)
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        return Err(Refusal(format!(
            "key {fpr} has no valid user ID with an e-mail address"
        )));
    }

    let mut warnings = Vec::new();
    if legacy {
        warnings.push(format!(
            "key {fpr} is a legacy key (SHA-1 self-signatures or a 1024-bit key, as PGP \
             Desktop 9/10 and GnuPG 1.4 made them): kept for decryption, never used to \
             encrypt"
        ));
    }
    if let RevocationStatus::Revoked(_) = valid.revocation_status() {
        warnings.push(format!("key {fpr} is revoked: it only opens old mail"));
    }
    if valid.alive().is_err() {
        warnings.push(format!("key {fpr} has expired: it only opens old mail"));
    }
    let key_created = OffsetDateTime::from(cert.primary_key().key().creation_time());
    let key_expires = valid
        .primary_key()
        .key_expiration_time()
        .map(OffsetDateTime::from);

    // Packets inserted take precedence over the ones in the cert: the stripped cert
    // gets back exactly the unlocked encryption subkeys, and no stubs.
    let (cert, _) = cert
        .clone()
        .strip_secret_key_material()
        .insert_packets(unlocked)
        .map_err(|e| Refusal(format!("key {fpr}: {e}")))?;
    // What the store keeps is this serialization: make sure it can be made now, so that
    // serialize_tsk() cannot fail later.
    cert.as_tsk()
        .to_vec()
        .map_err(|e| Refusal(format!("key {fpr} cannot be serialized: {e}")))?;
    Ok(SckmKey {
        cert,
        fingerprint: fpr,
        addresses,
        legacy,
        warnings,
        key_created,
        key_expires,
    })
}

/// Whether the cert, and every subkey whose secret it holds, is valid under `policy`.
fn check_validity(
    cert: &Cert,
    secret_subkeys: &[openpgp::Fingerprint],
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<(), String> {
    let valid = cert
        .with_policy(policy, now)
        .map_err(|e| format!("no valid self-signature: {e}"))?;
    for fingerprint in secret_subkeys {
        let bound = valid
            .keys()
            .subkeys()
            .any(|ka| &ka.key().fingerprint() == fingerprint);
        if !bound {
            return Err(format!(
                "subkey {} has no valid binding signature",
                fingerprint.to_hex()
            ));
        }
    }
    Ok(())
}
