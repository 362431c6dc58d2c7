//! The gateway's one sled database under `data_dir`: the key cache, the sealed SCKM
//! secrets and the retry spool live in it, each in a tree of its own. An open database
//! holds sled's file lock, so a second process (say, `sealgate keys` while `serve`
//! runs) cannot open it: the CLI then goes through the admin socket instead.

use std::path::{Path, PathBuf};

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
