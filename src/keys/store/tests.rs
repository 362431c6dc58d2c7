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
        carried: None,
        revoked: false,
        decrypt_subkeys: Vec::new(),
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
            && entries[0].usable_for_encryption(T0 + 7 * DAY, crate::keys::Allowed::EVERY_SOURCE)
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

#[test]
fn a_revocation_holds_whatever_brought_it_and_no_unrevoked_copy_undoes_it() {
    let s = store(DAY);
    let a = "a@example.org";
    let entry = |s: &SledKeyStore| s.find(a).unwrap().remove(0);
    s.put(key(a, "AA", Source::Admin, T0), T0).unwrap();
    assert!(entry(&s).usable_for_encryption(T0, crate::keys::Allowed::EVERY_SOURCE));

    // The revoked cert arrives in mail (an Autocrypt header): it marks the admin's entry.
    let mut revoked = key(a, "AA", Source::Mailflow, T0);
    revoked.revoked = true;
    revoked.material = b"AA with its revocation".to_vec();
    assert_eq!(s.put(revoked.clone(), T0 + DAY).unwrap(), Put::Revoked);
    let marked = entry(&s);
    assert!(
        marked.revoked && marked.source == Source::Admin,
        "{marked:?}"
    );
    assert!(!marked.usable_for_encryption(T0 + DAY, crate::keys::Allowed::EVERY_SOURCE));
    assert_eq!(
        s.material(a, "AA").unwrap().as_deref(),
        Some(&b"AA with its revocation"[..])
    );

    // The admin re-imports the old file, a lookup returns a stale copy: still revoked,
    // and the material keeps the revocation.
    for source in [Source::Admin, Source::Lookup, Source::Mailflow] {
        assert_eq!(
            s.put(key(a, "AA", source, T0), T0 + 2 * DAY).unwrap(),
            Put::Refreshed
        );
        assert!(entry(&s).revoked, "{source:?}");
    }
    assert_eq!(
        s.material(a, "AA").unwrap().as_deref(),
        Some(&b"AA with its revocation"[..])
    );
}

#[test]
fn a_revoked_newcomer_from_mail_replaces_nothing() {
    let s = store(DAY);
    let a = "a@example.org";
    s.put(key(a, "AA", Source::Mailflow, T0), T0).unwrap();
    let mut revoked = key(a, "BB", Source::Mailflow, T0 + DAY);
    revoked.revoked = true;
    s.put(revoked, T0 + DAY).unwrap();
    let entries = s.find(a).unwrap();
    let aa = entries.iter().find(|e| e.fingerprint == "AA").unwrap();
    let bb = entries.iter().find(|e| e.fingerprint == "BB").unwrap();
    assert!(!aa.revoked && !aa.pending, "{aa:?}");
    assert!(bb.revoked && !bb.usable_for_encryption(T0 + DAY, crate::keys::Allowed::EVERY_SOURCE));
}

#[test]
fn material_reads_back_as_stored_and_a_damaged_value_is_reported_not_read() {
    let s = store(DAY);
    let mut candidate = key("a@example.org", "AA", Source::Admin, T0);
    candidate.material = b"the material".to_vec();
    s.put(candidate, T0).unwrap();
    assert_eq!(
        s.material("a@example.org", "AA").unwrap().as_deref(),
        Some(&b"the material"[..])
    );
    assert_eq!(s.material("a@example.org", "BB").unwrap(), None);
    // A length prefix that runs past the value: neither the entry nor its material.
    let name = SledKeyStore::key("a@example.org", "AA");
    s.tree.insert(&name, &[0, 0, 1, 0, b'{'][..]).unwrap();
    assert!(matches!(
        s.material("a@example.org", "AA"),
        Err(KeyStoreError::Corrupt(_))
    ));
    assert!(matches!(
        s.find("a@example.org"),
        Err(KeyStoreError::Corrupt(_))
    ));
}

#[test]
fn mark_revoked_marks_every_address_of_the_key() {
    let s = store(DAY);
    s.put(key("a@example.org", "CC", Source::Admin, T0), T0)
        .unwrap();
    s.put(key("b@example.org", "CC", Source::Admin, T0), T0)
        .unwrap();
    s.put(key("c@example.org", "DD", Source::Admin, T0), T0)
        .unwrap();
    let marked = s.mark_revoked("CC", None).unwrap();
    assert_eq!(marked.len(), 2);
    let revoked: Vec<_> = s
        .list()
        .unwrap()
        .into_iter()
        .map(|e| (e.address, e.revoked))
        .collect();
    assert_eq!(
        revoked,
        [
            ("a@example.org".to_string(), true),
            ("b@example.org".to_string(), true),
            ("c@example.org".to_string(), false)
        ]
    );
    assert_eq!(
        s.material("a@example.org", "CC").unwrap().as_deref(),
        Some(&b"CC"[..])
    );
}

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
            carried: None,
            revoked: false,
            decrypt_subkeys: Vec::new(),
        };
        s.put(sckm("0DD"), now).unwrap();
        s.put(sckm("E5E"), now).unwrap();
        let entries = s.find("u@example.com").unwrap();
        let old = entries.iter().find(|e| e.fingerprint == "0DD").unwrap();
        let new = entries.iter().find(|e| e.fingerprint == "E5E").unwrap();
        assert!(
            old.retired
                && old.can_decrypt
                && !old.usable_for_encryption(now, crate::keys::Allowed::NO_MAILFLOW)
        );
        assert!(!new.retired && new.usable_for_encryption(now, crate::keys::Allowed::NO_MAILFLOW));
        assert_eq!(s.sealed_secret("0DD").unwrap().unwrap(), b"sealed-0DD");
        s.delete("0DD").unwrap();
        assert!(
            s.sealed_secret("0DD").unwrap().is_none(),
            "the secret goes with its entry"
        );
        assert!(s.sealed_secret("E5E").unwrap().is_some());
    }
}
