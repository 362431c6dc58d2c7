//! SCKM import: PEM in every key format, PKCS#12, and the refusals.

use super::*;

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
    assert_eq!(keys[0].private_key.pkcs8(), rsa.sckm().private_key.pkcs8());
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
