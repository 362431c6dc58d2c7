//! Which keys and algorithms we accept: [`legacy_policy`] for reading mail and for our
//! own legacy keys; [`encryption_keys`], the one rule for which recipient keys mail may
//! be encrypted to; and what a key may be used for, which decryption and SCKM import
//! both ask.

use std::time::SystemTime;

use openpgp::Cert;
use openpgp::cert::ValidCert;
use openpgp::cert::amalgamation::key::ValidErasedKeyAmalgamation;
use openpgp::packet::Key;
use openpgp::packet::key::{PublicParts, UnspecifiedRole};
use openpgp::policy::{AsymmetricAlgorithm, StandardPolicy};
use openpgp::types::{HashAlgorithm, KeyFlags, RevocationStatus, SymmetricAlgorithm};
use sequoia_openpgp as openpgp;

use crate::crypto::CryptoError;

/// A cert that mail may be encrypted to, and the keys to encrypt to.
pub struct EncryptionKeys<'a> {
    /// The cert, valid under the policy it was checked with.
    pub cert: ValidCert<'a>,
    /// Its supported, alive, unrevoked subkeys for transport or storage encryption;
    /// never empty.
    pub keys: Vec<ValidErasedKeyAmalgamation<'a, PublicParts>>,
}

/// The keys of `cert` that mail may be encrypted to at `now`: the cert is valid under
/// `policy` (sequoia's standard policy: legacy SHA-1 keys are not), neither revoked nor
/// expired, and has supported, alive, unrevoked subkeys for transport or storage
/// encryption, of which the newest are used. A cert without is a [`CryptoError::Key`]
/// that says why.
///
/// The key cache asks this when a key comes in, and the encryption path asks it again
/// for each message, since a key can expire or be revoked in between.
pub fn encryption_keys<'a>(
    cert: &'a Cert,
    policy: &'a StandardPolicy<'a>,
    now: SystemTime,
) -> Result<EncryptionKeys<'a>, CryptoError> {
    // Made only for an error: every encrypted message asks this.
    let fingerprint = || cert.fingerprint().to_hex();
    let valid = cert.with_policy(policy, now).map_err(|e| {
        CryptoError::Key(format!(
            "key {} has no valid self-signature: {e}",
            fingerprint()
        ))
    })?;
    if let RevocationStatus::Revoked(_) = valid.revocation_status() {
        return Err(CryptoError::Key(format!(
            "key {} is revoked",
            fingerprint()
        )));
    }
    if valid.alive().is_err() {
        return Err(CryptoError::Key(format!(
            "key {} has expired",
            fingerprint()
        )));
    }
    let mut keys: Vec<_> = valid
        .keys()
        .supported()
        .alive()
        .revoked(false)
        .for_transport_encryption()
        .for_storage_encryption()
        .collect();
    // The newest encryption subkey is the current one, as GnuPG also decides: a user who
    // added a subkey keeps the old one (and its secret) only to read mail in flight.
    let newest = keys.iter().map(|k| k.key().creation_time()).max();
    keys.retain(|k| Some(k.key().creation_time()) == newest);
    if keys.is_empty() {
        return Err(CryptoError::Key(format!(
            "key {} has no valid encryption-capable subkey",
            fingerprint()
        )));
    }
    Ok(EncryptionKeys { cert: valid, keys })
}

/// The policy for reading mail and for our own legacy keys: sequoia's standard policy,
/// plus SHA-1 signatures, 1024-bit RSA/DSA/ElGamal keys, and IDEA, 3DES and CAST5.
/// Never used to choose keys to encrypt to.
pub fn legacy_policy() -> StandardPolicy<'static> {
    let mut policy = StandardPolicy::new();
    policy.accept_hash(HashAlgorithm::SHA1);
    for algo in [
        AsymmetricAlgorithm::RSA1024,
        AsymmetricAlgorithm::DSA1024,
        AsymmetricAlgorithm::ElGamal1024,
    ] {
        policy.accept_asymmetric_algo(algo);
    }
    // Deprecated for writing, which we never do with them; mail sent with them is read.
    #[allow(deprecated)]
    for algo in [
        SymmetricAlgorithm::IDEA,
        SymmetricAlgorithm::TripleDES,
        SymmetricAlgorithm::CAST5,
    ] {
        policy.accept_symmetric_algo(algo);
    }
    policy
}

/// What a key may be used for: its key flags, or, for old keys without that
/// subpacket, whatever its algorithm can do (RFC 4880 §5.2.3.21).
pub(super) struct Purpose {
    pub(super) encrypt: bool,
    /// Sign, certify or authenticate: anything a gateway must never be able to do.
    pub(super) sign: bool,
}

pub(super) fn purpose(key: &Key<PublicParts, UnspecifiedRole>, flags: Option<KeyFlags>) -> Purpose {
    match flags {
        Some(flags) => Purpose {
            encrypt: flags.for_transport_encryption() || flags.for_storage_encryption(),
            sign: flags.for_signing() || flags.for_certification() || flags.for_authentication(),
        },
        None => Purpose {
            encrypt: key.pk_algo().for_encryption(),
            sign: key.pk_algo().for_signing(),
        },
    }
}
