//! Real clients' encrypted mail, decrypted inbound through the gateway for SCKM users.
//!
//! Every corpus message that `crypto::pgp` and `crypto::smime` open in their unit tests
//! (see `testdata/corpus/{openpgp,smime}/LICENSE-NOTES.md`) is sent to the inbound
//! listener of a gateway that holds the recipient's key as an SCKM key, imported through
//! the admin socket, and must reach the next hop decrypted, marked `X-Sealgate-Decrypted`
//! with the right key. For the OpenPGP keys, which the corpus has as full secret keys,
//! the SCKM form is made the way a user makes it: `gpg --import`, then
//! `gpg --export-secret-subkeys ENCSUBKEY!`. Bare armored messages are sent as inline
//! PGP, bare CMS as an S/MIME message. Mail that cannot be opened, and mail for internal
//! users without a key, arrives as it was sent.
//!
//! Two of the tests guard bugs they found: decrypted content that is bare text rather
//! than a MIME entity (OpenSSL's messages to Fran, the IETF CMS samples) was dropped or
//! left encrypted, and inner header fields such as Autocrypt-Gossip were lost.

mod support;

use std::path::{Path, PathBuf};

use base64::Engine;
use sealgate::keys::admin::{self, Request};
use sha2::{Digest, Sha256};
use support::keys::{GpgHome, crlf, hex_upper, openssl, pgp_mime};
use support::{Client, Gateway, Received, Sink, split_received};

/// Every internal domain the corpus's recipients are in.
const DOMAINS: &[&str] = &[
    "example.com",
    "openpgp.example",
    "autocrypt.example",
    "pgpkey.example.com",
    "smime.example",
];

const SENDER: &str = "sender@example.org";

fn corpus(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/corpus")
        .join(path)
}

fn read(path: &str) -> Vec<u8> {
    let path = corpus(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A gateway whose internal domains are [`DOMAINS`], relaying both directions to `sink`.
async fn gateway(sink: &Sink) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let domains: Vec<String> = DOMAINS.iter().map(|d| format!("{d:?}")).collect();
    let config = format!(
        r#"
data_dir = "{data}"
internal_domains = [{domains}]
hostname = "gw.test"

[inbound]
listen = "127.0.0.1:0"
next_hop = "{sink}"

[outbound]
listen = "127.0.0.1:0"
next_hop = "{sink}"
allowed_clients = ["127.0.0.0/8"]
"#,
        data = dir.path().join("data").display(),
        domains = domains.join(", "),
        sink = sink.addr,
    );
    let gateway = support::start(&config).await;
    (dir, gateway)
}

/// `import-sckm` of `bytes` through the gateway's admin socket.
fn import_sckm(gw: &Gateway, name: &str, bytes: &[u8], passphrase: &str) -> admin::Response {
    let request = Request::ImportSckm {
        files: vec![admin::File {
            name: name.to_string(),
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }],
        passphrase: Some(passphrase.to_string()).filter(|p| !p.is_empty()),
    };
    support::admin_request(&gw.data_dir, request).unwrap()
}

/// Sends one message to the inbound listener and returns what the next hop got for it.
async fn send_inbound(gw: &Gateway, sink: &Sink, to: &[&str], message: &[u8]) -> Vec<Received> {
    let before = sink.received().len();
    let mut client = Client::connect(gw.inbound).await;
    let reply = client.send_mail(SENDER, to, message).await;
    assert_eq!(reply.code, 250, "{to:?}: {reply:?}");
    client.quit().await;
    // 250 means every copy has been accepted by the next hop.
    sink.received()[before..].to_vec()
}

/// The copy of `got` that went to `recipient` alone.
fn copy_for<'a>(got: &'a [Received], recipient: &str) -> Option<&'a Received> {
    got.iter().find(|r| r.recipients == [recipient])
}

// ---------------------------------------------------------------------------------------
// OpenPGP

/// A corpus key in its SCKM form.
struct SckmForm {
    /// `gpg --armor --export-secret-subkeys ENC1! ENC2! ...`, still under its passphrase.
    export: Vec<u8>,
    /// The primary key's fingerprint: what `X-Sealgate-Decrypted` names.
    primary: String,
}

/// Makes the SCKM form of a corpus TSK with gpg, as its owner would.
fn sckm_form(key_file: &str, passphrase: &str) -> SckmForm {
    let gpg = GpgHome::with_passphrase(passphrase);
    gpg.run(&["--import", corpus(key_file).to_str().unwrap()], None);
    let listing = text(&gpg.run(&["--with-colons", "--list-secret-keys"], None));
    let (mut primary, mut encryption) = (None, Vec::new());
    let mut last: Vec<&str> = Vec::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        match fields[0] {
            "sec" | "ssb" => last = fields,
            "fpr" => {
                let fpr = fields[9].to_string();
                match last.first() {
                    Some(&"sec") => primary = Some(fpr),
                    Some(&"ssb") if last[11].contains('e') => encryption.push(format!("{fpr}!")),
                    _ => {}
                }
                last = Vec::new();
            }
            _ => {}
        }
    }
    assert!(!encryption.is_empty(), "{key_file}: no encryption subkey");
    let mut args = vec!["--armor", "--export-secret-subkeys"];
    args.extend(encryption.iter().map(String::as_str));
    SckmForm {
        export: gpg.run(&args, None),
        primary: primary.unwrap_or_else(|| panic!("{key_file}: no primary key")),
    }
}

/// (key file, its passphrase, the address it is for).
const PGP_KEYS: &[(&str, &str, &str)] = &[
    // GnuPG 1.4.11, SHA-1 self-signatures: a legacy key, which still decrypts.
    (
        "openpgp/gnupg-v1-4-11-001-decrypt.asc",
        "test",
        "rsarsa@pgpkey.example.com",
    ),
    // The GnuPG 2.1.5 export as it is cannot be imported (non-minimal MPIs, see
    // pgp.rs); re-exported by a current gpg, as here, it can.
    (
        "openpgp/gnupg-v2-1-5-001-decrypt.asc",
        "test",
        "gpg21_p256@example.com",
    ),
    (
        "openpgp/openkeychain-001-decrypt.asc",
        "q",
        "ecdsa@example.com",
    ),
    ("openpgp/e2e-001-decrypt.asc", "", "e2ekey@example.com"),
    (
        "openpgp/bob@openpgp.example.sec.asc",
        "",
        "bob@openpgp.example",
    ),
    (
        "openpgp/alice@autocrypt.example.sec.asc",
        "",
        "alice@autocrypt.example",
    ),
    (
        "openpgp/bob@autocrypt.example.sec.asc",
        "",
        "bob@autocrypt.example",
    ),
    (
        "openpgp/carol@autocrypt.example.sec.asc",
        "",
        "carol@autocrypt.example",
    ),
];

/// Bare armored messages: (file, recipient, the plaintext they hold). The list of
/// pgp.rs's `CORPUS_MESSAGES`, less two: gnupg-v1-001.asc, whose key names no address
/// (checked below: refused as SCKM), and pgp-10-0-007.asc (IDEA, which this build's
/// OpenSSL lacks).
const BARE_PGP: &[(&str, &str, &str)] = &[
    ("pgp-10-0-001.asc", "rsarsa@pgpkey.example.com", "susheep\n"), // 3DES
    ("pgp-10-0-002.asc", "rsarsa@pgpkey.example.com", "susheep\n"), // AES-128
    ("pgp-10-0-003.asc", "rsarsa@pgpkey.example.com", "susheep\n"), // AES-192
    ("pgp-10-0-004.asc", "rsarsa@pgpkey.example.com", "susheep\n"), // AES-192
    ("pgp-10-0-005.asc", "rsarsa@pgpkey.example.com", "susheep\n"), // AES-256
    ("pgp-10-0-006.asc", "rsarsa@pgpkey.example.com", "susheep\n"), // CAST5
    (
        "gnupg-v1-4-11-001.asc",
        "rsarsa@pgpkey.example.com",
        "susheep\n",
    ),
    (
        "gnupg-v2-0-17-001.asc",
        "rsarsa@pgpkey.example.com",
        "susheep\n",
    ),
    (
        "gnupg-v2-10-001.asc",
        "rsarsa@pgpkey.example.com",
        "susheep\n",
    ),
    ("openpgp-001.asc", "rsarsa@pgpkey.example.com", "susheep"),
    ("gnupg-v2-1-5-001.asc", "gpg21_p256@example.com", "hello\n"),
    ("openkeychain-001.asc", "ecdsa@example.com", "Hello"),
    ("e2e-001.asc", "e2ekey@example.com", "hello"),
    (
        "camellia128-001.asc",
        "bob@openpgp.example",
        "Hello World :)",
    ),
];

/// The messages of [`BARE_PGP`] that are signed as well as encrypted: their copy keeps
/// the signed message in the text, not the bare plaintext.
const SIGNED_PGP: &[&str] = &[
    "gnupg-v2-1-5-001.asc",
    "openkeychain-001.asc",
    "e2e-001.asc",
];

/// Checks a signed inline message's copy: opened with `key`, the signature said to be
/// there, and the block now the signed message, whose literal data is `plaintext`.
fn check_signed_inline(copy: Option<&Received>, key: &str, plaintext: &[u8]) -> Vec<String> {
    use sequoia_openpgp::packet::Packet;
    use sequoia_openpgp::parse::Parse;
    let Some(copy) = copy else {
        return vec!["no copy of its own".into()];
    };
    let got = text(&copy.data);
    let mut wrong = Vec::new();
    let marker = format!(
        "X-Sealgate-Decrypted: pgp; key={key}; signature=present (not verified by sealgate)\r\n"
    );
    if !got.contains(&marker) {
        wrong.push(format!("expected {marker:?}"));
    }
    let (Some(start), Some(end)) = (
        got.find("Before the block.\r\n-----BEGIN PGP MESSAGE-----"),
        got.find("-----END PGP MESSAGE-----\r\nAfter the block.\r\n"),
    ) else {
        return vec![format!("the block is not where it was:\n{got}")];
    };
    let block = &got.as_bytes()[start + 19..end + 25];
    let pile = sequoia_openpgp::PacketPile::from_bytes(block).unwrap();
    let literal = pile.descendants().find_map(|p| match p {
        Packet::Literal(l) => Some(l.body().to_vec()),
        _ => None,
    });
    let signatures = pile
        .descendants()
        .filter(|p| matches!(p, Packet::Signature(_)))
        .count();
    if literal.as_deref() != Some(plaintext) || signatures == 0 {
        wrong.push(format!(
            "not the signed message: {literal:?}, {signatures} signatures"
        ));
    }
    if !wrong.is_empty() {
        wrong.push(format!("got:\n{got}"));
    }
    wrong
}

/// A bare armored message as a mail client sends it inline: a text/plain body with the
/// block between two lines of text.
fn inline_pgp(name: &str, to: &str, armored: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "From: {SENDER}\r\nTo: {to}\r\nSubject: corpus {name}\r\nMessage-ID: <{name}@corpus.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nBefore the block.\r\n"
    )
    .into_bytes();
    out.extend_from_slice(&crlf(armored));
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"After the block.\r\n");
    out
}

/// Checks a copy that must have been decrypted with `key`: the marker, the plaintext
/// `expected` pieces, and no ciphertext left. Returns what is wrong, if anything.
fn check_decrypted(
    copy: Option<&Received>,
    kind: &str,
    key: &str,
    expected: &[&str],
) -> Vec<String> {
    let Some(copy) = copy else {
        return vec!["no copy of its own".into()];
    };
    let got = text(&copy.data);
    let mut wrong = Vec::new();
    let marker = format!("X-Sealgate-Decrypted: {kind}; key={key}\r\n");
    if !got.contains(&marker) {
        let found = got
            .lines()
            .find(|l| l.starts_with("X-Sealgate-Decrypted"))
            .unwrap_or("no X-Sealgate-Decrypted");
        wrong.push(format!("expected {marker:?}, found {found:?}"));
    }
    for piece in expected {
        if !got.contains(piece) {
            wrong.push(format!("the plaintext {piece:?} is missing"));
        }
    }
    // A signed message's copy ends with the signed original attached (an armored PGP
    // MESSAGE, signed only): what comes before it must hold no ciphertext.
    let before_signed = got.split("filename=\"signed-message.asc\"").next().unwrap();
    for leftover in ["BEGIN PGP MESSAGE", "enveloped-data", "multipart/encrypted"] {
        if before_signed.contains(leftover) {
            wrong.push(format!("{leftover:?} is still in it"));
        }
    }
    if !wrong.is_empty() {
        wrong.push(format!("got:\n{}", &got[..got.len().min(3000)]));
    }
    wrong
}

#[tokio::test]
async fn openpgp_corpus_decrypts_inbound_for_sckm_users() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway(&sink).await;

    let mut primary = std::collections::HashMap::new();
    for &(file, passphrase, address) in PGP_KEYS {
        let form = sckm_form(file, passphrase);
        let response = import_sckm(&gw, file, &form.export, passphrase);
        assert!(!response.failed, "{file}: {:?}", response.messages);
        let entries: Vec<_> = response
            .entries
            .iter()
            .filter(|e| e.address == address)
            .collect();
        assert_eq!(entries.len(), 1, "{file}: {:?}", response.entries);
        assert!(
            entries[0].can_decrypt && entries[0].fingerprint == form.primary,
            "{file}: {:?}",
            entries[0]
        );
        primary.insert(address, form.primary);
    }
    // The key of gnupg-v1-001.asc has the user ID "rsa-rsa-default": no address, no
    // user to hold it, so its message cannot be sent to one. pgp.rs documents it.
    let form = sckm_form("openpgp/gnupg-v1-001-decrypt.asc", "test");
    let response = import_sckm(&gw, "gnupg-v1-001-decrypt.asc", &form.export, "test");
    assert!(
        response.failed
            && response
                .messages
                .iter()
                .any(|m| m.contains("e-mail address")),
        "{:?}",
        response.messages
    );

    let mut failures = Vec::new();
    for &(file, to, plaintext) in BARE_PGP {
        let message = inline_pgp(file, to, &read(&format!("openpgp/{file}")));
        let got = send_inbound(&gw, &sink, &[to], &message).await;
        let wrong = if SIGNED_PGP.contains(&file) {
            check_signed_inline(copy_for(&got, to), &primary[to], plaintext.as_bytes())
        } else {
            check_decrypted(
                copy_for(&got, to),
                "pgp",
                &primary[to],
                &[
                    &format!("Before the block.\r\n{}", plaintext.replace('\n', "\r\n")),
                    "After the block.\r\n",
                ],
            )
        };
        if !wrong.is_empty() {
            failures.push(format!("{file} for {to}: {wrong:#?}"));
        }
    }

    // Autocrypt's PGP/MIME messages, as they are (CRLF). The draft is encrypted to
    // Alice only: sent to Alice and Bob, Alice gets it opened and Bob, whose key cannot
    // open it, gets it as it arrived.
    let draft = crlf(&read("openpgp/example-draft.eml"));
    let alice = "alice@autocrypt.example";
    let bob = "bob@autocrypt.example";
    let carol = "carol@autocrypt.example";
    let got = send_inbound(&gw, &sink, &[alice, bob], &draft).await;
    let wrong = check_decrypted(
        copy_for(&got, alice),
        "pgp",
        &primary[alice],
        &[
            "Subject: an example of a Draft\r\n",
            "Content-Type: text/plain\r\n",
            "Hi Bob,\r\n\r\nthis is a message where I'm not sure yet what to write.",
        ],
    );
    if !wrong.is_empty() {
        failures.push(format!("example-draft.eml for {alice}: {wrong:#?}"));
    }
    match copy_for(&got, bob) {
        Some(copy) if split_received(&copy.data).1 == draft => {}
        other => failures.push(format!(
            "example-draft.eml for {bob}: not as it arrived: {other:?}"
        )),
    }
    // The gossip message is encrypted to Bob and Carol: each gets it opened with their
    // own key, in a transaction of their own.
    // Alice signed it too (GnuPG, a binary signature over LF text, which would not
    // verify detached over the CRLF entity): the signed original is attached.
    let gossip = crlf(&read("openpgp/example-gossip.eml"));
    let got = send_inbound(&gw, &sink, &[bob, carol], &gossip).await;
    for rcpt in [bob, carol] {
        let wrong = check_decrypted(
            copy_for(&got, rcpt),
            "pgp",
            &format!(
                "{}; signature=present (not verified by sealgate)",
                primary[rcpt]
            ),
            &[
                "Subject: an Autocrypt Gossip header example\r\n",
                "Hi Bob and Carol,\r\n\r\nI wanted to introduce the two of you to each other.",
                "Regards,\r\nAlice\r\n",
            ],
        );
        if !wrong.is_empty() {
            failures.push(format!("example-gossip.eml for {rcpt}: {wrong:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------
// S/MIME

/// An S/MIME corpus key: certificate and key files (PEM), and the address it is for.
struct SmimeKey {
    cert: &'static str,
    key: &'static str,
    address: &'static str,
}

const NSS_BOB: SmimeKey = SmimeKey {
    cert: "smime/thunderbird-nss-smime/derived/Bob.cert.pem",
    key: "smime/thunderbird-nss-smime/derived/Bob.key.pem",
    address: "Bob@example.com",
};
const FRAN: SmimeKey = SmimeKey {
    cert: "smime/thunderbird-smime-interop/derived/Fran.cert.pem",
    key: "smime/thunderbird-smime-interop/derived/Fran.key.pem",
    address: "fran@example.com",
};
const FRAN_EC: SmimeKey = SmimeKey {
    cert: "smime/thunderbird-smime-interop/derived/Fran-ec.cert.pem",
    key: "smime/thunderbird-smime-interop/derived/Fran-ec.key.pem",
    address: "fran-ec@example.com",
};
const LAMPS_BOB: SmimeKey = SmimeKey {
    cert: "smime/rfc9216-lamps-examples-cms/lamps-bob.encrypt.crt",
    key: "smime/rfc9216-lamps-examples-cms/lamps-bob.decrypt.p8.pem",
    address: "bob@smime.example",
};
const DRAFT_BOB: SmimeKey = SmimeKey {
    cert: "smime/autocrypt-protected-headers/derived/bob.cert.pem",
    key: "smime/autocrypt-protected-headers/derived/bob.key.pem",
    address: "bob@smime.example",
};

/// Each key with the corpus messages it opens whose content is a MIME entity: the list
/// of smime.rs's `corpus_messages_from_real_clients_decrypt_like_openssl`, less the
/// ones in [`bare_text_cases`]. (Two keys are for bob@smime.example, so each key gets a
/// gateway of its own.)
fn smime_cases() -> Vec<(SmimeKey, Vec<&'static str>)> {
    vec![
        (
            NSS_BOB,
            vec![
                "smime/thunderbird-nss-smime/alice.env.eml",
                "smime/thunderbird-nss-smime/alice.dsig.SHA256.multipart.env.eml",
                "smime/thunderbird-nss-smime/alice.sig.SHA256.opaque.env.eml",
            ],
        ),
        (
            LAMPS_BOB,
            vec![
                "smime/rfc9788-header-protection-vectors/smime-enc-signed.eml",
                "smime/rfc9788-header-protection-vectors/smime-enc-signed-injected-strong-legacy.eml",
            ],
        ),
        (
            DRAFT_BOB,
            vec![
                "smime/autocrypt-protected-headers/smime-sign+enc.eml",
                "smime/autocrypt-protected-headers/smime-sign+enc+legacy-disp.eml",
                "smime/autocrypt-protected-headers/smime-enc+legacy-disp.eml",
            ],
        ),
    ]
}

/// The corpus messages smime.rs opens whose content is bare text, not a MIME entity
/// (`openssl cms -encrypt` without `-text` makes such messages; a MIME reader takes
/// such a body as text/plain, RFC 2045 §5.2).
fn bare_text_cases() -> Vec<(SmimeKey, Vec<&'static str>)> {
    vec![
        // OpenSSL, as real .eml files: "This is a test message to Fran.\n".
        (
            FRAN,
            vec![
                "smime/thunderbird-smime-interop/fran-oaep_ossl.env",
                // rsa 0.9 (the crypto-rust build) takes OAEP labels as UTF-8 only.
                #[cfg(feature = "crypto-openssl")]
                "smime/thunderbird-smime-interop/fran-oaep-label_ossl.env",
                "smime/thunderbird-smime-interop/fran-oaep-sha256hash_ossl.env",
                "smime/thunderbird-smime-interop/fran-oaep-sha256hash-sha256mgf_ossl.env",
            ],
        ),
        (
            FRAN_EC,
            vec![
                "smime/thunderbird-smime-interop/fran-ec_ossl-aes128-sha256.env",
                "smime/thunderbird-smime-interop/fran-ec_ossl-aes256-sha512.env",
            ],
        ),
        // Bare CMS, sent here as S/MIME messages: "This is some sample content."
        // (no line end at all).
        (
            LAMPS_BOB,
            vec![
                "smime/rfc9216-lamps-examples-cms/encryptedForBobRSAOaep.p7m",
                "smime/rfc9216-lamps-examples-cms/encryptedForBobAndDana.p7m",
            ],
        ),
    ]
}

/// The key cache's fingerprint of a PEM certificate: SHA-256 of its DER.
fn cert_fingerprint(cert: &str) -> String {
    let der = openssl(&[
        "x509",
        "-outform",
        "DER",
        "-in",
        corpus(cert).to_str().unwrap(),
    ]);
    hex_upper(&Sha256::digest(der))
}

/// What `openssl cms -decrypt` makes of a corpus message: the reference.
fn openssl_opens(path: &str, key: &SmimeKey) -> Vec<u8> {
    let format = if path.ends_with(".p7m") {
        "DER"
    } else {
        "SMIME"
    };
    openssl(&[
        "cms",
        "-decrypt",
        "-binary",
        "-inform",
        format,
        "-in",
        corpus(path).to_str().unwrap(),
        "-recip",
        corpus(key.cert).to_str().unwrap(),
        "-inkey",
        corpus(key.key).to_str().unwrap(),
    ])
}

/// Bytes no sender encrypts: not a MIME entity, and not text.
const NOISE: [u8; 35] = *b"\x8f\x01\xc3\x28\x00\x9a\xe2\x82 noise from a random key \x07\xff";

/// `plaintext` encrypted by `openssl cms` to `key`'s certificate, as DER.
fn openssl_encrypt_to(key: &SmimeKey, plaintext: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, plaintext).unwrap();
    openssl(&[
        "cms",
        "-encrypt",
        "-binary",
        "-aes256",
        "-outform",
        "DER",
        "-in",
        input.to_str().unwrap(),
        corpus(key.cert).to_str().unwrap(),
    ])
}

/// A bare CMS EnvelopedData (DER) as an S/MIME message to `to`.
fn smime_message(name: &str, to: &str, der: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "From: {SENDER}\r\nTo: {to}\r\nSubject: corpus {name}\r\nMessage-ID: <{name}@corpus.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=\"smime.p7m\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n"
    )
    .into_bytes();
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The body of a MIME entity (after its header), CRLF: what the decrypted message must
/// carry byte for byte. A plaintext that is no MIME entity is all body.
fn entity_body(entity: &[u8]) -> String {
    let entity = text(&crlf(entity));
    match entity.find("\r\n\r\n") {
        Some(end)
            if entity[..end]
                .lines()
                .all(|l| l.contains(':') || l.starts_with([' ', '\t'])) =>
        {
            entity[end + 4..].to_string()
        }
        _ => entity,
    }
}

/// Sends each case's messages to a gateway holding the key as an SCKM key; returns what
/// is wrong with the copies that arrive.
async fn smime_inbound(cases: Vec<(SmimeKey, Vec<&'static str>)>) -> Vec<String> {
    let mut failures = Vec::new();
    for (key, messages) in cases {
        let sink = Sink::start().await;
        let (_dir, gw) = gateway(&sink).await;
        let bundle = [read(key.cert), read(key.key)].concat();
        let response = import_sckm(&gw, key.cert, &bundle, "");
        assert!(!response.failed, "{}: {:?}", key.cert, response.messages);
        let fingerprint = cert_fingerprint(key.cert);
        assert!(
            response
                .entries
                .iter()
                .any(|e| e.fingerprint == fingerprint && e.can_decrypt),
            "{}: {:?}",
            key.cert,
            response.entries
        );
        let address = key.address.to_ascii_lowercase();

        for path in messages {
            let message = if path.ends_with(".p7m") {
                let name = path.rsplit('/').next().unwrap();
                smime_message(name, key.address, &read(path))
            } else {
                crlf(&read(path))
            };
            let body = entity_body(&openssl_opens(path, &key));
            assert!(body.len() > 10, "{path}: {body:?}");
            let got = send_inbound(&gw, &sink, &[key.address], &message).await;
            // The recipient as the client sent it, or normalised: either is fine.
            let copy = got.iter().find(|r| {
                r.recipients.len() == 1 && r.recipients[0].to_ascii_lowercase() == address
            });
            let wrong = check_decrypted(copy, "smime", &fingerprint, &[&body]);
            if !wrong.is_empty() {
                failures.push(format!("{path} for {}: {wrong:#?}", key.address));
            }
        }
        gw.stop().await;
    }
    failures
}

#[tokio::test]
async fn smime_corpus_decrypts_inbound_for_sckm_users() {
    let failures = smime_inbound(smime_cases()).await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn smime_corpus_with_bare_text_content_decrypts_inbound() {
    let failures = smime_inbound(bare_text_cases()).await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------
// What the decrypted message keeps

/// Whatever the gateway does with a message whose decrypted content is not a MIME
/// entity, it must not lose that content: either the copy is decrypted and carries it,
/// or it arrives as it was sent.
#[tokio::test]
async fn decrypted_content_is_never_dropped() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway(&sink).await;
    let bundle = [read(LAMPS_BOB.cert), read(LAMPS_BOB.key)].concat();
    let response = import_sckm(&gw, "lamps-bob", &bundle, "");
    assert!(!response.failed, "{:?}", response.messages);

    // The same text as the S/MIME sample below, encrypted by gpg to Bob (the corpus's
    // RSA-3072 key) and sent as PGP/MIME.
    let bob = "bob@openpgp.example";
    let form = sckm_form("openpgp/bob@openpgp.example.sec.asc", "");
    let response = import_sckm(&gw, "bob", &form.export, "");
    assert!(!response.failed, "{:?}", response.messages);
    let gpg = GpgHome::new();
    gpg.run(
        &[
            "--import",
            corpus("openpgp/bob@openpgp.example.sec.asc")
                .to_str()
                .unwrap(),
        ],
        None,
    );
    let content_file = gpg.path().join("content.txt");
    std::fs::write(&content_file, "This is some sample content.").unwrap();
    let armored = crlf(&gpg.run(
        &[
            "--armor",
            "--trust-model",
            "always",
            "--encrypt",
            "-r",
            bob,
            "--output",
            "-",
            content_file.to_str().unwrap(),
        ],
        None,
    ));
    let pgp = pgp_mime(SENDER, bob, "pgp-bare@corpus.test", &armored);
    let smime = smime_message(
        "bare-content",
        LAMPS_BOB.address,
        &read("smime/rfc9216-lamps-examples-cms/encryptedForBobRSAOaep.p7m"),
    );

    let mut failures = Vec::new();
    for (what, to, message, content) in [
        ("PGP/MIME", bob, pgp, "This is some sample content."),
        (
            "S/MIME",
            LAMPS_BOB.address,
            smime,
            "This is some sample content.",
        ),
    ] {
        let got = send_inbound(&gw, &sink, &[to], &message).await;
        let Some(copy) = copy_for(&got, to) else {
            failures.push(format!("{what}: no copy"));
            continue;
        };
        let data = text(&copy.data);
        let kept = if data.contains("X-Sealgate-Decrypted:") {
            data.contains(content)
        } else {
            split_received(&copy.data).1 == message
        };
        if !kept {
            failures.push(format!("{what}: {content:?} is lost:\n{data}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    gw.stop().await;
}

/// The decrypted entity's own header fields travel with it: Autocrypt puts its
/// `Autocrypt-Gossip` fields (the other recipients' keys) in the encrypted part's
/// header, where only the recipient's client can read them.
#[tokio::test]
async fn inner_header_fields_of_the_decrypted_entity_are_kept() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway(&sink).await;
    let bob = "bob@autocrypt.example";
    let form = sckm_form("openpgp/bob@autocrypt.example.sec.asc", "");
    let response = import_sckm(&gw, "bob", &form.export, "");
    assert!(!response.failed, "{:?}", response.messages);
    let gossip = crlf(&read("openpgp/example-gossip.eml"));
    let got = send_inbound(&gw, &sink, &[bob], &gossip).await;
    let copy = text(&copy_for(&got, bob).expect("bob's copy").data);
    assert!(copy.contains("X-Sealgate-Decrypted: pgp;"), "{copy}");
    for gossiped in ["bob@autocrypt.example", "carol@autocrypt.example"] {
        assert!(
            copy.contains(&format!("Autocrypt-Gossip: addr={gossiped}; keydata=")),
            "the gossip about {gossiped} is lost:\n{copy}"
        );
    }
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------
// What cannot be opened arrives as it was sent

/// `message` with one base64 line in the middle of its ciphertext replaced: the armor
/// or DER still reads, the content does not.
fn corrupt(message: &[u8], after: &str) -> Vec<u8> {
    let text = text(message);
    let start = text.find(after).expect("the ciphertext") + after.len();
    let lines: Vec<(usize, &str)> = text[start..]
        .split("\r\n")
        .scan(start, |offset, line| {
            let at = *offset;
            *offset += line.len() + 2;
            Some((at, line))
        })
        .filter(|(_, l)| l.len() >= 60 && !l.contains(':') && !l.contains(' '))
        .collect();
    assert!(lines.len() > 4, "{text}");
    let (at, line) = lines[lines.len() / 2];
    let replacement: String = line
        .chars()
        .map(|c| if c == 'A' { 'B' } else { 'A' })
        .collect();
    let mut out = text[..at].to_string();
    out.push_str(&replacement);
    out.push_str(&text[at + line.len()..]);
    out.into_bytes()
}

/// The message with its armored block cut in half (the END line kept).
fn truncate_armor(message: &[u8]) -> Vec<u8> {
    let text = text(message);
    let start = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end = text.find("-----END PGP MESSAGE-----").unwrap();
    let middle = start + (end - start) / 2;
    let cut = text[..middle].rfind("\r\n").unwrap() + 2;
    let mut out = text[..cut].to_string();
    out.push_str(&text[end..]);
    out.into_bytes()
}

#[tokio::test]
async fn undecryptable_mail_and_mail_for_users_without_keys_arrive_as_sent() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway(&sink).await;
    let alice = "alice@autocrypt.example";
    let form = sckm_form("openpgp/alice@autocrypt.example.sec.asc", "");
    let response = import_sckm(&gw, "alice", &form.export, "");
    assert!(!response.failed, "{:?}", response.messages);
    let bundle = [read(NSS_BOB.cert), read(NSS_BOB.key)].concat();
    let response = import_sckm(&gw, "bob", &bundle, "");
    assert!(!response.failed, "{:?}", response.messages);

    let draft = crlf(&read("openpgp/example-draft.eml"));
    let smime = crlf(&read("smime/thunderbird-nss-smime/alice.env.eml"));
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        // Internal users without a key.
        (
            "PGP/MIME for a user without a key",
            "dave@autocrypt.example",
            draft.clone(),
        ),
        (
            "S/MIME for a user without a key",
            "dave@example.com",
            smime.clone(),
        ),
        // SCKM users whose message is damaged.
        (
            "PGP/MIME with a garbled line",
            alice,
            corrupt(&draft, "-----BEGIN PGP MESSAGE-----\r\n"),
        ),
        ("PGP/MIME cut in half", alice, truncate_armor(&draft)),
        (
            "S/MIME with a garbled line",
            NSS_BOB.address,
            corrupt(&smime, "\r\n\r\n"),
        ),
        // What a wrong key that names Bob's certificate opens one time in 256 (RFC 3218
        // random content key, valid CBC padding): noise, which is no message to deliver.
        (
            "S/MIME whose content is noise",
            NSS_BOB.address,
            smime_message(
                "noise",
                NSS_BOB.address,
                &openssl_encrypt_to(&NSS_BOB, &NOISE),
            ),
        ),
        // Signed outside, encrypted inside (Thunderbird): not enveloped-data at the top,
        // so not for the gateway to open; it goes on as it came.
        (
            "S/MIME encrypted, then signed outside",
            NSS_BOB.address,
            crlf(&read(
                "smime/thunderbird-nss-smime/alice.env.sig.SHA256.opaque.eml",
            )),
        ),
    ];
    let mut failures = Vec::new();
    for (what, to, message) in cases {
        let got = send_inbound(&gw, &sink, &[to], &message).await;
        match got.as_slice() {
            [copy] if split_received(&copy.data).1 == message => {}
            other => failures.push(format!(
                "{what}: not delivered as it arrived: {:?}",
                other
                    .iter()
                    .map(|r| (r.recipients.clone(), text(&r.data)))
                    .collect::<Vec<_>>()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    gw.stop().await;
}
