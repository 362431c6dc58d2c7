//! The bounds on harvesting, each guarding an attack that cost minutes of CPU or
//! gigabytes of memory: a key with thousands of user IDs, a signature with thousands
//! of certificates, a queue that grew with every inbound message, and keys planted for
//! internal addresses by a spoofed From.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use openpgp::cert::CertBuilder;
use openpgp::packet::UserID;
use openpgp::serialize::SerializeInto;
use sequoia_openpgp as openpgp;
use time::OffsetDateTime;

use super::*;
use crate::keys::store::SledKeyStore;

fn store() -> SledKeyStore {
    let db = sled::Config::new().temporary(true).open().unwrap();
    SledKeyStore::open(&db, Duration::from_secs(86400)).unwrap()
}

fn ours() -> Rules {
    Rules {
        internal: InternalDomains::new(["example.com"]),
        trusted_authserv_ids: vec!["mx.example.com".into()],
        smime_trust: None,
    }
}

/// A message from `from` with `key` as an application/pgp-keys part.
fn pgp_keys_mail(from: &str, key: &[u8]) -> Vec<u8> {
    let armored = {
        let mut w =
            openpgp::armor::Writer::new(Vec::new(), openpgp::armor::Kind::PublicKey).unwrap();
        std::io::Write::write_all(&mut w, key).unwrap();
        w.finalize().unwrap()
    };
    let mut mail = format!(
        "From: {from}\r\nTo: user@example.com\r\nSubject: my key\r\nMessage-ID: <k@x>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nMy key.\r\n\
         --b\r\nContent-Type: application/pgp-keys\r\n\r\n"
    )
    .into_bytes();
    mail.extend_from_slice(&crate::mail::mime::crlf(&armored));
    mail.extend_from_slice(b"\r\n--b--\r\n");
    mail
}

/// A cert for `uid` that can encrypt, with `extra` more user IDs that carry no
/// signature at all: cheap to make, and each one cost sequoia a pass over the cert.
fn key_with_extra_userids(uid: &str, extra: usize) -> Vec<u8> {
    let (cert, _) = CertBuilder::new()
        .add_userid(uid)
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    let uids = (0..extra).map(|i| UserID::from(format!("<u{i}@x.example>")));
    let cert = cert.insert_packets(uids).unwrap().0;
    assert_eq!(cert.userids().count(), extra + 1);
    cert.to_vec().unwrap()
}

#[test]
fn a_key_with_too_many_user_ids_is_refused() {
    let store = store();
    let key = key_with_extra_userids("Victim <victim@example.org>", 500);
    let mail = pgp_keys_mail("victim@example.org", &key);
    let report = harvest(&store, &ours(), &mail, OffsetDateTime::now_utc());
    assert!(report.stored.is_empty(), "{report:?}");
    assert!(
        report
            .refused
            .iter()
            .any(|r| r.contains("more than the 64 user IDs")),
        "{report:?}"
    );
    // A key with a few user IDs still is harvested.
    let key = key_with_extra_userids("Victim <victim@example.org>", 10);
    let report = harvest(
        &store,
        &ours(),
        &pgp_keys_mail("victim@example.org", &key),
        OffsetDateTime::now_utc(),
    );
    assert_eq!(report.stored.len(), 1, "{report:?}");
}

#[test]
fn keys_for_internal_addresses_are_never_harvested() {
    let store = store();
    let key = key_with_extra_userids("Alice <alice@example.com>", 0);
    let mail = pgp_keys_mail("Alice <alice@EXAMPLE.com>", &key);
    let report = harvest(&store, &ours(), &mail, OffsetDateTime::now_utc());
    assert!(report.stored.is_empty(), "{report:?}");
    assert!(
        report.refused.iter().any(|r| r.contains("internal")),
        "{report:?}"
    );
    assert!(store.find("alice@example.com").unwrap().is_empty());
}

#[test]
fn a_signature_with_hundreds_of_certificates_is_refused_before_they_are_decoded() {
    // A real signed message whose SignedData carries 400 extra certificates.
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "30",
        "-keyout",
        "k.pem",
        "-out",
        "c.pem",
        "-subj",
        "/CN=Bob",
        "-addext",
        "subjectAltName=email:bob@example.org",
        "-addext",
        "keyUsage=digitalSignature,keyAgreement",
    ]);
    let mut bundle = String::new();
    for i in 0..400 {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![format!("h{i}.example")])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        bundle.push_str(&cert.pem());
    }
    std::fs::write(dir.path().join("bundle.pem"), bundle).unwrap();
    std::fs::write(
        dir.path().join("entity.txt"),
        "Content-Type: text/plain\r\n\r\nhi\r\n",
    )
    .unwrap();
    let signed = run(&[
        "smime",
        "-sign",
        "-in",
        "entity.txt",
        "-signer",
        "c.pem",
        "-inkey",
        "k.pem",
        "-certfile",
        "bundle.pem",
        "-from",
        "bob@example.org",
        "-to",
        "user@example.com",
    ]);
    let mail = crate::mail::mime::crlf(&signed);
    let report = harvest(&store(), &ours(), &mail, OffsetDateTime::now_utc());
    assert!(report.stored.is_empty(), "{report:?}");
    assert!(
        report
            .refused
            .iter()
            .any(|r| r.contains("more than 32 certificates")),
        "{report:?}"
    );
}

/// A key store whose every call waits until the test opens the gate: the harvester
/// thread is busy for as long as the test wants.
struct Gated {
    inner: SledKeyStore,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Gated {
    fn wait(&self) {
        let (open, cv) = &*self.gate;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
    }
}

impl KeyStore for Gated {
    fn put(&self, c: Candidate, now: OffsetDateTime) -> Result<Put, crate::keys::KeyStoreError> {
        self.wait();
        self.inner.put(c, now)
    }
    fn find(&self, a: &str) -> Result<Vec<crate::keys::KeyEntry>, crate::keys::KeyStoreError> {
        self.inner.find(a)
    }
    fn material(&self, a: &str, f: &str) -> Result<Option<Vec<u8>>, crate::keys::KeyStoreError> {
        self.inner.material(a, f)
    }
    fn sealed_secret(&self, f: &str) -> Result<Option<Vec<u8>>, crate::keys::KeyStoreError> {
        self.inner.sealed_secret(f)
    }
    fn list(&self) -> Result<Vec<crate::keys::KeyEntry>, crate::keys::KeyStoreError> {
        self.inner.list()
    }
    fn mark_revoked(
        &self,
        f: &str,
        m: Option<&[u8]>,
    ) -> Result<Vec<crate::keys::KeyEntry>, crate::keys::KeyStoreError> {
        self.inner.mark_revoked(f, m)
    }
    fn delete(&self, a: &str) -> Result<Vec<crate::keys::KeyEntry>, crate::keys::KeyStoreError> {
        self.inner.delete(a)
    }
    fn purge(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<crate::keys::KeyEntry>, crate::keys::KeyStoreError> {
        self.inner.purge(now)
    }
}

#[test]
fn the_queue_is_bounded_in_bytes_and_holds_only_what_may_carry_keys() {
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let store = Arc::new(Gated {
        inner: store(),
        gate: gate.clone(),
    });
    let harvester = Harvester::start(store, ours());

    // Mail without any sign of a key is never queued, however much of it there is.
    let plain = Message::new(vec![b'x'; 4 * 1024 * 1024]);
    for _ in 0..100 {
        harvester.submit("T1", &plain);
    }
    assert_eq!(harvester.queued_bytes(), 0);
    assert_eq!(harvester.dropped(), 0);

    // Nor is a message too large to harvest.
    let mut huge = pgp_keys_mail(
        "bob@example.org",
        &key_with_extra_userids("<bob@example.org>", 0),
    );
    huge.resize(MAX_MESSAGE + 1, b'x');
    harvester.submit("T1", &Message::new(huge));
    assert_eq!(harvester.queued_bytes(), 0);

    // Messages with keys, while the harvester is stuck on the first: the queue stops
    // at its byte bound and the rest are dropped, counted.
    let key = key_with_extra_userids("<bob@example.org>", 0);
    let mut big = pgp_keys_mail("bob@example.org", &key);
    big.resize(8 * 1024 * 1024, b' ');
    let big = Message::new(big);
    for _ in 0..40 {
        harvester.submit("T1", &big);
        assert!(harvester.queued_bytes() <= QUEUE_BYTES);
    }
    assert!(
        harvester.dropped() as usize >= 40 - QUEUE_BYTES / big.len() - 1,
        "{}",
        harvester.dropped()
    );

    // Opened, the harvester works the queue down to nothing.
    let (open, cv) = &*gate;
    *open.lock().unwrap() = true;
    cv.notify_all();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while harvester.queued_bytes() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the queue never drained"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A message on which mail-parser 0.11.9 panics where debug assertions are on ("Invalid
/// part ID, could not find multipart."), as in this test build: minimised by libFuzzer
/// from what the harvest, decrypt and smtp_session targets found, with an Autocrypt
/// field so that it is queued.
const PARSER_PANIC: &[u8] = b"Autocrypt: addr=bob@example.org; keydata=AAAA\r\n\
    Content-Type:multipart;boundary=r\r\n\r\n--rContent-Type:message/rfc822\r\n\r\n\
    Content-Type:message/rfc822\r\n\r\n\r\n--r--";

/// The harvester thread died with a panic in a parser, and every later message was
/// dropped as if it were busy: it goes on to the next message now.
#[test]
fn a_panic_while_harvesting_costs_one_message() {
    let store = Arc::new(store());
    let harvester = Harvester::start(store.clone(), ours());
    let key = key_with_extra_userids("<bob@example.org>", 0);
    for message in [
        PARSER_PANIC.to_vec(),
        pgp_keys_mail("bob@example.org", &key),
    ] {
        harvester.submit("T1", &Message::new(message));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while harvester.queued_bytes() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the harvester stopped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(store.find("bob@example.org").unwrap().len(), 1);
    assert_eq!(harvester.dropped(), 0);
}

/// The message `pgp_keys_mail` makes, with `fields` (each ending in CRLF) on top.
fn with_fields(fields: &str, mail: Vec<u8>) -> Vec<u8> {
    let mut out = fields.as_bytes().to_vec();
    out.extend_from_slice(&mail);
    out
}

#[test]
fn a_spoofed_key_waits_unless_the_trusted_mta_vouches_for_the_mail() {
    const DAY: Duration = Duration::from_secs(86400);
    let store = store();
    let t0 = OffsetDateTime::now_utc();
    let real = key_with_extra_userids("Bob <bob@partner.example>", 0);
    for day in [0, 2] {
        let report = harvest(
            &store,
            &ours(),
            &pgp_keys_mail("bob@partner.example", &real),
            t0 + day * DAY,
        );
        assert_eq!(report.stored.len(), 1, "{report:?}");
    }
    // A spoofed From with another key; its own Authentication-Results, and one from an
    // authserv-id nobody trusts, count for nothing.
    let spoofed = key_with_extra_userids("Bob <bob@partner.example>", 0);
    let forged = with_fields(
        "Authentication-Results: evil.example; dkim=pass header.d=partner.example\r\n",
        pgp_keys_mail("bob@partner.example", &spoofed),
    );
    let report = harvest(&store, &ours(), &forged, t0 + 3 * DAY);
    assert!(matches!(report.stored[0].2, Put::Pending(_)), "{report:?}");
    let usable: Vec<_> = store
        .find("bob@partner.example")
        .unwrap()
        .into_iter()
        .filter(|e| e.usable_for_encryption(t0 + 3 * DAY, crate::keys::Allowed::EVERY_SOURCE))
        .collect();
    assert_eq!(usable.len(), 1);
    assert_ne!(
        usable[0].fingerprint, report.stored[0].1,
        "the established key stays in use"
    );

    // The same key in mail the MTA in front vouches for (aligned DKIM): it takes over.
    let vouched = with_fields(
        "Authentication-Results: mx.example.com; dkim=pass header.d=partner.example header.s=s1\r\n",
        pgp_keys_mail("bob@partner.example", &spoofed),
    );
    let report = harvest(&store, &ours(), &vouched, t0 + 4 * DAY);
    assert!(matches!(report.stored[0].2, Put::Replaced(_)), "{report:?}");
    let entries = store.find("bob@partner.example").unwrap();
    assert_eq!(entries.len(), 1);
    assert!(!entries[0].pending);
}

/// Runs openssl in `dir`; panics with its stderr when it fails.
fn openssl_in(dir: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A CA, and a message from carol@partner.example signed with a certificate it issued.
fn ca_and_signed_mail(dir: &std::path::Path) -> Vec<u8> {
    openssl_in(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Partner CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl_in(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "carol.key",
            "-out",
            "carol.csr",
            "-subj",
            "/CN=Carol",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=email:carol@partner.example\nkeyUsage=digitalSignature,keyAgreement\n\
         extendedKeyUsage=emailProtection\n",
    )
    .unwrap();
    openssl_in(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "carol.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "20",
            "-extfile",
            "ext.cnf",
            "-out",
            "carol.pem",
        ],
    );
    std::fs::write(
        dir.join("entity.txt"),
        "Content-Type: text/plain\r\n\r\nhi\r\n",
    )
    .unwrap();
    let signed = openssl_in(
        dir,
        &[
            "smime",
            "-sign",
            "-in",
            "entity.txt",
            "-signer",
            "carol.pem",
            "-inkey",
            "carol.key",
            "-from",
            "carol@partner.example",
            "-to",
            "user@example.com",
        ],
    );
    crate::mail::mime::crlf(&signed).into_owned()
}

#[test]
fn a_certificate_is_chain_validated_only_against_the_trust_store() {
    let dir = tempfile::tempdir().unwrap();
    let mail = ca_and_signed_mail(dir.path());
    let now = OffsetDateTime::now_utc();
    let validated = |rules: &Rules| {
        let store = store();
        let report = harvest(&store, rules, &mail, now);
        assert_eq!(report.stored.len(), 1, "{report:?}");
        store.find("carol@partner.example").unwrap()[0].chain_validated
    };
    // No trust store: stored, not validated.
    assert!(!validated(&ours()));
    // The CA that issued it: validated.
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let trusting = Rules {
        smime_trust: Some(Arc::new(trust::SmimeTrust::from_pem(&ca).unwrap())),
        ..ours()
    };
    assert!(validated(&trusting));
    // Another CA: not validated.
    openssl_in(
        dir.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-subj",
            "/CN=Other CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ],
    );
    let other = std::fs::read(dir.path().join("other.pem")).unwrap();
    let elsewhere = Rules {
        smime_trust: Some(Arc::new(trust::SmimeTrust::from_pem(&other).unwrap())),
        ..ours()
    };
    assert!(!validated(&elsewhere));
    assert!(trust::SmimeTrust::from_pem(b"not pem").is_err());
}
