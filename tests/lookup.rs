//! Key lookup and MX resolution against a real DNS server on loopback (no internet):
//! a DNSSEC-signed zone `test.` (trusted directly, as the tests' own trust anchor), the
//! unsigned zone `plain.test.` delegated from it without DS (provably insecure), and
//! unsigned mail zones. Keys are made with gpg and openssl.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealgate::config::LookupConfig;
use sealgate::config::units::HumanDuration;
use sealgate::dns::{DnsError, DnsResolver, Found, KeyLookup, MxHost};
use sealgate::keys::{KeyEntry, KeyKind, KeyStore, SledKeyStore, Source};
use support::dns::{DnsServer, Fault, Zone};
use support::keys::{SmimeCert, pgp_key};

const LOOKUP_TTL: Duration = Duration::from_secs(6 * 3600);

/// A key cache in a temporary sled database.
fn key_store() -> Arc<SledKeyStore> {
    let db = sled::Config::new().temporary(true).open().unwrap();
    Arc::new(SledKeyStore::open(&db, LOOKUP_TTL).unwrap())
}

/// Key lookups against `dns`, trusting its signed zones, with `[lookup]` as `adjust`
/// leaves it.
fn lookup_with(
    dns: &DnsServer,
    store: Arc<SledKeyStore>,
    adjust: impl FnOnce(&mut LookupConfig),
) -> KeyLookup {
    // SEALGATE_LOG=info shows each lookup's outcome in a failing test's output.
    if let Ok(filter) = std::env::var("SEALGATE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    let mut config = dns.lookup_config();
    adjust(&mut config);
    KeyLookup::with_trust_anchors(&config, LOOKUP_TTL, store, &dns.trust_anchors()).unwrap()
}

fn lookup(dns: &DnsServer, store: Arc<SledKeyStore>) -> KeyLookup {
    lookup_with(dns, store, |_| {})
}

fn keys(found: Found) -> Vec<KeyEntry> {
    match found {
        Found::Keys(entries) => entries,
        other => panic!("expected keys, got {other:?}"),
    }
}

/// Runs `find` and returns its result with the number of questions the server got.
async fn counted(dns: &DnsServer, lookups: &KeyLookup, address: &str) -> (Found, usize) {
    let before = dns.queries();
    let found = lookups.find(address).await;
    (found, dns.queries() - before)
}

/// The signed zone `test.` with Alice's OpenPGP key.
fn alice_zone() -> Zone {
    let alice = pgp_key("Alice <alice@secure.test>");
    Zone::new("test")
        .signed()
        .openpgpkey("alice@secure.test", &alice.binary)
}

#[tokio::test]
async fn dnssec_validated_openpgpkey_is_stored_with_source_lookup_and_lookup_ttl() {
    let alice = pgp_key("Alice <alice@secure.test>");
    let dns = DnsServer::start(vec![
        Zone::new("test")
            .signed()
            .openpgpkey("alice@secure.test", &alice.binary),
    ])
    .await;
    let store = key_store();
    let lookups = lookup(&dns, store.clone());

    let entries = keys(lookups.find("alice@secure.test").await);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(entry.kind, KeyKind::Pgp);
    assert_eq!(entry.fingerprint, alice.fingerprint);
    assert_eq!(entry.source, Source::Lookup);
    assert_eq!(entry.expires, Some(entry.added + LOOKUP_TTL));
    assert!(entry.can_encrypt && !entry.can_decrypt);
    assert_eq!(store.find("alice@secure.test").unwrap(), entries);

    // Asked again while the entry is fresh: answered from the key cache.
    let (again, queries) = counted(&dns, &lookups, "alice@secure.test").await;
    assert_eq!(keys(again), entries);
    assert_eq!(queries, 0, "no DNS question for a fresh cached key");
}

#[tokio::test]
async fn an_entry_stored_under_a_longer_lookup_ttl_is_looked_up_again() {
    let dns = DnsServer::start(vec![alice_zone()]).await;
    // The store still applies the old, longer TTL; the config now says six hours.
    let db = sled::Config::new().temporary(true).open().unwrap();
    let store = Arc::new(SledKeyStore::open(&db, 2 * LOOKUP_TTL).unwrap());
    let lookups = lookup(&dns, store.clone());
    let first = keys(lookups.find("alice@secure.test").await);
    assert_eq!(first[0].expires, Some(first[0].added + 2 * LOOKUP_TTL));
    let (again, asked) = counted(&dns, &lookups, "alice@secure.test").await;
    assert_eq!(keys(again).len(), 1);
    assert!(
        asked > 0,
        "checked again, not trusted for twice the lookup_ttl"
    );
}

/// `key` with a key revocation its owner made.
fn revoked(key: &support::keys::PgpKey) -> Vec<u8> {
    use openpgp::parse::Parse;
    use openpgp::serialize::SerializeInto;
    use openpgp::types::ReasonForRevocation;
    use sequoia_openpgp as openpgp;

    let cert = openpgp::Cert::from_bytes(key.secret_armored.as_bytes()).unwrap();
    let mut signer = cert
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .unwrap()
        .into_keypair()
        .unwrap();
    let revocation = cert
        .revoke(&mut signer, ReasonForRevocation::KeyCompromised, b"lost")
        .unwrap();
    let (cert, _) = cert.insert_packets(revocation).unwrap();
    cert.to_vec().unwrap()
}

#[tokio::test]
async fn a_revoked_key_in_dns_marks_the_cached_copy_and_is_not_used() {
    let alice = pgp_key("Alice <alice@secure.test>");
    let dns = DnsServer::start(vec![alice_zone()]).await;
    // Stored under a longer TTL than the one below, so that it is looked up again.
    let db = sled::Config::new().temporary(true).open().unwrap();
    let store = Arc::new(SledKeyStore::open(&db, 2 * LOOKUP_TTL).unwrap());
    let first = keys(lookup(&dns, store.clone()).find("alice@secure.test").await);
    assert!(!first[0].revoked);
    dns.stop().await;

    // Alice revokes her key and publishes the revoked cert.
    let dns = DnsServer::start(vec![
        Zone::new("test")
            .signed()
            .openpgpkey("alice@secure.test", &revoked(&alice)),
    ])
    .await;
    let store = Arc::new(SledKeyStore::open(&db, LOOKUP_TTL).unwrap());
    let found = keys(lookup(&dns, store.clone()).find("alice@secure.test").await);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].fingerprint, alice.fingerprint);
    let cached = store.find("alice@secure.test").unwrap();
    assert!(cached.len() == 1 && cached[0].revoked, "{cached:?}");
    let now = time::OffsetDateTime::now_utc();
    assert!(!cached[0].usable_for_encryption(now, sealgate::keys::Allowed::EVERY_SOURCE));
}

#[tokio::test]
async fn dnssec_validated_smimea_is_stored_with_source_lookup() {
    let bob = SmimeCert::openssl("bob@secure.test", "digitalSignature,keyEncipherment");
    let dns = DnsServer::start(vec![Zone::new("test").signed().smimea(
        "bob@secure.test",
        3,
        0,
        0,
        &bob.der,
    )])
    .await;
    let store = key_store();
    let entries = keys(lookup(&dns, store.clone()).find("bob@secure.test").await);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    assert_eq!(
        (entry.kind, entry.source, entry.fingerprint.as_str()),
        (KeyKind::Smime, Source::Lookup, bob.fingerprint().as_str())
    );
    assert_eq!(entry.expires, Some(entry.added + LOOKUP_TTL));
    assert_eq!(store.find("bob@secure.test").unwrap(), entries);
}

#[tokio::test]
async fn both_kinds_are_found_in_one_lookup_and_pkix_ee_is_accepted() {
    let carol_pgp = pgp_key("Carol <carol@secure.test>");
    let carol_cert = SmimeCert::openssl("carol@secure.test", "keyEncipherment");
    let dns = DnsServer::start(vec![
        Zone::new("test")
            .signed()
            .openpgpkey("carol@secure.test", &carol_pgp.binary)
            .smimea("carol@secure.test", 1, 0, 0, &carol_cert.der),
    ])
    .await;
    let mut entries = keys(lookup(&dns, key_store()).find("carol@secure.test").await);
    entries.sort_by_key(|e| e.kind.as_str());
    let kinds: Vec<KeyKind> = entries.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [KeyKind::Pgp, KeyKind::Smime]);
}

#[tokio::test]
async fn the_local_part_is_hashed_as_written() {
    let dns = DnsServer::start(vec![alice_zone()]).await;
    let lookups = lookup(&dns, key_store());
    // RFC 7929 §3: no case folding of the local part; "Alice" is another owner name.
    assert_eq!(lookups.find("Alice@Secure.TEST").await, Found::NoKey);
    assert!(lookups.is_negative_cached("Alice@secure.test"));
    assert!(!lookups.is_negative_cached("alice@secure.test"));
    assert_eq!(keys(lookups.find("alice@SECURE.test").await).len(), 1);
}

#[tokio::test]
async fn unsigned_record_outside_insecure_domains_is_refused() {
    let pat = pgp_key("Pat <pat@plain.test>");
    let dns = DnsServer::start(vec![
        Zone::new("test").signed(),
        Zone::new("plain.test").openpgpkey("pat@plain.test", &pat.binary),
    ])
    .await;
    let store = key_store();
    let lookups = lookup(&dns, store.clone());
    assert_eq!(lookups.find("pat@plain.test").await, Found::NoKey);
    assert!(store.find("pat@plain.test").unwrap().is_empty());
    assert!(lookups.is_negative_cached("pat@plain.test"));
}

#[tokio::test]
async fn the_same_record_is_accepted_when_its_domain_is_in_insecure_domains() {
    let pat = pgp_key("Pat <pat@plain.test>");
    let dns = DnsServer::start(vec![
        Zone::new("test").signed(),
        Zone::new("plain.test").openpgpkey("pat@plain.test", &pat.binary),
    ])
    .await;
    let store = key_store();
    let lookups = lookup_with(&dns, store.clone(), |config| {
        config.insecure_domains = vec!["Plain.Test.".into()];
    });
    let entries = keys(lookups.find("pat@plain.test").await);
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].source, entries[0].fingerprint.as_str()),
        (Source::Lookup, pat.fingerprint.as_str())
    );
}

#[tokio::test]
async fn a_key_whose_signature_does_not_validate_is_unavailable_not_no_key() {
    let alice = pgp_key("Alice <alice@secure.test>");
    let dns = DnsServer::start(vec![
        Zone::new("test")
            .signed()
            .openpgpkey("alice@secure.test", &alice.binary),
    ])
    .await;
    // Trust another key for `test.`: the zone's signatures are then forgeries.
    let other = DnsServer::start(vec![Zone::new("test").signed()]).await;
    let lookups = KeyLookup::with_trust_anchors(
        &dns.lookup_config(),
        LOOKUP_TTL,
        key_store(),
        &other.trust_anchors(),
    )
    .unwrap();
    match lookups.find("alice@secure.test").await {
        Found::Unavailable(reason) => assert!(reason.contains("DNSSEC"), "{reason}"),
        other => panic!("a bogus answer is no evidence of no key: {other:?}"),
    }
    assert!(!lookups.is_negative_cached("alice@secure.test"));
}

#[tokio::test]
async fn records_not_fit_for_the_recipient_are_refused() {
    let dave = pgp_key("Dave <dave@secure.test>");
    let signer = SmimeCert::openssl("erin@secure.test", "digitalSignature");
    let erin = SmimeCert::openssl("erin@secure.test", "keyEncipherment");
    let dns = DnsServer::start(vec![
        Zone::new("test")
            .signed()
            // Dave's key published under Frank's name: not for frank.
            .openpgpkey("frank@secure.test", &dave.binary)
            // A signing-only certificate; a CA usage; a hash instead of the certificate.
            .smimea("erin@secure.test", 3, 0, 0, &signer.der)
            .smimea("erin@secure.test", 2, 0, 0, &erin.der)
            .smimea("erin@secure.test", 3, 0, 1, &erin.der[..32])
            // Not a key at all.
            .openpgpkey("grace@secure.test", b"not an OpenPGP key"),
    ])
    .await;
    let store = key_store();
    let lookups = lookup(&dns, store.clone());
    for address in ["frank@secure.test", "erin@secure.test", "grace@secure.test"] {
        assert_eq!(lookups.find(address).await, Found::NoKey, "{address}");
        assert!(lookups.is_negative_cached(address), "{address}");
    }
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test]
async fn a_negative_answer_is_cached_and_the_second_lookup_asks_nothing() {
    let dns = DnsServer::start(vec![alice_zone()]).await;
    let lookups = lookup(&dns, key_store());
    assert!(!lookups.is_negative_cached("nobody@secure.test"));
    let (first, asked) = counted(&dns, &lookups, "nobody@secure.test").await;
    assert_eq!(first, Found::NoKey);
    assert!(asked >= 2, "one question per record type at least: {asked}");
    assert!(lookups.is_negative_cached("nobody@secure.test"));
    assert!(lookups.is_negative_cached("<nobody@Secure.Test>"));
    let (second, asked) = counted(&dns, &lookups, "nobody@secure.test").await;
    assert_eq!((second, asked), (Found::NoKey, 0));
}

#[tokio::test]
async fn a_negative_entry_expires_after_negative_ttl() {
    let dns = DnsServer::start(vec![alice_zone()]).await;
    let lookups = lookup_with(&dns, key_store(), |config| {
        config.negative_ttl = HumanDuration(Duration::from_secs(1));
    });
    let asked = Instant::now();
    assert_eq!(lookups.find("nobody@secure.test").await, Found::NoKey);
    assert!(lookups.is_negative_cached("nobody@secure.test"));
    // The negative cache reads std's clock, which tokio's paused clock cannot move:
    // wait, in real time, for the entry to expire, and check that it lived its TTL.
    while lookups.is_negative_cached("nobody@secure.test") {
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "still cached 10 s after it was stored with a TTL of 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "expired {:?} after it was stored, before its TTL of 1 s",
        asked.elapsed()
    );
    let (again, asked) = counted(&dns, &lookups, "nobody@secure.test").await;
    assert_eq!(again, Found::NoKey);
    assert!(asked > 0, "asked again after the negative TTL");
}

#[tokio::test]
async fn servfail_is_unavailable_and_not_cached() {
    let dns = DnsServer::start(vec![alice_zone()]).await;
    let lookups = lookup(&dns, key_store());
    dns.fault("secure.test", Fault::ServFail);
    let (found, asked) = counted(&dns, &lookups, "alice@secure.test").await;
    assert!(matches!(found, Found::Unavailable(_)), "{found:?}");
    assert!(asked > 0);
    assert!(!lookups.is_negative_cached("alice@secure.test"));

    // Nothing was remembered: the next lookup asks again, and finds the key.
    let (found, asked) = counted(&dns, &lookups, "alice@secure.test").await;
    assert!(matches!(found, Found::Unavailable(_)), "{found:?}");
    assert!(
        asked > 0,
        "SERVFAIL is not cached by sealgate nor by the resolver"
    );
    dns.heal();
    assert_eq!(keys(lookups.find("alice@secure.test").await).len(), 1);
}

#[tokio::test]
async fn no_answer_is_unavailable_within_the_timeout_and_not_cached() {
    let dns = DnsServer::start(vec![alice_zone()]).await;
    let timeout = Duration::from_millis(600);
    let lookups = lookup_with(&dns, key_store(), |config| {
        config.timeout = HumanDuration(timeout);
    });
    dns.fault("secure.test", Fault::Silence);
    let started = Instant::now();
    let found = lookups.find("alice@secure.test").await;
    let took = started.elapsed();
    assert!(matches!(found, Found::Unavailable(_)), "{found:?}");
    assert!(took < timeout + Duration::from_secs(1), "took {took:?}");
    assert!(!lookups.is_negative_cached("alice@secure.test"));
    dns.heal();
    assert_eq!(keys(lookups.find("alice@secure.test").await).len(), 1);
}

#[tokio::test]
async fn an_address_dns_cannot_ask_about_has_no_key() {
    let dns = DnsServer::start(vec![alice_zone()]).await;
    let lookups = lookup(&dns, key_store());
    for address in ["no-at-sign", "user@", &format!("u@{}.test", "a".repeat(64))] {
        let (found, asked) = counted(&dns, &lookups, address).await;
        assert_eq!((found, asked), (Found::NoKey, 0), "{address}");
    }
}

// MX resolution.

fn mail_zone() -> Zone {
    Zone::new("mail.test")
        .mx("mail.test", 20, "mx2.mail.test")
        .mx("mail.test", 10, "mx1.mail.test")
        .mx("mail.test", 30, "mx3.mail.test")
        .a("mx1.mail.test", Ipv4Addr::new(192, 0, 2, 1))
        .aaaa("mx1.mail.test", "2001:db8::1".parse().unwrap())
        .a("mx2.mail.test", Ipv4Addr::new(192, 0, 2, 2))
        .a("mx2.mail.test", Ipv4Addr::new(192, 0, 2, 3))
        .aaaa("mx3.mail.test", "2001:db8::3".parse().unwrap())
        // Implicit MX: an address and no MX.
        .a("bare.mail.test", Ipv4Addr::new(192, 0, 2, 9))
        // RFC 7505 null MX.
        .mx("nomail.mail.test", 0, ".")
        .a("nomail.mail.test", Ipv4Addr::new(192, 0, 2, 10))
        // A name with neither MX nor address.
        .txt("empty.mail.test", "no mail here")
        // An MX host without any address.
        .mx("lame.mail.test", 10, "gone.mail.test")
}

fn resolver(dns: &DnsServer) -> DnsResolver {
    DnsResolver::new(&dns.lookup_config()).unwrap()
}

fn sorted(mut addresses: Vec<IpAddr>) -> Vec<IpAddr> {
    addresses.sort();
    addresses
}

#[tokio::test]
async fn mx_hosts_come_in_preference_order_with_their_addresses() {
    let dns = DnsServer::start(vec![mail_zone()]).await;
    let hosts = resolver(&dns).mx_hosts("Mail.Test.").await.unwrap();
    let summary: Vec<(u16, &str)> = hosts
        .iter()
        .map(|h| (h.preference, h.name.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (10, "mx1.mail.test"),
            (20, "mx2.mail.test"),
            (30, "mx3.mail.test")
        ]
    );
    assert_eq!(
        hosts[0].addresses,
        [
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap())
        ],
        "IPv4 first, then IPv6"
    );
    assert_eq!(
        sorted(hosts[1].addresses.clone()),
        [
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3))
        ]
    );
    assert_eq!(
        hosts[2].addresses,
        [IpAddr::V6("2001:db8::3".parse().unwrap())]
    );
}

#[tokio::test]
async fn a_domain_without_mx_is_its_own_mail_host_at_preference_0() {
    let dns = DnsServer::start(vec![mail_zone()]).await;
    let hosts = resolver(&dns).mx_hosts("bare.mail.test").await.unwrap();
    assert_eq!(
        hosts,
        [MxHost {
            preference: 0,
            name: "bare.mail.test".into(),
            addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))],
        }]
    );
}

#[tokio::test]
async fn a_null_mx_means_the_domain_accepts_no_mail() {
    let dns = DnsServer::start(vec![mail_zone()]).await;
    let error = resolver(&dns)
        .mx_hosts("nomail.mail.test")
        .await
        .unwrap_err();
    assert_eq!(error, DnsError::NullMx("nomail.mail.test".into()));
    assert!(error.is_permanent());
}

#[tokio::test]
async fn mx_failures_are_permanent_or_temporary_as_a_retry_could_help() {
    let dns = DnsServer::start(vec![mail_zone()]).await;
    let resolver = resolver(&dns);

    let error = resolver.mx_hosts("nowhere.mail.test").await.unwrap_err();
    assert_eq!(error, DnsError::NoSuchDomain("nowhere.mail.test".into()));
    assert!(error.is_permanent());

    let error = resolver.mx_hosts("empty.mail.test").await.unwrap_err();
    assert_eq!(error, DnsError::NoMailHost("empty.mail.test".into()));
    assert!(error.is_permanent());

    let error = resolver.mx_hosts("lame.mail.test").await.unwrap_err();
    assert!(matches!(error, DnsError::Temporary { .. }), "{error:?}");

    let error = resolver.mx_hosts("bad..name").await.unwrap_err();
    assert!(error.is_permanent(), "{error:?}");

    dns.fault("mail.test", Fault::ServFail);
    let error = resolver.mx_hosts("mail.test").await.unwrap_err();
    assert!(
        matches!(&error, DnsError::Temporary { name, .. } if name == "mail.test"),
        "{error:?}"
    );
    assert!(!error.is_permanent());
}

#[tokio::test]
async fn an_mx_host_that_fails_to_resolve_is_skipped_and_silence_is_temporary() {
    let dns = DnsServer::start(vec![mail_zone()]).await;
    let mut config = dns.lookup_config();
    config.timeout = HumanDuration(Duration::from_millis(500));
    let resolver = DnsResolver::new(&config).unwrap();

    dns.fault("mx1.mail.test", Fault::ServFail);
    let hosts = resolver.mx_hosts("mail.test").await.unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["mx2.mail.test", "mx3.mail.test"]);

    dns.heal();
    dns.fault("mail.test", Fault::Silence);
    let started = Instant::now();
    let error = resolver.mx_hosts("bare.mail.test").await.unwrap_err();
    assert!(matches!(error, DnsError::Temporary { .. }), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
