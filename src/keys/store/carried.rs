//! Keys moved from another gateway keep their life there: the lifetime rules, on a
//! clock the tests set.

use super::*;
use crate::keys::entry::MAILFLOW_LIFETIME;
use time::macros::datetime;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const T0: OffsetDateTime = datetime!(2026-01-01 12:00 UTC);

fn store() -> SledKeyStore {
    let db = sled::Config::new().temporary(true).open().unwrap();
    SledKeyStore::open(&db, DAY).unwrap()
}

fn carried(added: OffsetDateTime) -> Carried {
    Carried {
        added,
        last_seen: Some(added),
        seen: 1,
        pending: false,
        retired: false,
    }
}

fn key(
    fingerprint: &str,
    source: Source,
    created: OffsetDateTime,
    from: Option<Carried>,
) -> Candidate {
    Candidate {
        address: "a@example.org".into(),
        kind: KeyKind::Pgp,
        fingerprint: fingerprint.into(),
        source,
        message_id: None,
        sender: None,
        can_encrypt: true,
        can_decrypt: source == Source::Sckm,
        key_created: created,
        key_expires: None,
        material: fingerprint.as_bytes().to_vec(),
        legacy: false,
        sealed_secret: None,
        authenticated: false,
        chain_validated: false,
        reads_aes_gcm: false,
        carried: from,
        revoked: false,
        decrypt_subkeys: Vec::new(),
    }
}

fn only(s: &SledKeyStore, fingerprint: &str) -> KeyEntry {
    s.find("a@example.org")
        .unwrap()
        .into_iter()
        .find(|e| e.fingerprint == fingerprint)
        .unwrap()
}

#[test]
fn a_carried_mailflow_key_keeps_its_harvest_time_and_expiry() {
    let s = store();
    let harvested = T0 - 100 * DAY;
    let put = s.put(
        key(
            "AA",
            Source::Mailflow,
            T0 - 200 * DAY,
            Some(carried(harvested)),
        ),
        T0,
    );
    assert_eq!(put.unwrap(), Put::Added);
    let entry = only(&s, "AA");
    assert_eq!(entry.added, harvested);
    assert_eq!(entry.expires, Some(harvested + MAILFLOW_LIFETIME));
    assert_eq!(entry.last_seen, Some(harvested));
    assert_eq!(entry.seen, 1);
}

#[test]
fn a_carried_entry_whose_lifetime_passed_is_not_stored() {
    let s = store();
    let harvested = T0 - 181 * DAY;
    let put = s.put(
        key(
            "AA",
            Source::Mailflow,
            T0 - 200 * DAY,
            Some(carried(harvested)),
        ),
        T0,
    );
    assert!(matches!(put.unwrap(), Put::Ignored(_)));
    assert!(s.find("a@example.org").unwrap().is_empty());
}

#[test]
fn merged_with_the_same_key_here_the_earlier_harvest_counts() {
    let s = store();
    s.put(
        key("AA", Source::Mailflow, T0 - 200 * DAY, None),
        T0 - 10 * DAY,
    )
    .unwrap();
    // Harvested earlier on the other gateway: the 180 days run from then.
    s.put(
        key(
            "AA",
            Source::Mailflow,
            T0 - 200 * DAY,
            Some(carried(T0 - 50 * DAY)),
        ),
        T0,
    )
    .unwrap();
    let entry = only(&s, "AA");
    assert_eq!(entry.added, T0 - 50 * DAY);
    assert_eq!(entry.expires, Some(T0 - 50 * DAY + MAILFLOW_LIFETIME));
    // Harvested later there: nothing is extended.
    s.put(
        key(
            "AA",
            Source::Mailflow,
            T0 - 200 * DAY,
            Some(carried(T0 - DAY)),
        ),
        T0,
    )
    .unwrap();
    assert_eq!(
        only(&s, "AA").expires,
        Some(T0 - 50 * DAY + MAILFLOW_LIFETIME)
    );
    assert_eq!(
        only(&s, "AA").last_seen,
        Some(T0 - DAY),
        "the latest sighting"
    );
}

#[test]
fn a_carried_admin_key_promotes_a_mailflow_entry_and_a_lower_one_only_merges() {
    let s = store();
    s.put(key("AA", Source::Mailflow, T0 - 200 * DAY, None), T0 - DAY)
        .unwrap();
    s.put(
        key(
            "AA",
            Source::Admin,
            T0 - 200 * DAY,
            Some(carried(T0 - 30 * DAY)),
        ),
        T0,
    )
    .unwrap();
    let entry = only(&s, "AA");
    assert_eq!(
        (entry.source, entry.added, entry.expires),
        (Source::Admin, T0 - 30 * DAY, None)
    );
    s.put(
        key("AA", Source::Lookup, T0 - 200 * DAY, Some(carried(T0))),
        T0,
    )
    .unwrap();
    assert_eq!(only(&s, "AA").source, Source::Admin);
}

#[test]
fn a_revocation_crosses_and_no_unrevoked_copy_undoes_it() {
    let s = store();
    let mut revoked = key("AA", Source::Admin, T0 - DAY, Some(carried(T0 - DAY)));
    revoked.revoked = true;
    s.put(revoked, T0).unwrap();
    s.put(
        key("AA", Source::Admin, T0 - DAY, Some(carried(T0 - DAY))),
        T0,
    )
    .unwrap();
    assert!(only(&s, "AA").revoked);
}

#[test]
fn carried_sckm_keys_leave_the_newest_current_whatever_the_order() {
    // The newer key arrives first, the older (retired there or not) after it.
    let s = store();
    s.put(key("NEW", Source::Sckm, T0, Some(carried(T0))), T0)
        .unwrap();
    s.put(
        key("OLD", Source::Sckm, T0 - DAY, Some(carried(T0 - DAY))),
        T0,
    )
    .unwrap();
    assert!(!only(&s, "NEW").retired);
    assert!(only(&s, "OLD").retired);

    // The older key is here and current; the newer one arrives and retires it.
    let s = store();
    s.put(key("OLD", Source::Sckm, T0 - DAY, None), T0 - DAY)
        .unwrap();
    s.put(key("NEW", Source::Sckm, T0, Some(carried(T0))), T0)
        .unwrap();
    assert!(!only(&s, "NEW").retired);
    assert!(only(&s, "OLD").retired);

    // A key retired there stays retired here, and retires nothing.
    let s = store();
    s.put(key("OLD", Source::Sckm, T0 - DAY, None), T0 - DAY)
        .unwrap();
    let mut retired = carried(T0 - 2 * DAY);
    retired.retired = true;
    s.put(key("OLDER", Source::Sckm, T0 - 2 * DAY, Some(retired)), T0)
        .unwrap();
    assert!(!only(&s, "OLD").retired);
    assert!(only(&s, "OLDER").retired);
}

#[test]
fn a_carried_pending_key_stays_pending_and_a_settled_one_settles_it() {
    let s = store();
    let mut pending = carried(T0 - DAY);
    pending.pending = true;
    s.put(
        key("AA", Source::Mailflow, T0 - DAY, Some(pending.clone())),
        T0,
    )
    .unwrap();
    assert!(only(&s, "AA").pending);
    s.put(key("AA", Source::Mailflow, T0 - DAY, Some(pending)), T0)
        .unwrap();
    assert!(only(&s, "AA").pending);
    s.put(
        key("AA", Source::Mailflow, T0 - DAY, Some(carried(T0 - DAY))),
        T0,
    )
    .unwrap();
    assert!(!only(&s, "AA").pending);
}
