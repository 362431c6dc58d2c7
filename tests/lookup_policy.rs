//! Key lookup through the whole gateway: a recipient without a cached key has one looked
//! up in DNS (a real authoritative server on loopback), the key found is used and
//! cached with source `lookup`, "no key" is remembered, and a lookup that cannot be
//! answered makes a rule that requires encryption defer while opportunistic encryption
//! sends in clear.

mod support;

use std::time::Duration;

use sealgate::keys::admin::Request;
use sealgate::keys::{KeyEntry, Source};
use support::dns::{DnsServer, Fault, Zone};
use support::keys::GpgHome;
use support::{Client, Gateway, Sink, config_text, split_received, start};

/// A gateway relaying to `sink` whose key lookups ask `dns`; `keys.example` and
/// `down.example` are insecure domains (the gateway trusts the root's anchors only,
/// so a zone on loopback cannot validate; DNSSEC itself is tested in tests/lookup.rs).
async fn gateway(sink: &Sink, dns: &DnsServer) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[lookup]\nnameservers = [\"{}\"]\ninsecure_domains = [\"keys.example\", \"down.example\", \"quiet.example\"]\ntimeout = \"1s\"\n",
        dns.addr
    );
    let text = config_text(&dir.path().join("data"), &sink.addr.to_string(), &extra);
    (dir, start(&text).await)
}

fn mail(subject: &str) -> Vec<u8> {
    format!("From: alice@example.com\r\nSubject: {subject}\r\nMessage-ID: <l1@example.com>\r\n\r\nThe offer stands.\r\n").into_bytes()
}

fn entries(gw: &Gateway) -> Vec<KeyEntry> {
    let response = support::admin_request(&gw.data_dir, Request::List).unwrap();
    response.entries
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn a_key_found_in_dns_is_used_and_cached_with_source_lookup() {
    let bob = GpgHome::new();
    bob.make_key("Bob <bob@keys.example>", "ed25519", "cv25519", "encr");
    let public = bob.run(&["--export", "bob@keys.example"], None);
    let dns = DnsServer::start(vec![
        Zone::new("keys.example").openpgpkey("bob@keys.example", &public),
    ])
    .await;
    let sink = Sink::start().await;
    let (_dir, gw) = gateway(&sink, &dns).await;

    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail("alice@example.com", &["bob@keys.example"], &mail("offer"))
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    let outer = text(&got[0].data);
    assert!(outer.contains("multipart/encrypted"), "{outer}");
    let plain = text(&bob.run(&["--decrypt"], Some(&support::armored(&got[0].data))));
    assert!(plain.contains("The offer stands."), "{plain}");

    let cached = entries(&gw);
    assert_eq!(cached.len(), 1, "{cached:#?}");
    let entry = &cached[0];
    assert_eq!(
        (entry.address.as_str(), entry.source),
        ("bob@keys.example", Source::Lookup)
    );
    // [keys] lookup_ttl, 1 day by default.
    assert_eq!(entry.expires, Some(entry.added + time::Duration::days(1)));

    // The next message finds the key in the cache: no question to DNS.
    let before = dns.queries();
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail("alice@example.com", &["bob@keys.example"], &mail("again"))
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(2, Duration::from_secs(10)).await;
    assert!(text(&got[1].data).contains("multipart/encrypted"));
    assert_eq!(dns.queries(), before, "{:?}", dns.asked());
}

#[tokio::test]
async fn no_key_in_dns_is_remembered_and_the_message_goes_out_as_the_rule_says() {
    let dns = DnsServer::start(vec![
        Zone::new("keys.example").a("mx.keys.example", [127, 0, 0, 1].into()),
    ])
    .await;
    let sink = Sink::start().await;
    let (_dir, gw) = gateway(&sink, &dns).await;
    let message = mail("hello");
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail("alice@example.com", &["carol@keys.example"], &message)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let asked = dns.queries();
    assert!(asked > 0, "the lookup asked DNS");
    // encrypt-when-possible sends in clear without a key.
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(split_received(&got[0].data).1, message);
    assert!(entries(&gw).is_empty());

    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail("alice@example.com", &["carol@keys.example"], &message)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(
        dns.queries(),
        asked,
        "a negative answer is cached: {:?}",
        dns.asked()
    );

    // A rule that requires encryption refuses for good: the answer was "no key".
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    client
        .cmd_expect("MAIL FROM:<alice@example.com>", 250)
        .await;
    client.cmd_expect("RCPT TO:<carol@keys.example>", 250).await;
    client.cmd_expect("DATA", 354).await;
    client
        .send(support::dot_stuff(&mail("[secure] terms")))
        .await;
    support::expect_status(&mut client, 550, "5.7.1").await;
}

#[tokio::test]
async fn a_lookup_that_fails_defers_required_encryption_and_its_domain_rests() {
    let dns = DnsServer::start(vec![
        Zone::new("down.example").a("mx.down.example", [127, 0, 0, 1].into()),
        Zone::new("quiet.example").a("mx.quiet.example", [127, 0, 0, 1].into()),
    ])
    .await;
    dns.fault("down.example", Fault::ServFail);
    dns.fault("quiet.example", Fault::Silence);
    let sink = Sink::start().await;
    let (_dir, gw) = gateway(&sink, &dns).await;

    // SERVFAIL, and no answer within [lookup] timeout: [secure] requires encryption
    // and whether the recipient has a key is not known, so 451.
    for rcpt in ["dave@down.example", "erin@quiet.example"] {
        let mut client = Client::connect(gw.outbound).await;
        client.cmd_expect("EHLO client.test", 250).await;
        client
            .cmd_expect("MAIL FROM:<alice@example.com>", 250)
            .await;
        client.cmd_expect(&format!("RCPT TO:<{rcpt}>"), 250).await;
        client.cmd_expect("DATA", 354).await;
        client
            .send(support::dot_stuff(&mail("[secure] terms")))
            .await;
        let reply = support::expect_status(&mut client, 451, "4.4.3").await;
        assert!(reply.text.contains(rcpt), "{reply:?}");
    }
    assert!(sink.received().is_empty());

    // Opportunistic encryption (no_key = "send_clear") sends in clear when it cannot
    // know. The domain's lookups failed moments ago, so this one fails at once, without
    // a question ([lookup] failure_rest): a dead resolver does not cost every message
    // a timeout.
    let before = dns.queries();
    let message = mail("plain");
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail("alice@example.com", &["frank@quiet.example"], &message)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(dns.queries(), before, "{:?}", dns.asked());
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(split_received(&got[0].data).1, message);
}
