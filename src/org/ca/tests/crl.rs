//! The CRL, checked by openssl.

use super::*;

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
