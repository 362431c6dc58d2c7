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
}

/// The key cache, as every other part of sealgate sees it.
pub trait KeyStore: Send + Sync {
    /// Stores or refreshes a key by the lifetime rules of its source.
    fn put(&self, candidate: Candidate, now: OffsetDateTime) -> Result<Put, KeyStoreError>;
    /// The entries for one (normalised) address, expired ones included.
    fn find(&self, address: &str) -> Result<Vec<KeyEntry>, KeyStoreError>;
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
        let corrupt = || KeyStoreError::Corrupt(String::from_utf8_lossy(key).into_owned());
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

    /// Whether a pending mailflow key, seen again, takes over, and from which keys:
    /// the mail vouched for it, or it is established itself and the keys it waits on
    /// have not been seen since it first appeared (a sender who rotated their key stops
    /// sending the old one; a spoofer cannot stop the real sender).
    fn promotion(
        &self,
        pending: &KeyEntry,
        authenticated: bool,
    ) -> Result<Option<Vec<KeyEntry>>, KeyStoreError> {
        let current: Vec<KeyEntry> = self
            .find(&pending.address)?
            .into_iter()
            .filter(|e| {
                e.source == Source::Mailflow
                    && e.kind == pending.kind
                    && !e.pending
                    && e.fingerprint != pending.fingerprint
            })
            .collect();
        let quiet = current
            .iter()
            .all(|e| e.last_seen.is_none_or(|seen| seen < pending.added));
        Ok((authenticated || (pending.is_established() && quiet)).then_some(current))
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

    /// Stores `candidate` again over `entry`, its existing entry (with `material`).
    fn refresh(
        &self,
        mut entry: KeyEntry,
        material: Vec<u8>,
        candidate: Candidate,
        carried: Option<&Carried>,
        now: OffsetDateTime,
    ) -> Result<Put, KeyStoreError> {
        match carried {
            // A transfer is not a sighting: it brings the other gateway's sightings.
            Some(carried) => {
                entry.last_seen = entry.last_seen.max(carried.last_seen);
                entry.seen = entry.seen.max(carried.seen);
                entry.retired |= carried.retired;
            }
            None if candidate.source == Source::Mailflow => {
                entry.last_seen = Some(now);
                entry.seen = entry.seen.max(1).saturating_add(1);
            }
            None => {}
        }
        // A revocation is signed by the key itself: it holds whatever the source that
        // brought it, and no copy without it (an old file, older mail, a stale DNS
        // record, another gateway) undoes it.
        if candidate.revoked || entry.revoked {
            let newly = !entry.revoked;
            entry.revoked = true;
            let material = if candidate.revoked {
                candidate.material
            } else {
                material
            };
            self.store(&entry, &material)?;
            return Ok(if newly { Put::Revoked } else { Put::Refreshed });
        }
        let promoted = if entry.pending && candidate.source == Source::Mailflow && carried.is_none()
        {
            self.promotion(&entry, candidate.authenticated)?
        } else {
            None
        };
        if candidate.source > entry.source {
            // Promoted (say, an admin imports a key first seen in mail): the entry now
            // lives by its new source's rules.
            entry.source = candidate.source;
            entry.added = carried.map_or(now, |c| c.added);
            entry.expires = KeyEntry::cache_expiry(entry.source, entry.added, self.lookup_ttl);
            entry.message_id = None;
            entry.sender = None;
        } else if candidate.source == entry.source {
            match (carried, candidate.source) {
                // The earlier harvest counts: the 180 days are never extended.
                (Some(carried), Source::Mailflow) => {
                    entry.added = entry.added.min(carried.added);
                    entry.expires =
                        KeyEntry::cache_expiry(Source::Mailflow, entry.added, self.lookup_ttl);
                }
                // The later lookup counts, as it would here.
                (Some(carried), Source::Lookup) => {
                    entry.expires = entry.expires.max(KeyEntry::cache_expiry(
                        Source::Lookup,
                        carried.added,
                        self.lookup_ttl,
                    ));
                }
                (None, Source::Lookup) => {
                    entry.expires = KeyEntry::cache_expiry(Source::Lookup, now, self.lookup_ttl);
                }
                _ => {}
            }
        }
        match carried {
            // Settled if it is settled on either gateway.
            Some(carried) => entry.pending &= carried.pending,
            // An admin's import or a lookup of the same key settles it; so does a
            // promotion, which retires the keys it waited on.
            None if candidate.source > Source::Mailflow || promoted.is_some() => {
                entry.pending = false
            }
            None => {}
        }
        for old in promoted.iter().flatten() {
            self.tree
                .remove(Self::key(&old.address, &old.fingerprint))?;
        }
        // Only signed mail says what the owner's client reads, and the latest says it
        // best: a sighting updates it, an import or lookup of the same certificate
        // (which cannot know) leaves it as it was.
        if candidate.source == Source::Mailflow {
            entry.reads_aes_gcm = candidate.reads_aes_gcm;
        }
        if candidate.source >= entry.source {
            entry.can_encrypt = candidate.can_encrypt;
            entry.can_decrypt |= candidate.can_decrypt;
            entry.key_expires = candidate.key_expires;
            entry.legacy = candidate.legacy;
            entry.chain_validated = candidate.chain_validated;
            entry.decrypt_subkeys = candidate.decrypt_subkeys;
            self.store(&entry, &candidate.material)?;
        } else {
            self.store(&entry, &material)?;
        }
        Ok(match promoted {
            Some(old) => Put::Replaced(old.into_iter().map(|e| e.fingerprint).collect()),
            None => Put::Refreshed,
        })
    }

    /// Stores `candidate`, a key not yet cached for its address.
    fn insert(
        &self,
        candidate: Candidate,
        carried: Option<Carried>,
        now: OffsetDateTime,
    ) -> Result<Put, KeyStoreError> {
        let mut replaced = Vec::new();
        let mut pending = Vec::new();
        // A revoked key is stored to be known as revoked; it replaces nothing.
        if candidate.source == Source::Mailflow && !candidate.revoked {
            for other in self.find(&candidate.address)? {
                if other.source != Source::Mailflow || other.kind != candidate.kind || other.pending
                {
                    continue;
                }
                if other.key_created > candidate.key_created {
                    return Ok(Put::Ignored(
                        "an older key than the one already cached for this address",
                    ));
                }
                if other.is_established() && !candidate.authenticated {
                    pending.push(other.fingerprint);
                } else {
                    replaced.push(other);
                }
            }
            if !pending.is_empty() {
                // A spoofed From with a key of the attacker's must not take over an
                // address whose key has been seen for a while: the newcomer waits.
                replaced.clear();
            }
        }
        for old in &replaced {
            self.tree
                .remove(Self::key(&old.address, &old.fingerprint))?;
        }
        let retired = match &carried {
            None if candidate.source == Source::Sckm => {
                // A reset: the user's older SCKM keys of this kind stop being used to
                // encrypt, but stay to decrypt what was sent to them.
                self.retire_sckm(&candidate, |_| true)?;
                false
            }
            // From another gateway, the newest current key stays current, wherever
            // it was imported first.
            Some(carried) if candidate.source == Source::Sckm && !carried.retired => self
                .retire_sckm(&candidate, |other| {
                    other.key_created <= candidate.key_created
                })?,
            Some(carried) => carried.retired,
            None => false,
        };
        let seen_in_mail = (candidate.source == Source::Mailflow).then_some(now);
        let added = carried.as_ref().map_or(now, |c| c.added);
        let entry = KeyEntry {
            address: candidate.address,
            kind: candidate.kind,
            fingerprint: candidate.fingerprint,
            source: candidate.source,
            added,
            last_seen: carried.as_ref().map_or(seen_in_mail, |c| c.last_seen),
            expires: KeyEntry::cache_expiry(candidate.source, added, self.lookup_ttl),
            message_id: candidate.message_id,
            sender: candidate.sender,
            can_encrypt: candidate.can_encrypt,
            can_decrypt: candidate.can_decrypt,
            key_created: candidate.key_created,
            key_expires: candidate.key_expires,
            legacy: candidate.legacy,
            retired,
            seen: carried
                .as_ref()
                .map_or(u32::from(candidate.source == Source::Mailflow), |c| c.seen),
            pending: !pending.is_empty() || carried.as_ref().is_some_and(|c| c.pending),
            chain_validated: candidate.chain_validated,
            reads_aes_gcm: candidate.reads_aes_gcm,
            revoked: candidate.revoked,
            decrypt_subkeys: candidate.decrypt_subkeys,
            details: None,
        };
        self.store(&entry, &candidate.material)?;
        Ok(if !pending.is_empty() {
            Put::Pending(pending)
        } else if replaced.is_empty() {
            Put::Added
        } else {
            Put::Replaced(replaced.into_iter().map(|e| e.fingerprint).collect())
        })
    }

    /// Marks retired the current SCKM keys of `candidate`'s address and kind that
    /// `older` picks, and says whether a current one it did not pick remains.
    fn retire_sckm(
        &self,
        candidate: &Candidate,
        older: impl Fn(&KeyEntry) -> bool,
    ) -> Result<bool, KeyStoreError> {
        let mut newer_remains = false;
        for old in self.find(&candidate.address)? {
            if old.source != Source::Sckm || old.kind != candidate.kind || old.retired {
                continue;
            }
            if !older(&old) {
                newer_remains = true;
                continue;
            }
            let key = Self::key(&old.address, &old.fingerprint);
            if let Some(value) = self.tree.get(&key)? {
                let (mut entry, material) = Self::decode(&key, &value)?;
                entry.retired = true;
                self.store(&entry, &material)?;
            }
        }
        Ok(newer_remains)
    }
}

impl KeyStore for SledKeyStore {
    fn put(&self, mut candidate: Candidate, now: OffsetDateTime) -> Result<Put, KeyStoreError> {
        let carried = candidate.carried.take();
        if let Some(carried) = &carried {
            // An entry whose lifetime passed on the way is not brought back to life.
            let expires = KeyEntry::cache_expiry(candidate.source, carried.added, self.lookup_ttl);
            if expires.is_some_and(|expires| expires <= now) {
                return Ok(Put::Ignored("its cache lifetime has passed"));
            }
        }
        if let Some(secret) = &candidate.sealed_secret {
            self.secrets
                .insert(candidate.fingerprint.as_bytes(), secret.as_slice())?;
        }
        let key = Self::key(&candidate.address, &candidate.fingerprint);
        match self.tree.get(&key)? {
            Some(value) => {
                let (entry, material) = Self::decode(&key, &value)?;
                self.refresh(entry, material, candidate, carried.as_ref(), now)
            }
            None => self.insert(candidate, carried, now),
        }
    }

    fn find(&self, address: &str) -> Result<Vec<KeyEntry>, KeyStoreError> {
        self.entries_with_prefix(&Self::prefix(address))
    }

    fn material(&self, address: &str, fingerprint: &str) -> Result<Option<Vec<u8>>, KeyStoreError> {
        let key = Self::key(address, fingerprint);
        match self.tree.get(&key)? {
            None => Ok(None),
            Some(value) => Ok(Some(Self::decode(&key, &value)?.1)),
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

#[cfg(test)]
mod carried;
#[cfg(test)]
mod tests;
