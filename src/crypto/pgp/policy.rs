//! Which keys and algorithms we accept: [`legacy_policy`] for reading mail and for our
//! own legacy keys, and what a key may be used for, which decryption and SCKM import
//! both ask.

use openpgp::packet::Key;
use openpgp::packet::key::{PublicParts, UnspecifiedRole};
use openpgp::policy::{AsymmetricAlgorithm, StandardPolicy};
use openpgp::types::{HashAlgorithm, KeyFlags, SymmetricAlgorithm};
use sequoia_openpgp as openpgp;

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
