//! S/MIME AuthEnvelopedData (AES-GCM, RFC 5083 and RFC 5084) through the gateway,
//! against `openssl cms`: inbound, what `openssl cms -encrypt -aes-128-gcm` and
//! `-aes-256-gcm` make is decrypted for SCKM users with RSA and EC keys, and mail whose
//! tag or ciphertext was changed is not decrypted at all. Outbound, recipients whose
//! signed mail said their client reads AES-GCM, or whom a rule names, get
//! AuthEnvelopedData that `openssl cms -decrypt` opens; everyone else, and every copy
//! shared with someone else, gets EnvelopedData with AES-CBC.

mod support;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use const_oid::db::rfc5911;
use sealgate::keys::KeyEntry;
use sealgate::keys::admin::Request;
use support::keys::{ENTITY, Form, SmimeCert, crlf, openssl};
use support::{Client, Gateway, Sink, config_text, gateway_to, import, log, split_received, start};

/// The MIME entity senders encrypt: protected headers, as Thunderbird sends them.
const INNER: &[u8] = b"Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"\r\n\
    Subject: The real subject\r\n\r\nInbound secret text.\r\n";

const SENDER: &str = "sender@example.org";

/// `openssl cms -encrypt -binary` of [`INNER`] to `cert`, with `args` (the cipher,
/// the output form, and `-keyopt`s, which apply to the `-recip` before them).
fn openssl_encrypt(dir: &Path, cert: &SmimeCert, args: &[&str]) -> Vec<u8> {
    let input = dir.join("inner.txt");
    std::fs::write(&input, INNER).unwrap();
    let cert = cert.cert_path();
    let mut all = vec!["cms", "-encrypt", "-binary", "-in", input.to_str().unwrap()];
    all.extend(["-recip", cert.to_str().unwrap()]);
    all.extend(args);
    openssl(&all)
}

/// A mail as a client sends it (CRLF) with `der` as its application/pkcs7-mime body.
fn smime_mail(to: &str, der: &[u8]) -> Vec<u8> {
    let mut mail = format!(
        "From: {SENDER}\r\nTo: {to}\r\nSubject: ...\r\nMessage-ID: <gcm@example.org>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data; name=\"smime.p7m\"\r\n\
         Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    for line in encoded.as_bytes().chunks(64) {
        mail.extend_from_slice(line);
        mail.extend_from_slice(b"\r\n");
    }
    mail
}

/// Sends `message` to the inbound listener for `to` and returns what the next hop got.
async fn send_inbound(gw: &Gateway, sink: &Sink, to: &str, message: &[u8]) -> Vec<u8> {
    let before = sink.received().len();
    let mut client = Client::connect(gw.inbound).await;
    let reply = client.send_mail(SENDER, &[to], message).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
    // 250 means the next hop has accepted every copy.
    let got = sink.received();
    assert_eq!(got.len(), before + 1, "one copy");
    assert_eq!(got[before].recipients, [to]);
    got[before].data.clone()
}

#[tokio::test]
async fn inbound_aes_gcm_mail_is_decrypted_for_rsa_and_ec_sckm_users() {
    let sink = Sink::start().await;
    let (dir, gw) = gateway_to(&sink, "").await;
    let users = [
        (
            "rsa@example.com",
            SmimeCert::openssl("rsa@example.com", "keyEncipherment"),
        ),
        (
            "p256@example.com",
            SmimeCert::openssl_ec("p256@example.com", "P-256"),
        ),
        (
            "p384@example.com",
            SmimeCert::openssl_ec("p384@example.com", "P-384"),
        ),
    ];
    for (_, user) in &users {
        let response = import(&gw, true, &[&user.sckm_bundle()], None);
        assert!(
            response.entries.iter().all(|e| e.can_decrypt),
            "{response:?}"
        );
    }

    for (address, user) in &users {
        let mut variants: Vec<Vec<&str>> = vec![vec!["-aes-128-gcm"], vec!["-aes-256-gcm"]];
        if address.starts_with("rsa") {
            // Streamed (indefinite-length BER) and RSAES-OAEP, as newer clients send.
            variants.push(vec![
                "-aes-256-gcm",
                "-stream",
                "-keyopt",
                "rsa_padding_mode:oaep",
            ]);
        }
        for variant in variants {
            // openssl's own MIME wrapping (LF, which an MTA would send as CRLF).
            let mut args = variant.clone();
            args.extend(["-from", SENDER, "-to", address, "-subject", "..."]);
            let message = crlf(&openssl_encrypt(dir.path(), user, &args));
            assert!(
                String::from_utf8_lossy(&message).contains("smime-type=authEnveloped-data"),
                "openssl makes authEnveloped-data with {variant:?}"
            );
            let data = send_inbound(&gw, &sink, address, &message).await;
            let text = String::from_utf8_lossy(&data);
            assert!(
                text.contains("Inbound secret text."),
                "{address} {variant:?}: {text}"
            );
            assert!(
                text.contains(&format!(
                    "X-Sealgate-Decrypted: smime; key={}",
                    user.fingerprint()
                )),
                "{address} {variant:?}: {text}"
            );
            assert!(
                text.contains("Subject: The real subject\r\n") && !text.contains("pkcs7-mime"),
                "{address} {variant:?}: {text}"
            );
        }
    }
}

/// The offset of the `mac` field's value in openssl's DER AuthEnvelopedData: the last
/// field, a 16-byte OCTET STRING, right after the encrypted content.
fn tag_at(der: &[u8]) -> usize {
    let at = der.len() - 16;
    assert_eq!(&der[at - 2..at], &[0x04, 0x10], "the mac ends the message");
    at
}

#[tokio::test]
async fn inbound_aes_gcm_mail_with_a_changed_tag_or_ciphertext_is_not_decrypted() {
    let sink = Sink::start().await;
    let (dir, gw) = gateway_to(&sink, "").await;
    let address = "user@example.com";
    let user = SmimeCert::openssl(address, "keyEncipherment");
    import(&gw, true, &[&user.sckm_bundle()], None);
    let der = openssl_encrypt(dir.path(), &user, &["-aes-256-gcm", "-outform", "DER"]);

    // As sent, it opens: the key and the message are good.
    let data = send_inbound(&gw, &sink, address, &smime_mail(address, &der)).await;
    assert!(String::from_utf8_lossy(&data).contains("Inbound secret text."));

    let tag = tag_at(&der);
    for (what, at) in [("tag", tag + 5), ("ciphertext", tag - 2 - 10)] {
        let mut changed = der.clone();
        changed[at] ^= 0x01;
        let message = smime_mail(address, &changed);
        let data = send_inbound(&gw, &sink, address, &message).await;
        let (_, delivered) = split_received(&data);
        assert_eq!(
            delivered, message,
            "a changed {what}: delivered as it arrived, nothing decrypted"
        );
        assert!(!String::from_utf8_lossy(&data).contains("X-Sealgate-Decrypted"));
    }
    let line = log::wait_for(
        |line| line.contains("not decrypted") && line.contains("fails its integrity check"),
        Duration::from_secs(5),
    )
    .await;
    assert!(line.contains(address), "{line}");
}

const MESSAGE: &[u8] = b"From: Alice <alice@example.com>\r\nTo: partners\r\nSubject: Merger plans\r\n\
    Message-ID: <out@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
    The numbers are in.\r\n";

/// Sends [`MESSAGE`] from alice@example.com to `to` through the outbound listener and
/// returns the copies the next hop got for it.
async fn send_outbound(gw: &Gateway, sink: &Sink, to: &[&str]) -> Vec<support::Received> {
    let before = sink.received().len();
    let mut client = Client::connect(gw.outbound).await;
    let reply = client.send_mail("alice@example.com", to, MESSAGE).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
    sink.received()[before..].to_vec()
}

/// The smime-type of an encrypted copy, and what `openssl cms -decrypt` makes of its
/// body with `recipient`'s key.
fn opened_by_openssl(dir: &Path, data: &[u8], recipient: &SmimeCert) -> (String, String) {
    let text = String::from_utf8_lossy(data).into_owned();
    let smime_type = text
        .split("smime-type=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("an application/pkcs7-mime copy")
        .to_string();
    let body = text.split("\r\n\r\n").nth(1).expect("a body");
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.replace("\r\n", ""))
        .unwrap();
    let path = dir.join("copy.p7m");
    std::fs::write(&path, der).unwrap();
    let plain = openssl(&[
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        path.to_str().unwrap(),
        "-recip",
        recipient.cert_path().to_str().unwrap(),
        "-inkey",
        recipient.key_path().to_str().unwrap(),
    ]);
    (smime_type, String::from_utf8_lossy(&plain).into_owned())
}

/// The key cache's entry for `address`, through the admin socket.
async fn entry(gw: &Gateway, address: &str) -> KeyEntry {
    let data_dir = gw.data_dir.clone();
    let response =
        tokio::task::spawn_blocking(move || support::admin_request(&data_dir, Request::List))
            .await
            .unwrap()
            .expect("the admin socket answers");
    response
        .entries
        .into_iter()
        .find(|e| e.address == address)
        .unwrap_or_else(|| panic!("no key for {address}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_aes_gcm_goes_where_harvested_capabilities_say_it_is_read() {
    let sink = Sink::start().await;
    let (dir, gw) = gateway_to(
        &sink,
        "[keys]\nencrypt_to_mailflow_keys = true\n\n\
         [crypto]\nsmime_authenticated_encryption = \"when_capable\"\n",
    )
    .await;
    let gcm = SmimeCert::openssl("gcm@example.org", "keyEncipherment");
    let cbc = SmimeCert::openssl("cbc@example.net", "keyEncipherment");

    // Each writes to us first, signed: gcm's client lists AES-GCM in its capabilities,
    // cbc's is openssl's list (AES-CBC, 3DES, RC2).
    let signed = [
        gcm.sign_with_capabilities(
            "gcm@example.org",
            "caps-gcm@example.org",
            ENTITY,
            &[
                rfc5911::ID_AES_256_GCM,
                rfc5911::ID_AES_128_GCM,
                rfc5911::ID_AES_256_CBC,
            ],
        ),
        cbc.sign(
            "cbc@example.net",
            "caps-cbc@example.net",
            ENTITY,
            Form::Detached,
        ),
    ];
    for message in &signed {
        let mut client = Client::connect(gw.inbound).await;
        let reply = client
            .send_mail("someone@example.net", &["user@example.com"], message)
            .await;
        assert_eq!(reply.code, 250, "{reply:?}");
        client.quit().await;
    }
    for address in ["gcm@example.org", "cbc@example.net"] {
        log::wait_for(
            |line| line.contains("harvested key") && line.contains(address),
            Duration::from_secs(30),
        )
        .await;
    }
    assert!(entry(&gw, "gcm@example.org").await.reads_aes_gcm);
    assert!(!entry(&gw, "cbc@example.net").await.reads_aes_gcm);

    // Each alone: gcm gets AES-GCM, cbc gets AES-CBC, and openssl opens both.
    for (address, cert, wanted) in [
        ("gcm@example.org", &gcm, "authEnveloped-data"),
        ("cbc@example.net", &cbc, "enveloped-data"),
    ] {
        let got = send_outbound(&gw, &sink, &[address]).await;
        assert_eq!(got.len(), 1);
        let (smime_type, plain) = opened_by_openssl(dir.path(), &got[0].data, cert);
        assert_eq!(smime_type, wanted, "{address}");
        assert!(plain.contains("The numbers are in."), "{address}: {plain}");
        assert!(
            plain.contains("Subject: Merger plans"),
            "{address}: {plain}"
        );
    }

    // Together they share one copy, which cbc must be able to read: AES-CBC.
    let got = send_outbound(&gw, &sink, &["gcm@example.org", "cbc@example.net"]).await;
    assert_eq!(got.len(), 1, "one copy");
    assert_eq!(got[0].recipients, ["gcm@example.org", "cbc@example.net"]);
    for cert in [&gcm, &cbc] {
        let (smime_type, plain) = opened_by_openssl(dir.path(), &got[0].data, cert);
        assert_eq!(smime_type, "enveloped-data");
        assert!(plain.contains("The numbers are in."), "{plain}");
    }
}

#[tokio::test]
async fn a_rule_sends_aes_gcm_to_the_partners_it_names_rsa_and_ec() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("50-gcm.toml"),
        "[[rule]]\nname = \"partners-read-gcm\"\nchain = \"outbound\"\n\
         recipient = \"partner.example\"\naction = \"encrypt\"\n\
         smime_authenticated_encryption = \"always\"\n\n\
         [[rule]]\nchain = \"outbound\"\naction = \"encrypt\"\nno_key = \"send_clear\"\n",
    )
    .unwrap();
    let text = format!(
        "policy_dir = \"{}\"\n{}",
        policies.display(),
        config_text(&dir.path().join("data"), &sink.addr.to_string(), "")
    );
    let gw = start(&text).await;
    // Admin keys: nothing harvested says what their clients read; the rule does.
    let carol = SmimeCert::openssl_ec("carol@partner.example", "P-256");
    let erin = SmimeCert::openssl("erin@partner.example", "keyEncipherment");
    let dave = SmimeCert::openssl("dave@other.example", "keyEncipherment");
    import(
        &gw,
        false,
        &[&carol.cert_path(), &erin.cert_path(), &dave.cert_path()],
        None,
    );

    for (address, cert, wanted) in [
        ("carol@partner.example", &carol, "authEnveloped-data"),
        ("erin@partner.example", &erin, "authEnveloped-data"),
        ("dave@other.example", &dave, "enveloped-data"),
    ] {
        let got = send_outbound(&gw, &sink, &[address]).await;
        assert_eq!(got.len(), 1);
        let (smime_type, plain) = opened_by_openssl(dir.path(), &got[0].data, cert);
        assert_eq!(smime_type, wanted, "{address}");
        assert!(plain.contains("The numbers are in."), "{address}: {plain}");
    }
    // Both partners in one copy: one AuthEnvelopedData with a KeyTransRecipientInfo and
    // a KeyAgreeRecipientInfo, which each opens.
    let got = send_outbound(
        &gw,
        &sink,
        &["carol@partner.example", "erin@partner.example"],
    )
    .await;
    assert_eq!(got.len(), 1, "one copy");
    for cert in [&carol, &erin] {
        let (smime_type, plain) = opened_by_openssl(dir.path(), &got[0].data, cert);
        assert_eq!(smime_type, "authEnveloped-data");
        assert!(plain.contains("The numbers are in."), "{plain}");
    }
}
