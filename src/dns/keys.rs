//! A recipient's key lookup: OPENPGPKEY (RFC 7929) and SMIMEA (RFC 8162) records,
//! asked for in parallel, accepted only when DNSSEC validated them (or the domain is in
//! `insecure_domains`), turned into key cache entries with source `lookup` by the same
//! rules as an admin's import.
//!
//! A recipient with nothing usable is remembered in the negative cache, so that RCPT
//! handling can skip the lookup without I/O ([`KeyLookup::is_negative_cached`]). An
//! unavailable answer (SERVFAIL, timeout, bogus DNSSEC) is never remembered: it says
//! nothing about the recipient.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::dnssec::DnssecStatus;
use super::negative::{DEFAULT_CAPACITY, NegativeCache};
use super::resolver::{Answer, DnsResolver, TrustAnchor, Validation};
use super::{DnsError, resolver};
use crate::config::LookupConfig;
use crate::keys::material::{self, Origin};
use crate::keys::store::{Candidate, KeyStore};
use crate::keys::{KeyEntry, KeyKind, Source, address};

/// What a lookup learnt about a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Keys found, now in the key cache (as stored there: a key the cache already held
    /// from a higher source keeps that source).
    Keys(Vec<KeyEntry>),
    /// The recipient publishes no usable key: no record, or only records that are not
    /// DNSSEC-validated, not for this address, or not fit to encrypt to. Remembered for
    /// `negative_ttl`.
    NoKey,
    /// Nothing was learnt (SERVFAIL, timeout, network, bogus DNSSEC, key store error):
    /// the policy's `lookup_offline` decides. Never remembered.
    Unavailable(String),
    /// Nothing was learnt, and nothing can be until an admin acts: the lookup needed
    /// DNSSEC, its answer failed, and the resolver is known not to validate (it strips
    /// DNSSEC; see [`super::dnssec`]). Not an outage: the policy's `no_key` decides.
    CannotValidate(String),
}

/// Key lookups for recipients, with the negative cache and the key cache they fill.
pub struct KeyLookup {
    /// Asked for the records.
    resolver: DnsResolver,
    /// `[lookup] insecure_domains`, as fully qualified ASCII names (`example.org.`):
    /// their answers are taken without DNSSEC.
    insecure_domains: HashSet<String>,
    /// `[keys] lookup_ttl`. The key store gives lookup entries this lifetime; an entry
    /// that expires later than this from now was stored under a longer `lookup_ttl` (the
    /// admin has shortened it since) and is looked up again rather than trusted.
    lookup_ttl: Duration,
    /// Recipients without a key, for `[lookup] negative_ttl`.
    negative: NegativeCache,
    /// Domains whose last lookup went unanswered, for `[lookup] failure_rest`: the
    /// circuit breaker of key lookup. Without it, a resolver that is down (or strips
    /// DNSSEC) would cost every message to that domain a full timeout.
    failing: NegativeCache,
    /// Where found keys go.
    keys: Arc<dyn KeyStore>,
    /// What the probes found about the resolver's DNSSEC: whether a failed lookup that
    /// needed it is an outage or the resolver's lasting inability.
    dnssec: Arc<DnssecStatus>,
}

/// A recipient as DNS sees it.
struct Recipient {
    /// The local part exactly as written: RFC 7929 hashes it with no folding.
    local: String,
    /// The domain, IDNA ASCII, lower case, fully qualified.
    domain: Name,
    /// The address as the key cache stores it (see [`address::normalize`]).
    normalized: String,
}

impl Recipient {
    fn parse(address: &str) -> Option<Recipient> {
        let written = address.trim().trim_start_matches('<').trim_end_matches('>');
        let (local, _) = written.rsplit_once('@')?;
        let normalized = address::normalize(written)?;
        let (_, domain) = normalized.rsplit_once('@')?;
        Some(Recipient {
            local: local.to_string(),
            domain: resolver::fqdn(domain).ok()?,
            normalized,
        })
    }

    /// The negative cache's key: the local part as written (it is what was asked), the
    /// domain normalised.
    fn cache_key(&self) -> String {
        let domain = self.domain.to_ascii();
        format!("{}@{}", self.local, domain.trim_end_matches('.'))
    }
}

/// The owner name of a recipient's OPENPGPKEY (`_openpgpkey`, RFC 7929 §3) or SMIMEA
/// (`_smimecert`, RFC 8162 §3) record: the first 28 octets of SHA-256 of the local part
/// (UTF-8, as written) in lower-case hex, then the label, then the domain (in ASCII),
/// fully qualified. `org publish dane` writes records under the same names.
pub fn record_owner(kind: KeyKind, local_part: &str, ascii_domain: &str) -> String {
    let digest = Sha256::digest(local_part.as_bytes());
    let hash: String = digest[..28].iter().map(|b| format!("{b:02x}")).collect();
    let label = match kind {
        KeyKind::Pgp => "_openpgpkey",
        KeyKind::Smime => "_smimecert",
    };
    format!("{hash}.{label}.{}.", ascii_domain.trim_end_matches('.'))
}

fn record_name(kind: KeyKind, local_part: &str, domain: &Name) -> Result<Name, DnsError> {
    let owner = record_owner(kind, local_part, &domain.to_ascii());
    Name::from_ascii(&owner).map_err(|_| DnsError::BadName(owner))
}

/// What one record type's answer gave.
#[derive(Default)]
struct Harvest {
    /// Usable keys, ready for the cache.
    candidates: Vec<Candidate>,
    /// Records found (accepted or not), for the log.
    records: usize,
    /// Why records were not used, for the log.
    refused: Vec<String>,
    /// The question went unanswered: the reason.
    unavailable: Option<String>,
}

impl KeyLookup {
    /// Key lookups through the resolvers `[lookup]` names, filling `keys`.
    pub fn new(
        config: &LookupConfig,
        lookup_ttl: Duration,
        keys: Arc<dyn KeyStore>,
    ) -> Result<KeyLookup, DnsError> {
        Ok(KeyLookup::with_resolver(
            DnsResolver::new(config)?,
            config,
            lookup_ttl,
            keys,
        ))
    }

    /// Like [`KeyLookup::new`], trusting `anchors` beside the root's keys. For tests: a
    /// zone signed on loopback has no chain of trust to the root.
    pub fn with_trust_anchors(
        config: &LookupConfig,
        lookup_ttl: Duration,
        keys: Arc<dyn KeyStore>,
        anchors: &[TrustAnchor],
    ) -> Result<KeyLookup, DnsError> {
        Ok(KeyLookup::with_resolver(
            DnsResolver::with_trust_anchors(config, anchors)?,
            config,
            lookup_ttl,
            keys,
        ))
    }

    /// Key lookups through a resolver made elsewhere (one that the relay shares).
    pub fn with_resolver(
        resolver: DnsResolver,
        config: &LookupConfig,
        lookup_ttl: Duration,
        keys: Arc<dyn KeyStore>,
    ) -> KeyLookup {
        let insecure_domains = config
            .insecure_domains
            .iter()
            .filter_map(|domain| match resolver::fqdn(domain) {
                Ok(name) => Some(name.to_ascii()),
                Err(e) => {
                    tracing::warn!("[lookup] insecure_domains: {e}; ignored");
                    None
                }
            })
            .collect();
        KeyLookup {
            resolver,
            insecure_domains,
            lookup_ttl,
            negative: NegativeCache::new(config.negative_ttl.0, DEFAULT_CAPACITY),
            failing: NegativeCache::new(config.failure_rest.0, DEFAULT_CAPACITY),
            keys,
            dnssec: Arc::new(DnssecStatus::new()),
        }
    }

    /// The resolvers, for MX resolution ([`DnsResolver::mx_hosts`]) and the DNSSEC probe.
    pub fn resolver(&self) -> &DnsResolver {
        &self.resolver
    }

    /// What is known about the resolver's DNSSEC: the task that probes it records its
    /// findings here.
    pub fn dnssec(&self) -> Arc<DnssecStatus> {
        self.dnssec.clone()
    }

    /// Whether `address` had no key at its last lookup, less than `negative_ttl` ago: a
    /// [`KeyLookup::find`] would answer [`Found::NoKey`] without a query. No I/O.
    pub fn is_negative_cached(&self, address: &str) -> bool {
        Recipient::parse(address)
            .is_some_and(|r| self.negative.contains(&r.cache_key(), Instant::now()))
    }

    /// Looks up `address`'s keys, each record type within `[lookup] timeout`. Found
    /// keys are stored in the key cache with source `lookup`; an earlier lookup's
    /// entries that are still fresh are answered from there without a query.
    pub async fn find(&self, address: &str) -> Found {
        let Some(recipient) = Recipient::parse(address) else {
            tracing::info!(address, "key lookup: not an address DNS can be asked about");
            return Found::NoKey;
        };
        let key = recipient.cache_key();
        if self.negative.contains(&key, Instant::now()) {
            tracing::debug!(address = %key, "key lookup: negative cache hit");
            crate::telemetry::lookup("cached_no_key");
            return Found::NoKey;
        }
        let now = OffsetDateTime::now_utc();
        match self.fresh_entries(&recipient.normalized, now) {
            Ok(entries) if !entries.is_empty() => {
                tracing::debug!(address = %key, "key lookup: key cache hit");
                crate::telemetry::lookup("cached");
                return Found::Keys(entries);
            }
            Ok(_) => {}
            Err(e) => return self.unavailable(&key, format!("key store: {e}")),
        }

        let domain = recipient.domain.to_ascii();
        let insecure = self.insecure_domains.contains(&domain);
        let validation = if insecure {
            Validation::None
        } else {
            Validation::Dnssec
        };
        if self.failing.contains(&domain, Instant::now()) {
            return self.unanswered(
                validation,
                format!(
                    "a key lookup in {} failed moments ago; not asked again yet",
                    domain.trim_end_matches('.'),
                ),
            );
        }
        let (pgp, smime) = tokio::join!(
            self.harvest(&recipient, KeyKind::Pgp, validation, now),
            self.harvest(&recipient, KeyKind::Smime, validation, now),
        );

        let candidates: Vec<Candidate> = pgp
            .candidates
            .iter()
            .chain(&smime.candidates)
            .cloned()
            .collect();
        let summary = format!(
            "openpgpkey: {}; smimea: {}",
            describe(&pgp, KeyKind::Pgp),
            describe(&smime, KeyKind::Smime)
        );
        if !candidates.is_empty() {
            return match self.store(&recipient.normalized, candidates, now) {
                Ok(entries) => {
                    tracing::info!(
                        address = %key,
                        dnssec = !insecure,
                        records = %summary,
                        keys = entries.len(),
                        "key lookup: found"
                    );
                    crate::telemetry::lookup("found");
                    Found::Keys(entries)
                }
                Err(e) => self.unavailable(&key, format!("key store: {e}")),
            };
        }
        let failures: Vec<String> = [pgp.unavailable, smime.unavailable]
            .into_iter()
            .flatten()
            .collect();
        if !failures.is_empty() {
            self.failing.insert(domain, Instant::now());
            let found = self.unanswered(validation, failures.join("; "));
            match &found {
                Found::CannotValidate(reason) => {
                    tracing::info!(address = %key, %reason, "key lookup: cannot validate");
                }
                Found::Unavailable(reason) => {
                    tracing::info!(address = %key, %reason, "key lookup: unavailable");
                }
                Found::Keys(_) | Found::NoKey => {}
            }
            return found;
        }
        tracing::info!(
            address = %key,
            dnssec = !insecure,
            records = %summary,
            "key lookup: no key"
        );
        crate::telemetry::lookup("not_found");
        self.negative.insert(key, Instant::now());
        Found::NoKey
    }

    fn unavailable(&self, address: &str, reason: String) -> Found {
        tracing::info!(address, %reason, "key lookup: unavailable");
        crate::telemetry::lookup("unavailable");
        Found::Unavailable(reason)
    }

    /// A DNS question that went unanswered: an outage, unless the lookup needed DNSSEC
    /// and the resolver is known not to validate, which no retry cures. Tells the two
    /// apart for the policy; the rule stays its to apply.
    fn unanswered(&self, validation: Validation, reason: String) -> Found {
        if validation == Validation::Dnssec && self.dnssec.cannot_validate() {
            crate::telemetry::lookup("cannot_validate");
            Found::CannotValidate(format!("{reason}; the resolver cannot validate DNSSEC"))
        } else {
            crate::telemetry::lookup("unavailable");
            Found::Unavailable(reason)
        }
    }

    /// The entries an earlier lookup stored for `address` that are still fresh: not
    /// expired, and not living longer than `lookup_ttl` from now.
    fn fresh_entries(
        &self,
        address: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<KeyEntry>, crate::keys::KeyStoreError> {
        Ok(self
            .keys
            .find(address)?
            .into_iter()
            .filter(|e| e.source == Source::Lookup && !e.is_expired(now))
            .filter(|e| e.expires.is_some_and(|at| at <= now + self.lookup_ttl))
            .collect())
    }

    /// Stores the candidates and returns their entries as the cache now holds them.
    fn store(
        &self,
        address: &str,
        candidates: Vec<Candidate>,
        now: OffsetDateTime,
    ) -> Result<Vec<KeyEntry>, crate::keys::KeyStoreError> {
        let fingerprints: BTreeSet<String> =
            candidates.iter().map(|c| c.fingerprint.clone()).collect();
        for candidate in candidates {
            self.keys.put(candidate, now)?;
        }
        Ok(self
            .keys
            .find(address)?
            .into_iter()
            .filter(|e| fingerprints.contains(&e.fingerprint))
            .collect())
    }

    /// Asks for one record type and turns what is acceptable into candidates.
    async fn harvest(
        &self,
        recipient: &Recipient,
        kind: KeyKind,
        validation: Validation,
        now: OffsetDateTime,
    ) -> Harvest {
        let mut harvest = Harvest::default();
        let name = match record_name(kind, &recipient.local, &recipient.domain) {
            Ok(name) => name,
            Err(e) => {
                harvest.refused.push(e.to_string());
                return harvest;
            }
        };
        let rtype = match kind {
            KeyKind::Pgp => RecordType::OPENPGPKEY,
            KeyKind::Smime => RecordType::SMIMEA,
        };
        let records = match self.resolver.query(&name, rtype, validation).await {
            Answer::Records(records) => records,
            Answer::NoData | Answer::NxDomain => return harvest,
            Answer::Bogus => {
                harvest.unavailable = Some(format!("{rtype}: answer failed DNSSEC validation"));
                return harvest;
            }
            Answer::Failed(reason) => {
                harvest.unavailable = Some(format!("{rtype}: {reason}"));
                return harvest;
            }
        };
        let origin = Origin {
            source: Source::Lookup,
            message_id: None,
            sender: None,
        };
        for record in records {
            harvest.records += 1;
            if validation == Validation::Dnssec && record.proof != Proof::Secure {
                harvest
                    .refused
                    .push(format!("not DNSSEC-validated ({})", record.proof));
                continue;
            }
            match candidates(&record, &recipient.normalized, &origin, now) {
                Ok(found) => harvest.candidates.extend(found),
                Err(reason) => harvest.refused.push(reason),
            }
        }
        harvest
    }
}

/// The cache entries one record gives for `address`, or why it gives none.
fn candidates(
    record: &Record,
    address: &str,
    origin: &Origin,
    now: OffsetDateTime,
) -> Result<Vec<Candidate>, String> {
    match &record.data {
        RData::OPENPGPKEY(key) => {
            let mut found = Vec::new();
            let mut refusals = Vec::new();
            for cert in material::parse_pgp(&key.public_key).map_err(|e| e.to_string())? {
                match material::pgp_candidates(&cert, Some(address), origin, now) {
                    Ok(candidates) => found.extend(candidates),
                    Err(refusal) => refusals.push(refusal.to_string()),
                }
            }
            if found.is_empty() {
                return Err(refusals.join("; "));
            }
            Ok(found)
        }
        RData::SMIMEA(smimea) => {
            // Usages 1 (PKIX-EE) and 3 (DANE-EE) name the recipient's own certificate;
            // 0 and 2 name a CA. With no CA store for S/MIME, the DNSSEC-validated record
            // is what vouches for the certificate, under either usage.
            if !matches!(smimea.cert_usage, CertUsage::PkixEe | CertUsage::DaneEe) {
                return Err(format!(
                    "certificate usage {} (not an end-entity certificate)",
                    u8::from(smimea.cert_usage)
                ));
            }
            // Only a full certificate can be encrypted to; a hash or a bare key cannot.
            if smimea.selector != Selector::Full || smimea.matching != Matching::Raw {
                return Err(format!(
                    "selector {} and matching type {} (only 0 0, a full certificate, is usable)",
                    u8::from(smimea.selector),
                    u8::from(smimea.matching)
                ));
            }
            let certs = material::parse_x509(&smimea.cert_data).map_err(|e| e.to_string())?;
            let mut found = Vec::new();
            for cert in &certs {
                found.extend(
                    material::x509_candidates(cert, Some(address), origin, now)
                        .map_err(|e| e.to_string())?,
                );
            }
            Ok(found)
        }
        other => Err(format!("unexpected {} record", other.record_type())),
    }
}

/// One record type's outcome for the log: never key material.
fn describe(harvest: &Harvest, kind: KeyKind) -> String {
    if harvest.unavailable.is_some() {
        return "unavailable".into();
    }
    if harvest.records == 0 && harvest.refused.is_empty() {
        return "none".into();
    }
    let mut text = format!(
        "{} record(s), {} usable {} key(s)",
        harvest.records,
        harvest.candidates.len(),
        kind.as_str()
    );
    if !harvest.refused.is_empty() {
        text.push_str(&format!(", refused: {}", harvest.refused.join("; ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_names_follow_rfc_7929_and_8162() {
        // RFC 7929 §3's example.
        let domain = Name::from_ascii("example.com.").unwrap();
        assert_eq!(
            record_name(KeyKind::Pgp, "hugh", &domain)
                .unwrap()
                .to_ascii(),
            "c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6._openpgpkey.example.com."
        );
        assert_eq!(
            record_name(KeyKind::Smime, "hugh", &domain)
                .unwrap()
                .to_ascii(),
            "c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6._smimecert.example.com."
        );
    }

    #[test]
    fn the_local_part_is_hashed_as_written() {
        let a = Recipient::parse("Hugh@Example.COM").unwrap();
        let b = Recipient::parse("<hugh@example.com>").unwrap();
        assert_eq!(a.normalized, b.normalized);
        assert_eq!(a.domain, b.domain);
        assert_ne!(
            record_name(KeyKind::Pgp, &a.local, &a.domain).unwrap(),
            record_name(KeyKind::Pgp, &b.local, &b.domain).unwrap()
        );
        assert_eq!(a.cache_key(), "Hugh@example.com");
        assert!(Recipient::parse("no-at-sign").is_none());
        assert!(Recipient::parse("user@").is_none());
    }

    #[test]
    fn a_utf8_local_part_and_an_idn_domain() {
        let r = Recipient::parse("jörg@bücher.example").unwrap();
        assert_eq!(r.domain.to_ascii(), "xn--bcher-kva.example.");
        let name = record_name(KeyKind::Pgp, &r.local, &r.domain).unwrap();
        let expected: String = Sha256::digest("jörg".as_bytes())[..28]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(name.to_ascii().starts_with(&expected), "{name}");
    }
}
