//! The [`KeyStore`] trait and its sled implementation.
//!
//! The trait is the seam for a shared backend, for gateways in a cluster: everything
//! outside this file talks to `dyn KeyStore`. The sled tree maps
//! `address NUL fingerprint` to `meta length (u32 BE) | meta (JSON) | key material`, so
//! the keys of one address are one prefix scan.

use std::time::Duration;

use time::OffsetDateTime;

use super::entry::{KeyEntry, KeyKind, Source};

/// A key about to be stored: everything but the times, which the store sets by its rules.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub address: String,
    pub kind: KeyKind,
    pub fingerprint: String,
    pub source: Source,
    pub message_id: Option<String>,
    pub sender: Option<String>,
    pub can_encrypt: bool,
    pub can_decrypt: bool,
    pub key_created: OffsetDateTime,
    pub key_expires: Option<OffsetDateTime>,
    /// The key material: a binary OpenPGP cert, or an X.509 certificate's DER.
    pub material: Vec<u8>,
}

/// What storing a candidate did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// A new entry.
    Added,
    /// The entry existed; it was refreshed (last seen, material, and for lookups the TTL).
    Refreshed,
    /// A new mailflow entry replaced older mailflow keys of the address (their fingerprints).
    Replaced(Vec<String>),
    /// Nothing was stored, for this reason.
    Ignored(&'static str),
}

/// Why the store failed. Always internal (disk, database); a retry may help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key store database: {0}")]
    Db(#[from] sled::Error),
    #[error("key store entry {0:?} does not decode")]
    Corrupt(String),
}

/// The key cache, as every other part of sealgate sees it.
pub trait KeyStore: Send + Sync {
    /// Stores or refreshes a key by the lifetime rules of its source.
    fn put(&self, candidate: Candidate, now: OffsetDateTime) -> Result<Put, StoreError>;
    /// The entries for one (normalised) address, expired ones included.
    fn find(&self, address: &str) -> Result<Vec<KeyEntry>, StoreError>;
    /// The key material of one entry.
    fn material(&self, address: &str, fingerprint: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every entry, ordered by address.
    fn list(&self) -> Result<Vec<KeyEntry>, StoreError>;
    /// Removes the entries of an address, or every entry of a fingerprint.
    fn delete(&self, address_or_fingerprint: &str) -> Result<Vec<KeyEntry>, StoreError>;
    /// Removes the entries whose cache lifetime has passed, and returns them.
    fn purge(&self, now: OffsetDateTime) -> Result<Vec<KeyEntry>, StoreError>;
}

/// The key cache on a tree of the gateway's sled database.
#[derive(Clone)]
pub struct SledKeyStore {
    tree: sled::Tree,
    /// `[keys] lookup_ttl`.
    lookup_ttl: Duration,
}

impl SledKeyStore {
    pub fn open(db: &sled::Db, lookup_ttl: Duration) -> Result<SledKeyStore, StoreError> {
        Ok(SledKeyStore {
            tree: db.open_tree("keys")?,
            lookup_ttl,
        })
    }

    fn key(address: &str, fingerprint: &str) -> Vec<u8> {
        format!("{address}\0{fingerprint}").into_bytes()
    }

    fn prefix(address: &str) -> Vec<u8> {
        format!("{address}\0").into_bytes()
    }

    fn decode(key: &[u8], value: &[u8]) -> Result<(KeyEntry, Vec<u8>), StoreError> {
        let corrupt = || StoreError::Corrupt(String::from_utf8_lossy(key).into_owned());
        let len = u32::from_be_bytes(
            value
                .get(..4)
                .ok_or_else(corrupt)?
                .try_into()
                .map_err(|_| corrupt())?,
        ) as usize;
        let meta = value.get(4..4 + len).ok_or_else(corrupt)?;
        let entry = serde_json::from_slice(meta).map_err(|_| corrupt())?;
        Ok((entry, value[4 + len..].to_vec()))
    }

    fn encode(entry: &KeyEntry, material: &[u8]) -> Vec<u8> {
        let meta = serde_json::to_vec(entry).expect("an entry always serializes");
        let mut value = Vec::with_capacity(4 + meta.len() + material.len());
        value.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        value.extend_from_slice(&meta);
        value.extend_from_slice(material);
        value
    }

    fn entries_with_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix) {
            let (key, value) = item?;
            out.push(Self::decode(&key, &value)?.0);
        }
        Ok(out)
    }

    fn store(&self, entry: &KeyEntry, material: &[u8]) -> Result<(), StoreError> {
        self.tree.insert(
            Self::key(&entry.address, &entry.fingerprint),
            Self::encode(entry, material),
        )?;
        Ok(())
    }
}

impl KeyStore for SledKeyStore {
    fn put(&self, candidate: Candidate, now: OffsetDateTime) -> Result<Put, StoreError> {
        let seen_in_mail = (candidate.source == Source::Mailflow).then_some(now);
        let key = Self::key(&candidate.address, &candidate.fingerprint);
        if let Some(value) = self.tree.get(&key)? {
            let (mut entry, _) = Self::decode(&key, &value)?;
            entry.last_seen = seen_in_mail.or(entry.last_seen);
            if candidate.source > entry.source {
                // Promoted (say, an admin imports a key first seen in mail): the entry
                // now lives by its new source's rules.
                entry.source = candidate.source;
                entry.added = now;
                entry.expires = KeyEntry::cache_expiry(candidate.source, now, self.lookup_ttl);
                entry.message_id = None;
                entry.sender = None;
            } else if candidate.source == entry.source && candidate.source == Source::Lookup {
                entry.expires = KeyEntry::cache_expiry(Source::Lookup, now, self.lookup_ttl);
            }
            // A mailflow sighting never extends the 180 days.
            if candidate.source >= entry.source {
                entry.can_encrypt = candidate.can_encrypt;
                entry.can_decrypt |= candidate.can_decrypt;
                entry.key_expires = candidate.key_expires;
                self.store(&entry, &candidate.material)?;
            } else {
                let material = Self::decode(&key, &value)?.1;
                self.store(&entry, &material)?;
            }
            return Ok(Put::Refreshed);
        }

        let mut replaced = Vec::new();
        if candidate.source == Source::Mailflow {
            for other in self.find(&candidate.address)? {
                if other.source != Source::Mailflow || other.kind != candidate.kind {
                    continue;
                }
                if other.key_created > candidate.key_created {
                    return Ok(Put::Ignored(
                        "an older key than the one already cached for this address",
                    ));
                }
                replaced.push(other);
            }
        }
        for old in &replaced {
            self.tree
                .remove(Self::key(&old.address, &old.fingerprint))?;
        }
        let entry = KeyEntry {
            address: candidate.address,
            kind: candidate.kind,
            fingerprint: candidate.fingerprint,
            source: candidate.source,
            added: now,
            last_seen: seen_in_mail,
            expires: KeyEntry::cache_expiry(candidate.source, now, self.lookup_ttl),
            message_id: candidate.message_id,
            sender: candidate.sender,
            can_encrypt: candidate.can_encrypt,
            can_decrypt: candidate.can_decrypt,
            key_created: candidate.key_created,
            key_expires: candidate.key_expires,
        };
        self.store(&entry, &candidate.material)?;
        Ok(if replaced.is_empty() {
            Put::Added
        } else {
            Put::Replaced(replaced.into_iter().map(|e| e.fingerprint).collect())
        })
    }

    fn find(&self, address: &str) -> Result<Vec<KeyEntry>, StoreError> {
        self.entries_with_prefix(&Self::prefix(address))
    }

    fn material(&self, address: &str, fingerprint: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = Self::key(address, fingerprint);
        match self.tree.get(&key)? {
            None => Ok(None),
            Some(value) => Ok(Some(Self::decode(&key, &value)?.1)),
        }
    }

    fn list(&self) -> Result<Vec<KeyEntry>, StoreError> {
        self.entries_with_prefix(b"")
    }

    fn delete(&self, address_or_fingerprint: &str) -> Result<Vec<KeyEntry>, StoreError> {
        let doomed: Vec<KeyEntry> = match super::address::normalize(address_or_fingerprint) {
            Some(address) => self.find(&address)?,
            None => {
                let fingerprint: String = address_or_fingerprint
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect::<String>()
                    .to_ascii_uppercase();
                self.list()?
                    .into_iter()
                    .filter(|e| e.fingerprint == fingerprint)
                    .collect()
            }
        };
        for entry in &doomed {
            self.tree
                .remove(Self::key(&entry.address, &entry.fingerprint))?;
        }
        self.tree.flush()?;
        Ok(doomed)
    }

    fn purge(&self, now: OffsetDateTime) -> Result<Vec<KeyEntry>, StoreError> {
        let expired: Vec<KeyEntry> = self
            .list()?
            .into_iter()
            .filter(|e| e.is_expired(now))
            .collect();
        for entry in &expired {
            self.tree
                .remove(Self::key(&entry.address, &entry.fingerprint))?;
            tracing::info!(
                address = %entry.address,
                fingerprint = %entry.fingerprint,
                source = entry.source.as_str(),
                expired = %entry.expires.map(|e| e.to_string()).unwrap_or_default(),
                "key cache: purged expired entry"
            );
        }
        if !expired.is_empty() {
            self.tree.flush()?;
        }
        Ok(expired)
    }
}
