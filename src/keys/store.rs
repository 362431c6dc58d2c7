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
}

impl KeyStore for SledKeyStore {
    fn put(&self, candidate: Candidate, now: OffsetDateTime) -> Result<Put, KeyStoreError> {
        if let Some(secret) = &candidate.sealed_secret {
            self.secrets
                .insert(candidate.fingerprint.as_bytes(), secret.as_slice())?;
        }
        let seen_in_mail = (candidate.source == Source::Mailflow).then_some(now);
        let key = Self::key(&candidate.address, &candidate.fingerprint);
        if let Some(value) = self.tree.get(&key)? {
            let (mut entry, _) = Self::decode(&key, &value)?;
            entry.last_seen = seen_in_mail.or(entry.last_seen);
            if seen_in_mail.is_some() {
                entry.seen = entry.seen.max(1).saturating_add(1);
            }
            let promoted = if entry.pending && candidate.source == Source::Mailflow {
                self.promotion(&entry, candidate.authenticated)?
            } else {
                None
            };
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
            // An admin's import or a lookup of the same key settles it; so does a
            // promotion, which retires the keys it waited on.
            if candidate.source > Source::Mailflow || promoted.is_some() {
                entry.pending = false;
            }
            for old in promoted.iter().flatten() {
                self.tree
                    .remove(Self::key(&old.address, &old.fingerprint))?;
            }
            // Only signed mail says what the owner's client reads, and the latest says
            // it best: a sighting updates it, an import or lookup of the same
            // certificate (which cannot know) leaves it as it was.
            if candidate.source == Source::Mailflow {
                entry.reads_aes_gcm = candidate.reads_aes_gcm;
            }
            // A mailflow sighting never extends the 180 days.
            if candidate.source >= entry.source {
                entry.can_encrypt = candidate.can_encrypt;
                entry.can_decrypt |= candidate.can_decrypt;
                entry.key_expires = candidate.key_expires;
                entry.legacy = candidate.legacy;
                entry.chain_validated = candidate.chain_validated;
                self.store(&entry, &candidate.material)?;
            } else {
                let material = Self::decode(&key, &value)?.1;
                self.store(&entry, &material)?;
            }
            return Ok(match promoted {
                Some(old) => Put::Replaced(old.into_iter().map(|e| e.fingerprint).collect()),
                None => Put::Refreshed,
            });
        }

        let mut replaced = Vec::new();
        let mut pending = Vec::new();
        if candidate.source == Source::Mailflow {
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
        if candidate.source == Source::Sckm {
            // A reset: the user's older SCKM keys of this kind stop being used to
            // encrypt, but stay to decrypt what was sent to them.
            for old in self.find(&candidate.address)? {
                if old.source == Source::Sckm && old.kind == candidate.kind && !old.retired {
                    let key = Self::key(&old.address, &old.fingerprint);
                    if let Some(value) = self.tree.get(&key)? {
                        let (mut entry, material) = Self::decode(&key, &value)?;
                        entry.retired = true;
                        self.store(&entry, &material)?;
                    }
                }
            }
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
            legacy: candidate.legacy,
            retired: false,
            seen: u32::from(candidate.source == Source::Mailflow),
            pending: !pending.is_empty(),
            chain_validated: candidate.chain_validated,
            reads_aes_gcm: candidate.reads_aes_gcm,
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

    fn delete(&self, address_or_fingerprint: &str) -> Result<Vec<KeyEntry>, KeyStoreError> {
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
mod tests {
    //! The lifetime rules, on a clock the tests set.

    use super::*;
    use crate::keys::entry::MAILFLOW_LIFETIME;
    use time::macros::datetime;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);
    const T0: OffsetDateTime = datetime!(2026-01-01 12:00 UTC);

    fn store(lookup_ttl: Duration) -> SledKeyStore {
        let db = sled::Config::new().temporary(true).open().unwrap();
        SledKeyStore::open(&db, lookup_ttl).unwrap()
    }

    fn key(address: &str, fingerprint: &str, source: Source, created: OffsetDateTime) -> Candidate {
        Candidate {
            address: address.into(),
            kind: KeyKind::Pgp,
            fingerprint: fingerprint.into(),
            source,
            message_id: Some("<m@example.org>".into()),
            sender: Some(address.into()),
            can_encrypt: true,
            can_decrypt: false,
            key_created: created,
            key_expires: None,
            material: fingerprint.as_bytes().to_vec(),
            legacy: false,
            sealed_secret: None,
            authenticated: false,
            chain_validated: false,
            reads_aes_gcm: false,
        }
    }

    #[test]
    fn mailflow_entry_expires_exactly_180_days_after_harvest() {
        let s = store(DAY);
        assert_eq!(
            s.put(key("a@example.org", "AA", Source::Mailflow, T0), T0)
                .unwrap(),
            Put::Added
        );
        let entry = &s.find("a@example.org").unwrap()[0];
        assert_eq!(entry.expires, Some(T0 + MAILFLOW_LIFETIME));
        assert_eq!(entry.expires, Some(datetime!(2026-06-30 12:00 UTC)));
        assert!(!entry.is_expired(T0 + 179 * DAY));
        assert!(entry.is_expired(T0 + 180 * DAY));
        assert!(entry.usable_for_encryption(T0, crate::keys::Allowed::EVERY_SOURCE));
        assert!(
            !entry.usable_for_encryption(T0, crate::keys::Allowed::NO_MAILFLOW),
            "mailflow keys need the admin's opt-in"
        );
    }

    #[test]
    fn second_sighting_does_not_extend_mailflow_lifetime() {
        let s = store(DAY);
        s.put(key("a@example.org", "AA", Source::Mailflow, T0), T0)
            .unwrap();
        let later = T0 + 100 * DAY;
        assert_eq!(
            s.put(key("a@example.org", "AA", Source::Mailflow, T0), later)
                .unwrap(),
            Put::Refreshed
        );
        let entries = s.find("a@example.org").unwrap();
        assert_eq!(entries.len(), 1, "refreshed, not duplicated");
        assert_eq!(entries[0].expires, Some(T0 + MAILFLOW_LIFETIME));
        assert_eq!(entries[0].added, T0);
        assert_eq!(entries[0].last_seen, Some(later));
    }

    #[test]
    fn newer_mailflow_key_replaces_older_and_never_the_reverse() {
        let s = store(DAY);
        s.put(key("a@example.org", "OLD", Source::Mailflow, T0), T0)
            .unwrap();
        let newer = key("a@example.org", "NEW", Source::Mailflow, T0 + DAY);
        assert_eq!(
            s.put(newer, T0 + 2 * DAY).unwrap(),
            Put::Replaced(vec!["OLD".into()])
        );
        let stale = key("a@example.org", "OLDER", Source::Mailflow, T0 - DAY);
        assert!(matches!(
            s.put(stale, T0 + 3 * DAY).unwrap(),
            Put::Ignored(_)
        ));
        let fingerprints: Vec<_> = s
            .find("a@example.org")
            .unwrap()
            .into_iter()
            .map(|e| e.fingerprint)
            .collect();
        assert_eq!(fingerprints, ["NEW"]);
    }

    /// The spoofing attack: a key seen for the first time, in mail nothing vouches for,
    /// took over an address whose key had been seen for months.
    #[test]
    fn a_newcomer_does_not_replace_an_established_key() {
        let s = store(DAY);
        let a = "a@example.org";
        s.put(key(a, "REAL", Source::Mailflow, T0), T0).unwrap();
        s.put(key(a, "REAL", Source::Mailflow, T0), T0 + 3 * DAY)
            .unwrap();
        let real = &s.find(a).unwrap()[0];
        assert!(real.is_established(), "{real:?}");

        // The attacker's key, newer, in spoofed mail: kept as pending, never used.
        let spoof = key(a, "SPOOF", Source::Mailflow, T0 + 10 * DAY);
        assert_eq!(
            s.put(spoof.clone(), T0 + 10 * DAY).unwrap(),
            Put::Pending(vec!["REAL".into()])
        );
        let entries = s.find(a).unwrap();
        let pending = entries.iter().find(|e| e.fingerprint == "SPOOF").unwrap();
        assert!(pending.pending);
        assert!(!pending.usable_for_encryption(T0 + 10 * DAY, crate::keys::Allowed::EVERY_SOURCE));
        assert!(
            entries
                .iter()
                .any(|e| e.fingerprint == "REAL" && !e.pending)
        );

        // The real sender goes on mailing: the spoofer, however often and long it
        // sends, never takes over.
        s.put(key(a, "REAL", Source::Mailflow, T0), T0 + 11 * DAY)
            .unwrap();
        for day in [12, 14, 20] {
            assert_eq!(
                s.put(spoof.clone(), T0 + day * DAY).unwrap(),
                Put::Refreshed
            );
        }
        let spoofed = s.find(a).unwrap();
        assert!(
            spoofed
                .iter()
                .any(|e| e.fingerprint == "SPOOF" && e.pending)
        );
        assert!(spoofed.iter().any(|e| e.fingerprint == "REAL"));
    }

    #[test]
    fn a_rotated_key_takes_over_once_established_and_the_old_one_is_gone() {
        let s = store(DAY);
        let a = "a@example.org";
        s.put(key(a, "OLD", Source::Mailflow, T0), T0).unwrap();
        s.put(key(a, "OLD", Source::Mailflow, T0), T0 + 2 * DAY)
            .unwrap();
        let new = key(a, "NEW", Source::Mailflow, T0 + 5 * DAY);
        assert!(matches!(
            s.put(new.clone(), T0 + 5 * DAY).unwrap(),
            Put::Pending(_)
        ));
        // Seen again the same day: not established yet.
        assert_eq!(s.put(new.clone(), T0 + 5 * DAY).unwrap(), Put::Refreshed);
        // Seen again a day later, the old key silent since: it takes over.
        assert_eq!(
            s.put(new, T0 + 7 * DAY).unwrap(),
            Put::Replaced(vec!["OLD".into()])
        );
        let entries = s.find(a).unwrap();
        assert_eq!(entries.len(), 1);
        assert!(
            !entries[0].pending
                && entries[0]
                    .usable_for_encryption(T0 + 7 * DAY, crate::keys::Allowed::EVERY_SOURCE)
        );
    }

    #[test]
    fn mail_vouched_for_replaces_an_established_key_at_once() {
        let s = store(DAY);
        let a = "a@example.org";
        s.put(key(a, "OLD", Source::Mailflow, T0), T0).unwrap();
        s.put(key(a, "OLD", Source::Mailflow, T0), T0 + 2 * DAY)
            .unwrap();
        let mut new = key(a, "NEW", Source::Mailflow, T0 + 5 * DAY);
        new.authenticated = true;
        assert_eq!(
            s.put(new, T0 + 5 * DAY).unwrap(),
            Put::Replaced(vec!["OLD".into()])
        );
        // A pending key is settled the same way, by vouched-for mail or an admin.
        let mut other = key("b@example.org", "B1", Source::Mailflow, T0);
        s.put(other.clone(), T0).unwrap();
        s.put(other.clone(), T0 + 2 * DAY).unwrap();
        other.fingerprint = "B2".into();
        other.key_created = T0 + DAY;
        assert!(matches!(
            s.put(other.clone(), T0 + 3 * DAY).unwrap(),
            Put::Pending(_)
        ));
        let mut admin = other.clone();
        admin.source = Source::Admin;
        s.put(admin, T0 + 3 * DAY).unwrap();
        let b2 = s
            .find("b@example.org")
            .unwrap()
            .into_iter()
            .find(|e| e.fingerprint == "B2")
            .unwrap();
        assert!(!b2.pending && b2.source == Source::Admin);
    }

    #[test]
    fn an_unvalidated_harvested_certificate_is_used_only_as_the_admin_allows() {
        let s = store(DAY);
        let mut cert = key("c@example.org", "CC", Source::Mailflow, T0);
        cert.kind = KeyKind::Smime;
        s.put(cert.clone(), T0).unwrap();
        let entry = &s.find("c@example.org").unwrap()[0];
        let with = |unvalidated_smime| crate::keys::Allowed {
            mailflow: true,
            unvalidated_smime,
        };
        assert!(entry.usable_for_encryption(T0, with(true)));
        assert!(!entry.usable_for_encryption(T0, with(false)));
        cert.chain_validated = true;
        s.put(cert, T0 + DAY).unwrap();
        let entry = &s.find("c@example.org").unwrap()[0];
        assert!(entry.chain_validated && entry.usable_for_encryption(T0, with(false)));
    }

    #[test]
    fn lookup_entry_follows_the_configured_ttl() {
        let hour = Duration::from_secs(3600);
        let s = store(hour);
        s.put(key("l@example.org", "LL", Source::Lookup, T0), T0)
            .unwrap();
        let entry = &s.find("l@example.org").unwrap()[0];
        assert_eq!(entry.expires, Some(T0 + hour));
        assert!(!entry.is_expired(T0 + hour - Duration::from_secs(1)));
        assert!(entry.is_expired(T0 + hour));
        // A new lookup result refreshes the TTL.
        s.put(
            key("l@example.org", "LL", Source::Lookup, T0),
            T0 + hour / 2,
        )
        .unwrap();
        assert_eq!(
            s.find("l@example.org").unwrap()[0].expires,
            Some(T0 + hour + hour / 2)
        );
    }

    #[test]
    fn admin_and_sckm_entries_never_expire_from_the_cache() {
        let s = store(DAY);
        s.put(key("x@example.org", "XX", Source::Admin, T0), T0)
            .unwrap();
        let mut sckm = key("y@example.com", "YY", Source::Sckm, T0);
        sckm.can_decrypt = true;
        s.put(sckm, T0).unwrap();
        assert!(s.list().unwrap().iter().all(|e| e.expires.is_none()));
        assert!(s.purge(T0 + 10_000 * DAY).unwrap().is_empty());
        // But a key whose own expiry has passed is not usable.
        let mut expiring = key("z@example.org", "ZZ", Source::Admin, T0);
        expiring.key_expires = Some(T0 + DAY);
        s.put(expiring, T0).unwrap();
        let entry = &s.find("z@example.org").unwrap()[0];
        assert!(entry.usable_for_encryption(T0, crate::keys::Allowed::NO_MAILFLOW));
        assert!(!entry.usable_for_encryption(T0 + 2 * DAY, crate::keys::Allowed::NO_MAILFLOW));
    }

    #[test]
    fn purge_removes_exactly_the_expired_entries() {
        let s = store(Duration::from_secs(3600));
        s.put(key("m@example.org", "M1", Source::Mailflow, T0), T0)
            .unwrap();
        s.put(
            key("n@example.org", "N1", Source::Mailflow, T0),
            T0 + 10 * DAY,
        )
        .unwrap();
        s.put(
            key("l@example.org", "L1", Source::Lookup, T0),
            T0 + 170 * DAY,
        )
        .unwrap();
        s.put(key("a@example.org", "A1", Source::Admin, T0), T0)
            .unwrap();
        let removed = s.purge(T0 + 180 * DAY).unwrap();
        let mut gone: Vec<_> = removed.into_iter().map(|e| e.fingerprint).collect();
        gone.sort();
        assert_eq!(gone, ["L1", "M1"]);
        let mut left: Vec<_> = s
            .list()
            .unwrap()
            .into_iter()
            .map(|e| e.fingerprint)
            .collect();
        left.sort();
        assert_eq!(left, ["A1", "N1"]);
    }

    #[test]
    fn a_higher_source_takes_over_and_a_lower_one_only_refreshes() {
        let s = store(DAY);
        s.put(key("a@example.org", "AA", Source::Mailflow, T0), T0)
            .unwrap();
        s.put(key("a@example.org", "AA", Source::Admin, T0), T0 + DAY)
            .unwrap();
        let entry = &s.find("a@example.org").unwrap()[0];
        assert_eq!((entry.source, entry.expires), (Source::Admin, None));
        s.put(
            key("a@example.org", "AA", Source::Mailflow, T0),
            T0 + 2 * DAY,
        )
        .unwrap();
        let entry = &s.find("a@example.org").unwrap()[0];
        assert_eq!(
            (entry.source, entry.expires, entry.last_seen),
            (Source::Admin, None, Some(T0 + 2 * DAY))
        );
    }

    #[test]
    fn one_cert_serves_several_addresses_and_delete_by_fingerprint_takes_all() {
        let s = store(DAY);
        s.put(key("a@example.org", "CAFE", Source::Admin, T0), T0)
            .unwrap();
        s.put(key("b@example.org", "CAFE", Source::Admin, T0), T0)
            .unwrap();
        s.put(key("b@example.org", "BEEF", Source::Admin, T0), T0)
            .unwrap();
        assert_eq!(
            s.material("a@example.org", "CAFE").unwrap().as_deref(),
            Some(&b"CAFE"[..])
        );
        assert_eq!(s.delete("cafe").unwrap().len(), 2);
        assert_eq!(s.delete("B@Example.org").unwrap().len(), 1);
        assert!(s.list().unwrap().is_empty());
        assert!(s.delete("nobody@example.org").unwrap().is_empty());
    }

    #[test]
    fn what_a_client_reads_follows_its_latest_signed_mail_and_survives_an_import() {
        let s = store(DAY);
        let a = "a@example.org";
        let reads = |s: &SledKeyStore| s.find(a).unwrap()[0].reads_aes_gcm;
        let mut gcm = key(a, "C1", Source::Mailflow, T0);
        gcm.kind = KeyKind::Smime;
        gcm.reads_aes_gcm = true;
        s.put(gcm.clone(), T0).unwrap();
        assert!(reads(&s));
        // The admin imports the same certificate: an import cannot know, so it stays.
        let mut admin = gcm.clone();
        admin.source = Source::Admin;
        admin.reads_aes_gcm = false;
        s.put(admin, T0 + DAY).unwrap();
        assert!(reads(&s) && s.find(a).unwrap()[0].source == Source::Admin);
        // Mail from an older client of theirs, with the same certificate, says otherwise.
        let mut older_client = gcm.clone();
        older_client.reads_aes_gcm = false;
        s.put(older_client, T0 + 2 * DAY).unwrap();
        assert!(!reads(&s));
        s.put(gcm, T0 + 3 * DAY).unwrap();
        assert!(reads(&s));
    }
}

#[cfg(test)]
mod sckm_tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_new_sckm_key_retires_the_old_one_which_still_decrypts() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let s = SledKeyStore::open(&db, Duration::from_secs(86400)).unwrap();
        let now = datetime!(2026-01-01 0:00 UTC);
        let sckm = |fp: &str| Candidate {
            address: "u@example.com".into(),
            kind: KeyKind::Pgp,
            fingerprint: fp.into(),
            source: Source::Sckm,
            message_id: None,
            sender: None,
            can_encrypt: true,
            can_decrypt: true,
            key_created: now,
            key_expires: None,
            material: vec![1],
            legacy: false,
            sealed_secret: Some(format!("sealed-{fp}").into_bytes()),
            authenticated: false,
            chain_validated: false,
            reads_aes_gcm: false,
        };
        s.put(sckm("OLD"), now).unwrap();
        s.put(sckm("NEW"), now).unwrap();
        let entries = s.find("u@example.com").unwrap();
        let old = entries.iter().find(|e| e.fingerprint == "OLD").unwrap();
        let new = entries.iter().find(|e| e.fingerprint == "NEW").unwrap();
        assert!(
            old.retired
                && old.can_decrypt
                && !old.usable_for_encryption(now, crate::keys::Allowed::NO_MAILFLOW)
        );
        assert!(!new.retired && new.usable_for_encryption(now, crate::keys::Allowed::NO_MAILFLOW));
        assert_eq!(s.sealed_secret("OLD").unwrap().unwrap(), b"sealed-OLD");
        s.delete("OLD").unwrap();
        assert!(
            s.sealed_secret("OLD").unwrap().is_none(),
            "the secret goes with its entry"
        );
        assert!(s.sealed_secret("NEW").unwrap().is_some());
    }
}
