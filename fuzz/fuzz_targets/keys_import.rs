//! Key files as `sealgate keys import` and `keys import-sckm` read them: the input is
//! the file.
//!
//! `keys import` takes OpenPGP (armored or binary, sequoia's cert parser) or X.509 (PEM
//! or DER, x509-cert) and checks each key at two instants; the cert and certificate
//! parsers are also run on their own, whatever the file looks like, and with a wanted
//! address as harvesting asks. `keys import-sckm` reads OpenPGP TSKs (unlocked with
//! the corpus passphrase "test") and PKCS#12 or PEM S/MIME keys (passphrase "nss").
//!
//! Besides not panicking: a public import never yields secret key material, and an
//! import for one address yields entries for that address only.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::crypto::{pgp, smime};
use sealgate::keys::Source;
use sealgate::keys::material::{self, Origin};
use sealgate::keys::store::Candidate;
use sealgate_fuzz::{LATER, NOW};
use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;

/// The address harvesting would want a key for.
const WANTED: &str = "alice@example.org";

fn assert_public(candidates: &[Candidate]) {
    for candidate in candidates {
        assert!(!candidate.can_decrypt && candidate.sealed_secret.is_none());
        if let Ok(cert) = Cert::from_bytes(&candidate.material) {
            assert!(!cert.is_tsk(), "secret key material in a public entry");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let origin = Origin {
        source: Source::Admin,
        message_id: None,
        sender: None,
    };
    if let Ok(candidates) = material::import_candidates(data, &origin, NOW) {
        assert_public(&candidates);
    }

    if let Ok(certs) = material::parse_pgp(data) {
        for cert in &certs {
            if let Ok(candidates) = material::pgp_candidates(cert, None, &origin, LATER) {
                assert_public(&candidates);
            }
            if let Ok(candidates) = material::pgp_candidates(cert, Some(WANTED), &origin, NOW) {
                assert_public(&candidates);
                assert!(candidates.iter().all(|c| c.address == WANTED));
            }
        }
    }
    if let Ok(certs) = material::parse_x509(data) {
        for cert in &certs {
            let _ = material::x509_addresses(cert);
            if let Ok(candidates) = material::x509_candidates(cert, None, &origin, LATER) {
                assert_public(&candidates);
            }
            if let Ok(candidates) = material::x509_candidates(cert, Some(WANTED), &origin, NOW) {
                assert!(candidates.iter().all(|c| c.address == WANTED));
            }
        }
    }

    let _ = pgp::import_sckm(data, Some("test"), NOW);
    let _ = smime::import_sckm(data, Some("nss"));
});
