//! Certificates for OpenPGP encryption subkeys that gpg made: the same keys, proven
//! by openssl decrypting with the subkeys' own secrets.

use super::*;

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
