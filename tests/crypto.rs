//! Encryption and decryption through the gateway, checked against the other side's own
//! tools: what sealgate encrypts, `gpg --decrypt` and `openssl cms -decrypt` open; what
//! `gpg --encrypt` and `openssl cms -encrypt` produce, sealgate decrypts for SCKM users.

mod support;

use std::time::Duration;

use base64::Engine;
use support::keys::{GpgHome, SmimeCert, crlf, openssl, pgp_mime, run_tool};
use support::{Client, Gateway, Sink, bob_with_key_imported, gateway_to, import, split_received};

/// The keyUsage of an S/MIME encryption certificate.
const ENCRYPT: &str = "digitalSignature,keyEncipherment";

const MESSAGE: &[u8] = "From: Alice <alice@example.com>\r\nTo: bob@example.org, carol@example.net\r\nSubject: Merger plans\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\nMessage-ID: <m1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nThe numbers are in. Grüße.\r\n".as_bytes();

/// Alice sends `message` to `to` through the outbound listener; the reply to DATA.
async fn alice_sends(gw: &Gateway, to: &[&str], message: &[u8]) -> support::Reply {
    let mut client = Client::connect(gw.outbound).await;
    client.send_mail("alice@example.com", to, message).await
}

/// The body of the second part of a multipart message, as text.
fn second_part(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let armor = text
        .find("-----BEGIN PGP MESSAGE-----")
        .expect("armored part");
    let end = text.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
    text[armor..end].to_string()
}

#[tokio::test]
async fn outbound_pgp_opens_with_gpg_and_others_get_it_clear() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let bob = bob_with_key_imported(&gw, "ed25519", "cv25519");

    let reply = alice_sends(
        &gw,
        &["bob@example.org", "carol@example.net", "dan@example.com"],
        MESSAGE,
    )
    .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(2, Duration::from_secs(20)).await;
    let encrypted = got
        .iter()
        .find(|r| r.recipients == ["bob@example.org"])
        .expect("bob's own transaction");
    let clear = got
        .iter()
        .find(|r| r.recipients.contains(&"carol@example.net".to_string()))
        .unwrap();
    assert_eq!(clear.recipients, ["carol@example.net", "dan@example.com"]);
    assert_eq!(
        split_received(&clear.data).1,
        MESSAGE,
        "recipients without a key get it as it was"
    );

    let outer = String::from_utf8_lossy(&encrypted.data);
    assert!(
        outer.contains("multipart/encrypted; protocol=\"application/pgp-encrypted\""),
        "{outer}"
    );
    assert!(
        outer.contains("Subject: ...\r\n") && !outer.contains("Merger"),
        "subject protected: {outer}"
    );
    assert!(
        outer.contains("Message-ID: <m1@example.com>") && outer.contains("Received: "),
        "routing headers kept"
    );
    assert!(!outer.contains("Grüße"));

    let opened = bob.output(
        &["--decrypt"],
        Some(second_part(&encrypted.data).as_bytes()),
    );
    let (plain, stderr) = (
        String::from_utf8_lossy(&opened.stdout),
        String::from_utf8_lossy(&opened.stderr),
    );
    assert!(plain.contains("The numbers are in. Grüße."), "{plain}");
    assert!(
        plain.contains("Subject: Merger plans"),
        "the real subject is inside: {plain}"
    );
    assert!(plain.contains("protected-headers=\"v1\""), "{plain}");
    assert!(
        !stderr.contains("Signature") && !stderr.contains("signature"),
        "never signed: {stderr}"
    );
}

/// An encrypted copy the next hop refuses for a while waits in the spool (held in
/// binary, armored as it is written there) and arrives later as one gpg opens.
#[tokio::test]
async fn an_encrypted_copy_held_in_the_spool_arrives_and_opens_with_gpg() {
    let sink = Sink::start().await;
    let refusing = sink.refuse_for_now("bob@example.org", Duration::ZERO);
    let (_dir, gw) = gateway_to(&sink, "").await;
    let bob = bob_with_key_imported(&gw, "ed25519", "cv25519");

    let reply = alice_sends(&gw, &["bob@example.org", "carol@example.net"], MESSAGE).await;
    assert_eq!(
        reply.code, 250,
        "carol's copy went, bob's is held: {reply:?}"
    );
    assert_eq!(gw.spool.len(), 1, "bob's encrypted copy is held");
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].recipients, ["carol@example.net"]);

    refusing.store(false, std::sync::atomic::Ordering::SeqCst);
    let got = sink.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got[1].recipients, ["bob@example.org"]);
    let outer = String::from_utf8_lossy(&got[1].data);
    assert!(outer.contains("multipart/encrypted"), "{outer}");
    assert!(
        !outer.contains("Grüße") && !outer.contains("Merger"),
        "{outer}"
    );
    let armor = second_part(&got[1].data);
    assert!(
        armor.lines().all(|line| line.len() <= 64),
        "armor lines of 64 characters at most"
    );
    let opened = bob.output(&["--decrypt"], Some(armor.as_bytes()));
    let plain = String::from_utf8_lossy(&opened.stdout);
    assert!(plain.contains("The numbers are in. Grüße."), "{plain}");
    assert!(plain.contains("Subject: Merger plans"), "{plain}");
}

/// RNP, Thunderbird's OpenPGP engine, opens what the gateway encrypts to a cv25519 key
/// (the encrypted session key for those keys is sealgate's own code: `crypto::pgp::ecdh`).
#[tokio::test]
async fn outbound_pgp_to_a_cv25519_key_opens_with_rnp() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let bob = bob_with_key_imported(&gw, "ed25519", "cv25519");
    let reply = alice_sends(&gw, &["bob@example.org"], MESSAGE).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(1, Duration::from_secs(20)).await;

    let secret = bob.run(
        &["--armor", "--export-secret-keys", "bob@example.org"],
        None,
    );
    let rnp_home = tempfile::tempdir().unwrap();
    run_tool(
        std::process::Command::new("rnpkeys")
            .arg("--homedir")
            .arg(rnp_home.path())
            .arg("--import")
            .arg(bob.file("bob-secret.asc", &secret)),
        None,
    );
    let opened = run_tool(
        std::process::Command::new("rnp")
            .arg("--homedir")
            .arg(rnp_home.path())
            .args(["--decrypt", "--output", "-"]),
        Some(second_part(&got[0].data).as_bytes()),
    );
    let plain = String::from_utf8_lossy(&opened);
    assert!(plain.contains("The numbers are in. Grüße."), "{plain}");
    assert!(plain.contains("Subject: Merger plans"), "{plain}");
}

/// With the status field on for outbound mail, the encrypted copy gets it in its outer
/// header (written in front of the armor, which stays as it was made) and still opens.
#[tokio::test]
async fn an_encrypted_copy_with_the_status_field_opens_with_gpg() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "[policy]\nheader_outbound = true\n").await;
    let bob = bob_with_key_imported(&gw, "ed25519", "cv25519");
    let reply = alice_sends(&gw, &["bob@example.org"], MESSAGE).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    let outer = String::from_utf8_lossy(&got[0].data);
    let head = &outer[..outer.find("\r\n\r\n").expect("a header")];
    assert!(head.contains("\r\nX-Sealgate: encrypted"), "{head}");
    let opened = bob.output(&["--decrypt"], Some(second_part(&got[0].data).as_bytes()));
    let plain = String::from_utf8_lossy(&opened.stdout);
    assert!(plain.contains("The numbers are in. Grüße."), "{plain}");
}

#[tokio::test]
async fn outbound_smime_opens_with_openssl_cms() {
    let sink = Sink::start().await;
    let (dir, gw) = gateway_to(&sink, "").await;
    let bob = SmimeCert::openssl("bob@example.org", ENCRYPT);
    let (cert, key) = (bob.cert_path(), bob.key_path());
    import(&gw, false, &[&cert], None);

    let reply = alice_sends(&gw, &["bob@example.org"], MESSAGE).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    let outer = String::from_utf8_lossy(&got[0].data).into_owned();
    assert!(
        outer.contains("application/pkcs7-mime; smime-type=enveloped-data"),
        "{outer}"
    );
    let body = outer.split("\r\n\r\n").nth(1).unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.replace("\r\n", ""))
        .unwrap();
    let der_path = dir.path().join("msg.der");
    std::fs::write(&der_path, der).unwrap();
    let plain = openssl(&[
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        der_path.to_str().unwrap(),
        "-recip",
        cert.to_str().unwrap(),
        "-inkey",
        key.to_str().unwrap(),
    ]);
    let plain = String::from_utf8_lossy(&plain);
    assert!(plain.contains("The numbers are in. Grüße."), "{plain}");
    assert!(plain.contains("Subject: Merger plans"), "{plain}");
}

const INNER: &[u8] = b"Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"\r\nSubject: The real subject\r\n\r\nInbound secret text.\r\n";

#[tokio::test]
async fn inbound_pgp_is_decrypted_for_the_sckm_user_only() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let user = GpgHome::new();
    let (_, subkey) = user.make_key("User <user@example.com>", "rsa3072", "rsa3072", "encr");
    let sckm = user.sckm_export(&subkey);
    let response = import(&gw, true, &[&user.file("sckm.asc", &sckm)], None);
    assert!(
        response.entries.iter().all(|e| e.can_decrypt),
        "{:?}",
        response.entries
    );

    let armored = user.encrypt_to("user@example.com", INNER);
    let message = pgp_mime(
        "sender@example.org",
        "user@example.com, other@example.com",
        "enc@example.org",
        &armored,
    );
    let mut client = Client::connect(gw.inbound).await;
    let reply = client
        .send_mail(
            "sender@example.org",
            &["user@example.com", "other@example.com"],
            &message,
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(2, Duration::from_secs(20)).await;
    let opened = got
        .iter()
        .find(|r| r.recipients == ["user@example.com"])
        .expect("user's own copy");
    let other = got
        .iter()
        .find(|r| r.recipients == ["other@example.com"])
        .expect("other's copy");
    let text = String::from_utf8_lossy(&opened.data);
    assert!(text.contains("Inbound secret text."), "{text}");
    assert!(
        text.contains("Subject: The real subject\r\n") && !text.contains("Subject: ...\r\n"),
        "{text}"
    );
    assert!(text.contains("X-Sealgate-Decrypted: pgp; key="), "{text}");
    assert!(text.contains("Message-ID: <enc@example.org>"));
    assert_eq!(
        split_received(&other.data).1,
        message,
        "a recipient without a key gets it as it arrived"
    );
}

#[tokio::test]
async fn inbound_smime_is_decrypted_for_the_sckm_user() {
    let sink = Sink::start().await;
    let (dir, gw) = gateway_to(&sink, "").await;
    let user = SmimeCert::openssl("user@example.com", ENCRYPT);
    let (cert, key) = (user.cert_path(), user.key_path());
    let mut bundle = std::fs::read(&cert).unwrap();
    bundle.extend(std::fs::read(&key).unwrap());
    let bundle_path = dir.path().join("bundle.pem");
    std::fs::write(&bundle_path, bundle).unwrap();
    import(&gw, true, &[&bundle_path], None);

    let inner_path = dir.path().join("inner.txt");
    std::fs::write(&inner_path, INNER).unwrap();
    let smime = openssl(&[
        "cms",
        "-encrypt",
        "-aes256",
        "-in",
        inner_path.to_str().unwrap(),
        "-from",
        "sender@example.org",
        "-to",
        "user@example.com",
        "-subject",
        "...",
        cert.to_str().unwrap(),
    ]);
    let message = crlf(&smime);
    let mut client = Client::connect(gw.inbound).await;
    let reply = client
        .send_mail("sender@example.org", &["user@example.com"], &message)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("Inbound secret text."), "{text}");
    assert!(text.contains("X-Sealgate-Decrypted: smime; key="), "{text}");
    assert!(text.contains("Subject: The real subject\r\n"), "{text}");
}

#[tokio::test]
async fn already_encrypted_outbound_mail_is_left_alone() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let bob = bob_with_key_imported(&gw, "ed25519", "cv25519");
    let armored = bob.encrypt_to("bob@example.org", INNER);
    let message = pgp_mime(
        "alice@example.com",
        "bob@example.org",
        "enc@example.org",
        &armored,
    );

    let reply = alice_sends(&gw, &["bob@example.org"], &message).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(
        split_received(&got[0].data).1,
        message,
        "not encrypted again"
    );
}

/// A multipart message with an HTML alternative and a binary attachment of `size` bytes.
fn html_with_attachment(size: usize) -> Vec<u8> {
    let attachment: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&attachment);
    let mut body = String::from(
        "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: Report\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n--outer\r\n\
         Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nSee the report.\r\n--alt\r\n\
         Content-Type: text/html; charset=utf-8\r\n\r\n<p>See the <b>report</b>.</p>\r\n--alt--\r\n\r\n--outer\r\n\
         Content-Type: application/octet-stream; name=\"report.bin\"\r\n\
         Content-Disposition: attachment; filename=\"report.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    for line in encoded.as_bytes().chunks(76) {
        body.push_str(std::str::from_utf8(line).unwrap());
        body.push_str("\r\n");
    }
    body.push_str("--outer--\r\n");
    body.into_bytes()
}

#[tokio::test]
async fn html_and_a_10_mib_attachment_survive_pgp_and_smime_round_trips() {
    let sink = Sink::start().await;
    let (dir, gw) = gateway_to(&sink, "").await;
    let bob = bob_with_key_imported(&gw, "rsa3072", "rsa3072");
    let dave = SmimeCert::openssl("dave@example.net", ENCRYPT);
    let (cert, key) = (dave.cert_path(), dave.key_path());
    import(&gw, false, &[&cert], None);

    let message = html_with_attachment(10 * 1024 * 1024);
    let reply = alice_sends(&gw, &["bob@example.org", "dave@example.net"], &message).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(2, Duration::from_secs(60)).await;
    let pgp = got
        .iter()
        .find(|r| r.recipients == ["bob@example.org"])
        .unwrap();
    let smime = got
        .iter()
        .find(|r| r.recipients == ["dave@example.net"])
        .unwrap();

    // The entity that went in: the message's Content-* fields and its body.
    let body_start = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let original_body = &message[body_start..];

    let plain = bob.run(&["--decrypt"], Some(second_part(&pgp.data).as_bytes()));
    assert!(
        plain.ends_with(original_body),
        "PGP: body and attachment come back byte for byte"
    );

    let outer = String::from_utf8_lossy(&smime.data).into_owned();
    let b64 = outer.split("\r\n\r\n").nth(1).unwrap().replace("\r\n", "");
    let der_path = dir.path().join("big.der");
    std::fs::write(
        &der_path,
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap();
    let plain = openssl(&[
        "cms",
        "-decrypt",
        "-binary",
        "-inform",
        "DER",
        "-in",
        der_path.to_str().unwrap(),
        "-recip",
        cert.to_str().unwrap(),
        "-inkey",
        key.to_str().unwrap(),
    ]);
    assert!(
        plain.ends_with(original_body),
        "S/MIME: body and attachment come back byte for byte"
    );
}

#[tokio::test]
async fn a_signature_inside_the_encrypted_part_is_kept_byte_for_byte() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let user = GpgHome::new();
    let (_, subkey) = user.make_key("User <user@example.com>", "ed25519", "cv25519", "encr");
    let sckm = user.sckm_export(&subkey);
    import(&gw, true, &[&user.file("sckm.asc", &sckm)], None);

    // A multipart/signed entity, as a client makes it before encrypting (RFC 3156 §6.1).
    let signed_part = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nSigned and sealed.\r\n";
    let signature = user.run(&["--armor", "--detach-sign"], Some(signed_part));
    let mut entity = b"Content-Type: multipart/signed; micalg=pgp-sha256;\r\n protocol=\"application/pgp-signature\"; boundary=\"sig\"\r\n\r\n--sig\r\n".to_vec();
    entity.extend_from_slice(signed_part);
    entity.extend_from_slice(b"--sig\r\nContent-Type: application/pgp-signature\r\n\r\n");
    entity.extend_from_slice(&crlf(&signature));
    entity.extend_from_slice(b"--sig--\r\n");

    let armored = user.encrypt_to("user@example.com", &entity);
    let message = pgp_mime(
        "sender@example.org",
        "user@example.com",
        "enc@example.org",
        &armored,
    );
    let mut client = Client::connect(gw.inbound).await;
    let reply = client
        .send_mail("sender@example.org", &["user@example.com"], &message)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    let data = &got[0].data;
    let body_start = entity.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        data.ends_with(&entity[body_start..]),
        "the signed entity is untouched:\n{}",
        String::from_utf8_lossy(data)
    );
    // And the user's own client can still verify it.
    let sig_start = String::from_utf8_lossy(data)
        .find("-----BEGIN PGP SIGNATURE-----")
        .unwrap();
    let sig_end = String::from_utf8_lossy(data)
        .find("-----END PGP SIGNATURE-----")
        .unwrap()
        + 27;
    let sig_path = user.file("part.sig", &data[sig_start..sig_end]);
    let part_path = user.file("part.txt", signed_part);
    user.run(
        &[
            "--verify",
            sig_path.to_str().unwrap(),
            part_path.to_str().unwrap(),
        ],
        None,
    );
}

#[tokio::test]
async fn an_additional_decryption_key_opens_outbound_pgp_mail_too() {
    let archive = GpgHome::new();
    archive.make_key(
        "Archive <archive@example.com>",
        "ed25519",
        "cv25519",
        "encr",
    );
    let archive_public = archive.run(&["--armor", "--export", "archive@example.com"], None);
    let adk = archive.file("adk.asc", &archive_public);
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(
        &sink,
        &format!(
            "[crypto]\nadditional_decryption_key = \"{}\"\n",
            adk.display()
        ),
    )
    .await;
    let bob = bob_with_key_imported(&gw, "rsa3072", "rsa3072");

    let reply = alice_sends(&gw, &["bob@example.org"], MESSAGE).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(1, Duration::from_secs(20)).await;
    let armored = second_part(&got[0].data);
    for who in [&bob, &archive] {
        let plain = who.run(&["--decrypt"], Some(armored.as_bytes()));
        assert!(String::from_utf8_lossy(&plain).contains("The numbers are in."));
    }
}
