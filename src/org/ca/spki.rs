//! The X.509 SubjectPublicKeyInfo of a user's own encryption key, which the user's
//! S/MIME certificate carries, so that S/MIME mail to the user opens with the secret the
//! gateway already holds.

use der::Decode;
use sequoia_openpgp::crypto::mpi;
use sequoia_openpgp::packet::Key;
use sequoia_openpgp::packet::key::{PublicParts, UnspecifiedRole};
use sequoia_openpgp::types::Curve;
use x509_cert::Certificate;
use x509_cert::spki::{EncodePublicKey, SubjectPublicKeyInfoOwned};

use super::CaError;

/// The shortest RSA modulus a certificate is issued for.
const MIN_RSA_BITS: usize = 2048;

/// The longest RSA modulus read (OpenPGP allows 16384 bits; rsa's default stops at 4096).
const MAX_RSA_BITS: usize = 16384;

/// What to tell an admin whose user's key cannot get a certificate.
const NEEDED: &str = "an S/MIME certificate from the Organization certificate needs the user's encryption subkey to be RSA (2048 bits or more) or ECDH on NIST P-256 or P-384, the kinds S/MIME clients read; add one to the user's key (e.g. gpg --quick-add-key FINGERPRINT rsa3072 encr, or nistp256 encr) and import it again";

/// The X.509 SubjectPublicKeyInfo of an OpenPGP public (sub)key: RSA as rsaEncryption
/// (n, e), ECDH on NIST P-256/P-384 as id-ecPublicKey with the curve and the point.
/// Anything else, cv25519 above all, is [`CaError::Unsupported`].
pub fn spki_of_openpgp(
    key: &Key<PublicParts, UnspecifiedRole>,
) -> Result<SubjectPublicKeyInfoOwned, CaError> {
    let unreadable = |what: &str| {
        CaError::Refused(format!(
            "the OpenPGP key {} has an invalid {what}",
            key.fingerprint()
        ))
    };
    let der = match key.mpis() {
        mpi::PublicKey::RSA { e, n } => {
            let bits = n.bits();
            if bits < MIN_RSA_BITS {
                return Err(CaError::Unsupported(format!(
                    "the OpenPGP key {} is RSA of {bits} bits: {NEEDED}",
                    key.fingerprint()
                )));
            }
            let n = rsa::BigUint::from_bytes_be(n.value());
            let e = rsa::BigUint::from_bytes_be(e.value());
            rsa::RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS)
                .map_err(|_| unreadable("RSA public key"))?
                .to_public_key_der()
        }
        mpi::PublicKey::ECDH {
            curve: Curve::NistP256,
            q,
            ..
        } => p256::PublicKey::from_sec1_bytes(q.value())
            .map_err(|_| unreadable("P-256 point"))?
            .to_public_key_der(),
        mpi::PublicKey::ECDH {
            curve: Curve::NistP384,
            q,
            ..
        } => p384::PublicKey::from_sec1_bytes(q.value())
            .map_err(|_| unreadable("P-384 point"))?
            .to_public_key_der(),
        mpi::PublicKey::ECDH {
            curve: Curve::Cv25519,
            ..
        }
        | mpi::PublicKey::X25519 { .. } => {
            return Err(CaError::Unsupported(format!(
                "the OpenPGP key {} is a Curve25519 (cv25519) encryption key, which S/MIME clients do not accept in certificates: {NEEDED}",
                key.fingerprint()
            )));
        }
        mpi::PublicKey::ECDH { curve, .. } => {
            return Err(CaError::Unsupported(format!(
                "the OpenPGP key {} is ECDH on {curve}: {NEEDED}",
                key.fingerprint()
            )));
        }
        _ => {
            return Err(CaError::Unsupported(format!(
                "the OpenPGP key {} is {}, not an encryption key S/MIME can use: {NEEDED}",
                key.fingerprint(),
                key.pk_algo()
            )));
        }
    }
    .map_err(|e| CaError::Internal(format!("encoding a public key as SPKI: {e}")))?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes())
        .map_err(|e| CaError::Internal(format!("decoding an SPKI just encoded: {e}")))
}

/// The SubjectPublicKeyInfo of an X.509 certificate (DER): an S/MIME SCKM user's own
/// certificate, whose key gets the org-issued certificate.
pub fn spki_of_certificate(der: &[u8]) -> Result<SubjectPublicKeyInfoOwned, CaError> {
    Certificate::from_der(der)
        .map(|cert| cert.tbs_certificate.subject_public_key_info)
        .map_err(|e| CaError::Refused(format!("unreadable certificate: {e}")))
}

/// The PKCS#8 private key of an OpenPGP secret (sub)key whose public key
/// [`spki_of_openpgp`] turned into a certificate's: the same RSA key or NIST curve
/// scalar, for S/MIME decryption with the secret the gateway holds. OpenPGP keeps the
/// scalar big-endian, as SEC1 does.
pub fn pkcs8_of_openpgp_secret(
    key: &Key<sequoia_openpgp::packet::key::SecretParts, UnspecifiedRole>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, CaError> {
    use pkcs8::EncodePrivateKey;
    use sequoia_openpgp::packet::key::SecretKeyMaterial;

    let SecretKeyMaterial::Unencrypted(secret) = key.secret() else {
        return Err(CaError::Internal(format!(
            "the secret of {} is locked",
            key.fingerprint()
        )));
    };
    let broken = |e: &dyn std::fmt::Display| {
        CaError::Internal(format!("the secret of {}: {e}", key.fingerprint()))
    };
    secret.map(|s| {
        let document = match (key.mpis(), s) {
            (mpi::PublicKey::RSA { e, n }, mpi::SecretKeyMaterial::RSA { d, p, q, .. }) => {
                let big = |m: &[u8]| rsa::BigUint::from_bytes_be(m);
                let primes = vec![big(p.value()), big(q.value())];
                rsa::RsaPrivateKey::from_components(
                    big(n.value()),
                    big(e.value()),
                    big(d.value()),
                    primes,
                )
                .map_err(|e| broken(&e))?
                .to_pkcs8_der()
            }
            (mpi::PublicKey::ECDH { curve, .. }, mpi::SecretKeyMaterial::ECDH { scalar }) => {
                match curve {
                    Curve::NistP256 => p256::SecretKey::from_slice(&scalar.value_padded(32))
                        .map_err(|e| broken(&e))?
                        .to_pkcs8_der(),
                    Curve::NistP384 => p384::SecretKey::from_slice(&scalar.value_padded(48))
                        .map_err(|e| broken(&e))?
                        .to_pkcs8_der(),
                    other => return Err(CaError::Unsupported(format!("curve {other}: {NEEDED}"))),
                }
            }
            _ => return Err(CaError::Unsupported(NEEDED.into())),
        };
        let document = document.map_err(|e| broken(&e))?;
        Ok(zeroize::Zeroizing::new(document.as_bytes().to_vec()))
    })
}
