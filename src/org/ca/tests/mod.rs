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

mod crl;
mod import;
mod openpgp;
