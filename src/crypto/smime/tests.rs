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
    assert_malformed(decrypt(&message, &[key]), "wrong key");
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
    let gcm = bob.openssl_encrypt(dir.path(), &["-aes-256-gcm", "-outform", "DER"]);
    assert_malformed(
        decrypt(&gcm, std::slice::from_ref(&key)),
        "AuthEnvelopedData",
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

// -----------------------------------------------------------------------------------
// SCKM import
// -----------------------------------------------------------------------------------

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn refusal(result: Result<Vec<SmimeKey>, Refusal>) -> String {
    match result {
        Err(Refusal(reason)) => reason,
        Ok(keys) => panic!("expected a refusal, got {keys:?}"),
    }
}

#[test]
fn import_accepts_pem_certificate_with_each_key_format() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let rsa = Party::encryption(d, "rsa", "rsa");
    let ec = Party::encryption(d, "ec", "P-384");
    let cert_fpr = fingerprint(&rsa.certificate());

    // PKCS#8, key before the certificate, with a CA-like extra certificate around.
    let other = Party::encryption(d, "other", "rsa");
    let file = [read(&rsa.key), read(&other.cert), read(&rsa.cert)].concat();
    let keys = import_sckm(&file, None).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(fingerprint(&keys[0].cert), cert_fpr);

    // PKCS#1 "RSA PRIVATE KEY" and SEC1 "EC PRIVATE KEY" become PKCS#8.
    let pkcs1 = openssl(
        d,
        &["rsa", "-traditional", "-in", rsa.key.to_str().unwrap()],
    );
    assert!(pkcs1.starts_with(b"-----BEGIN RSA PRIVATE KEY"));
    let keys = import_sckm(&[read(&rsa.cert), pkcs1].concat(), None).unwrap();
    assert_eq!(
        keys[0].private_key.as_slice(),
        rsa.sckm().private_key.as_slice()
    );
    let sec1 = openssl(d, &["ec", "-in", ec.key.to_str().unwrap()]);
    assert!(sec1.starts_with(b"-----BEGIN EC PRIVATE KEY"));
    let keys = import_sckm(&[read(&ec.cert), sec1].concat(), None).unwrap();
    // The imported EC key decrypts.
    let message = encrypt(ENTITY, &[ec.certificate()]).unwrap();
    assert_eq!(decrypt(&message, &keys).unwrap().plaintext, ENTITY);

    // Encrypted PKCS#8: needs the passphrase, and the right one.
    let encrypted = openssl(
        d,
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes256",
            "-passout",
            "pass:pw",
            "-in",
            rsa.key.to_str().unwrap(),
        ],
    );
    let file = [read(&rsa.cert), encrypted].concat();
    assert_eq!(import_sckm(&file, Some("pw")).unwrap().len(), 1);
    let reason = refusal(import_sckm(&file, None));
    assert!(
        reason.contains("--passphrase-file") && reason.contains(&cert_fpr),
        "{reason}"
    );
    let reason = refusal(import_sckm(&file, Some("wrong")));
    assert!(reason.contains("wrong passphrase"), "{reason}");

    // OpenSSL's legacy encrypted PEM gets advice, not a parse error.
    let legacy = openssl(
        d,
        &[
            "rsa",
            "-traditional",
            "-aes256",
            "-passout",
            "pass:pw",
            "-in",
            rsa.key.to_str().unwrap(),
        ],
    );
    let reason = refusal(import_sckm(&[read(&rsa.cert), legacy].concat(), Some("pw")));
    assert!(reason.contains("pkcs8 -topk8"), "{reason}");
}

#[test]
fn import_refuses_signing_only_mismatched_addressless_and_incomplete_files() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let signer = Party::new(d, "signer", "rsa", "digitalSignature");
    let reason = refusal(import_sckm(
        &[read(&signer.cert), read(&signer.key)].concat(),
        None,
    ));
    assert!(
        reason.contains("only digital signature")
            && reason.contains(&fingerprint(&signer.certificate())),
        "{reason}"
    );

    let alice = Party::encryption(d, "alice", "rsa");
    let bob = Party::encryption(d, "bob", "rsa");
    let reason = refusal(import_sckm(
        &[read(&alice.cert), read(&bob.key)].concat(),
        None,
    ));
    assert!(
        reason.contains("does not match") && reason.contains(&fingerprint(&alice.certificate())),
        "{reason}"
    );

    let nameless_cert = d.join("nameless.cert.pem");
    let nameless_key = d.join("nameless.key.pem");
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=nobody",
            "-newkey",
            "rsa:2048",
            "-keyout",
            nameless_key.to_str().unwrap(),
            "-out",
            nameless_cert.to_str().unwrap(),
        ],
    );
    let reason = refusal(import_sckm(
        &[read(&nameless_cert), read(&nameless_key)].concat(),
        None,
    ));
    assert!(reason.contains("no e-mail address"), "{reason}");

    assert!(refusal(import_sckm(&read(&alice.cert), None)).contains("without its private key"));
    assert!(refusal(import_sckm(&read(&alice.key), None)).contains("without its certificate"));
    let der_cert = openssl(
        d,
        &[
            "x509",
            "-outform",
            "DER",
            "-in",
            alice.cert.to_str().unwrap(),
        ],
    );
    assert!(refusal(import_sckm(&der_cert, None)).contains("without its private key"));
    assert!(import_sckm(b"garbage", None).is_err());
    assert!(import_sckm(&vec![b'A'; MAX_KEY_BYTES + 1], None).is_err());
}

#[cfg(feature = "crypto-openssl")]
#[test]
fn import_reads_pkcs12_with_its_passphrase_only() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let bob = Party::encryption(d, "bob", "P-256");
    let export = |name: &str, pass: &str, extra: &[&str]| {
        let out = d.join(name);
        let passout = format!("pass:{pass}");
        let mut args = vec![
            "pkcs12",
            "-export",
            "-in",
            bob.cert.to_str().unwrap(),
            "-inkey",
            bob.key.to_str().unwrap(),
            "-passout",
            &passout,
            "-out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        openssl(d, &args);
        read(&out)
    };
    let p12 = export("bob.p12", "pw", &[]);
    let keys = import_sckm(&p12, Some("pw")).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(fingerprint(&keys[0].cert), fingerprint(&bob.certificate()));
    let message = encrypt(ENTITY, &[bob.certificate()]).unwrap();
    assert_eq!(decrypt(&message, &keys).unwrap().plaintext, ENTITY);

    assert!(refusal(import_sckm(&p12, None)).contains("--passphrase-file"));
    assert!(refusal(import_sckm(&p12, Some("wrong"))).contains("wrong passphrase"));

    // An empty passphrase is no protection: accepted without one.
    let open = export("open.p12", "", &[]);
    assert_eq!(import_sckm(&open, None).unwrap().len(), 1);
    // RC2-40 certificate bags, as older Windows and NSS exports have them.
    let legacy = export("legacy.p12", "pw", &["-legacy"]);
    assert_eq!(import_sckm(&legacy, Some("pw")).unwrap().len(), 1);
}

#[cfg(not(feature = "crypto-openssl"))]
#[test]
fn import_explains_that_pkcs12_needs_openssl() {
    let p12 = std::fs::read(corpus("thunderbird-nss-smime/Bob.p12")).unwrap();
    assert!(refusal(import_sckm(&p12, Some("nss"))).contains("PEM"));
}

// -----------------------------------------------------------------------------------
// Corpus: messages and keys from real clients (see testdata/corpus/smime/LICENSE-NOTES.md)
// -----------------------------------------------------------------------------------

fn corpus(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/corpus/smime")
        .join(path)
}

/// An SCKM key from a PEM certificate file and a PEM key file in the corpus.
fn corpus_key(cert: &str, key: &str) -> SmimeKey {
    let file = [read(&corpus(cert)), read(&corpus(key))].concat();
    import_sckm(&file, None)
        .unwrap_or_else(|e| panic!("{cert}: {e}"))
        .remove(0)
}

/// The CMS bytes of a corpus file: a bare .p7m, or the body of a .eml/.env.
fn corpus_message(path: &str) -> Vec<u8> {
    let bytes = read(&corpus(path));
    if path.ends_with(".p7m") {
        bytes
    } else {
        mime_body(&bytes)
    }
}

/// What `openssl cms -decrypt` makes of a corpus message: the reference we must match.
fn openssl_opens(path: &str, cert: &str, key: &str) -> Vec<u8> {
    let format = if path.ends_with(".p7m") {
        "DER"
    } else {
        "SMIME"
    };
    openssl(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &[
            "cms",
            "-decrypt",
            "-binary",
            "-inform",
            format,
            "-in",
            corpus(path).to_str().unwrap(),
            "-recip",
            corpus(cert).to_str().unwrap(),
            "-inkey",
            corpus(key).to_str().unwrap(),
        ],
    )
}

const NSS_BOB: (&str, &str) = (
    "thunderbird-nss-smime/derived/Bob.cert.pem",
    "thunderbird-nss-smime/derived/Bob.key.pem",
);
const FRAN: (&str, &str) = (
    "thunderbird-smime-interop/derived/Fran.cert.pem",
    "thunderbird-smime-interop/derived/Fran.key.pem",
);
const FRAN_EC: (&str, &str) = (
    "thunderbird-smime-interop/derived/Fran-ec.cert.pem",
    "thunderbird-smime-interop/derived/Fran-ec.key.pem",
);
const LAMPS_BOB: (&str, &str) = (
    "rfc9216-lamps-examples-cms/lamps-bob.encrypt.crt",
    "rfc9216-lamps-examples-cms/lamps-bob.decrypt.p8.pem",
);
const DRAFT_BOB: (&str, &str) = (
    "autocrypt-protected-headers/derived/bob.cert.pem",
    "autocrypt-protected-headers/derived/bob.key.pem",
);

#[test]
fn corpus_messages_from_real_clients_decrypt_like_openssl() {
    let opens: &[(&str, (&str, &str))] = &[
        // NSS (Thunderbird's S/MIME engine): indefinite-length BER, AES-128, PKCS#1 v1.5.
        ("thunderbird-nss-smime/alice.env.eml", NSS_BOB),
        (
            "thunderbird-nss-smime/alice.dsig.SHA256.multipart.env.eml",
            NSS_BOB,
        ),
        (
            "thunderbird-nss-smime/alice.sig.SHA256.opaque.env.eml",
            NSS_BOB,
        ),
        // OpenSSL: RSA-OAEP (SHA-1, label, SHA-256, SHA-256 MGF1; 3DES and AES) and
        // ECDH on P-384 (SHA-256 and SHA-512 KDFs).
        ("thunderbird-smime-interop/fran-oaep_ossl.env", FRAN),
        // rsa 0.9 (the crypto-rust build) takes OAEP labels as UTF-8 only.
        #[cfg(feature = "crypto-openssl")]
        ("thunderbird-smime-interop/fran-oaep-label_ossl.env", FRAN),
        (
            "thunderbird-smime-interop/fran-oaep-sha256hash_ossl.env",
            FRAN,
        ),
        (
            "thunderbird-smime-interop/fran-oaep-sha256hash-sha256mgf_ossl.env",
            FRAN,
        ),
        (
            "thunderbird-smime-interop/fran-ec_ossl-aes128-sha256.env",
            FRAN_EC,
        ),
        (
            "thunderbird-smime-interop/fran-ec_ossl-aes256-sha512.env",
            FRAN_EC,
        ),
        // IETF samples: RSA-OAEP, and a message to Bob (RSA) and Dana (X25519).
        (
            "rfc9216-lamps-examples-cms/encryptedForBobRSAOaep.p7m",
            LAMPS_BOB,
        ),
        (
            "rfc9216-lamps-examples-cms/encryptedForBobAndDana.p7m",
            LAMPS_BOB,
        ),
        // Header-protection samples: 3DES and AES-128 around signed-data.
        ("autocrypt-protected-headers/smime-sign+enc.eml", DRAFT_BOB),
        (
            "autocrypt-protected-headers/smime-sign+enc+legacy-disp.eml",
            DRAFT_BOB,
        ),
        (
            "autocrypt-protected-headers/smime-enc+legacy-disp.eml",
            DRAFT_BOB,
        ),
        (
            "rfc9788-header-protection-vectors/smime-enc-signed.eml",
            LAMPS_BOB,
        ),
        (
            "rfc9788-header-protection-vectors/smime-enc-signed-injected-strong-legacy.eml",
            LAMPS_BOB,
        ),
    ];
    for (path, (cert, key)) in opens {
        let opened = decrypt(&corpus_message(path), &[corpus_key(cert, key)])
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(opened.plaintext, openssl_opens(path, cert, key), "{path}");
        let cert_der = Certificate::load_pem_chain(&read(&corpus(cert))).unwrap()[0]
            .to_der()
            .unwrap();
        assert_eq!(opened.fingerprint, material::x509_fingerprint(&cert_der));
    }

    // The ones we cannot open, each for a real reason, as clean errors.
    let bob = corpus_key(LAMPS_BOB.0, LAMPS_BOB.1);
    let refused: &[(&str, &str)] = &[
        // cms 0.2 has no AuthEnvelopedData, and we do no ChaCha20-Poly1305 or X25519.
        (
            "rfc9216-lamps-examples-cms/authEnvelopedForBobChaCha20Poly1305.p7m",
            "AuthEnvelopedData",
        ),
        (
            "rfc9216-lamps-examples-cms/authEnvelopedForDanaX25519HKDF.p7m",
            "AuthEnvelopedData",
        ),
        // Signed outside, encrypted inside: the caller opens the signature first.
        (
            "thunderbird-nss-smime/alice.env.sig.SHA256.opaque.eml",
            "signed-data",
        ),
    ];
    for (path, reason) in refused {
        assert_malformed(
            decrypt(&corpus_message(path), std::slice::from_ref(&bob)),
            reason,
        );
    }
    #[cfg(not(feature = "crypto-openssl"))]
    assert_malformed(
        decrypt(
            &corpus_message("thunderbird-smime-interop/fran-oaep-label_ossl.env"),
            &[corpus_key(FRAN.0, FRAN.1)],
        ),
        "not UTF-8",
    );
    // Dana's key is X25519: refused at import, so it never reaches decrypt.
    let reason = refusal(import_sckm(
        &[
            read(&corpus("rfc9216-lamps-examples-cms/lamps-dana.encrypt.crt")),
            read(&corpus(
                "rfc9216-lamps-examples-cms/lamps-dana.decrypt.p8.pem",
            )),
        ]
        .concat(),
        None,
    ));
    assert!(reason.contains("not supported"), "{reason}");
    // A message for someone else is NoKey, not an error about the message.
    assert!(matches!(
        decrypt(
            &corpus_message("thunderbird-nss-smime/alice.env.eml"),
            std::slice::from_ref(&bob)
        ),
        Err(CryptoError::NoKey)
    ));
}

#[cfg(feature = "crypto-openssl")]
#[test]
fn corpus_pkcs12_files_import_and_decrypt() {
    let cases = [
        (
            "thunderbird-nss-smime/Bob.p12",
            "nss",
            "thunderbird-nss-smime/alice.env.eml",
        ),
        (
            "thunderbird-smime-interop/Fran.p12",
            "nss",
            "thunderbird-smime-interop/fran-oaep_ossl.env",
        ),
        (
            "thunderbird-smime-interop/Fran-ec.p12",
            "nss",
            "thunderbird-smime-interop/fran-ec_ossl-aes256-sha512.env",
        ),
        // PEM-armoured ("-----BEGIN PKCS12-----").
        (
            "autocrypt-protected-headers/bob.p12",
            "bob",
            "autocrypt-protected-headers/smime-enc+legacy-disp.eml",
        ),
    ];
    for (p12, pass, message) in cases {
        let keys =
            import_sckm(&read(&corpus(p12)), Some(pass)).unwrap_or_else(|e| panic!("{p12}: {e}"));
        assert_eq!(keys.len(), 1, "{p12}");
        decrypt(&corpus_message(message), &keys).unwrap_or_else(|e| panic!("{message}: {e}"));
        assert!(refusal(import_sckm(&read(&corpus(p12)), None)).contains("--passphrase-file"));
    }
}
