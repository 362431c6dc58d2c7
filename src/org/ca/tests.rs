//! The Organization certificate, checked by the tools partners and admins use: openssl
//! reads, verifies and encrypts to what it issues; CAs and user keys come from openssl and
//! gpg.

use std::path::Path;
use std::process::Command;

use der::pem::LineEnding;
use pkcs8::EncodePrivateKey;
use sequoia_openpgp::Cert;
use sequoia_openpgp::crypto::mpi;
use sequoia_openpgp::packet::Key;
use sequoia_openpgp::packet::key::{PublicParts, SecretKeyMaterial, UnspecifiedRole};
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::types::Curve;
use tempfile::TempDir;

use super::*;
use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, RSA_ENCRYPTION};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A tool's run in `dir`: success and what it printed (stdout, then stderr).
fn try_run(dir: &Path, program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("GNUPGHOME", dir.join("gnupg"))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let (ok, text) = try_run(dir, program, args);
    assert!(ok, "{program} {args:?} failed:\n{text}");
    text
}

fn write_pem(dir: &Path, name: &str, label: &str, der: &[u8]) {
    let pem = der::pem::encode_string(label, LineEnding::LF, der).unwrap();
    std::fs::write(dir.join(name), pem).unwrap();
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

fn now() -> OffsetDateTime {
    // A minute back, so that openssl, which checks against its own clock, never sees a
    // certificate or CRL from the future.
    OffsetDateTime::now_utc() - time::Duration::minutes(1)
}

/// An openssl-made CA: `key_spec` is `-newkey`'s argument list; returns (cert, key) PEM.
fn openssl_ca(
    dir: &Path,
    name: &str,
    key_spec: &[&str],
    extensions: &[&str],
) -> (Vec<u8>, Vec<u8>) {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    let subject = format!("/CN={name}/O=Example Org");
    let mut args = vec!["req", "-x509", "-nodes", "-days", "30", "-subj", &subject];
    args.extend(["-keyout", &key, "-out", &cert]);
    args.extend(key_spec);
    for e in extensions {
        args.extend(["-addext", e]);
    }
    run(dir, "openssl", &args);
    (read(dir, &cert), read(dir, &key))
}

const CA_EXTENSIONS: &[&str] = &[
    "basicConstraints=critical,CA:TRUE",
    "keyUsage=critical,keyCertSign,cRLSign",
];

/// A user's key made by openssl (`genpkey` arguments); returns its SPKI.
fn openssl_user_key(dir: &Path, name: &str, genpkey: &[&str]) -> SubjectPublicKeyInfoOwned {
    let key = format!("{name}.key");
    let spki = format!("{name}.spki.der");
    let mut args = vec!["genpkey", "-out", &key];
    args.extend(genpkey);
    run(dir, "openssl", &args);
    run(
        dir,
        "openssl",
        &[
            "pkey", "-in", &key, "-pubout", "-outform", "DER", "-out", &spki,
        ],
    );
    SubjectPublicKeyInfoOwned::from_der(&read(dir, &spki)).unwrap()
}

fn rsa_user(dir: &Path, name: &str) -> SubjectPublicKeyInfoOwned {
    openssl_user_key(
        dir,
        name,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    )
}

fn ec_user(dir: &Path, name: &str) -> SubjectPublicKeyInfoOwned {
    openssl_user_key(
        dir,
        name,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    )
}

/// Issues certificates to an RSA and an EC user from `ca` (written as `ca_file`) and has
/// `openssl verify` accept both, for S/MIME.
fn issue_and_verify(dir: &Path, ca: &Ca, ca_file: &str) {
    write_pem(dir, ca_file, "CERTIFICATE", ca.cert_der());
    for (name, spki) in [
        ("rsa-user", rsa_user(dir, "rsa-user")),
        ("ec-user", ec_user(dir, "ec-user")),
    ] {
        let address = format!("{name}@example.org");
        let issued = ca.issue(&address, &spki, now(), 30 * DAY).unwrap();
        let file = format!("{ca_file}-{name}.pem");
        write_pem(dir, &file, "CERTIFICATE", &issued.der);
        let out = run(
            dir,
            "openssl",
            &["verify", "-x509_strict", "-CAfile", ca_file, &file],
        );
        assert!(out.contains(": OK"), "{out}");
        let serial = run(
            dir,
            "openssl",
            &["x509", "-in", &file, "-noout", "-serial", "-email"],
        );
        assert!(
            serial.contains(&format!("serial={}", issued.serial_hex)),
            "{serial}"
        );
        assert!(serial.contains(&address), "{serial}");
        assert_eq!(spki_of_certificate(&issued.der).unwrap(), spki);
    }
}

#[test]
fn self_signed_ca_has_the_extensions_validators_require_and_no_address() {
    let dir = TempDir::new().unwrap();
    let now = now();
    let ca = Ca::self_signed("CN=Example Org CA,O=Example Org", now, now + 3650 * DAY).unwrap();
    assert_eq!(ca.subject(), "CN=Example Org CA,O=Example Org");
    assert!(ca.emails().is_empty());
    assert_eq!(ca.not_after(), whole_seconds(now + 3650 * DAY));
    write_pem(dir.path(), "ca.pem", "CERTIFICATE", ca.cert_der());

    let text = run(
        dir.path(),
        "openssl",
        &["x509", "-in", "ca.pem", "-noout", "-text"],
    );
    let after = |heading: &str| {
        let at = text
            .find(heading)
            .unwrap_or_else(|| panic!("no {heading} in\n{text}"));
        text[at..].lines().nth(1).unwrap().trim().to_string()
    };
    assert_eq!(
        after("X509v3 Basic Constraints: critical"),
        "CA:TRUE, pathlen:0"
    );
    assert_eq!(
        after("X509v3 Key Usage: critical"),
        "Certificate Sign, CRL Sign"
    );
    assert!(text.contains("X509v3 Subject Key Identifier"), "{text}");
    assert!(
        text.contains("Subject: O = Example Org, CN = Example Org CA"),
        "{text}"
    );
    assert!(text.contains("ecdsa-with-SHA256"), "{text}");
    assert!(
        !text.contains('@') && !text.to_lowercase().contains("email"),
        "{text}"
    );
    // The self-signature holds, and openssl takes it as a trust anchor.
    let out = run(
        dir.path(),
        "openssl",
        &["verify", "-x509_strict", "-CAfile", "ca.pem", "ca.pem"],
    );
    assert!(out.contains("ca.pem: OK"), "{out}");

    // The SKI is RFC 5280's method 1, and the serial a positive 16 octets.
    let cert = Certificate::from_der(ca.cert_der()).unwrap();
    let tbs = &cert.tbs_certificate;
    let (_, ski) = tbs.get::<SubjectKeyIdentifier>().unwrap().unwrap();
    let key_bits = tbs.subject_public_key_info.subject_public_key.raw_bytes();
    assert_eq!(ski.0.as_bytes(), Sha1::digest(key_bits).as_slice());
    assert_eq!(tbs.serial_number.as_bytes().len(), SERIAL_LEN);
    assert!(tbs.serial_number.as_bytes()[0] < 0x80);
}

#[test]
fn self_signed_refuses_a_malformed_subject_and_a_validity_that_ends_first() {
    let now = now();
    for subject in ["", "Example Org CA", "XYZZY=Example"] {
        let err = Ca::self_signed(subject, now, now + DAY).unwrap_err();
        assert!(
            matches!(err, CaError::Refused(ref m) if m.contains("RFC 4514")),
            "{err}"
        );
    }
    assert!(matches!(
        Ca::self_signed("CN=Example Org CA", now, now - DAY),
        Err(CaError::Refused(_))
    ));
}

#[test]
fn openssl_verifies_user_certificates_from_a_self_signed_ca() {
    let dir = TempDir::new().unwrap();
    let now = now();
    let ca = Ca::self_signed("CN=Example Org CA,O=Example Org", now, now + 365 * DAY).unwrap();
    issue_and_verify(dir.path(), &ca, "self-signed.pem");

    // The user certificate's extensions, as the brief lists them.
    let spki = rsa_user(dir.path(), "text-user");
    let issued = ca.issue("alice@example.org", &spki, now, 30 * DAY).unwrap();
    write_pem(dir.path(), "alice.pem", "CERTIFICATE", &issued.der);
    let text = run(
        dir.path(),
        "openssl",
        &["x509", "-in", "alice.pem", "-noout", "-text"],
    );
    for expected in [
        "Subject: CN = alice@example.org",
        "X509v3 Basic Constraints: critical\n                CA:FALSE",
        "X509v3 Key Usage: critical\n                Key Encipherment\n",
        "X509v3 Extended Key Usage: \n                E-mail Protection",
        "X509v3 Subject Alternative Name: \n                email:alice@example.org",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(text.contains(expected), "no {expected:?} in\n{text}");
    }
    // RSA users pass openssl's S/MIME encryption purpose, which asks for keyEncipherment.
    write_pem(dir.path(), "ca.pem", "CERTIFICATE", ca.cert_der());
    let args = [
        "verify",
        "-purpose",
        "smimeencrypt",
        "-CAfile",
        "ca.pem",
        "alice.pem",
    ];
    assert!(run(dir.path(), "openssl", &args).contains("alice.pem: OK"));
    // EC users get keyAgreement alone: the ECDH key is for key agreement (RFC 5480).
    let issued = ca
        .issue("bob@example.org", &ec_user(dir.path(), "bob"), now, DAY)
        .unwrap();
    write_pem(dir.path(), "bob.pem", "CERTIFICATE", &issued.der);
    let text = run(
        dir.path(),
        "openssl",
        &["x509", "-in", "bob.pem", "-noout", "-text"],
    );
    assert!(
        text.contains("X509v3 Key Usage: critical\n                Key Agreement\n"),
        "{text}"
    );
}

#[test]
fn openssl_verifies_user_certificates_from_an_imported_rsa_ca() {
    let dir = TempDir::new().unwrap();
    let (cert, key) = openssl_ca(
        dir.path(),
        "rsa-ca",
        &["-newkey", "rsa:2048"],
        CA_EXTENSIONS,
    );
    let ca = Ca::import(&cert, &key, None, now()).unwrap();
    assert_eq!(ca.subject(), "O=Example Org,CN=rsa-ca");
    // The certificate is kept as openssl wrote it, not re-encoded.
    let args = [
        "x509",
        "-in",
        "rsa-ca.pem",
        "-outform",
        "DER",
        "-out",
        "rsa-ca.der",
    ];
    run(dir.path(), "openssl", &args);
    assert_eq!(ca.cert_der(), read(dir.path(), "rsa-ca.der"));
    issue_and_verify(dir.path(), &ca, "rsa-ca.pem");
}

#[test]
fn openssl_verifies_user_certificates_from_an_imported_p384_ca() {
    let dir = TempDir::new().unwrap();
    let spec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"];
    let (cert, key) = openssl_ca(dir.path(), "p384-ca", &spec, CA_EXTENSIONS);
    let ca = Ca::import(&cert, &key, None, now()).unwrap();
    issue_and_verify(dir.path(), &ca, "p384-ca.pem");
    let text = run(
        dir.path(),
        "openssl",
        &["x509", "-in", "p384-ca.pem-ec-user.pem", "-noout", "-text"],
    );
    assert!(text.contains("ecdsa-with-SHA384"), "{text}");
}

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

#[test]
fn user_certificates_never_outlive_the_ca() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let now = now();
    let ca = Ca::self_signed("CN=Short-lived CA", now, now + DAY).unwrap();
    let spki = ec_user(d, "user");
    let issued = ca.issue("user@example.org", &spki, now, 365 * DAY).unwrap();
    assert_eq!(issued.not_after, ca.not_after());
    write_pem(d, "ca.pem", "CERTIFICATE", ca.cert_der());
    write_pem(d, "user.pem", "CERTIFICATE", &issued.der);
    let ca_end = run(
        d,
        "openssl",
        &["x509", "-in", "ca.pem", "-noout", "-enddate"],
    );
    let user_end = run(
        d,
        "openssl",
        &["x509", "-in", "user.pem", "-noout", "-enddate"],
    );
    assert_eq!(ca_end, user_end);
    assert!(run(d, "openssl", &["verify", "-CAfile", "ca.pem", "user.pem"]).contains("OK"));

    // A validity shorter than the CA's is kept, and begins five minutes back, but not
    // before the CA (made at `now`) does.
    let issued = ca
        .issue(
            "user@example.org",
            &spki,
            now,
            3600 * Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(
        issued.not_after,
        whole_seconds(now) + time::Duration::hours(1)
    );
    let cert = Certificate::from_der(&issued.der).unwrap();
    let not_before = offset_time(cert.tbs_certificate.validity.not_before).unwrap();
    assert_eq!(not_before, whole_seconds(now));
    let later = now + time::Duration::hours(1);
    let issued = ca.issue("user@example.org", &spki, later, DAY).unwrap();
    let cert = Certificate::from_der(&issued.der).unwrap();
    let not_before = offset_time(cert.tbs_certificate.validity.not_before).unwrap();
    assert_eq!(not_before, whole_seconds(later) - CLOCK_SKEW);

    // Once the CA has expired, nothing is issued.
    let err = ca
        .issue("user@example.org", &spki, ca.not_after(), DAY)
        .unwrap_err();
    assert!(
        matches!(err, CaError::Refused(ref m) if m.contains("expired")),
        "{err}"
    );
}

#[test]
fn issue_refuses_what_is_not_an_address_and_places_a_long_one_in_the_alternative_name() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let now = now();
    let ca = Ca::self_signed("CN=Example Org CA", now, now + DAY).unwrap();
    let spki = ec_user(d, "user");
    for address in ["", "user", "@example.org", "user@", "us er@example.org"] {
        let err = ca.issue(address, &spki, now, DAY).unwrap_err();
        assert!(matches!(err, CaError::Refused(_)), "{address:?}: {err}");
    }
    let err = ca.issue("jörg@example.org", &spki, now, DAY).unwrap_err();
    assert!(
        matches!(err, CaError::Unsupported(ref m) if m.contains("RFC 8398")),
        "{err}"
    );

    // An IDN domain goes in as A-labels.
    let issued = ca.issue("user@bücher.example", &spki, now, DAY).unwrap();
    write_pem(d, "idn.pem", "CERTIFICATE", &issued.der);
    let out = run(
        d,
        "openssl",
        &["x509", "-in", "idn.pem", "-noout", "-email"],
    );
    assert_eq!(out.trim(), "user@xn--bcher-kva.example");

    // Longer than a CN may be: an empty subject and a critical alternative name.
    let long = format!("{}@example.org", "a".repeat(60));
    let issued = ca.issue(&long, &spki, now, DAY).unwrap();
    write_pem(d, "ca.pem", "CERTIFICATE", ca.cert_der());
    write_pem(d, "long.pem", "CERTIFICATE", &issued.der);
    let text = run(
        d,
        "openssl",
        &["x509", "-in", "long.pem", "-noout", "-text"],
    );
    assert!(
        text.contains("X509v3 Subject Alternative Name: critical"),
        "{text}"
    );
    assert!(text.contains(&format!("email:{long}")), "{text}");
    let out = run(
        d,
        "openssl",
        &["verify", "-x509_strict", "-CAfile", "ca.pem", "long.pem"],
    );
    assert!(out.contains("long.pem: OK"), "{out}");
}

#[test]
fn a_stored_ca_round_trips_and_still_issues_verifiable_certificates() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let now = now();
    let self_signed = Ca::self_signed("CN=Example Org CA,O=Example Org", now, now + DAY).unwrap();
    let (cert, key) = openssl_ca(d, "rsa-ca", &["-newkey", "rsa:2048"], CA_EXTENSIONS);
    let imported = Ca::import(&cert, &key, None, now).unwrap();
    for (name, ca) in [("self-signed", self_signed), ("imported", imported)] {
        let stored = Ca::from_stored(ca.cert_der(), &ca.key_pkcs8()).unwrap();
        assert_eq!(stored.cert_der(), ca.cert_der());
        assert_eq!(*stored.key_pkcs8(), *ca.key_pkcs8());
        assert_eq!(stored.subject(), ca.subject());
        assert_eq!(stored.not_after(), ca.not_after());
        issue_and_verify(d, &stored, &format!("{name}.pem"));
    }
    // A key that is not the certificate's is refused.
    let other = Ca::self_signed("CN=Other CA", now, now + DAY).unwrap();
    let err = Ca::from_stored(&read(d, "self-signed.pem"), &other.key_pkcs8()).unwrap_err();
    assert!(matches!(err, CaError::Refused(_)), "{err}");
}

#[test]
fn emails_lists_the_addresses_a_ca_certificate_carries() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let args = [
        "req",
        "-x509",
        "-nodes",
        "-days",
        "3",
        "-newkey",
        "rsa:2048",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=Mailing CA/emailAddress=ca@example.org",
        "-addext",
        "subjectAltName=email:pki@example.org,DNS:example.org",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ];
    run(d, "openssl", &args);
    let ca = Ca::import(&read(d, "ca.pem"), &read(d, "ca.key"), None, now()).unwrap();
    assert_eq!(ca.emails(), ["ca@example.org", "pki@example.org"]);
}

#[test]
fn the_crl_verifies_with_openssl_and_revokes_the_listed_certificates() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let now = now();
    let self_signed =
        Ca::self_signed("CN=Example Org CA,O=Example Org", now, now + 30 * DAY).unwrap();
    let (cert, key) = openssl_ca(d, "rsa-ca", &["-newkey", "rsa:2048"], CA_EXTENSIONS);
    let imported = Ca::import(&cert, &key, None, now).unwrap();
    let spki = ec_user(d, "user");
    for (name, ca) in [("self-signed", self_signed), ("rsa", imported)] {
        let ca_file = format!("{name}-ca.pem");
        write_pem(d, &ca_file, "CERTIFICATE", ca.cert_der());
        let issued = (0..3)
            .map(|i| {
                ca.issue(&format!("user{i}@example.org"), &spki, now, DAY)
                    .unwrap()
            })
            .collect::<Vec<_>>();
        for (i, cert) in issued.iter().enumerate() {
            write_pem(d, &format!("{name}-user{i}.pem"), "CERTIFICATE", &cert.der);
        }
        let revoked = [
            (issued[0].serial.clone(), now - DAY),
            (issued[2].serial.clone(), now),
        ];
        let crl = ca.crl(&revoked, 7, now, now + 7 * DAY).unwrap();
        let crl_file = format!("{name}.crl");
        write_pem(d, &crl_file, "X509 CRL", &crl);

        let out = run(
            d,
            "openssl",
            &[
                "crl", "-in", &crl_file, "-CAfile", &ca_file, "-verify", "-noout", "-text",
            ],
        );
        assert!(out.contains("verify OK"), "{out}");
        assert!(
            out.contains("CRL extensions:")
                && out.contains("X509v3 CRL Number: \n                7"),
            "{out}"
        );
        assert!(out.contains("X509v3 Authority Key Identifier"), "{out}");
        assert!(out.contains("Version 2"), "{out}");
        assert!(
            out.contains(&format!("Serial Number: {}", issued[0].serial_hex)),
            "{out}"
        );
        assert!(
            out.contains(&format!("Serial Number: {}", issued[2].serial_hex)),
            "{out}"
        );
        assert!(!out.contains(&issued[1].serial_hex), "{out}");

        // openssl's CRL checking, which also asks the CA for cRLSign: revoked and not.
        for (i, expected) in [(0, false), (1, true), (2, false)] {
            let user = format!("{name}-user{i}.pem");
            let args = [
                "verify",
                "-crl_check",
                "-CRLfile",
                &crl_file,
                "-CAfile",
                &ca_file,
                &user,
            ];
            let (ok, out) = try_run(d, "openssl", &args);
            assert_eq!(ok, expected, "{user}: {out}");
            if !expected {
                assert!(out.contains("certificate revoked"), "{out}");
            }
        }

        // Nothing revoked: the list is absent, and the CRL still verifies.
        let empty = ca.crl(&[], 8, now, now + DAY).unwrap();
        write_pem(d, "empty.crl", "X509 CRL", &empty);
        let out = run(
            d,
            "openssl",
            &[
                "crl",
                "-in",
                "empty.crl",
                "-CAfile",
                &ca_file,
                "-verify",
                "-noout",
                "-text",
            ],
        );
        assert!(
            out.contains("verify OK") && out.contains("No Revoked Certificates"),
            "{out}"
        );
    }
}

#[test]
fn the_crl_refuses_what_is_not_a_serial_and_a_next_update_in_the_past() {
    let now = now();
    let ca = Ca::self_signed("CN=Example Org CA", now, now + DAY).unwrap();
    for serial in [vec![], vec![0u8; 22], vec![0x00, 0x01]] {
        let err = ca
            .crl(&[(serial.clone(), now)], 1, now, now + DAY)
            .unwrap_err();
        assert!(matches!(err, CaError::Refused(_)), "{serial:?}: {err}");
    }
    assert!(matches!(ca.crl(&[], 1, now, now), Err(CaError::Refused(_))));
}

/// A gpg-made key with RSA, NIST P-256, NIST P-384 and cv25519 encryption subkeys,
/// unprotected.
struct GpgUser {
    _dir: TempDir,
    cert: Cert,
}

impl GpgUser {
    fn new() -> GpgUser {
        let dir = TempDir::new().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("gnupg")).unwrap();
        std::fs::set_permissions(
            d.join("gnupg"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let gpg = |args: &[&str]| {
            let mut all = vec!["--batch", "--pinentry-mode", "loopback", "--passphrase", ""];
            all.extend(args);
            run(d, "gpg", &all)
        };
        gpg(&[
            "--quick-gen-key",
            "User <user@example.org>",
            "ed25519",
            "sign",
            "1d",
        ]);
        let listing = gpg(&["--with-colons", "--list-keys"]);
        let fpr = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:::::::::"))
            .map(|l| l.trim_end_matches(':').to_string())
            .unwrap();
        for algo in ["rsa2048", "nistp256", "nistp384", "cv25519"] {
            gpg(&["--quick-add-key", &fpr, algo, "encr", "1d"]);
        }
        gpg(&["--output", "tsk.pgp", "--export-secret-keys", &fpr]);
        let cert = Cert::from_bytes(&read(d, "tsk.pgp")).unwrap();
        let _ = try_run(d, "gpgconf", &["--kill", "gpg-agent"]);
        GpgUser { _dir: dir, cert }
    }

    /// The encryption subkey whose public key `pick` selects, and its secret as PKCS#8 PEM
    /// for openssl (None for cv25519, which openssl is not asked to use).
    fn subkey(
        &self,
        pick: impl Fn(&mpi::PublicKey) -> bool,
    ) -> (Key<PublicParts, UnspecifiedRole>, Option<String>) {
        let key = self
            .cert
            .keys()
            .subkeys()
            .secret()
            .map(|ka| ka.key().clone())
            .find(|k| pick(k.mpis()))
            .expect("gpg made the subkey");
        let SecretKeyMaterial::Unencrypted(secret) = key.secret() else {
            panic!("gpg exported the secret unprotected");
        };
        let pem = secret.map(|s| match (key.mpis(), s) {
            (mpi::PublicKey::RSA { e, n }, mpi::SecretKeyMaterial::RSA { d, p, q, .. }) => {
                let big = |m: &[u8]| rsa::BigUint::from_bytes_be(m);
                let (n, e, d) = (big(n.value()), big(e.value()), big(d.value()));
                let primes = vec![big(p.value()), big(q.value())];
                let private = rsa::RsaPrivateKey::from_components(n, e, d, primes).unwrap();
                Some(private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string())
            }
            // OpenPGP keeps a NIST curve's secret scalar big-endian, as SEC1 does.
            (mpi::PublicKey::ECDH { curve, .. }, mpi::SecretKeyMaterial::ECDH { scalar }) => {
                match curve {
                    Curve::NistP256 => p256::SecretKey::from_slice(&scalar.value_padded(32))
                        .unwrap()
                        .to_pkcs8_pem(LineEnding::LF)
                        .ok(),
                    Curve::NistP384 => p384::SecretKey::from_slice(&scalar.value_padded(48))
                        .unwrap()
                        .to_pkcs8_pem(LineEnding::LF)
                        .ok(),
                    _ => None,
                }
                .map(|pem| pem.to_string())
            }
            _ => None,
        });
        (key.parts_into_public().role_into_unspecified(), pem)
    }
}

fn ecdh_on(curve: Curve) -> impl Fn(&mpi::PublicKey) -> bool {
    move |m| matches!(m, mpi::PublicKey::ECDH { curve: c, .. } if *c == curve)
}

/// openssl encrypts to the certificate issued for a gpg subkey, and opens the CMS with
/// that subkey's secret: the certificate carries the subkey's own public key.
fn openssl_round_trip(
    ca: &Ca,
    address: &str,
    subkey: &SubjectPublicKeyInfoOwned,
    secret_pem: &str,
) {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let issued = ca.issue(address, subkey, now(), DAY).unwrap();
    write_pem(d, "user.pem", "CERTIFICATE", &issued.der);
    std::fs::write(d.join("user.key"), secret_pem).unwrap();
    std::fs::write(d.join("message.txt"), "Hello from a partner\n").unwrap();
    let args = [
        "cms",
        "-encrypt",
        "-binary",
        "-aes256",
        "-in",
        "message.txt",
        "-out",
        "message.p7m",
        "user.pem",
    ];
    run(d, "openssl", &args);
    let args = [
        "cms",
        "-decrypt",
        "-in",
        "message.p7m",
        "-recip",
        "user.pem",
        "-inkey",
        "user.key",
        "-out",
        "opened.txt",
    ];
    run(d, "openssl", &args);
    assert_eq!(read(d, "opened.txt"), b"Hello from a partner\n");
}

#[test]
fn certificates_for_gpg_encryption_subkeys_carry_the_subkeys_own_keys() {
    let user = GpgUser::new();
    let now = now();
    let ca = Ca::self_signed("CN=Example Org CA,O=Example Org", now, now + DAY).unwrap();

    let (rsa, secret) = user.subkey(|m| matches!(m, mpi::PublicKey::RSA { .. }));
    let spki = spki_of_openpgp(&rsa).unwrap();
    assert_eq!(spki.algorithm.oid, RSA_ENCRYPTION);
    openssl_round_trip(&ca, "user@example.org", &spki, &secret.unwrap());

    for curve in [Curve::NistP256, Curve::NistP384] {
        let (subkey, secret) = user.subkey(ecdh_on(curve.clone()));
        let spki = spki_of_openpgp(&subkey).unwrap();
        assert_eq!(spki.algorithm.oid, ID_EC_PUBLIC_KEY);
        openssl_round_trip(&ca, "user@example.org", &spki, &secret.unwrap());
    }

    let (cv25519, _) = user.subkey(ecdh_on(Curve::Cv25519));
    let err = spki_of_openpgp(&cv25519).unwrap_err();
    let CaError::Unsupported(message) = err else {
        panic!("{err}")
    };
    assert!(
        message.contains("cv25519") && message.contains("nistp256 encr"),
        "{message}"
    );
    assert!(
        message.contains(&cv25519.fingerprint().to_string()),
        "{message}"
    );
}

#[test]
fn signing_keys_are_not_encryption_keys_for_a_certificate() {
    let user = GpgUser::new();
    let primary = user
        .cert
        .primary_key()
        .key()
        .clone()
        .role_into_unspecified();
    let err = spki_of_openpgp(&primary).unwrap_err();
    assert!(
        matches!(err, CaError::Unsupported(ref m) if m.contains("EdDSA") || m.contains("Ed25519")),
        "{err}"
    );
    assert!(matches!(
        spki_of_certificate(b"not a certificate"),
        Err(CaError::Refused(_))
    ));
}
