//! Secret key material at rest: the SCKM encryption keys the gateway decrypts with.
//!
//! Secrets are sealed with AES-256-GCM under a key-encryption key (KEK) kept in
//! `data_dir/secret.key`, created on first use with mode 0600. We chose a KEK file over
//! an "ignition" passphrase so that the gateway starts and decrypts unattended, as a
//! mail gateway must; the price is that the file is as sensitive as the keys it
//! protects: keep `data_dir` readable by the gateway's user only, and back the KEK up
//! apart from the database. Each sealed secret is bound to its key's fingerprint (the
//! GCM associated data), so a sealed blob cannot be passed off as another key's.
//! Secrets are never logged.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

/// The KEK's file name inside `data_dir`.
pub const KEK_FILE: &str = "secret.key";
const KEK_LEN: usize = 32;
const NONCE_LEN: usize = 12;
/// Marks the format of a sealed blob, so that it can change later.
const VERSION: u8 = 1;

/// Why a secret could not be sealed or opened. Always the gateway's own problem (a
/// missing, unreadable or replaced KEK, or a damaged database); no retry helps.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("key-encryption key {path}: {source}")]
    Kek {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key-encryption key {0} is damaged (not {KEK_LEN} bytes, or not mode 0600)")]
    BadKek(PathBuf),
    #[error(
        "a sealed secret does not open with this gateway's key-encryption key (replaced KEK, or damaged store)"
    )]
    Unseal,
}

/// The KEK, loaded.
pub struct Sealer {
    kek: Zeroizing<[u8; KEK_LEN]>,
}

impl Sealer {
    /// Loads `data_dir/secret.key`, creating it (0600) if it does not exist.
    pub fn open(data_dir: &Path) -> Result<Sealer, SecretError> {
        let path = data_dir.join(KEK_FILE);
        let io = |source| SecretError::Kek {
            path: path.clone(),
            source,
        };
        crate::store::private_dir(data_dir).map_err(io)?;
        match std::fs::read(&path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode();
                if bytes.len() != KEK_LEN || mode & 0o077 != 0 {
                    return Err(SecretError::BadKek(path));
                }
                let mut kek = Zeroizing::new([0u8; KEK_LEN]);
                kek.copy_from_slice(&bytes);
                Ok(Sealer { kek })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut kek = Zeroizing::new([0u8; KEK_LEN]);
                rand::rngs::OsRng.fill_bytes(kek.as_mut());
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                file.write_all(kek.as_ref()).map_err(io)?;
                file.sync_all().map_err(io)?;
                tracing::info!(path = %path.display(), "created the key-encryption key for sealed secrets");
                Ok(Sealer { kek })
            }
            Err(e) => Err(io(e)),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.kek.as_ref()).expect("a 32-byte key")
    }

    /// Seals `secret` for the key `fingerprint`.
    pub fn seal(&self, fingerprint: &str, secret: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: fingerprint.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a secret sealed for `fingerprint`.
    pub fn open_sealed(
        &self,
        fingerprint: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(SecretError::Unseal);
        }
        let (nonce, body) = sealed[1..].split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: fingerprint.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SecretError::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_and_binds_to_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::open(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEK_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = sealer.seal("AAAA", b"top secret");
        assert!(!sealed.windows(10).any(|w| w == b"top secret"));
        assert_eq!(
            sealer.open_sealed("AAAA", &sealed).unwrap().as_slice(),
            b"top secret"
        );
        assert!(
            sealer.open_sealed("BBBB", &sealed).is_err(),
            "bound to its fingerprint"
        );
        // The same KEK is found again.
        let again = Sealer::open(dir.path()).unwrap();
        assert_eq!(
            again.open_sealed("AAAA", &sealed).unwrap().as_slice(),
            b"top secret"
        );
        // Another KEK cannot open it.
        let other = Sealer::open(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(other.open_sealed("AAAA", &sealed).is_err());
    }
}
