//! Cryptographic message formats: encrypt to recipients' keys and decrypt with SCKM
//! keys, for OpenPGP ([`pgp`], sequoia-openpgp) and S/MIME ([`smime`], the cms crate).
//! Nothing here ever signs, and nothing here knows about SMTP or MIME headers: it turns
//! bytes into bytes. [`ber`] reads the BER that real S/MIME clients send.

pub mod ber;
pub mod key_wrap;
pub mod pgp;
pub mod smime;

/// Decrypted output larger than this is refused: a compression bomb costs an error,
/// not the gateway's memory.
pub const MAX_PLAINTEXT: usize = 64 * 1024 * 1024;

/// Turns off the backtrace that every library error would capture under
/// `RUST_BACKTRACE` (`RUST_LIB_BACKTRACE=0`), unless `RUST_LIB_BACKTRACE` is set.
/// sequoia's errors are anyhow errors, and anyhow captures a backtrace for each when
/// the environment asks for backtraces; hostile mail makes thousands of them. Found by
/// the `harvest` fuzz target on a machine with `RUST_BACKTRACE=1`: a 200 KB message of
/// broken key blocks took 0.7 s of CPU to harvest, 0.04 s without the backtraces.
/// Panics still print theirs under `RUST_BACKTRACE`.
///
/// # Safety
///
/// Sets an environment variable: call it before any other thread is started (at the
/// top of `main`), and before anything has captured a backtrace (std reads the
/// variables once).
pub unsafe fn quiet_error_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: the caller promises that no other thread is running.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}

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
