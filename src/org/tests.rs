//! The renewal job's rules on a clock the tests set: who is certified, who is left
//! alone as inactive, what is renewed when, and what mail counts as activity.

use std::sync::Arc;
use std::time::Duration;

use openpgp::cert::CertBuilder;
use openpgp::serialize::SerializeInto;
use sequoia_openpgp as openpgp;
use time::OffsetDateTime;
use time::macros::datetime;

use super::activity::Activity;
use super::{OrgStore, key, renew};
use crate::config::Config;
use crate::keys::secrets::Sealer;
use crate::keys::store::Candidate;
use crate::keys::{KeyKind, KeyStore, SledKeyStore, Source};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const T0: OffsetDateTime = datetime!(2026-01-01 12:00 UTC);

struct World {
    _dir: tempfile::TempDir,
    org: OrgStore,
    keys: Arc<SledKeyStore>,
    sealer: Sealer,
    config: Config,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().temporary(true).open().unwrap();
    let org = OrgStore::open(&db).unwrap();
    let keys = Arc::new(SledKeyStore::open(&db, DAY).unwrap());
    let sealer = Sealer::open(dir.path()).unwrap();
    let config = Config::parse(
        "internal_domains = [\"example.com\"]\n",
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    let cert = key::generate("Example Org", None, T0 - DAY).unwrap();
    org.set_key(
        &sealer,
        &cert.fingerprint().to_hex(),
        &cert.to_vec().unwrap(),
        &cert.as_tsk().to_vec().unwrap(),
    )
    .unwrap();
    World {
        _dir: dir,
        org,
        keys,
        sealer,
        config,
    }
}

/// Stores a key for `address` from `source`, added at `added`; returns its fingerprint.
fn user(w: &World, address: &str, source: Source, added: OffsetDateTime) -> String {
    let (cert, _) = CertBuilder::new()
        .set_creation_time(std::time::SystemTime::from(added - DAY))
        .add_userid(format!("User <{address}>"))
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    let fingerprint = cert.fingerprint().to_hex();
    w.keys
        .put(
            Candidate {
                address: address.into(),
                kind: KeyKind::Pgp,
                fingerprint: fingerprint.clone(),
                source,
                message_id: None,
                sender: None,
                can_encrypt: true,
                can_decrypt: source == Source::Sckm,
                key_created: added - DAY,
                key_expires: None,
                material: cert.to_vec().unwrap(),
                legacy: false,
                sealed_secret: None,
                authenticated: false,
                chain_validated: false,
                reads_aes_gcm: false,
                carried: None,
                revoked: false,
                decrypt_subkeys: Vec::new(),
            },
            added,
        )
        .unwrap();
    fingerprint
}

fn run(w: &World, now: OffsetDateTime) -> renew::Report {
    renew::run(&w.org, w.keys.as_ref(), &w.sealer, &w.config, now).unwrap()
}

#[test]
fn only_internal_keys_the_org_vouches_for_are_certified() {
    let w = world();
    let sckm = user(&w, "sckm@example.com", Source::Sckm, T0);
    let admin = user(&w, "admin@example.com", Source::Admin, T0);
    user(&w, "mailflow@example.com", Source::Mailflow, T0);
    user(&w, "lookup@example.com", Source::Lookup, T0);
    user(&w, "partner@example.org", Source::Admin, T0);
    let report = run(&w, T0);
    let mut certified = report.certified.clone();
    certified.sort();
    assert_eq!(
        certified,
        [
            ("admin@example.com".to_string(), admin),
            ("sckm@example.com".to_string(), sckm)
        ]
    );
    assert!(report.failed.is_empty(), "{report:?}");
}

#[test]
fn certifications_are_renewed_once_half_their_validity_is_gone() {
    let w = world();
    user(&w, "u@example.com", Source::Sckm, T0);
    assert_eq!(run(&w, T0).certified.len(), 1);
    let validity = w.config.org.certification_validity.0;
    // Half a validity minus a minute later: still current.
    let report = run(&w, T0 + validity / 2 - Duration::from_secs(60));
    assert_eq!((report.certified.len(), report.current), (0, 1));
    // Past half: renewed, with a new expiry.
    w.org.touch("u@example.com", T0 + 7 * DAY).unwrap();
    let later = T0 + validity / 2 + Duration::from_secs(60);
    assert_eq!(run(&w, later).certified.len(), 1);
    let certification = &w.org.certifications().unwrap()[0];
    assert_eq!(certification.created, later);
    assert_eq!(certification.expires, later + validity);
}

#[test]
fn a_user_without_mail_for_longer_than_inactive_after_is_not_renewed() {
    let w = world();
    user(&w, "quiet@example.com", Source::Sckm, T0);
    user(&w, "busy@example.com", Source::Sckm, T0);
    run(&w, T0);
    let inactive_after = w.config.org.inactive_after.0;
    assert_eq!(inactive_after, 90 * DAY);
    w.org.touch("busy@example.com", T0 + 80 * DAY).unwrap();
    let report = run(&w, T0 + 91 * DAY);
    assert_eq!(report.inactive, ["quiet@example.com"]);
    assert_eq!(
        report.certified,
        [(
            "busy@example.com".to_string(),
            report.certified[0].1.clone()
        )]
    );
    // Mail again: renewed at the next run.
    w.org.touch("quiet@example.com", T0 + 92 * DAY).unwrap();
    let report = run(&w, T0 + 92 * DAY);
    assert!(
        report
            .certified
            .iter()
            .any(|(a, _)| a == "quiet@example.com")
    );
}

#[test]
fn mail_counts_as_activity_for_internal_users_with_a_key_only() {
    let w = world();
    user(&w, "u@example.com", Source::Sckm, T0);
    let keys: Arc<dyn KeyStore> = w.keys.clone();
    let activity = Activity::new(w.org.clone(), keys, w.config.internal_domains.clone());
    activity.record(
        [
            "U@Example.com",
            "nokey@example.com",
            "outside@example.org",
            "not an address",
        ],
        T0,
    );
    assert_eq!(w.org.last_active("u@example.com").unwrap(), Some(T0));
    assert_eq!(w.org.last_active("nokey@example.com").unwrap(), None);
    assert_eq!(w.org.last_active("outside@example.org").unwrap(), None);
    // At most one write an hour.
    activity.record(["u@example.com"], T0 + time::Duration::minutes(30));
    assert_eq!(w.org.last_active("u@example.com").unwrap(), Some(T0));
    activity.record(["u@example.com"], T0 + time::Duration::hours(2));
    assert_eq!(
        w.org.last_active("u@example.com").unwrap(),
        Some(T0 + time::Duration::hours(2))
    );
}

#[test]
fn a_new_org_key_drops_the_old_keys_certifications() {
    let w = world();
    user(&w, "u@example.com", Source::Sckm, T0);
    run(&w, T0);
    let old = w.org.certifications().unwrap()[0].org_fingerprint.clone();
    let cert = key::generate("New Org", None, T0).unwrap();
    w.org
        .set_key(
            &w.sealer,
            &cert.fingerprint().to_hex(),
            &cert.to_vec().unwrap(),
            &cert.as_tsk().to_vec().unwrap(),
        )
        .unwrap();
    assert!(w.org.certifications().unwrap().is_empty());
    assert_eq!(
        renew::unverified(&w.org, w.keys.as_ref(), &w.config, T0).unwrap(),
        1
    );
    run(&w, T0);
    let new = &w.org.certifications().unwrap()[0];
    assert_ne!(new.org_fingerprint, old);
    assert_eq!(
        renew::unverified(&w.org, w.keys.as_ref(), &w.config, T0).unwrap(),
        0
    );
}
