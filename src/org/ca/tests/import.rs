//! `Ca::import`: the key forms admins have, and what cannot be the org CA.

use super::*;

#[test]
fn import_reads_the_key_forms_admins_have() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let (rsa_cert, _) = openssl_ca(d, "rsa", &["-newkey", "rsa:2048"], CA_EXTENSIONS);
    let (ec_cert, _) = openssl_ca(
        d,
        "ec",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        CA_EXTENSIONS,
    );
    // Traditional RSA PEM, SEC1 EC PEM, encrypted PKCS#8 and DER.
    run(
        d,
        "openssl",
        &["rsa", "-in", "rsa.key", "-traditional", "-out", "rsa.trad"],
    );
    run(d, "openssl", &["ec", "-in", "ec.key", "-out", "ec.trad"]);
    let args = [
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-in",
        "rsa.key",
        "-passout",
        "pass:s3cret",
        "-out",
        "rsa.p8",
    ];
    run(d, "openssl", &args);
    run(
        d,
        "openssl",
        &["pkey", "-in", "ec.key", "-outform", "DER", "-out", "ec.der"],
    );
    run(
        d,
        "openssl",
        &[
            "x509",
            "-in",
            "ec.pem",
            "-outform",
            "DER",
            "-out",
            "ec.crt.der",
        ],
    );
    assert!(String::from_utf8_lossy(&read(d, "rsa.trad")).contains("BEGIN RSA PRIVATE KEY"));
    assert!(String::from_utf8_lossy(&read(d, "ec.trad")).contains("BEGIN EC PRIVATE KEY"));

    let now = now();
    Ca::import(&rsa_cert, &read(d, "rsa.trad"), None, now).unwrap();
    Ca::import(&ec_cert, &read(d, "ec.trad"), None, now).unwrap();
    Ca::import(&read(d, "ec.crt.der"), &read(d, "ec.der"), None, now).unwrap();
    // A key file that also holds the certificate, and a certificate file with a chain.
    let both = [read(d, "ec.pem"), read(d, "ec.key")].concat();
    Ca::import(&both, &both, None, now).unwrap();
    let chain = [rsa_cert.clone(), ec_cert.clone()].concat();
    let ca = Ca::import(&chain, &read(d, "ec.key"), None, now).unwrap();
    assert_eq!(ca.subject(), "O=Example Org,CN=ec");

    let ca = Ca::import(&rsa_cert, &read(d, "rsa.p8"), Some("s3cret"), now).unwrap();
    issue_and_verify(d, &ca, "rsa-p8.pem");
    let err = Ca::import(&rsa_cert, &read(d, "rsa.p8"), None, now).unwrap_err();
    assert!(
        matches!(err, CaError::Refused(ref m) if m.contains("passphrase")),
        "{err}"
    );
    let err = Ca::import(&rsa_cert, &read(d, "rsa.p8"), Some("wrong"), now).unwrap_err();
    assert!(
        matches!(err, CaError::Refused(ref m) if m.contains("passphrase")),
        "{err}"
    );

    // openssl ecparam -genkey writes the curve's block before the key.
    run(
        d,
        "openssl",
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-out",
            "ecparam.key",
        ],
    );
    let args = [
        "req",
        "-x509",
        "-key",
        "ecparam.key",
        "-subj",
        "/CN=ecparam",
        "-days",
        "3",
        "-out",
        "ecparam.pem",
    ];
    run(d, "openssl", &args);
    assert!(String::from_utf8_lossy(&read(d, "ecparam.key")).contains("EC PARAMETERS"));
    Ca::import(&read(d, "ecparam.pem"), &read(d, "ecparam.key"), None, now).unwrap();
}

#[test]
fn import_refuses_what_cannot_be_the_organization_ca() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let now = now();
    let refused = |result: Result<Ca, CaError>, needle: &str| match result {
        Err(CaError::Refused(m)) => assert!(m.contains(needle), "{needle:?} not in {m:?}"),
        other => panic!("{needle}: {other:?}"),
    };

    let (leaf, leaf_key) = openssl_ca(
        d,
        "leaf",
        &["-newkey", "rsa:2048"],
        &["basicConstraints=critical,CA:FALSE"],
    );
    refused(
        Ca::import(&leaf, &leaf_key, None, now),
        "not a CA certificate",
    );
    let no_cert_sign = [
        "basicConstraints=critical,CA:TRUE",
        "keyUsage=critical,digitalSignature,cRLSign",
    ];
    let (cert, key) = openssl_ca(d, "no-cert-sign", &["-newkey", "rsa:2048"], &no_cert_sign);
    refused(Ca::import(&cert, &key, None, now), "keyCertSign");

    let (rsa_cert, rsa_key) = openssl_ca(d, "rsa", &["-newkey", "rsa:2048"], CA_EXTENSIONS);
    refused(
        Ca::import(&rsa_cert, &leaf_key, None, now),
        "does not belong",
    );
    refused(
        Ca::import(&rsa_cert, &rsa_cert, None, now),
        "no private key",
    );
    // The CA expired (openssl made it for 30 days), or has not begun.
    refused(
        Ca::import(&rsa_cert, &rsa_key, None, now + 31 * DAY),
        "expired",
    );
    refused(
        Ca::import(&rsa_cert, &rsa_key, None, now - DAY),
        "not valid before",
    );

    let (cert, key) = openssl_ca(d, "short", &["-newkey", "rsa:1024"], CA_EXTENSIONS);
    refused(Ca::import(&cert, &key, None, now), "1024 bits");
    let (cert, key) = openssl_ca(d, "ed", &["-newkey", "ed25519"], CA_EXTENSIONS);
    let err = Ca::import(&cert, &key, None, now).unwrap_err();
    assert!(
        matches!(err, CaError::Unsupported(ref m) if m.contains("P-256")),
        "{err}"
    );
    let spec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"];
    let (cert, key) = openssl_ca(d, "p521", &spec, CA_EXTENSIONS);
    let err = Ca::import(&cert, &key, None, now).unwrap_err();
    assert!(
        matches!(err, CaError::Unsupported(ref m) if m.contains("secp521r1")),
        "{err}"
    );
}
