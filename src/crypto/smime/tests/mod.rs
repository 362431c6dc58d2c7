//! Checked against the other side's real tool: the `openssl` CLI makes the keys (in a
//! temporary directory, at test time), opens what we encrypt and encrypts what we
//! open. The corpus under `testdata/corpus/smime/` holds messages from real clients.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use tempfile::TempDir;

use const_oid::db::rfc5911;
use rand::RngCore;
use rand::rngs::OsRng;

use super::*;
use crate::keys::material::{MAX_KEY_BYTES, Refusal};

/// A MIME entity with 8-bit text and CRLF line ends, which must survive exactly.
const ENTITY: &[u8] = b"Content-Type: text/plain; charset=utf-8\r\n\
    Content-Transfer-Encoding: 8bit\r\n\r\n\
    Gr\xc3\xbc\xc3\x9fe aus dem Gateway.\r\n.\r\nFrom the gateway, with a dot line.\r\n";

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A party made by `openssl req`: `NAME.cert.pem` and `NAME.key.pem` (PKCS#8).
struct Party {
    cert: PathBuf,
    key: PathBuf,
}

impl Party {
    /// `kind` is "rsa", "P-256" or "P-384".
    fn new(dir: &Path, name: &str, kind: &str, key_usage: &str) -> Party {
        let cert = dir.join(format!("{name}.cert.pem"));
        let key = dir.join(format!("{name}.key.pem"));
        let mut args = vec!["req", "-x509", "-nodes", "-days", "30", "-subj"];
        let subject = format!("/CN={name}");
        let san = format!("subjectAltName=email:{name}@example.com");
        let usage = format!("keyUsage=critical,{key_usage}");
        let curve = format!("ec_paramgen_curve:{kind}");
        args.push(&subject);
        match kind {
            "rsa" => args.extend(["-newkey", "rsa:2048"]),
            _ => args.extend(["-newkey", "ec", "-pkeyopt", &curve]),
        }
        args.extend(["-addext", &san, "-addext", &usage]);
        args.extend([
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        openssl(dir, &args);
        Party { cert, key }
    }

    fn encryption(dir: &Path, name: &str, kind: &str) -> Party {
        let usage = if kind == "rsa" {
            "keyEncipherment"
        } else {
            "keyAgreement"
        };
        Party::new(dir, name, kind, usage)
    }

    fn certificate(&self) -> Certificate {
        Certificate::load_pem_chain(&std::fs::read(&self.cert).unwrap())
            .unwrap()
            .remove(0)
    }

    fn sckm(&self) -> SmimeKey {
        let mut pem = std::fs::read(&self.cert).unwrap();
        pem.extend(std::fs::read(&self.key).unwrap());
        let mut keys = import_sckm(&pem, None).expect("imports");
        assert_eq!(keys.len(), 1);
        keys.remove(0)
    }

    /// `openssl cms -decrypt` of DER `message`.
    fn openssl_decrypt(&self, dir: &Path, message: &[u8]) -> Vec<u8> {
        let path = dir.join("for-openssl.p7m");
        std::fs::write(&path, message).unwrap();
        openssl(
            dir,
            &[
                "cms",
                "-decrypt",
                "-binary",
                "-inform",
                "DER",
                "-in",
                path.to_str().unwrap(),
                "-recip",
                self.cert.to_str().unwrap(),
                "-inkey",
                self.key.to_str().unwrap(),
            ],
        )
    }

    /// `openssl cms -encrypt` of [`ENTITY`] to this party with `extra` options,
    /// returned as CMS bytes (PEM and S/MIME output are unwrapped).
    fn openssl_encrypt(&self, dir: &Path, extra: &[&str]) -> Vec<u8> {
        let input = dir.join("entity.txt");
        std::fs::write(&input, ENTITY).unwrap();
        // -keyopt applies to the -recip before it.
        let mut args = vec!["cms", "-encrypt", "-binary", "-in", input.to_str().unwrap()];
        args.extend(["-recip", self.cert.to_str().unwrap()]);
        args.extend(extra);
        let out = openssl(dir, &args);
        if out.starts_with(b"-----BEGIN") {
            pem_body(&out)
        } else if extra.contains(&"SMIME") {
            mime_body(&out)
        } else {
            out
        }
    }
}

fn pem_body(pem: &[u8]) -> Vec<u8> {
    let text: String = String::from_utf8_lossy(pem)
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// The base64 body of a single-part application/pkcs7-mime message, decoded.
fn mime_body(eml: &[u8]) -> Vec<u8> {
    let start = memchr::memmem::find(eml, b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| memchr::memmem::find(eml, b"\n\n").map(|p| p + 2))
        .expect("a header/body separator");
    let text: Vec<u8> = eml[start..]
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("a base64 body")
}

fn assert_malformed<T: fmt::Debug>(result: Result<T, CryptoError>, needle: &str) {
    match result {
        Err(CryptoError::Malformed(reason)) => assert!(
            reason.contains(needle),
            "expected a reason with {needle:?}, got {reason:?}"
        ),
        other => panic!("expected Malformed({needle:?}), got {other:?}"),
    }
}

#[test]
fn openssl_opens_what_we_encrypt_to_rsa_and_ec_recipients_at_once() {
    let dir = TempDir::new().unwrap();
    let parties = [
        Party::encryption(dir.path(), "rsa", "rsa"),
        Party::encryption(dir.path(), "p256", "P-256"),
        Party::encryption(dir.path(), "p384", "P-384"),
    ];
    let certs: Vec<Certificate> = parties.iter().map(Party::certificate).collect();
    let message = encrypt(ENTITY, &certs).unwrap();
    assert_eq!(&message[..2], &[0x30, 0x82], "definite-length DER");
    for party in &parties {
        assert_eq!(party.openssl_decrypt(dir.path(), &message), ENTITY);
        let opened = decrypt(&message, &[party.sckm()]).unwrap();
        assert_eq!(opened.plaintext, ENTITY);
        assert_eq!(opened.fingerprint, fingerprint(&party.certificate()));
    }
}

#[test]
fn a_ten_mib_entity_survives_both_ways() {
    let dir = TempDir::new().unwrap();
    let bob = Party::encryption(dir.path(), "bob", "rsa");
    let mut entity = b"Content-Type: application/octet-stream\r\n\r\n".to_vec();
    let mut noise = vec![0u8; 10 * 1024 * 1024];
    OsRng.fill_bytes(&mut noise);
    entity.extend(noise);
    let message = encrypt(&entity, &[bob.certificate()]).unwrap();
    assert!(bob.openssl_decrypt(dir.path(), &message) == entity);
    assert!(decrypt(&message, &[bob.sckm()]).unwrap().plaintext == entity);
    // And in BER, as a streaming client sends it.
    std::fs::write(dir.path().join("entity.txt"), &entity).unwrap();
    let input = dir.path().join("entity.txt");
    let ber = openssl(
        dir.path(),
        &[
            "cms",
            "-encrypt",
            "-binary",
            "-stream",
            "-aes256",
            "-outform",
            "DER",
            "-in",
            input.to_str().unwrap(),
            bob.cert.to_str().unwrap(),
        ],
    );
    assert_eq!(&ber[..2], &[0x30, 0x80]);
    assert!(decrypt(&ber, &[bob.sckm()]).unwrap().plaintext == entity);
}

#[test]
fn encrypting_a_duplicate_recipient_once_and_refusing_a_signing_certificate() {
    let dir = TempDir::new().unwrap();
    let rsa = Party::encryption(dir.path(), "rsa", "rsa");
    let cert = rsa.certificate();
    let message = encrypt(ENTITY, &[cert.clone(), cert.clone()]).unwrap();
    assert_eq!(decrypt(&message, &[rsa.sckm()]).unwrap().plaintext, ENTITY);

    let signer = Party::new(dir.path(), "signer", "rsa", "digitalSignature");
    assert!(matches!(
        encrypt(ENTITY, &[signer.certificate()]),
        Err(CryptoError::Key(reason)) if reason.contains("signing only")
    ));
    assert!(matches!(encrypt(ENTITY, &[]), Err(CryptoError::Key(_))));
}

#[test]
fn we_open_what_openssl_encrypts_to_rsa() {
    let dir = TempDir::new().unwrap();
    let bob = Party::encryption(dir.path(), "bob", "rsa");
    let key = bob.sckm();
    let variants: &[&[&str]] = &[
        &["-aes256", "-outform", "DER"],
        &["-aes128", "-outform", "DER"],
        &["-aes192", "-outform", "DER"],
        &["-des3", "-outform", "DER"],
        // Indefinite-length BER with a segmented encryptedContent.
        &["-aes256", "-stream", "-outform", "PEM"],
        &["-aes256", "-stream", "-outform", "SMIME"],
        &["-aes256", "-stream", "-outform", "DER"],
        // RSAES-OAEP, SHA-1 by default and SHA-256 on request.
        &[
            "-aes256",
            "-outform",
            "DER",
            "-keyopt",
            "rsa_padding_mode:oaep",
        ],
        &[
            "-aes256",
            "-outform",
            "DER",
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha256",
        ],
        &[
            "-aes256",
            "-stream",
            "-outform",
            "PEM",
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha256",
            "-keyopt",
            "rsa_mgf1_md:sha256",
        ],
        // Recipient named by subject key identifier instead of issuer and serial.
        &["-aes256", "-outform", "DER", "-keyid"],
    ];
    for variant in variants {
        let message = bob.openssl_encrypt(dir.path(), variant);
        if variant.contains(&"-stream") {
            assert_eq!(&message[..2], &[0x30, 0x80], "{variant:?} gives BER");
        }
        let opened = decrypt(&message, std::slice::from_ref(&key))
            .unwrap_or_else(|e| panic!("{variant:?}: {e}"));
        assert_eq!(opened.plaintext, ENTITY, "{variant:?}");
    }
}

#[test]
fn we_open_what_openssl_encrypts_to_ec() {
    let dir = TempDir::new().unwrap();
    for curve in ["P-256", "P-384"] {
        let fran = Party::encryption(dir.path(), "fran", curve);
        let key = fran.sckm();
        let variants: &[&[&str]] = &[
            // OpenSSL's default KDF is the SHA-1 one.
            &["-aes256", "-outform", "DER"],
            &[
                "-aes128",
                "-outform",
                "DER",
                "-keyopt",
                "ecdh_kdf_md:sha256",
            ],
            &[
                "-aes256",
                "-outform",
                "DER",
                "-keyopt",
                "ecdh_kdf_md:sha384",
            ],
            &[
                "-aes256",
                "-stream",
                "-outform",
                "PEM",
                "-keyopt",
                "ecdh_kdf_md:sha512",
            ],
            &[
                "-aes256",
                "-outform",
                "DER",
                "-keyopt",
                "ecdh_cofactor_mode:1",
            ],
            &["-aes192", "-outform", "DER", "-keyid"],
        ];
        for variant in variants {
            let message = fran.openssl_encrypt(dir.path(), variant);
            let opened = decrypt(&message, std::slice::from_ref(&key))
                .unwrap_or_else(|e| panic!("{curve} {variant:?}: {e}"));
            assert_eq!(opened.plaintext, ENTITY, "{curve} {variant:?}");
        }
    }
}

#[test]
fn the_first_matching_key_opens_and_strangers_get_no_key() {
    let dir = TempDir::new().unwrap();
    let alice = Party::encryption(dir.path(), "alice", "rsa");
    let bob = Party::encryption(dir.path(), "bob", "P-256");
    let carol = Party::encryption(dir.path(), "carol", "rsa");
    let message = encrypt(ENTITY, &[bob.certificate()]).unwrap();
    let opened = decrypt(&message, &[alice.sckm(), bob.sckm()]).unwrap();
    assert_eq!(opened.fingerprint, fingerprint(&bob.certificate()));
    assert!(matches!(
        decrypt(&message, &[alice.sckm(), carol.sckm()]),
        Err(CryptoError::NoKey)
    ));
    assert!(matches!(decrypt(&message, &[]), Err(CryptoError::NoKey)));
}

#[test]
fn a_key_that_matches_by_name_but_not_by_secret_is_a_clean_error() {
    // Two certificates with the same issuer and serial (self-signed, same subject),
    // different keys: the name matches and the unwrap must fail quietly.
    let dir = TempDir::new().unwrap();
    let real = Party::encryption(dir.path(), "same", "rsa");
    let message = encrypt(ENTITY, &[real.certificate()]).unwrap();
    let other_dir = TempDir::new().unwrap();
    let impostor = Party::encryption(other_dir.path(), "same", "rsa");
    let mut key = impostor.sckm();
    key.cert = real.certificate();
    // RFC 3218 §2.3: the failed unwrap goes on with a random content key, so that it
    // looks like any other wrong key. AES-CBC then finds valid padding about one time
    // in 256; that noise is no MIME entity, and must fail the same way. A fresh random
    // key each time: 400 attempts meet valid padding with odds of about 79%.
    for _ in 0..400 {
        assert_malformed(decrypt(&message, std::slice::from_ref(&key)), "wrong key");
    }
}

#[test]
fn content_that_is_neither_an_entity_nor_text_is_refused_as_a_wrong_key() {
    // What noise from a wrong key looks like, made on purpose: the right key, and a
    // content that is neither a MIME entity nor text.
    let dir = TempDir::new().unwrap();
    let bob = Party::encryption(dir.path(), "bob", "rsa");
    let noise = encrypt(b"\x8f\x01Hello world, no header", &[bob.certificate()]).unwrap();
    assert_malformed(
        decrypt(&noise, &[bob.sckm()]),
        "does not decrypt to a MIME entity or text",
    );
    // An entity with an empty header, one with LF line ends, and bare text, as OpenSSL
    // sends without `-text`, are taken.
    for entity in [
        &b"\r\nplain text"[..],
        b"Content-Type: text/plain\n\nLF text\n",
        "bare text, gr\u{fc}\u{df}e\tand a tab\r\n".as_bytes(),
        // ISO-2022-JP: seven bits, with escape sequences.
        b"\x1b$B$3$s$K$A$O\x1b(B\r\n",
    ] {
        let message = encrypt(entity, &[bob.certificate()]).unwrap();
        assert_eq!(decrypt(&message, &[bob.sckm()]).unwrap().plaintext, entity);
    }
}

#[test]
fn unsupported_algorithms_are_clean_errors() {
    let dir = TempDir::new().unwrap();
    let bob = Party::encryption(dir.path(), "bob", "rsa");
    let key = bob.sckm();
    let camellia = bob.openssl_encrypt(dir.path(), &["-camellia256", "-outform", "DER"]);
    assert_malformed(
        decrypt(&camellia, std::slice::from_ref(&key)),
        "unsupported content",
    );
}

/// DER TLV with a definite length, for hand-made inputs.
fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(body);
    out
}

fn enveloped_content_info(enveloped_data_body: &[u8]) -> Vec<u8> {
    let oid = rfc5911::ID_ENVELOPED_DATA.to_der().unwrap();
    let explicit = tlv(0xa0, &tlv(0x30, enveloped_data_body));
    tlv(0x30, &[oid, explicit].concat())
}

#[test]
fn garbage_truncation_and_nesting_are_malformed_not_panics() {
    let dir = TempDir::new().unwrap();
    let bob = Party::encryption(dir.path(), "bob", "rsa");
    let key = bob.sckm();
    let keys = std::slice::from_ref(&key);

    for garbage in [
        &b""[..],
        b"\x00",
        b"\x30",
        b"\x30\x80",
        b"hello, this is not CMS at all",
        b"\x30\x84\xff\xff\xff\xff",
        b"\x30\x89\x01\x02\x03\x04\x05\x06\x07\x08\x09",
    ] {
        assert!(
            matches!(decrypt(garbage, keys), Err(CryptoError::Malformed(_))),
            "{garbage:?}"
        );
    }
    let deep: Vec<u8> = std::iter::repeat_n([0x30u8, 0x80], 200).flatten().collect();
    assert_malformed(decrypt(&deep, keys), "deeper");
    let mut deep_inside = enveloped_content_info(&[]);
    deep_inside.truncate(deep_inside.len() - 2);
    deep_inside.extend(std::iter::repeat_n([0x30u8, 0x80], 100).flatten());
    assert!(matches!(
        decrypt(&deep_inside, keys),
        Err(CryptoError::Malformed(_))
    ));

    // A RecipientInfos SET of 2000 entries: refused before anything is decoded.
    let version = tlv(0x02, &[0]);
    let many = tlv(0x31, &tlv(0x02, &[1]).repeat(2000));
    let eci = tlv(0x30, &rfc5911::ID_DATA.to_der().unwrap());
    let huge = enveloped_content_info(&[version.clone(), many, eci.clone()].concat());
    assert_malformed(decrypt(&huge, keys), "more than");
    // A SET of nothing we can read.
    let unreadable = tlv(0x31, &tlv(0x02, &[1]).repeat(3));
    let none = enveloped_content_info(&[version, unreadable, eci].concat());
    assert_malformed(decrypt(&none, keys), "no readable RecipientInfo");

    // Every truncation of a real message, DER and BER, and every single-byte flip.
    let der = encrypt(ENTITY, &[bob.certificate()]).unwrap();
    let ber = bob.openssl_encrypt(dir.path(), &["-aes128", "-stream", "-outform", "PEM"]);
    for message in [&der, &ber] {
        for len in 0..message.len() {
            assert!(
                decrypt(&message[..len], keys).is_err(),
                "truncated to {len}"
            );
        }
        for pos in 0..message.len() {
            let mut flipped = message.clone();
            flipped[pos] ^= 0xa5;
            // Any result but a panic; a flip in the ciphertext can still decrypt.
            let _ = decrypt(&flipped, keys);
        }
    }
}

#[test]
fn signed_data_is_not_enveloped_data() {
    let dir = TempDir::new().unwrap();
    let alice = Party::new(dir.path(), "alice", "rsa", "digitalSignature");
    let input = dir.path().join("entity.txt");
    std::fs::write(&input, ENTITY).unwrap();
    let signed = openssl(
        dir.path(),
        &[
            "cms",
            "-sign",
            "-binary",
            "-nodetach",
            "-outform",
            "DER",
            "-in",
            input.to_str().unwrap(),
            "-signer",
            alice.cert.to_str().unwrap(),
            "-inkey",
            alice.key.to_str().unwrap(),
        ],
    );
    assert_malformed(decrypt(&signed, &[]), "signed-data");
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn refusal(result: Result<Vec<SmimeKey>, Refusal>) -> String {
    match result {
        Err(Refusal(reason)) => reason,
        Ok(keys) => panic!("expected a refusal, got {keys:?}"),
    }
}

fn corpus(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/corpus/smime")
        .join(path)
}

mod auth_enveloped;
mod corpus;
mod import;

#[test]
fn a_key_kept_between_messages_decodes_its_rsa_key_once() {
    let dir = TempDir::new().unwrap();
    let bob = Party::encryption(dir.path(), "bob", "rsa");
    let key = bob.sckm();
    assert_eq!(key.private_key.decoded(), None, "decoded before use");
    let clone = key.clone();
    for _ in 0..2 {
        let message = encrypt(ENTITY, &[bob.certificate()]).unwrap();
        let opened = decrypt(&message, std::slice::from_ref(&key)).unwrap();
        assert_eq!(opened.plaintext, ENTITY);
        assert_eq!(key.private_key.decoded(), Some(true), "not kept");
        assert_eq!(
            clone.private_key.decoded(),
            Some(true),
            "not shared with a clone"
        );
    }
    // A key that is no RSA key says so, each time it is asked.
    let ec = Party::encryption(dir.path(), "carol", "P-256").sckm();
    let wrong = SmimeKey {
        cert: bob.certificate(),
        private_key: ec.private_key,
    };
    let message = encrypt(ENTITY, &[bob.certificate()]).unwrap();
    for _ in 0..2 {
        match decrypt(&message, std::slice::from_ref(&wrong)) {
            Err(CryptoError::Key(reason)) => assert!(reason.contains("RSA"), "{reason}"),
            other => panic!("expected a key error, got {other:?}"),
        }
    }
}
