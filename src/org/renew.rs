//! The renewal job: certifies the key of every active internal user the gateway holds
//! a key for, and renews what has less than half its validity left.
//!
//! Who is certified is one rule, [`eligible`]: an internal address (the one rule of
//! [`crate::mail::InternalDomains`]), a key the organization vouches for (an SCKM key,
//! which the user made and gave the gateway, or one the admin imported; never one
//! harvested from mail or found by lookup), current (not revoked, not retired), and a
//! user with mail through the gateway within `[org] inactive_after` (a key imported
//! counts as activity from its import).

use std::time::Duration;

use openpgp::Cert;
use openpgp::parse::Parse;
use sequoia_openpgp as openpgp;
use time::OffsetDateTime;

use super::store::Certification;
use super::{OrgError, OrgStore, key};
use crate::config::Config;
use crate::keys::secrets::Sealer;
use crate::keys::{KeyEntry, KeyKind, KeyStore, Source};

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Certified now, (address, fingerprint).
    pub certified: Vec<(String, String)>,
    /// Certifications still good for more than half their validity.
    pub current: usize,
    /// Users left alone: no mail for longer than `inactive_after`.
    pub inactive: Vec<String>,
    /// Keys that could not be certified, with why.
    pub failed: Vec<(String, String)>,
}

/// Whether the org vouches for `entry` at all (before activity).
pub fn eligible(entry: &KeyEntry, config: &Config) -> bool {
    entry.kind == KeyKind::Pgp
        && matches!(entry.source, Source::Sckm | Source::Admin)
        && !entry.revoked
        && !entry.retired
        && config.internal_domains.is_internal(&entry.address)
}

/// When the user behind `entry` was last active: their last mail, or the key's import.
fn last_active(store: &OrgStore, entry: &KeyEntry) -> Result<OffsetDateTime, OrgError> {
    Ok(store
        .last_active(&entry.address)?
        .map_or(entry.added, |seen| seen.max(entry.added)))
}

/// Runs the job once at `now`.
pub fn run(
    store: &OrgStore,
    keys: &dyn KeyStore,
    sealer: &Sealer,
    config: &Config,
    now: OffsetDateTime,
) -> Result<Report, OrgError> {
    let mut report = Report::default();
    let Some(public) = store.key()? else {
        return Ok(report);
    };
    let org_public = Cert::from_bytes(&public)
        .map_err(|e| OrgError::Internal(format!("the stored org key: {e}")))?;
    let org_fpr = org_public.fingerprint().to_hex();
    let secret = store
        .key_secret(sealer, &org_fpr)?
        .ok_or_else(|| OrgError::Internal("the org key's secret is missing".into()))?;
    let org = Cert::from_bytes(&secret[..])
        .map_err(|e| OrgError::Internal(format!("the stored org key: {e}")))?;
    let validity = config.org.certification_validity.0;
    let inactive_after = config.org.inactive_after.0;

    for entry in keys.list()?.iter().filter(|e| eligible(e, config)) {
        if now - last_active(store, entry)? > inactive_after {
            report.inactive.push(entry.address.clone());
            continue;
        }
        if let Some(c) = store.certification(&entry.address, &entry.fingerprint)?
            && c.org_fingerprint == org_fpr
            && c.expires - now > validity / 2
        {
            report.current += 1;
            continue;
        }
        match certify_one(&org, keys, entry, now, validity) {
            Ok(Some(signatures)) => {
                store.put_certification(&Certification {
                    address: entry.address.clone(),
                    fingerprint: entry.fingerprint.clone(),
                    org_fingerprint: org_fpr.clone(),
                    signatures,
                    created: now,
                    expires: now + validity,
                })?;
                report
                    .certified
                    .push((entry.address.clone(), entry.fingerprint.clone()));
            }
            Ok(None) => report.failed.push((
                entry.address.clone(),
                format!("key {} has no user ID for this address", entry.fingerprint),
            )),
            Err(e) => report.failed.push((entry.address.clone(), e.to_string())),
        }
    }
    Ok(report)
}

fn certify_one(
    org: &Cert,
    keys: &dyn KeyStore,
    entry: &KeyEntry,
    now: OffsetDateTime,
    validity: Duration,
) -> Result<Option<Vec<u8>>, OrgError> {
    let material = keys
        .material(&entry.address, &entry.fingerprint)?
        .ok_or_else(|| OrgError::Internal(format!("key {} vanished", entry.fingerprint)))?;
    let user = Cert::from_bytes(&material)
        .map_err(|e| OrgError::Internal(format!("cached key {}: {e}", entry.fingerprint)))?;
    let signatures = key::certify(org, &user, &entry.address, now, validity)?;
    Ok((!signatures.is_empty()).then(|| key::serialize(&signatures)))
}

/// How many eligible keys have no current certification by the org key in force:
/// `check` warns about them (after an org key replacement, until the job has run).
pub fn unverified(
    store: &OrgStore,
    keys: &dyn KeyStore,
    config: &Config,
    now: OffsetDateTime,
) -> Result<usize, OrgError> {
    let Some(public) = store.key()? else {
        return Ok(0);
    };
    let org_fpr = Cert::from_bytes(&public)
        .map_err(|e| OrgError::Internal(format!("the stored org key: {e}")))?
        .fingerprint()
        .to_hex();
    let mut count = 0;
    for entry in keys.list()?.iter().filter(|e| eligible(e, config)) {
        let certified = store
            .certification(&entry.address, &entry.fingerprint)?
            .is_some_and(|c| c.org_fingerprint == org_fpr && c.expires > now);
        if !certified && now - last_active(store, entry)? <= config.org.inactive_after.0 {
            count += 1;
        }
    }
    Ok(count)
}

/// Runs the job at start and then every `[org] renew_every`, until `shutdown`.
pub async fn periodically(
    store: OrgStore,
    keys: std::sync::Arc<crate::keys::SledKeyStore>,
    sealer: std::sync::Arc<Sealer>,
    config: std::sync::Arc<Config>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let every = config.org.renew_every.0;
    loop {
        let (s, k, z, c) = (store.clone(), keys.clone(), sealer.clone(), config.clone());
        let ran = tokio::task::spawn_blocking(move || {
            let now = OffsetDateTime::now_utc();
            let report = run(&s, k.as_ref(), &z, &c, now);
            let _ = s.set_next_renewal(now + every);
            report
        })
        .await;
        match ran {
            Ok(Ok(report)) => {
                if !report.certified.is_empty() || !report.failed.is_empty() {
                    tracing::info!(
                        certified = report.certified.len(),
                        current = report.current,
                        inactive = report.inactive.len(),
                        failed = report.failed.len(),
                        "org renewal"
                    );
                }
                for (address, why) in &report.failed {
                    tracing::warn!(%address, reason = %why, "org renewal: not certified");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "org renewal failed"),
            Err(e) => tracing::error!(error = %e, "org renewal task failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
