//! Bugs the fuzz targets in `fuzz/` found, each as the smallest input that showed it.
//! Every test is named after its bug; the inputs are inline, or under
//! `testdata/fuzz-regressions/` when they are binary or long. Where the bug could stop
//! the gateway, a test also sends the input through a real one (see `support`).

mod support;

use openpgp::parse::Parse;
use sealgate::crypto::{CryptoError, pgp};
use sealgate::mail::mime::{Cut, Encrypted, field_name};
use sequoia_openpgp as openpgp;
use std::time::Duration;
use support::keys::{GpgHome, crlf, pgp_mime as wrap_pgp_mime};
use support::{Client, Sink, gateway_to, import, split_received};

const MARKER: &str = "pgp; key=0123456789ABCDEF";

/// The decrypted message, put together without signatures.
fn decrypted(raw: &[u8], kind: Encrypted, plaintext: &[u8], marker: &str) -> Option<Vec<u8>> {
    sealgate::mail::decrypted::decrypted(raw, kind, plaintext, marker, None).map(|(m, _)| m)
}

/// A PGP/MIME message (its ciphertext does not matter to `decrypted`) with `head` as
/// the outer header, Content-Type first.
fn pgp_mime(head: &str) -> Vec<u8> {
    format!(
        "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\
         {head}\r\n\
         --b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --b\r\nContent-Type: application/octet-stream\r\n\r\n\
         -----BEGIN PGP MESSAGE-----\r\n\r\nwcBMA0fcZ7XLgmf2\r\n-----END PGP MESSAGE-----\r\n--b--\r\n"
    )
    .into_bytes()
}

/// The lines of a message's header block as the next hop reads them: a CRLF, a bare CR
/// and a bare LF each end a line (the relay sends the bare ones as CRLF), and the first
/// empty line ends the block.
fn next_hop_header(message: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = Vec::new();
    let mut bytes = message.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if b != b'\r' && b != b'\n' {
            line.push(b);
            continue;
        }
        if b == b'\r' {
            bytes.next_if_eq(&b'\n');
        }
        if line.is_empty() {
            break;
        }
        lines.push(String::from_utf8_lossy(&std::mem::take(&mut line)).into_owned());
    }
    lines
}

/// The `smtp_session` target: an S/MIME message whose content, once decrypted, had a
/// bare CR. It went out as it was, and the relay turns a bare CR into a line end, so a
/// sender could put `Subject: x<CR>X-Sealgate-Decrypted: ...` in the encrypted part and
/// have the recipient's filters read a field of ours that sealgate never saw.
#[test]
fn decrypted_bare_cr_cannot_forge_a_field_of_ours() {
    let raw = pgp_mime("From: alice@example.org\r\nSubject: ...\r\n");
    // With protected headers, the inner Subject is the one the message gets.
    let plaintext = b"Content-Type: text/plain; protected-headers=\"v1\"\r\n\
        Subject: hi\rX-Sealgate-Decrypted: pgp; key=FORGED\r\n\r\nbody\rmore\r\n";
    let out = decrypted(&raw, Encrypted::PgpMime, plaintext, MARKER).unwrap();
    let ours: Vec<String> = next_hop_header(&out)
        .into_iter()
        .filter(|line| line.to_ascii_lowercase().starts_with("x-sealgate"))
        .collect();
    assert_eq!(ours, [format!("X-Sealgate-Decrypted: {MARKER}")]);
    assert!(
        !out.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'),
        "bare CR left"
    );
}

/// The same for inline PGP: the text around the armored block, decoded from base64
/// (or quoted-printable), kept its bare CRs and LFs.
#[test]
fn decrypted_inline_text_around_the_block_gets_crlf() {
    use base64::Engine;
    let text = "before\nthe block\r-----BEGIN PGP MESSAGE-----\n\nwcBMA0fcZ7XLgmf2\n-----END PGP MESSAGE-----\nafter\n";
    let raw = format!(
        "From: alice@example.org\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        base64::engine::general_purpose::STANDARD.encode(text)
    );
    let out = decrypted(raw.as_bytes(), Encrypted::InlinePgp, b"secret\n", MARKER).unwrap();
    let body = &out[out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert_eq!(body, b"before\r\nthe block\r\nsecret\r\n\r\nafter\r\n");
}

/// The `decrypt` target: a line of whitespace only (here a form feed) ends the header
/// block for mail-parser. It stayed on the last outer field, so the field sealgate adds
/// after it (`X-Sealgate-Decrypted`, and the plaintext's Content-Type) ended up in the
/// body: the decrypted message lost its type and our mark.
#[test]
fn decrypted_fields_stay_in_the_header_after_a_whitespace_line() {
    let inline = b"From: alice@example.org\r\nSubject: inline\r\n\x0c\r\n\
        -----BEGIN PGP MESSAGE-----\r\n\r\nwcBMA0fcZ7XLgmf2\r\n-----END PGP MESSAGE-----\r\n";
    let cases = [
        (inline.to_vec(), Encrypted::InlinePgp),
        (
            pgp_mime("From: alice@example.org\r\nSubject: ...\r\n\x0c"),
            Encrypted::PgpMime,
        ),
        (
            pgp_mime("From: alice@example.org\r\nSubject: ...\r\n \t"),
            Encrypted::PgpMime,
        ),
    ];
    for (raw, kind) in cases {
        let out = decrypted(
            &raw,
            kind,
            b"Content-Type: text/plain\r\n\r\nsecret\r\n",
            MARKER,
        )
        .unwrap();
        let cut = Cut::new(&out).unwrap();
        let names: Vec<String> = cut.fields.iter().map(|f| field_name(f)).collect();
        assert!(
            names.contains(&"x-sealgate-decrypted".to_string())
                && names.contains(&"content-type".to_string()),
            "{kind:?}: {names:?} in {:?}",
            String::from_utf8_lossy(&out)
        );
    }
}

/// The `smtp_session` target: `marks::is_ours` sliced a field name as a `str` at byte
/// 10, and a name that is not ASCII (mail-parser reads bytes that are not UTF-8 as
/// U+FFFD, three bytes each) can have a character across that byte. A client that sent
/// any `X-Sealgate` line and such a field panicked its session before the reply to
/// DATA: the message could never be accepted. Minimised by libFuzzer to
/// `X-Sealgate\nCn\xff\xff\xff:t` in the header.
#[test]
fn is_ours_takes_a_field_name_that_is_not_ascii() {
    use sealgate::gateway::marks::is_ours;
    assert!(!is_ours("Cn\u{fffd}\u{fffd}\u{fffd}"));
    assert!(!is_ours("Conten\u{fffd}\u{fffd}P"));
    assert!(!is_ours("X-Sealgat\u{e9}-Note"));
    assert!(is_ours("X-SEALGATE-\u{fffd}"));
    assert!(is_ours("x-sealgate"));
}

/// The same through a gateway, on both listeners: the forged field is removed, the
/// field whose name is not UTF-8 goes on as it came, and the session goes on.
#[tokio::test]
async fn a_field_name_that_is_not_ascii_next_to_a_forged_mark_is_accepted() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let message = b"From: alice@example.com\r\nX-Sealgate: forged\r\n\
        Cn\xff\xff\xff: t\r\nConten\xff\xffP: u\r\nSubject: hi\r\n\r\nbody\r\n";
    for (i, (addr, from, to)) in [
        (gw.inbound, "bob@example.org", "alice@example.com"),
        (gw.outbound, "alice@example.com", "bob@example.org"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut client = Client::connect(addr).await;
        let reply = client.send_mail(from, &[to], message).await;
        assert_eq!(reply.code, 250, "{reply:?}");
        let reply = client
            .send_mail(from, &[to], b"Subject: next\r\n\r\nok\r\n")
            .await;
        assert_eq!(reply.code, 250, "the session went on: {reply:?}");
        client.quit().await;
        let got = sink.wait_for(2 * (i + 1), Duration::from_secs(20)).await;
        let data = &got[2 * i].data;
        let contains = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(b"forged"), "{}", String::from_utf8_lossy(data));
        assert!(
            contains(b"\r\nCn\xff\xff\xff: t\r\nConten\xff\xffP: u\r\n"),
            "{}",
            String::from_utf8_lossy(data)
        );
    }
    gw.stop().await;
}

/// `message` (an OpenPGP message, armored, whose last packet is a SEIPDv1 packet) cut
/// short 26 bytes into the SEIP packet's ciphertext, armored again. The packet's header
/// still gives its whole length. The first block size plus two bytes are the ones
/// sequoia checks the session key against, so the packet opens with the right key; what
/// follows is shorter than the 22-byte MDC packet the parser keeps back at the end.
fn cut_in_seip(message: &[u8]) -> Vec<u8> {
    use openpgp::armor;
    use openpgp::packet::{Body, SEIP};
    use openpgp::serialize::Serialize;
    use openpgp::{Packet, PacketPile};
    // 26 = 16 + 2 + 8: past the quick check for 16-byte (and 8-byte) block ciphers,
    // short of the 22 bytes of an MDC packet after it.
    const KEPT: usize = 26;
    let pile = PacketPile::from_bytes(message).expect("an OpenPGP message");
    let ciphertext = match pile.children().last() {
        Some(Packet::SEIP(SEIP::V1(seip))) => match seip.body() {
            Body::Unprocessed(ciphertext) => ciphertext.len(),
            other => panic!("the SEIP packet's body was processed: {other:?}"),
        },
        other => panic!("the last packet is not a SEIPDv1 packet: {other:?}"),
    };
    assert!(ciphertext > KEPT + 22, "{ciphertext}");
    let mut binary = Vec::new();
    pile.serialize(&mut binary).unwrap();
    binary.truncate(binary.len() - ciphertext + KEPT);
    let mut out = Vec::new();
    let mut writer = armor::Writer::new(&mut out, armor::Kind::Message).unwrap();
    std::io::Write::write_all(&mut writer, &binary).unwrap();
    writer.finalize().unwrap();
    // CRLF, as mail carries it.
    crlf(&out)
}

/// The `decrypt` target: sequoia-openpgp 2.4.2 panics (an unwrap at parse.rs:6367) on a
/// message that ends inside a SEIPDv1 packet less than its cipher's block size plus 24
/// bytes in (the header may give any length), once a key has opened its session key:
/// anyone with the recipient's public key can make one, and a transfer cut short does.
/// `pgp::decrypt` catches the panic; the message is malformed, not a dead session.
#[test]
fn a_message_cut_short_in_its_seip_packet_is_malformed() {
    use openpgp::cert::CertBuilder;
    use openpgp::types::Features;
    // SEIPDv1 only, as GnuPG 2.2's keys advertise: sequoia's own default is SEIPDv2.
    let (tsk, _) = CertBuilder::general_purpose(Some("user@example.com"))
        .set_features(Features::empty().set_seipdv1())
        .unwrap()
        .generate()
        .unwrap();
    let message =
        pgp::encrypt(b"Subject: x\r\n\r\nsecret\r\n", std::slice::from_ref(&tsk)).unwrap();
    // The key opens the whole message: only the cut makes the difference.
    assert!(pgp::decrypt(&message, std::slice::from_ref(&tsk)).is_ok());
    let short = cut_in_seip(&message);
    let result = pgp::decrypt(&short, &[tsk]);
    assert!(
        matches!(result, Err(CryptoError::Malformed(_))),
        "expected Malformed, got {result:?}"
    );
}

/// The same through a gateway: PGP/MIME and inline PGP cut short so, sent to an SCKM
/// user, reach the next hop as they were sent (as any ciphertext that does not
/// open does), and the gateway decrypts the next message on the same connection.
#[tokio::test]
async fn a_message_cut_short_in_its_seip_packet_is_delivered_as_sent() {
    const INNER: &[u8] = b"Content-Type: text/plain\r\n\r\nInbound secret text.\r\n";
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let user = GpgHome::new();
    let (_, subkey) = user.make_key("User <user@example.com>", "ed25519", "cv25519", "encr");
    let sckm = user.sckm_export(&subkey);
    import(&gw, true, &[&user.file("sckm.asc", &sckm)], None);
    let public = user.run(&["--export", "user@example.com"], None);
    let cert = openpgp::Cert::from_bytes(&public).unwrap();
    let armored = pgp::encrypt(INNER, &[cert]).unwrap();
    let short = cut_in_seip(&armored);

    let (from, to) = ("sender@example.org", "user@example.com");
    let mut inline = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: inline\r\nMessage-ID: <inline@example.org>\r\n\r\n"
    )
    .into_bytes();
    inline.extend_from_slice(&short);
    let cases = [
        (
            "PGP/MIME",
            wrap_pgp_mime(from, to, "short@example.org", &short),
        ),
        ("inline PGP", inline),
    ];
    let mut client = Client::connect(gw.inbound).await;
    for (i, (what, message)) in cases.iter().enumerate() {
        let reply = client.send_mail(from, &[to], message).await;
        assert_eq!(reply.code, 250, "{what}: {reply:?}");
        let got = sink.wait_for(i + 1, Duration::from_secs(20)).await;
        assert_eq!(
            split_received(&got[i].data).1,
            *message,
            "{what}: not delivered as it was sent"
        );
    }
    let whole = wrap_pgp_mime(from, to, "whole@example.org", &armored);
    let reply = client.send_mail(from, &[to], &whole).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
    let got = sink.wait_for(3, Duration::from_secs(20)).await;
    let text = String::from_utf8_lossy(&got[2].data);
    assert!(
        text.contains("X-Sealgate-Decrypted: pgp; key=") && text.contains("Inbound secret text."),
        "the next message was not decrypted: {text}"
    );
    gw.stop().await;
}

/// The `smtp_session` target: mail-parser stops reading a header block at a line
/// without a colon followed by a line of whitespace only, where other readers skip the
/// odd line, or take it for a continuation, and read on to the empty line.
/// `marks::strip_ours` went by mail-parser's fields, so an `X-Sealgate` field after
/// them was no field to sealgate and reached the next hop, for whom it was one: a
/// sender could forge what the gateway did. libFuzzer minimised it to the header
/// `Q\n \nX-Sealgate:`.
#[tokio::test]
async fn a_forged_mark_after_an_odd_line_and_a_line_of_whitespace_is_removed() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let forged = b"From: bob@example.org\r\nQ\r\n \r\nX-Sealgate-Decrypted: pgp; key=FORGED\r\n\
        x-sealgate : forged\r\n\t folded\r\nSubject: hi\r\n\r\n\
        body\r\nX-Sealgate: in the body, left alone\r\n";
    let mut client = Client::connect(gw.inbound).await;
    let reply = client
        .send_mail("bob@example.org", &["alice@example.com"], forged)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(
        !text.contains("FORGED") && !text.contains("forged") && !text.contains("folded"),
        "{text}"
    );
    // What is left of the header, the line of whitespace with it, as it came.
    assert!(
        text.contains(
            "\r\n \r\nSubject: hi\r\n\r\nbody\r\nX-Sealgate: in the body, left alone\r\n"
        ),
        "{text}"
    );
    gw.stop().await;
}

/// Found while fixing the one above: `strip_ours` read the first 256 KiB of the header
/// block only, so an `X-Sealgate` field further down went through.
#[tokio::test]
async fn a_forged_mark_past_256_kib_of_header_is_removed() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut forged = b"From: bob@example.org\r\n".to_vec();
    for i in 0..3000 {
        forged.extend_from_slice(format!("X-Filler-{i:04}: {}\r\n", "f".repeat(80)).as_bytes());
    }
    assert!(forged.len() > 256 * 1024);
    forged
        .extend_from_slice(b"X-Sealgate-Decrypted: pgp; key=FORGED\r\nSubject: hi\r\n\r\nbody\r\n");
    let mut client = Client::connect(gw.inbound).await;
    let reply = client
        .send_mail("bob@example.org", &["alice@example.com"], &forged)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(!text.contains("FORGED"), "the forged field went through");
    assert!(text.contains("X-Filler-2999: ") && text.ends_with("\r\nSubject: hi\r\n\r\nbody\r\n"));
    gw.stop().await;
}

/// The `keys_import` target: the S/MIME SCKM importer looked for a PEM block's END line
/// from the end of its label, so in `-----BEGIN X-----END X-----` the END line shared the
/// BEGIN line's dashes, the body ended before it began, and slicing it panicked (in the
/// server, the admin request's task).
#[test]
fn a_pem_end_line_sharing_the_begin_lines_dashes_is_refused() {
    for pem in [
        &b"-----BEGIN PGP MESSAGE-----END PGP MESSAGE-----\n"[..],
        b"-----BEGIN CERTIFICATE-----END CERTIFICATE-----",
        b"-----BEGIN PRIVATE KEY-----END PRIVATE KEY-----\r\n",
    ] {
        assert!(
            sealgate::crypto::smime::import_sckm(pem, None).is_err(),
            "{}",
            String::from_utf8_lossy(pem)
        );
    }
}

/// The same through a gateway's admin socket: refused, and the next request answered.
#[tokio::test]
async fn a_pem_end_line_sharing_the_begin_lines_dashes_is_refused_by_the_server() {
    use base64::Engine;
    use sealgate::keys::admin::{File, Request};
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let data_dir = gw.data_dir.clone();
    let response = tokio::task::spawn_blocking(move || {
        let request = Request::ImportSckm {
            files: vec![File {
                name: "odd.pem".into(),
                data: base64::engine::general_purpose::STANDARD
                    .encode("-----BEGIN CERTIFICATE-----END CERTIFICATE-----\n"),
            }],
            passphrase: None,
        };
        let refused = support::admin_request(&data_dir, request).expect("an answer");
        let next = support::admin_request(&data_dir, Request::List);
        (refused, next)
    })
    .await
    .unwrap();
    assert!(response.0.failed, "{:?}", response.0.messages);
    assert!(response.1.is_ok(), "{:?}", response.1.err());
    gw.stop().await;
}

/// The `decrypt` target: mail-parser 0.11.9's Date parser, on a malformed date, reads on
/// past its line: it took the next line into the Date field (minimised: `Date:-o`), or
/// the empty line and what follows it. `mime::Cut` went by mail-parser's field offsets,
/// so the fields the decrypted message put after the outer ones (ours, and the
/// plaintext's Content-Type) could follow an empty line, in the body to every other
/// reader.
#[test]
fn a_malformed_date_cannot_take_the_fields_after_it() {
    let raw = b"Date: Tue, 23 Apr 2024 12:50:060 F\r\n\r\n0+00\r\nTo: x@example.com\r\n";
    let cut = Cut::new(raw).unwrap();
    assert_eq!(cut.fields, [&b"Date: Tue, 23 Apr 2024 12:50:060 F\r\n"[..]]);
    assert_eq!(cut.body, b"0+00\r\nTo: x@example.com\r\n");
    let raw = b"Date:-o\r\nSubject: hi\r\n\r\nbody\r\n";
    let names: Vec<String> = Cut::new(raw)
        .unwrap()
        .fields
        .iter()
        .map(|f| field_name(f))
        .collect();
    assert_eq!(names, ["date", "subject"]);

    let out = decrypted(
        &pgp_mime("From: alice@example.org\r\nDate: Tue, 23 Apr 2024 12:50:060 F\r\n"),
        Encrypted::PgpMime,
        b"Content-Type: text/plain\r\n\r\nsecret\r\n",
        MARKER,
    )
    .unwrap();
    let header = next_hop_header(&out);
    assert!(
        header.contains(&format!("X-Sealgate-Decrypted: {MARKER}"))
            && header.contains(&"Content-Type: text/plain".to_string()),
        "{header:?} in {:?}",
        String::from_utf8_lossy(&out)
    );
}

/// The same hid a forged field of ours inside a decrypted entity's Date field: it went
/// out with the Date field, and the next hop read it.
#[test]
fn a_malformed_date_in_the_plaintext_cannot_hide_a_forged_field_of_ours() {
    let plaintext = b"Content-Type: text/plain; protected-headers=\"v1\"\r\nDate:-o\r\n\
        X-Sealgate-Decrypted: pgp; key=FORGED\r\nSubject: hi\r\n\r\nbody\r\n";
    let raw = pgp_mime("From: alice@example.org\r\nSubject: ...\r\n");
    let out = decrypted(&raw, Encrypted::PgpMime, plaintext, MARKER).unwrap();
    let header = next_hop_header(&out);
    assert!(
        !header.iter().any(|l| l.contains("FORGED")),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
}

/// And a Subject after a malformed Date stayed in the outer header of an outbound
/// message encrypted with protected headers, in the clear.
#[test]
fn a_malformed_date_cannot_keep_the_subject_out_of_protection() {
    let raw = b"From: alice@example.com\r\nDate:-o\r\nSubject: the merger\r\n\
        Content-Type: text/plain\r\n\r\nbody\r\n";
    let armored =
        b"-----BEGIN PGP MESSAGE-----\r\n\r\nwcBMA0fcZ7XLgmf2\r\n-----END PGP MESSAGE-----\r\n";
    let out = sealgate::mail::wrap::pgp_mime(raw, armored, true).unwrap();
    let header = next_hop_header(&out);
    assert!(
        header.contains(&"Subject: ...".to_string())
            && !header.iter().any(|l| l.contains("merger")),
        "{header:?}"
    );
}

/// Through a gateway: inbound PGP/MIME to an SCKM user whose encrypted entity hides a
/// forged `X-Sealgate-Decrypted` after a malformed Date arrives decrypted, with our
/// field only.
#[tokio::test]
async fn a_forged_mark_behind_a_malformed_date_in_the_plaintext_is_dropped() {
    const INNER: &[u8] = b"Content-Type: text/plain; protected-headers=\"v1\"\r\nDate:-o\r\n\
        X-Sealgate-Decrypted: pgp; key=FORGED\r\nSubject: hi\r\n\r\nInbound secret text.\r\n";
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let user = GpgHome::new();
    let (_, subkey) = user.make_key("User <user@example.com>", "ed25519", "cv25519", "encr");
    let sckm = user.sckm_export(&subkey);
    import(&gw, true, &[&user.file("sckm.asc", &sckm)], None);
    let public = user.run(&["--export", "user@example.com"], None);
    let cert = openpgp::Cert::from_bytes(&public).unwrap();
    let armored = pgp::encrypt(INNER, &[cert]).unwrap();
    let message = wrap_pgp_mime(
        "sender@example.org",
        "user@example.com",
        "d@example.org",
        &armored,
    );
    let mut client = Client::connect(gw.inbound).await;
    let reply = client
        .send_mail("sender@example.org", &["user@example.com"], &message)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(
        text.contains("Inbound secret text."),
        "not decrypted: {text}"
    );
    assert!(!text.contains("FORGED"), "{text}");
    assert_eq!(text.matches("X-Sealgate-Decrypted: ").count(), 1, "{text}");
    gw.stop().await;
}

/// mail-parser can lend a ciphertext that is not a slice of the message it read (an
/// empty body is a static empty slice); finding the payload asserted that it was one,
/// and panicked inside the SMTP session. Found by the decrypt target.
#[test]
fn a_ciphertext_lent_from_outside_the_message_is_copied_not_a_panic() {
    use sealgate::mail::message::Message;
    use sealgate::mail::mime;
    use sealgate::mail::payload::Payload;

    let raw = mime::crlf(include_bytes!(
        "../testdata/fuzz-regressions/payload-lent-slice.eml"
    ))
    .into_owned();
    let message = Message::from_chunks(raw.chunks(61).map(bytes::Bytes::copy_from_slice).collect());
    let payload = Payload::of(&message);
    let kind = mime::encrypted(&raw);
    assert_eq!(payload.kind(), kind);
    let whole = kind
        .and_then(|kind| mime::ciphertext(&raw, kind))
        .map(|c| c.into_owned());
    assert_eq!(payload.ciphertext().map(|pieces| pieces.concat()), whole);
}
