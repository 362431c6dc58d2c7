//! S/MIME AuthEnvelopedData (AES-GCM, RFC 5083 and RFC 5084) through the gateway,
//! against `openssl cms`: inbound, what `openssl cms -encrypt -aes-128-gcm` and
//! `-aes-256-gcm` make is decrypted for SCKM users with RSA and EC keys, and mail whose
//! tag or ciphertext was changed is not decrypted at all.

mod support;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use support::keys::{SmimeCert, crlf, openssl};
use support::{Client, Gateway, Sink, gateway_to, import, log, split_received};

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
