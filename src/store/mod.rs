//! The gateway's one sled database under `data_dir`: the key cache, the sealed SCKM
//! secrets and the retry spool live in it, each in a tree of its own. An open database
//! holds sled's file lock, so a second process (say, `sealgate keys` while `serve`
//! runs) cannot open it: the CLI then goes through the admin socket instead.
//!
//! Everything under `data_dir` is private: decrypted copies wait in the spool, and the
//! key-encryption key sits beside it. Folders sealgate makes are 0700 and its files
//! 0600, whatever the umask ([`private_dir`], [`private_file`]); the binary also sets
//! its umask to 077, so that what sled creates is owner-only as well.

pub mod migrate;
pub mod postgres;
pub mod records;

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `path` and any missing parents, each new folder owner-only (0700). A folder
/// that already exists is left as it is: see [`exposure`].
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Creates (or truncates) a file that only its owner can read and write (0600).
pub fn private_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// When `data_dir` exists and others may enter or read it, a warning that says so and
/// what to do; `None` when it is private or does not exist yet (it will be made 0700).
pub fn exposure(data_dir: &Path) -> Option<String> {
    let mode = std::fs::metadata(data_dir).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "data_dir {} is open to other users (mode {mode:03o}): it holds the key-encryption \
             key and decrypted mail waiting in the spool; run chmod 700 {}",
            data_dir.display(),
            data_dir.display()
        )
    })
}

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Another sealgate process holds `data_dir`. Two would corrupt the store, so the
    /// second refuses to start; stop the other one or give this one its own data_dir.
    #[error("data_dir {0} is in use by another sealgate process")]
    InUse(PathBuf),
    /// The folder or the database cannot be used (permissions, disk, corruption).
    #[error("cannot open the database in {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
}

/// Opens (creating if needed) the database in `data_dir`.
pub fn open(data_dir: &Path) -> Result<sled::Db, DbError> {
    let path = data_dir.join("db");
    private_dir(&path).map_err(|e| DbError::Open {
        path: path.clone(),
        source: sled::Error::Io(e),
    })?;
    sled::Config::new()
        .path(&path)
        // The spool is small and read rarely; keep the page cache from growing.
        .cache_capacity(16 * 1024 * 1024)
        .open()
        .map_err(|source| match &source {
            sled::Error::Io(e) if e.to_string().contains("lock") => {
                DbError::InUse(data_dir.to_path_buf())
            }
            _ => DbError::Open { path, source },
        })
}

/// Bytes as base64 in the JSON records of the stores (`#[serde(with = "base64_bytes")]`).
pub mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}
