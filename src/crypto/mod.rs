//! Cryptographic message formats: encrypt to recipients' keys and decrypt with SCKM
//! keys, for OpenPGP ([`pgp`], sequoia-openpgp) and S/MIME ([`smime`], the cms crate).
//! Nothing here ever signs, and nothing here knows about SMTP or MIME headers: it turns
//! bytes into bytes. [`ber`] reads the BER that real S/MIME clients send.

pub mod ber;
pub mod pgp;
pub mod smime;

/// Decrypted output larger than this is refused: a compression bomb costs an error,
/// not the gateway's memory.
pub const MAX_PLAINTEXT: usize = 64 * 1024 * 1024;

/// Why a crypto operation failed, and so whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The input (from a peer) is malformed, too large, nested too deep, or uses an
    /// algorithm we do not support. Not ours to fix; retrying will not help.
    #[error("malformed or unsupported message: {0}")]
    Malformed(String),
    /// None of the keys we were given can open the message.
    #[error("none of the keys can decrypt this message")]
    NoKey,
    /// A key (a recipient's certificate, or one of ours) cannot be used.
    #[error("unusable key: {0}")]
    Key(String),
    /// The crypto library failed in a way the input does not explain.
    #[error("internal crypto error: {0}")]
    Internal(String),
}

/// A successful decryption.
#[derive(Debug)]
pub struct Decrypted {
    /// The plaintext: the MIME entity that was encrypted.
    pub plaintext: Vec<u8>,
    /// Fingerprint of the key that opened it, as the key cache writes it (OpenPGP:
    /// the fingerprint of the (sub)key's certificate; X.509: SHA-256 of the DER).
    pub fingerprint: String,
}
