//! OpenPGP with sequoia-openpgp: encrypt a MIME entity to recipients' certs, decrypt one
//! with SCKM keys, and check and unlock an SCKM key file at import.
//!
//! Pure functions, bytes in and bytes out. Nothing here signs: the gateway holds no
//! signing secret (SCKM), and [`import_sckm`] refuses any file that would give it one.
//!
//! Two policies are at work, and the difference matters:
//! - encryption, and SCKM import in the first place, use sequoia's `StandardPolicy`
//!   unchanged, so a weak or legacy key is never encrypted to;
//! - decryption and legacy SCKM keys use [`legacy_policy`], which also accepts SHA-1
//!   self-signatures, 1024-bit keys and the old ciphers (IDEA, 3DES, CAST5). Reading
//!   mail that was already sent with them weakens nothing, and those keys are our own,
//!   escrowed ones. Messages without integrity protection (SED packets) stay refused.
//!
//! # Layout
//!
//! - `encrypt`: encryption to recipients' certs.
//! - `ecdh`: the encrypted session key for a Curve25519 ECDH key.
//! - `seipd`: the SEIPDv1 packet, written as the plaintext streams in.
//! - `armor`: the ASCII armor around a message, both ways.
//! - `dearmor`: the armor of a message in pieces, read as a stream.
//! - `decrypt`: decryption with stored keys, bounded, with whose fault a failure is.
//! - `aed`: the AEAD data sequoia does not open here (the LibrePGP AEAD packet, tag 20,
//!   and SEIPDv2 in EAX): their framing around RustCrypto's OCB and EAX.
//! - `rsa`: RSA session-key decryption with the whole (CRT) private key.
//! - `cv25519`: Curve25519 ECDH session-key decryption with the secret key set up once.
//! - `ocb`: AES-256-OCB for the SEIPDv2 sealgate writes, keyed once per message.
//! - `signatures`: the signatures of a signed and encrypted message, kept in forms the
//!   recipient's client can verify.
//! - `import`: SCKM import, and the stored (TSK) form of its keys.
//! - `policy`: [`legacy_policy`], [`encryption_keys`] (which keys mail may be
//!   encrypted to), and what a key may be used for.

mod aed;
pub mod armor;
#[cfg(feature = "crypto-openssl")]
mod cv25519;
mod dearmor;
mod decrypt;
mod ecdh;
mod encrypt;
mod import;
mod ocb;
mod policy;
#[cfg(feature = "crypto-openssl")]
mod rsa;
mod seipd;
mod signatures;
#[cfg(test)]
mod tests;

pub use decrypt::{
    MAX_PKESKS, Opened, SecretKeys, decrypt, decrypt_with_limit, open, open_with_limit,
};
pub use encrypt::{encrypt, encrypt_into};
pub use import::{SckmKey, import_sckm, merge_held, parse_tsks, secret_keys, serialize_tsk};
pub use policy::{EncryptionKeys, encryption_keys, legacy_policy};
pub use signatures::Signed;
