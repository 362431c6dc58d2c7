//! The `dir:PATH` next hop: each transaction becomes one `.eml` file.
//!
//! The file is written under a temporary name, fsynced, renamed and the folder fsynced,
//! and only then is the transaction reported complete. So a `250` means the file is on
//! disk, whole, under its final name. Files are 0600 and new folders 0700: a decrypted
//! message is for its recipient's mail system, not for every local user.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Delivery, Outgoing};
use crate::smtp::reply;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

pub async fn deliver(dir: &Path, tx: &Outgoing) -> Delivery {
    let dir = dir.to_path_buf();
    let tx = tx.clone();
    let count = tx.recipients.len();
    let result = tokio::task::spawn_blocking(move || write_file(&dir, &tx)).await;
    let reply = match result {
        Ok(Ok(path)) => reply::written_to(&path),
        Ok(Err(e)) => reply::local_error(&format!("cannot write to the delivery folder: {e}")),
        Err(e) => reply::local_error(&format!("delivery task failed: {e}")),
    };
    Delivery::all(count, reply)
}

fn write_file(dir: &Path, tx: &Outgoing) -> std::io::Result<PathBuf> {
    crate::store::private_dir(dir)?;
    let name = format!("{}-{}.eml", tx.id, SEQUENCE.fetch_add(1, Ordering::Relaxed));
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);

    let mut file = std::io::BufWriter::new(crate::store::private_file(&tmp)?);
    write!(file, "X-Envelope-From: <{}>\r\n", tx.mail_from)?;
    for rcpt in &tx.recipients {
        write!(file, "X-Envelope-To: <{rcpt}>\r\n")?;
    }
    for piece in tx.message.pieces() {
        file.write_all(&piece)?;
    }
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    // The rename is only durable once the folder itself is synced.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}
