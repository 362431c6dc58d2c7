//! The rules for storing a key, once for every backend: pure, over the entries of the
//! one address a key is stored for. A backend loads that address's entries
//! ([`AddressRows::new`]), lets [`put`] apply the rules, and writes back what changed
//! ([`AddressRows::writes`]) in one step (for PostgreSQL, one transaction under a lock on
//! the address, so that two gateways storing keys for it at once do not lose a write).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use time::OffsetDateTime;

use super::{Candidate, Carried, Put};
use crate::keys::entry::{KeyEntry, Source};

/// The entries of one address, by fingerprint, and which of them changed.
pub struct AddressRows {
    rows: BTreeMap<String, (KeyEntry, Vec<u8>)>,
    changed: BTreeSet<String>,
    removed: BTreeSet<String>,
}

/// What storing a key changed for its address: entries (with material) to write, and
/// fingerprints whose entries to remove.
pub struct Writes {
    pub stored: Vec<(KeyEntry, Vec<u8>)>,
    pub removed: Vec<String>,
}

impl AddressRows {
    /// The entries of one address, with their material.
    pub fn new(rows: impl IntoIterator<Item = (KeyEntry, Vec<u8>)>) -> AddressRows {
        AddressRows {
            rows: rows
                .into_iter()
                .map(|(entry, material)| (entry.fingerprint.clone(), (entry, material)))
                .collect(),
            changed: BTreeSet::new(),
            removed: BTreeSet::new(),
        }
    }

    fn entries(&self) -> Vec<KeyEntry> {
        self.rows.values().map(|(entry, _)| entry.clone()).collect()
    }

    fn take(&mut self, fingerprint: &str) -> Option<(KeyEntry, Vec<u8>)> {
        self.rows.get(fingerprint).cloned()
    }

    fn store(&mut self, entry: KeyEntry, material: Vec<u8>) {
        let fingerprint = entry.fingerprint.clone();
        self.removed.remove(&fingerprint);
        self.changed.insert(fingerprint.clone());
        self.rows.insert(fingerprint, (entry, material));
    }

    fn remove(&mut self, fingerprint: &str) {
        if self.rows.remove(fingerprint).is_some() {
            self.changed.remove(fingerprint);
            self.removed.insert(fingerprint.to_string());
        }
    }

    fn retire(&mut self, fingerprint: &str) {
        if let Some((mut entry, material)) = self.take(fingerprint) {
            entry.retired = true;
            self.store(entry, material);
        }
    }

    /// What to write back.
    pub fn writes(mut self) -> Writes {
        Writes {
            stored: self
                .changed
                .iter()
                .filter_map(|fingerprint| self.rows.remove(fingerprint))
                .collect(),
            removed: self.removed.into_iter().collect(),
        }
    }
}

/// Stores `candidate` among `rows` (the entries of its address) by the lifetime and
/// precedence rules of its source, at `now`. The caller stores the candidate's sealed
/// secret unless the result is [`Put::Ignored`].
pub fn put(
    rows: &mut AddressRows,
    mut candidate: Candidate,
    lookup_ttl: Duration,
    now: OffsetDateTime,
) -> Put {
    let carried = candidate.carried.take();
    if let Some(carried) = &carried {
        // An entry whose lifetime passed on the way is not brought back to life.
        let expires = KeyEntry::cache_expiry(candidate.source, carried.added, lookup_ttl);
        if expires.is_some_and(|expires| expires <= now) {
            return Put::Ignored("its cache lifetime has passed");
        }
    }
    let mut rules = Rules { rows, lookup_ttl };
    match rules.rows.take(&candidate.fingerprint) {
        Some((entry, material)) => rules.refresh(entry, material, candidate, carried.as_ref(), now),
        None => rules.insert(candidate, carried, now),
    }
}

struct Rules<'a> {
    rows: &'a mut AddressRows,
    lookup_ttl: Duration,
}

impl Rules<'_> {
    /// Whether a pending mailflow key, seen again, takes over, and from which keys:
    /// the mail vouched for it, or it is established itself and the keys it waits on
    /// have not been seen since it first appeared (a sender who rotated their key stops
    /// sending the old one; a spoofer cannot stop the real sender).
    fn promotion(&mut self, pending: &KeyEntry, authenticated: bool) -> Option<Vec<KeyEntry>> {
        let current: Vec<KeyEntry> = self
            .rows
            .entries()
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
        (authenticated || (pending.is_established() && quiet)).then_some(current)
    }

    /// Stores `candidate` again over `entry`, its existing entry (with `material`).
    fn refresh(
        &mut self,
        mut entry: KeyEntry,
        material: Vec<u8>,
        candidate: Candidate,
        carried: Option<&Carried>,
        now: OffsetDateTime,
    ) -> Put {
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
            self.rows.store(entry, material);
            return if newly { Put::Revoked } else { Put::Refreshed };
        }
        let promoted = if entry.pending && candidate.source == Source::Mailflow && carried.is_none()
        {
            self.promotion(&entry, candidate.authenticated)
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
            self.rows.remove(&old.fingerprint);
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
            self.rows.store(entry, candidate.material);
        } else {
            self.rows.store(entry, material);
        }
        match promoted {
            Some(old) => Put::Replaced(old.into_iter().map(|e| e.fingerprint).collect()),
            None => Put::Refreshed,
        }
    }

    /// Stores `candidate`, a key not yet cached for its address.
    fn insert(
        &mut self,
        candidate: Candidate,
        carried: Option<Carried>,
        now: OffsetDateTime,
    ) -> Put {
        let mut replaced = Vec::new();
        let mut pending = Vec::new();
        // A revoked key is stored to be known as revoked; it replaces nothing.
        if candidate.source == Source::Mailflow && !candidate.revoked {
            for other in self.rows.entries() {
                if other.source != Source::Mailflow || other.kind != candidate.kind || other.pending
                {
                    continue;
                }
                if other.key_created > candidate.key_created {
                    return Put::Ignored(
                        "an older key than the one already cached for this address",
                    );
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
            self.rows.remove(&old.fingerprint);
        }
        let retired = match &carried {
            None if candidate.source == Source::Sckm => {
                // A reset: the user's older SCKM keys of this kind stop being used to
                // encrypt, but stay to decrypt what was sent to them.
                self.retire_sckm(&candidate, |_| true);
                false
            }
            // From another gateway, the newest current key stays current, wherever
            // it was imported first.
            Some(carried) if candidate.source == Source::Sckm && !carried.retired => self
                .retire_sckm(&candidate, |other| {
                    other.key_created <= candidate.key_created
                }),
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
        self.rows.store(entry, candidate.material);
        if !pending.is_empty() {
            Put::Pending(pending)
        } else if replaced.is_empty() {
            Put::Added
        } else {
            Put::Replaced(replaced.into_iter().map(|e| e.fingerprint).collect())
        }
    }

    /// Marks retired the current SCKM keys of `candidate`'s address and kind that
    /// `older` picks, and says whether a current one it did not pick remains.
    fn retire_sckm(&mut self, candidate: &Candidate, older: impl Fn(&KeyEntry) -> bool) -> bool {
        let mut newer_remains = false;
        for old in self.rows.entries() {
            if old.source != Source::Sckm || old.kind != candidate.kind || old.retired {
                continue;
            }
            if !older(&old) {
                newer_remains = true;
                continue;
            }
            self.rows.retire(&old.fingerprint);
        }
        newer_remains
    }
}
