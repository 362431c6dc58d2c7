//! The spool on a tree of the gateway's sled database: one machine, one retrier, so a
//! due entry needs no claim. Each value is `meta length (u32, big-endian) | meta (JSON)
//! | message`, under a key from sled's id generator (so the oldest comes first).

use bytes::Bytes;

use super::{Entry, SpoolError};
use crate::mail::message::Message;

#[derive(Clone)]
pub struct SledSpool {
    db: sled::Db,
    tree: sled::Tree,
}

impl SledSpool {
    pub fn open(db: &sled::Db) -> Result<SledSpool, SpoolError> {
        Ok(SledSpool {
            db: db.clone(),
            tree: db.open_tree("spool")?,
        })
    }

    pub fn count(&self) -> usize {
        self.tree.len()
    }

    /// Stores entries atomically and waits until they are on disk.
    pub async fn hold(&self, entries: Vec<(Entry, Message)>) -> Result<(), SpoolError> {
        let mut batch = sled::Batch::default();
        for (entry, message) in &entries {
            let key = self.db.generate_id()?.to_be_bytes();
            batch.insert(&key, encode(entry, message));
        }
        self.tree.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Every entry, oldest first, with its key.
    pub fn entries(&self) -> Vec<(u64, Entry)> {
        self.tree
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(key, value)| Some((key_id(&key)?, decode(&value)?.0)))
            .collect()
    }

    /// One entry, if it is held.
    pub fn entry(&self, key: u64) -> Option<Entry> {
        let value = self.tree.get(key.to_be_bytes()).ok()??;
        Some(decode(&value)?.0)
    }

    /// Replaces an entry's record, keeping its message, and waits until that is on
    /// disk. Nothing is written when it is gone.
    pub async fn update(&self, key: u64, entry: &Entry) -> Result<bool, SpoolError> {
        let Some(value) = self.tree.get(key.to_be_bytes())? else {
            return Ok(false);
        };
        let (_, body) = decode(&value).ok_or(SpoolError::Corrupt(key))?;
        let message = Message::new(Bytes::copy_from_slice(body));
        self.tree
            .insert(key.to_be_bytes(), encode(entry, &message))?;
        self.db.flush_async().await?;
        Ok(true)
    }

    pub fn message(&self, key: u64) -> Result<Message, SpoolError> {
        let value = self
            .tree
            .get(key.to_be_bytes())?
            .ok_or(SpoolError::Corrupt(key))?;
        let (_, body) = decode(&value).ok_or(SpoolError::Corrupt(key))?;
        Ok(Message::new(Bytes::copy_from_slice(body)))
    }

    /// Removes an entry and waits until that is on disk (`store migrate` moved it).
    pub async fn remove(&self, key: u64) -> Result<(), SpoolError> {
        self.tree.remove(key.to_be_bytes())?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Records an attempt's result atomically, and waits until it is on disk: the entry
    /// `updated` (with `message`), or gone, and a DSN entry if there is one.
    pub async fn settle(
        &self,
        key: u64,
        updated: Option<(Entry, &Message)>,
        dsn: Option<(Entry, Message)>,
    ) -> Result<(), SpoolError> {
        let mut batch = sled::Batch::default();
        let key_bytes = key.to_be_bytes();
        match updated {
            None => batch.remove(&key_bytes),
            Some((entry, message)) => batch.insert(&key_bytes, encode(&entry, message)),
        }
        if let Some((entry, message)) = dsn {
            let dsn_key = self.db.generate_id()?.to_be_bytes();
            batch.insert(&dsn_key, encode(&entry, &message));
        }
        self.tree.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(())
    }
}

fn key_id(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

fn encode(entry: &Entry, message: &Message) -> Vec<u8> {
    let meta = serde_json::to_vec(entry).expect("an entry always serializes");
    let mut value = Vec::with_capacity(4 + meta.len() + message.len());
    value.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    value.extend_from_slice(&meta);
    for piece in message.pieces() {
        value.extend_from_slice(&piece);
    }
    value
}

fn decode(value: &[u8]) -> Option<(Entry, &[u8])> {
    let len = u32::from_be_bytes(value.get(..4)?.try_into().ok()?) as usize;
    let meta = value.get(4..4 + len)?;
    Some((serde_json::from_slice(meta).ok()?, &value[4 + len..]))
}
