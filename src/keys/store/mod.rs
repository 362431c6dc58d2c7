//! The [`KeyStore`] trait and its sled implementation.
//!
//! The trait is the seam for a shared backend, for gateways in a cluster: everything
//! outside this file talks to `dyn KeyStore`. The sled tree maps
//! `address NUL fingerprint` to `meta length (u32 BE) | meta (JSON) | key material`, so
//! the keys of one address are one prefix scan.

use std::time::Duration;

use time::OffsetDateTime;

use super::entry::{KeyEntry, KeyKind, Selector, Source};

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
    /// Only valid under a policy that accepts SHA-1 (see [`KeyEntry::legacy`]).
    pub legacy: bool,
    /// For SCKM keys: the secret, already sealed (see [`super::secrets`]).
    pub sealed_secret: Option<Vec<u8>>,
    /// For mailflow keys: the mail's From domain was vouched for by a trusted
    /// `Authentication-Results` field (DKIM or DMARC), so the key may replace one
    /// long seen for the address at once.
    pub authenticated: bool,
    /// For S/MIME certificates: the chain was validated against `[keys] smime_trust`.
    pub chain_validated: bool,
    /// For S/MIME certificates harvested from signed mail: the signer's
    /// sMIMECapabilities listed AES-GCM (see [`KeyEntry::reads_aes_gcm`]).
    pub reads_aes_gcm: bool,
    /// The key is revoked (an OpenPGP key revocation in its material). Stored so that
    /// the cached copy is marked, never to replace a revocation with an unrevoked copy.
    pub revoked: bool,
    /// For SCKM keys: the (sub)keys whose secret the gateway holds, newest first.
    pub decrypt_subkeys: Vec<String>,
    /// For a key moved from another gateway: its life there, which it keeps.
    pub carried: Option<Carried>,
}

/// What a key moved from another gateway (`keys import-bundle`) brings of its life
/// there. It keeps its times, so that a transfer never resets a lifetime rule: a
/// mailflow key still expires 180 days after it was first harvested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub added: OffsetDateTime,
    pub last_seen: Option<OffsetDateTime>,
    pub seen: u32,
    pub pending: bool,
    pub retired: bool,
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
    /// The entry existed and is now marked revoked.
    Revoked,
    /// A mailflow key seen for the first time while another key for the address is
    /// established (these fingerprints): it is kept, marked pending, and not used until
    /// it is established itself and the other stops appearing, or mail that vouches
    /// for it arrives.
    Pending(Vec<String>),
    /// Nothing was stored, for this reason.
    Ignored(&'static str),
}

/// Why the store failed. Always internal (disk, database); a retry may help.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("key store database: {0}")]
    Db(#[from] sled::Error),
    #[error("key store entry {0:?} does not decode")]
    Corrupt(String),
    #[error(transparent)]
    Shared(#[from] crate::store::postgres::PgError),
}

/// The key cache, as every other part of sealgate sees it.
pub trait KeyStore: Send + Sync {
    /// Stores or refreshes a key by the lifetime rules of its source.
    fn put(&self, candidate: Candidate, now: OffsetDateTime) -> Result<Put, KeyStoreError>;
    /// The entries for one (normalised) address, expired ones included.
    fn find(&self, address: &str) -> Result<Vec<KeyEntry>, KeyStoreError>;
    /// [`KeyStore::find`] for async code: a store that waits on the network (the
    /// shared store) lets the caller's task wait without holding its thread. A local
    /// store answers at once.
    fn find_async<'a>(
        &'a self,
        address: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Vec<KeyEntry>, KeyStoreError>> {
        Box::pin(std::future::ready(self.find(address)))
    }
    /// Whether the store answers from this machine, without waiting on the network:
    /// the embedded store is, the shared one is not. Only then may a caller read it on
    /// an async thread.
    fn is_local(&self) -> bool {
        false
    }
    /// The key material of one entry.
    fn material(&self, address: &str, fingerprint: &str) -> Result<Option<Vec<u8>>, KeyStoreError>;
    /// The sealed secret of an SCKM key.
    fn sealed_secret(&self, fingerprint: &str) -> Result<Option<Vec<u8>>, KeyStoreError>;
    /// Every entry, ordered by address.
    fn list(&self) -> Result<Vec<KeyEntry>, KeyStoreError>;
    /// Marks the entries of `fingerprint` revoked (with `material`, the key with its
    /// revocation, when given), and returns them.
    fn mark_revoked(
        &self,
        fingerprint: &str,
        material: Option<&[u8]>,
    ) -> Result<Vec<KeyEntry>, KeyStoreError>;
    /// Removes the entries of an address, or every entry of a fingerprint.
    fn delete(&self, address_or_fingerprint: &str) -> Result<Vec<KeyEntry>, KeyStoreError>;
    /// Removes the entries whose cache lifetime has passed, and returns them.
    fn purge(&self, now: OffsetDateTime) -> Result<Vec<KeyEntry>, KeyStoreError>;
}

/// A stored value that does not read back: the store's fault, named by its key.
fn corrupt(key: &[u8]) -> KeyStoreError {
    KeyStoreError::Corrupt(String::from_utf8_lossy(key).into_owned())
}

/// One line per purged entry, whichever store purged it.
fn log_purged(entry: &KeyEntry) {
    tracing::info!(
        address = %entry.address,
        fingerprint = %entry.fingerprint,
        source = entry.source.as_str(),
        expired = %entry.expires.map(|e| e.to_string()).unwrap_or_default(),
        "key cache: purged expired entry"
    );
}

/// The key cache `[store]` names: the shared store when there is one (see
/// [`crate::store::postgres::shared`]), else the `keys` tree of `db`.
pub fn open_configured(
    config: &crate::config::Config,
    db: &sled::Db,
    shared: Option<std::sync::Arc<crate::store::postgres::Postgres>>,
) -> Result<std::sync::Arc<dyn KeyStore>, KeyStoreError> {
    let lookup_ttl = config.keys.lookup_ttl.0;
    Ok(match shared {
        None => std::sync::Arc::new(SledKeyStore::open(db, lookup_ttl)?),
        Some(pg) => std::sync::Arc::new(postgres::PgKeyStore::new(pg, lookup_ttl)),
    })
}

/// The key cache on a tree of the gateway's sled database.
#[derive(Clone)]
pub struct SledKeyStore {
    tree: sled::Tree,
    /// Sealed SCKM secrets, by fingerprint.
    secrets: sled::Tree,
    /// `[keys] lookup_ttl`.
    lookup_ttl: Duration,
}

impl SledKeyStore {
    pub fn open(db: &sled::Db, lookup_ttl: Duration) -> Result<SledKeyStore, KeyStoreError> {
        Ok(SledKeyStore {
            tree: db.open_tree("keys")?,
            secrets: db.open_tree("secrets")?,
            lookup_ttl,
        })
    }

    fn key(address: &str, fingerprint: &str) -> Vec<u8> {
        format!("{address}\0{fingerprint}").into_bytes()
    }

    fn prefix(address: &str) -> Vec<u8> {
        format!("{address}\0").into_bytes()
    }

    fn decode(key: &[u8], value: &[u8]) -> Result<(KeyEntry, Vec<u8>), KeyStoreError> {
        let (meta, material) = Self::split(key, value)?;
        let entry = serde_json::from_slice(meta).map_err(|_| corrupt(key))?;
        Ok((entry, material.to_vec()))
    }

    /// A value as [`Self::encode`] lays it out: the entry's JSON, and the material.
    /// Reading the material alone leaves the JSON unparsed: parsing it was about 60 %
    /// of the cost of fetching a recipient's key for each message (perf).
    fn split<'v>(key: &[u8], value: &'v [u8]) -> Result<(&'v [u8], &'v [u8]), KeyStoreError> {
        let len = u32::from_be_bytes(
            value
                .get(..4)
                .ok_or_else(|| corrupt(key))?
                .try_into()
                .map_err(|_| corrupt(key))?,
        ) as usize;
        let meta = value
            .get(4..)
            .and_then(|rest| rest.get(..len))
            .ok_or_else(|| corrupt(key))?;
        Ok((meta, &value[4 + len..]))
    }

    fn encode(entry: &KeyEntry, material: &[u8]) -> Vec<u8> {
        let meta = serde_json::to_vec(entry).expect("an entry always serializes");
        let mut value = Vec::with_capacity(4 + meta.len() + material.len());
        value.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        value.extend_from_slice(&meta);
        value.extend_from_slice(material);
        value
    }

    /// Every entry with its material, and every sealed secret: all there is, for
    /// `store migrate`.
    #[allow(clippy::type_complexity)]
    pub fn everything(
        &self,
    ) -> Result<(Vec<(KeyEntry, Vec<u8>)>, Vec<(String, Vec<u8>)>), KeyStoreError> {
        let mut entries = Vec::new();
        for item in self.tree.iter() {
            let (key, value) = item?;
            entries.push(Self::decode(&key, &value)?);
        }
        let mut secrets = Vec::new();
        for item in self.secrets.iter() {
            let (fingerprint, sealed) = item?;
            secrets.push((
                String::from_utf8_lossy(&fingerprint).into_owned(),
                sealed.to_vec(),
            ));
        }
        Ok((entries, secrets))
    }

    fn entries_with_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyEntry>, KeyStoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(prefix) {
            let (key, value) = item?;
            out.push(Self::decode(&key, &value)?.0);
        }
        Ok(out)
    }

    fn store(&self, entry: &KeyEntry, material: &[u8]) -> Result<(), KeyStoreError> {
        self.tree.insert(
            Self::key(&entry.address, &entry.fingerprint),
            Self::encode(entry, material),
        )?;
        Ok(())
    }
}

impl KeyStore for SledKeyStore {
    fn is_local(&self) -> bool {
        true
    }

    fn put(&self, mut candidate: Candidate, now: OffsetDateTime) -> Result<Put, KeyStoreError> {
        let secret = candidate.sealed_secret.take();
        let fingerprint = candidate.fingerprint.clone();
        let mut rows = Vec::new();
        for item in self.tree.scan_prefix(Self::prefix(&candidate.address)) {
            let (key, value) = item?;
            rows.push(Self::decode(&key, &value)?);
        }
        let address = candidate.address.clone();
        let mut rows = rules::AddressRows::new(rows);
        let put = rules::put(&mut rows, candidate, self.lookup_ttl, now);
        if let (Some(secret), false) = (secret, matches!(put, Put::Ignored(_))) {
            self.secrets.insert(fingerprint.as_bytes(), secret)?;
        }
        let writes = rows.writes();
        for removed in &writes.removed {
            self.tree.remove(Self::key(&address, removed))?;
        }
        for (entry, material) in &writes.stored {
            self.store(entry, material)?;
        }
        Ok(put)
    }

    fn find(&self, address: &str) -> Result<Vec<KeyEntry>, KeyStoreError> {
        self.entries_with_prefix(&Self::prefix(address))
    }

    fn material(&self, address: &str, fingerprint: &str) -> Result<Option<Vec<u8>>, KeyStoreError> {
        let key = Self::key(address, fingerprint);
        match self.tree.get(&key)? {
            None => Ok(None),
            Some(value) => Ok(Some(Self::split(&key, &value)?.1.to_vec())),
        }
    }

    fn sealed_secret(&self, fingerprint: &str) -> Result<Option<Vec<u8>>, KeyStoreError> {
        Ok(self
            .secrets
            .get(fingerprint.as_bytes())?
            .map(|v| v.to_vec()))
    }

    fn list(&self) -> Result<Vec<KeyEntry>, KeyStoreError> {
        self.entries_with_prefix(b"")
    }

    fn mark_revoked(
        &self,
        fingerprint: &str,
        material: Option<&[u8]>,
    ) -> Result<Vec<KeyEntry>, KeyStoreError> {
        let mut marked = Vec::new();
        for entry in self
            .list()?
            .into_iter()
            .filter(|e| e.fingerprint == fingerprint)
        {
            let key = Self::key(&entry.address, &entry.fingerprint);
            let Some(value) = self.tree.get(&key)? else {
                continue;
            };
            let (mut entry, old) = Self::decode(&key, &value)?;
            entry.revoked = true;
            self.store(&entry, material.unwrap_or(&old))?;
            marked.push(entry);
        }
        self.tree.flush()?;
        Ok(marked)
    }

    fn delete(&self, address_or_fingerprint: &str) -> Result<Vec<KeyEntry>, KeyStoreError> {
        let doomed: Vec<KeyEntry> = match Selector::parse(address_or_fingerprint) {
            Some(Selector::Address(address)) => self.find(&address)?,
            Some(selector) => self
                .list()?
                .into_iter()
                .filter(|e| selector.matches(e))
                .collect(),
            None => Vec::new(),
        };
        for entry in &doomed {
            self.tree
                .remove(Self::key(&entry.address, &entry.fingerprint))?;
        }
        // A secret goes with the last entry that uses it.
        let remaining = self.list()?;
        for entry in &doomed {
            if !remaining.iter().any(|e| e.fingerprint == entry.fingerprint) {
                self.secrets.remove(entry.fingerprint.as_bytes())?;
            }
        }
        self.tree.flush()?;
        Ok(doomed)
    }

    fn purge(&self, now: OffsetDateTime) -> Result<Vec<KeyEntry>, KeyStoreError> {
        let expired: Vec<KeyEntry> = self
            .list()?
            .into_iter()
            .filter(|e| e.is_expired(now))
            .collect();
        for entry in &expired {
            self.tree
                .remove(Self::key(&entry.address, &entry.fingerprint))?;
            log_purged(entry);
        }
        if !expired.is_empty() {
            self.tree.flush()?;
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod carried;
pub mod postgres;
mod rules;

#[cfg(test)]
mod tests;
