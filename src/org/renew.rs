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

use super::ca::{self, Ca, CaError};
use super::store::{Certification, IssuedCert};
use super::{OrgError, OrgStore, key};
use crate::config::Config;
use crate::keys::material;
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
    /// Keys that could not be certified or given a certificate, with why.
    pub failed: Vec<(String, String)>,
    /// User certificates issued now, (address, serial).
    pub issued: Vec<(String, String)>,
    /// User certificates still good for longer than two runs of the job.
    pub certificates_current: usize,
}

/// Whether the org vouches for `entry` at all (before activity): its OpenPGP keys get
/// certifications, and both kinds get certificates while there is an org certificate.
pub fn eligible(entry: &KeyEntry, config: &Config) -> bool {
    matches!(entry.source, Source::Sckm | Source::Admin)
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
    let org = match store.key()? {
        None => None,
        Some(public) => {
            let org_fpr = Cert::from_bytes(&public)
                .map_err(|e| OrgError::Internal(format!("the stored org key: {e}")))?
                .fingerprint()
                .to_hex();
            let secret = store
                .key_secret(sealer, &org_fpr)?
                .ok_or_else(|| OrgError::Internal("the org key's secret is missing".into()))?;
            let org = Cert::from_bytes(&secret[..])
                .map_err(|e| OrgError::Internal(format!("the stored org key: {e}")))?;
            Some((org, org_fpr))
        }
    };
    let validity = config.org.certification_validity.0;
    let inactive_after = config.org.inactive_after.0;
    let ca = stored_ca(store, sealer)?;

    for entry in keys.list()?.iter().filter(|e| eligible(e, config)) {
        if now - last_active(store, entry)? > inactive_after {
            report.inactive.push(entry.address.clone());
            continue;
        }
        if let Some(ca) = &ca {
            issue_if_due(store, keys, ca, entry, config, now, &mut report)?;
        }
        let Some((org, org_fpr)) = &org else {
            continue;
        };
        if entry.kind != KeyKind::Pgp {
            continue;
        }
        if let Some(c) = store.certification(&entry.address, &entry.fingerprint)?
            && c.org_fingerprint == *org_fpr
            && c.expires - now > validity / 2
        {
            report.current += 1;
            continue;
        }
        match certify_one(org, keys, entry, now, validity) {
            Ok(Some(signatures)) => {
                store.put_certification(&Certification {
                    address: entry.address.clone(),
                    fingerprint: entry.fingerprint.clone(),
                    org_fingerprint: org_fpr.to_string(),
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
        if entry.kind != KeyKind::Pgp {
            continue;
        }
        let certified = store
            .certification(&entry.address, &entry.fingerprint)?
            .is_some_and(|c| c.org_fingerprint == org_fpr && c.expires > now);
        if !certified && now - last_active(store, entry)? <= config.org.inactive_after.0 {
            count += 1;
        }
    }
    Ok(count)
}

/// Runs the job at start and then every `[org] renew_every`, until `shutdown`; in a
/// cluster, only on the member that leads (see [`crate::cluster::Membership::leads`]).
pub async fn periodically(
    store: OrgStore,
    keys: std::sync::Arc<dyn crate::keys::KeyStore>,
    sealer: std::sync::Arc<Sealer>,
    config: std::sync::Arc<Config>,
    membership: Option<crate::cluster::Membership>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let every = config.org.renew_every.0;
    loop {
        // In a cluster, the member that leads renews for all.
        if let Some(member) = &membership
            && !member.leads().await
        {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => continue,
            }
        }
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

/// The org certificate in force, with its key, if there is one.
pub fn stored_ca(store: &OrgStore, sealer: &Sealer) -> Result<Option<Ca>, OrgError> {
    let Some(der) = store.ca()? else {
        return Ok(None);
    };
    let fingerprint = material::x509_fingerprint(&der);
    let key = store
        .ca_secret(sealer, &fingerprint)?
        .ok_or_else(|| OrgError::Internal("the org certificate's key is missing".into()))?;
    Ca::from_stored(&der, &key)
        .map(Some)
        .map_err(|e| OrgError::Internal(format!("the stored org certificate: {e}")))
}

/// Issues `entry`'s user a certificate for the key's own encryption key unless one
/// (from any org certificate, so that a replaced one's stay until they expire) is
/// unrevoked and good for longer than two runs of the job.
fn issue_if_due(
    store: &OrgStore,
    keys: &dyn KeyStore,
    ca: &Ca,
    entry: &KeyEntry,
    config: &Config,
    now: OffsetDateTime,
    report: &mut Report,
) -> Result<(), OrgError> {
    let margin = config.org.renew_every.0 * 2;
    // A certificate that already ends with the org certificate cannot be bettered.
    let current = store.issued_to(&entry.address)?.into_iter().any(|c| {
        c.fingerprint == entry.fingerprint
            && c.revoked.is_none()
            && c.not_after > now
            && (c.not_after - now > margin || c.not_after >= ca.not_after())
    });
    if current {
        report.certificates_current += 1;
        return Ok(());
    }
    let material = keys
        .material(&entry.address, &entry.fingerprint)?
        .ok_or_else(|| OrgError::Internal(format!("key {} vanished", entry.fingerprint)))?;
    let spki = match entry.kind {
        KeyKind::Smime => ca::spki_of_certificate(&material),
        KeyKind::Pgp => {
            current_encryption_key(&material, now).and_then(|k| ca::spki_of_openpgp(&k))
        }
    };
    let issued = spki.and_then(|spki| {
        ca.issue(
            &entry.address,
            &spki,
            now,
            config.org.certification_validity.0,
        )
    });
    match issued {
        Ok(issued) => {
            store.put_issued(&IssuedCert {
                address: entry.address.clone(),
                fingerprint: entry.fingerprint.clone(),
                serial: issued.serial_hex.clone(),
                der: issued.der,
                not_after: issued.not_after,
                issuer: material::x509_fingerprint(ca.cert_der()),
                revoked: None,
            })?;
            report
                .issued
                .push((entry.address.clone(), issued.serial_hex));
        }
        Err(e) => report
            .failed
            .push((entry.address.clone(), format!("no S/MIME certificate: {e}"))),
    }
    Ok(())
}

/// The current encryption subkey of an OpenPGP cert (the newest, as for encryption).
fn current_encryption_key(
    material: &[u8],
    now: OffsetDateTime,
) -> Result<
    openpgp::packet::Key<openpgp::packet::key::PublicParts, openpgp::packet::key::UnspecifiedRole>,
    CaError,
> {
    let cert = Cert::from_bytes(material).map_err(|e| CaError::Internal(e.to_string()))?;
    let policy = openpgp::policy::StandardPolicy::new();
    let keys =
        crate::crypto::pgp::encryption_keys(&cert, &policy, std::time::SystemTime::from(now))
            .map_err(|e| CaError::Refused(e.to_string()))?;
    Ok(keys.keys[0].key().clone().role_into_unspecified())
}
