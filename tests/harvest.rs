//! Key harvesting end to end: real mail, signed with certificates `openssl` makes at
//! test time or carrying keys `gpg` makes, sent through the gateway's listeners; the key
//! store is read back through the admin socket, as `sealgate keys list` reads it.
//!
//! Harvesting runs after the 250, on one thread, in the order messages were accepted.
//! So a test that expects a message to store nothing sends it first, then a message
//! whose key must be stored (the marker), waits for that key, and only then looks.

mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use sealgate::keys::admin::{self, Request};
use sealgate::keys::{KeyEntry, KeyKind, Source};
use support::keys::Form::{Detached, Opaque, OpaqueBer};
use support::keys::{ENTITY, SmimeCert, pgp_key, plain_mail};
use support::{Client, Gateway, Sink, gateway_to, split_received};
use time::OffsetDateTime;

const BOB: &str = "Bob <bob@example.org>";
const ENCRYPT: &str = "digitalSignature,keyEncipherment";

/// The key store's entries, read through the running gateway's admin socket.
async fn entries(gw: &Gateway) -> Vec<KeyEntry> {
    let data_dir = gw.data_dir.clone();
    // The server opens its admin socket just after it starts serving.
    let socket = data_dir.join(admin::SOCKET);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no {}", socket.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response =
        tokio::task::spawn_blocking(move || support::admin_request(&data_dir, Request::List))
            .await
            .unwrap()
            .expect("the admin socket answers");
    assert!(!response.failed, "{:?}", response.messages);
    response.entries
}

/// Waits until the store has an entry for (address, fingerprint), 30 s at most.
async fn wait_for_key(gw: &Gateway, address: &str, fingerprint: &str) -> KeyEntry {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = entries(gw).await;
        if let Some(entry) = all
            .iter()
            .find(|e| e.address == address && e.fingerprint == fingerprint)
        {
            return entry.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no key {fingerprint} for {address} within 30 s; the store has {all:#?}"
        );
        // Polled: the store is read through the admin socket of another thread's gateway.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends one message through `listener` to user@example.com; it must be accepted.
async fn send_to(listener: std::net::SocketAddr, message: &[u8]) {
    let mut client = Client::connect(listener).await;
    let reply = client
        .send_mail("sender@example.net", &["user@example.com"], message)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
}

async fn send(gw: &Gateway, message: &[u8]) {
    send_to(gw.inbound, message).await;
}

/// Sends a message whose key must be harvested, waits until it is, and returns every
/// other entry. Messages accepted before it have been harvested by then.
async fn entries_after_marker(gw: &Gateway) -> Vec<KeyEntry> {
    let marker = SmimeCert::openssl("marker@example.net", ENCRYPT);
    send(
        gw,
        &marker.sign("marker@example.net", "marker@example.net", ENTITY, Detached),
    )
    .await;
    wait_for_key(gw, "marker@example.net", &marker.fingerprint()).await;
    entries(gw)
        .await
        .into_iter()
        .filter(|e| e.address != "marker@example.net")
        .collect()
}

/// Sends each message inbound and asserts that none of them stored anything.
async fn assert_harvests_nothing(gw: &Gateway, messages: &[Vec<u8>]) {
    for message in messages {
        send(gw, message).await;
    }
    let stored = entries_after_marker(gw).await;
    assert!(stored.is_empty(), "stored: {stored:#?}");
}

/// The sink's copies, each without the Received header the gateway put on top.
async fn delivered(sink: &Sink, count: usize) -> Vec<Vec<u8>> {
    sink.wait_for(count, Duration::from_secs(20))
        .await
        .iter()
        .map(|got| split_received(&got.data).1)
        .collect()
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `text` with `from` replaced by `to` once (which must be there).
fn replace_once(text: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains(from), "{from:?} not in {text}");
    text.replacen(from, to, 1).into_bytes()
}

/// A multipart/mixed message with a text part and an `application/pgp-keys` part.
fn pgp_keys_mail(from: &str, message_id: &str, key: &str) -> Vec<u8> {
    plain_mail(
        from,
        message_id,
        &[
            "MIME-Version: 1.0",
            "Content-Type: multipart/mixed; boundary=\"keys-boundary\"",
        ],
        &format!(
            "--keys-boundary\r\nContent-Type: text/plain\r\n\r\nMy key is attached.\r\n\
             --keys-boundary\r\nContent-Type: application/pgp-keys\r\n\
             Content-Disposition: attachment; filename=\"key.asc\"\r\n\r\n{key}\r\n\
             --keys-boundary--\r\n"
        ),
    )
}

/// Checks the fields every mailflow entry must have.
fn assert_mailflow(entry: &KeyEntry, kind: KeyKind, message_id: &str, sender: &str) {
    assert_eq!(entry.kind, kind, "{entry:#?}");
    assert_eq!(entry.source, Source::Mailflow, "{entry:#?}");
    assert_eq!(
        entry.expires,
        Some(entry.added + time::Duration::days(180)),
        "mailflow keys expire exactly 180 days after harvest: {entry:#?}"
    );
    assert!(
        entry
            .message_id
            .as_deref()
            .is_some_and(|id| id.contains(message_id)),
        "{entry:#?}"
    );
    assert_eq!(entry.sender.as_deref(), Some(sender), "{entry:#?}");
    assert!(!entry.can_decrypt, "{entry:#?}");
    let added_recently = OffsetDateTime::now_utc() - entry.added;
    assert!(
        added_recently >= time::Duration::ZERO && added_recently < time::Duration::minutes(5),
        "{entry:#?}"
    );
    // The JSON form, which `keys list --json` prints, uses the interface's words.
    let json = serde_json::to_value(entry).unwrap();
    let words = match kind {
        KeyKind::Pgp => "pgp",
        KeyKind::Smime => "smime",
    };
    assert_eq!(json["kind"], words, "{json}");
    assert_eq!(json["source"], "mailflow", "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smime_detached_signature_is_harvested_for_the_from_address() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let alice = SmimeCert::openssl("alice@example.org", ENCRYPT);
    let message = alice.sign(
        "Alice <Alice@Example.ORG>",
        "detached-1@example.org",
        ENTITY,
        Detached,
    );
    send(&gw, &message).await;

    let entry = wait_for_key(&gw, "alice@example.org", &alice.fingerprint()).await;
    assert_mailflow(
        &entry,
        KeyKind::Smime,
        "detached-1@example.org",
        "alice@example.org",
    );
    assert_eq!(entries(&gw).await, vec![entry]);
    // Harvesting never changes the message.
    assert_eq!(delivered(&sink, 1).await, vec![message]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_signed_data_is_harvested() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let alice = SmimeCert::openssl("alice@example.org", ENCRYPT);
    let message = alice.sign("alice@example.org", "opaque-1@example.org", ENTITY, Opaque);
    assert!(
        String::from_utf8_lossy(&message).contains("smime-type=signed-data"),
        "not opaque: {}",
        String::from_utf8_lossy(&message)
    );
    send(&gw, &message).await;

    let entry = wait_for_key(&gw, "alice@example.org", &alice.fingerprint()).await;
    assert_mailflow(
        &entry,
        KeyKind::Smime,
        "opaque-1@example.org",
        "alice@example.org",
    );
    assert_eq!(entries(&gw).await.len(), 1);
}

/// Mail clients stream their signatures: indefinite lengths and a segmented content
/// OCTET STRING, which DER parsers refuse until they are re-encoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_signed_data_in_indefinite_length_ber_is_harvested() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let alice = SmimeCert::openssl("alice@example.org", ENCRYPT);
    let message = alice.sign("alice@example.org", "ber-1@example.org", ENTITY, OpaqueBer);
    send(&gw, &message).await;

    let entry = wait_for_key(&gw, "alice@example.org", &alice.fingerprint()).await;
    assert_mailflow(
        &entry,
        KeyKind::Smime,
        "ber-1@example.org",
        "alice@example.org",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocrypt_header_is_harvested() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let bob = pgp_key(BOB);
    let message = plain_mail(
        BOB,
        "autocrypt-1@example.org",
        &[&bob.autocrypt_header("bob@example.org")],
        "Hello, with Autocrypt.\r\n",
    );
    send(&gw, &message).await;

    let entry = wait_for_key(&gw, "bob@example.org", &bob.fingerprint).await;
    assert_mailflow(
        &entry,
        KeyKind::Pgp,
        "autocrypt-1@example.org",
        "bob@example.org",
    );
    assert_eq!(entries(&gw).await.len(), 1);
    assert_eq!(delivered(&sink, 1).await, vec![message]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgp_keys_part_is_harvested() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let bob = pgp_key(BOB);
    send(
        &gw,
        &pgp_keys_mail(BOB, "pgp-keys-1@example.org", &bob.armored),
    )
    .await;

    let entry = wait_for_key(&gw, "bob@example.org", &bob.fingerprint).await;
    assert_mailflow(
        &entry,
        KeyKind::Pgp,
        "pgp-keys-1@example.org",
        "bob@example.org",
    );
    assert_eq!(entries(&gw).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn armored_key_block_in_a_text_body_is_harvested() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let bob = pgp_key(BOB);
    let body = format!(
        "Hi,\r\n\r\nhere is my key:\r\n\r\n{}\r\nBob\r\n",
        bob.armored
    );
    send(
        &gw,
        &plain_mail(
            BOB,
            "pasted-1@example.org",
            &["Content-Type: text/plain; charset=us-ascii"],
            &body,
        ),
    )
    .await;

    let entry = wait_for_key(&gw, "bob@example.org", &bob.fingerprint).await;
    assert_mailflow(
        &entry,
        KeyKind::Pgp,
        "pasted-1@example.org",
        "bob@example.org",
    );
    assert_eq!(entries(&gw).await.len(), 1);
}

/// A message without Content-Type is text/plain; the harvester once skipped it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn armored_key_block_in_mail_without_content_type_is_harvested() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let bob = pgp_key(BOB);
    let body = format!("My key:\r\n\r\n{}", bob.armored);
    send(&gw, &plain_mail(BOB, "pasted-2@example.org", &[], &body)).await;

    let entry = wait_for_key(&gw, "bob@example.org", &bob.fingerprint).await;
    assert_mailflow(
        &entry,
        KeyKind::Pgp,
        "pasted-2@example.org",
        "bob@example.org",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_that_does_not_verify_stores_nothing() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let alice = SmimeCert::openssl("alice@example.org", ENCRYPT);
    let signed = alice.sign(
        "alice@example.org",
        "tampered@example.org",
        ENTITY,
        Detached,
    );
    // The body changed on the way, after signing.
    let tampered = replace_once(&signed, "\r\n\r\nhello\r\n", "\r\n\r\nHELLO\r\n");
    assert_harvests_nothing(&gw, &[tampered]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_other_than_the_from_address_stores_nothing() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let alice = SmimeCert::openssl("alice@example.org", ENCRYPT);
    // The signature verifies, but it is Alice's certificate on Mallory's mail.
    let detached = alice.sign(
        "mallory@example.org",
        "mismatch-1@example.org",
        ENTITY,
        Detached,
    );
    let opaque = alice.sign(
        "mallory@example.org",
        "mismatch-2@example.org",
        ENTITY,
        Opaque,
    );
    assert_harvests_nothing(&gw, &[detached, opaque]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_stores_nothing() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let now = OffsetDateTime::now_utc();
    let expired = SmimeCert::rcgen(
        "alice@example.org",
        now - time::Duration::days(60),
        now - time::Duration::days(1),
    );
    let message = expired.sign("alice@example.org", "expired@example.org", ENTITY, Detached);
    assert_harvests_nothing(&gw, &[message]).await;

    // The same kind of certificate, still valid, is taken: only the expiry counted.
    let valid = SmimeCert::rcgen(
        "alice@example.org",
        now - time::Duration::days(1),
        now + time::Duration::days(30),
    );
    send(
        &gw,
        &valid.sign("alice@example.org", "valid@example.org", ENTITY, Detached),
    )
    .await;
    wait_for_key(&gw, "alice@example.org", &valid.fingerprint()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_only_certificate_stores_nothing() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let signing_only = SmimeCert::openssl("alice@example.org", "digitalSignature");
    let detached = signing_only.sign("alice@example.org", "sign-1@example.org", ENTITY, Detached);
    let opaque = signing_only.sign("alice@example.org", "sign-2@example.org", ENTITY, Opaque);
    assert_harvests_nothing(&gw, &[detached, opaque]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_autocrypt_headers_store_nothing() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let bob = pgp_key(BOB);
    let header = bob.autocrypt_header("bob@example.org");
    let message = plain_mail(
        BOB,
        "two-headers@example.org",
        &[&header, &header],
        "Hi.\r\n",
    );
    assert_harvests_nothing(&gw, &[message]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_key_block_stores_nothing() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let noise: Vec<u8> = (0..1500u32).map(|i| (i * 7919 % 251) as u8).collect();
    let not_armor = "-----BEGIN PGP PUBLIC KEY BLOCK-----\r\n\r\n\
                     This is not a key at all.\r\n=AAAA\r\n\
                     -----END PGP PUBLIC KEY BLOCK-----";
    let noise_armor = format!(
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\r\n\r\n{}\r\n-----END PGP PUBLIC KEY BLOCK-----",
        base64(&noise)
    );
    // A real key with its packets cut short.
    let bob = pgp_key(BOB);
    let truncated =
        support::keys::autocrypt_header("bob@example.org", &bob.binary[..bob.binary.len() / 2]);
    let messages = [
        plain_mail(BOB, "garbage-1@example.org", &[], not_armor),
        plain_mail(BOB, "garbage-2@example.org", &[], &noise_armor),
        pgp_keys_mail(BOB, "garbage-3@example.org", not_armor),
        pgp_keys_mail(BOB, "garbage-4@example.org", &noise_armor),
        plain_mail(
            BOB,
            "garbage-5@example.org",
            &[&support::keys::autocrypt_header("bob@example.org", &noise)],
            "Hi.\r\n",
        ),
        plain_mail(BOB, "garbage-6@example.org", &[&truncated], "Hi.\r\n"),
    ];
    assert_harvests_nothing(&gw, &messages).await;
    // All of them were delivered, marker included.
    assert_eq!(delivered(&sink, messages.len() + 1).await.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autocrypt_addr_other_than_from_stores_nothing() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let bob = pgp_key(BOB);
    // From and the key agree; the header's addr does not.
    let message = plain_mail(
        BOB,
        "addr@example.org",
        &[&bob.autocrypt_header("robert@example.org")],
        "Hi.\r\n",
    );
    assert_harvests_nothing(&gw, &[message]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgp_key_for_another_address_stores_nothing() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    // Mallory sends Bob's key, in every place a key is looked for.
    let bob = pgp_key(BOB);
    let mallory = "Mallory <mallory@example.org>";
    let messages = [
        plain_mail(
            mallory,
            "other-1@example.org",
            &[&bob.autocrypt_header("mallory@example.org")],
            "Hi.\r\n",
        ),
        pgp_keys_mail(mallory, "other-2@example.org", &bob.armored),
        plain_mail(mallory, "other-3@example.org", &[], &bob.armored),
    ];
    assert_harvests_nothing(&gw, &messages).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocrypt_in_a_multipart_report_stores_nothing() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let bob = pgp_key(BOB);
    let message = plain_mail(
        BOB,
        "report@example.org",
        &[
            &bob.autocrypt_header("bob@example.org"),
            "MIME-Version: 1.0",
            "Content-Type: multipart/report; report-type=delivery-status; boundary=\"rpt\"",
        ],
        "--rpt\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
         --rpt\r\nContent-Type: message/delivery-status\r\n\r\n\
         Reporting-MTA: dns; mx.example.org\r\n\r\n\
         Final-Recipient: rfc822; nobody@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         --rpt--\r\n",
    );
    assert_harvests_nothing(&gw, &[message]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_through_the_outbound_listener_stores_nothing() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let alice = SmimeCert::openssl("alice@example.org", ENCRYPT);
    let bob = pgp_key(BOB);
    let messages = [
        alice.sign("alice@example.org", "out-1@example.org", ENTITY, Detached),
        alice.sign("alice@example.org", "out-2@example.org", ENTITY, Opaque),
        plain_mail(
            BOB,
            "out-3@example.org",
            &[&bob.autocrypt_header("bob@example.org")],
            "Hi.\r\n",
        ),
    ];
    for message in &messages {
        send_to(gw.outbound, message).await;
    }
    // The outbound copies are accepted (and relayed) before the marker goes in.
    delivered(&sink, messages.len()).await;
    let stored = entries_after_marker(&gw).await;
    assert!(
        stored.is_empty(),
        "outbound mail was harvested: {stored:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sighting_does_not_extend_the_expiry_and_mail_is_unchanged() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let alice = SmimeCert::openssl("alice@example.org", ENCRYPT);
    let first = alice.sign("alice@example.org", "first@example.org", ENTITY, Detached);
    send(&gw, &first).await;
    let before = wait_for_key(&gw, "alice@example.org", &alice.fingerprint()).await;

    // Time passes, and the same key comes again. `added` is kept to the nanosecond, so
    // the milliseconds the second message takes to be harvested would show in an entry
    // stamped anew: there is no need to wait for the clock to reach another second.
    assert_ne!(
        before.added.nanosecond(),
        0,
        "added has lost its fraction of a second: {before:#?}"
    );
    let second = alice.sign("alice@example.org", "second@example.org", ENTITY, Opaque);
    send(&gw, &second).await;
    let others = entries_after_marker(&gw).await;
    assert_eq!(others.len(), 1, "{others:#?}");
    let after = &others[0];
    assert_eq!(after.fingerprint, before.fingerprint);
    assert_eq!(after.added, before.added, "{after:#?}");
    assert_eq!(after.expires, before.expires, "{after:#?}");
    assert_eq!(
        after.expires,
        Some(before.added + time::Duration::days(180))
    );

    // Both arrived byte for byte as sent (the marker too).
    let copies = delivered(&sink, 3).await;
    assert_eq!(copies[..2], [first, second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_keys_cost_nothing_but_a_log_line() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let alice = SmimeCert::openssl("alice@example.org", ENCRYPT);
    let bob = pgp_key(BOB);

    // A detached signature whose base64 stops halfway.
    let signed = String::from_utf8(alice.sign(
        "alice@example.org",
        "truncated@example.org",
        ENTITY,
        Detached,
    ))
    .unwrap();
    let start = signed.find("smime.p7s\"\r\n\r\n").expect("signature part") + 14;
    let end = start + signed[start..].find("\r\n\r\n").expect("end of signature");
    let half = start + (end - start) / 2;
    let truncated = format!("{}\r\n{}", &signed[..half], &signed[end..]).into_bytes();

    // A signature that is not base64 at all.
    let bogus_signature =
        format!("{}!!! not base64 !!!{}", &signed[..start], &signed[end..]).into_bytes();

    // An Autocrypt header over 10 KiB: a real key, padded with a non-critical attribute.
    let padding: String = "x".repeat(12 * 1024);
    let padded: Vec<&str> = padding
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let huge = format!(
        "{};\r\n _padding={}",
        bob.autocrypt_header("bob@example.org"),
        padded.join("\r\n ")
    );
    assert!(huge.len() > 10 * 1024);

    // A huge bogus header with keydata that is not a key.
    let bogus_keydata = support::keys::autocrypt_header("bob@example.org", &[0xffu8; 16 * 1024]);

    // An application/pgp-keys part far larger than any key.
    let big_part = pgp_keys_mail(
        BOB,
        "big-part@example.org",
        &format!(
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\r\n\r\n{}\r\n-----END PGP PUBLIC KEY BLOCK-----",
            base64(&[0x99u8; 512 * 1024])
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join("\r\n")
        ),
    );

    let messages = vec![
        truncated,
        bogus_signature,
        plain_mail(BOB, "huge-1@example.org", &[&huge], "Hi.\r\n"),
        plain_mail(BOB, "huge-2@example.org", &[&bogus_keydata], "Hi.\r\n"),
        big_part,
    ];
    assert_harvests_nothing(&gw, &messages).await;

    // Every one was delivered as sent, and the gateway still harvests.
    let copies = delivered(&sink, messages.len() + 1).await;
    assert_eq!(copies[..messages.len()], messages[..]);
    let good = plain_mail(
        BOB,
        "after@example.org",
        &[&bob.autocrypt_header("bob@example.org")],
        "Hi.\r\n",
    );
    send(&gw, &good).await;
    wait_for_key(&gw, "bob@example.org", &bob.fingerprint).await;
}
