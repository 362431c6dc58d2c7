//! SCKM import: PKCS#12 (through OpenSSL) or PEM certificate plus private key, paired,
//! checked, and turned into [`SmimeKey`]s.

use const_oid::db::rfc5912;
use der::{Decode, Encode};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use x509_cert::Certificate;
use zeroize::Zeroizing;

use super::algorithms::Curve;
use super::{SmimeKey, fingerprint};
use crate::keys::material::{self, MAX_CERTS, MAX_KEY_BYTES, Refusal};

/// Parses an SCKM import: PKCS#12 (DER, or PEM-armoured `PKCS12`; `passphrase` may be
/// "") or PEM certificate plus private key in one file (PKCS#8 `PRIVATE KEY`, PKCS#1
/// `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY`, or `ENCRYPTED PRIVATE KEY` with
/// `passphrase`). Certificates without a key in the file are taken as the chain and
/// left out.
///
/// The whole file is refused, with a reason that names the certificate, when a
/// certificate with a key is for signing only, names no e-mail address, or has an
/// unsupported key; when a key matches no certificate; and when a key is protected and no
/// passphrase was given, or the passphrase is wrong.
pub fn import_sckm(bytes: &[u8], passphrase: Option<&str>) -> Result<Vec<SmimeKey>, Refusal> {
    if bytes.len() > MAX_KEY_BYTES {
        return Err(Refusal(format!(
            "key file of {} bytes is over the {MAX_KEY_BYTES}-byte limit",
            bytes.len()
        )));
    }
    let mut found = Pieces::default();
    if memchr::memmem::find(bytes, b"-----BEGIN ").is_some() {
        read_pem(bytes, passphrase, &mut found)?;
    } else if let Ok(cert) = Certificate::from_der(bytes) {
        found.certs.push(cert);
    } else {
        read_pkcs12(bytes, passphrase, &mut found)?;
    }
    found.pair()
}

/// Certificates and private keys (PKCS#8 DER) found in an import file.
#[derive(Default)]
struct Pieces {
    certs: Vec<Certificate>,
    keys: Vec<Zeroizing<Vec<u8>>>,
}

impl Pieces {
    /// How to name the key in a refusal before it is matched to a certificate.
    fn describe(&self) -> String {
        match self.certs.first() {
            Some(cert) => format!("the private key for certificate {}", fingerprint(cert)),
            None => "the private key".into(),
        }
    }

    /// Pairs every key with its certificate and checks each pair.
    fn pair(self) -> Result<Vec<SmimeKey>, Refusal> {
        if self.keys.is_empty() {
            let what = match self.certs.first() {
                Some(cert) => format!(
                    "certificate {} comes without its private key",
                    fingerprint(cert)
                ),
                None => "no certificate and no private key in the file".into(),
            };
            return Err(Refusal(format!(
                "{what}; an SCKM import needs both (PKCS#12, or PEM certificate plus key)"
            )));
        }
        if self.certs.is_empty() {
            return Err(Refusal(
                "a private key without its certificate; an SCKM import needs both".into(),
            ));
        }
        if self.keys.len() > MAX_CERTS || self.certs.len() > MAX_CERTS {
            return Err(Refusal(format!(
                "more than {MAX_CERTS} keys or certificates in one file"
            )));
        }
        let mut imported: Vec<SmimeKey> = Vec::new();
        let context = self.describe();
        for key in self.keys {
            let public = KeyPublic::of_private(&key)
                .map_err(|Refusal(reason)| Refusal(format!("{context}: {reason}")))?;
            let Some(cert) = self
                .certs
                .iter()
                .find(|cert| KeyPublic::of_cert(cert).is_some_and(|c| c == public))
            else {
                return Err(Refusal(match self.certs.as_slice() {
                    [cert] => format!(
                        "the private key does not match certificate {}",
                        fingerprint(cert)
                    ),
                    certs => format!(
                        "the private key matches none of the {} certificates in the file",
                        certs.len()
                    ),
                }));
            };
            let fpr = fingerprint(cert);
            if !material::x509_can_encrypt(cert) {
                return Err(Refusal(format!(
                    "certificate {fpr} allows only digital signature (no keyEncipherment or \
                     keyAgreement); an SCKM key is for decryption, and signing keys stay with \
                     the user"
                )));
            }
            if material::x509_addresses(cert).is_empty() {
                return Err(Refusal(format!(
                    "certificate {fpr} names no e-mail address"
                )));
            }
            if imported.iter().all(|k| fingerprint(&k.cert) != fpr) {
                imported.push(SmimeKey {
                    cert: cert.clone(),
                    private_key: key.into(),
                });
            }
        }
        Ok(imported)
    }
}

/// A public key, for matching a private key to its certificate.
#[derive(PartialEq)]
enum KeyPublic {
    Rsa(rsa::RsaPublicKey),
    /// The curve and the uncompressed point.
    Ec(Curve, Vec<u8>),
}

impl KeyPublic {
    /// The public half of a PKCS#8 private key; refused for keys we cannot decrypt with.
    fn of_private(pkcs8: &[u8]) -> Result<Self, Refusal> {
        let info = rsa::pkcs8::PrivateKeyInfo::try_from(pkcs8)
            .map_err(|e| Refusal(format!("malformed private key: {e}")))?;
        match info.algorithm.oid {
            rfc5912::RSA_ENCRYPTION => rsa::RsaPrivateKey::from_pkcs8_der(pkcs8)
                .map(|key| KeyPublic::Rsa(key.to_public_key()))
                .map_err(|e| Refusal(format!("malformed RSA private key: {e}"))),
            rfc5912::ID_EC_PUBLIC_KEY => {
                let curve = info
                    .algorithm
                    .parameters_oid()
                    .ok()
                    .and_then(|oid| match oid {
                        rfc5912::SECP_256_R_1 => Some(Curve::P256),
                        rfc5912::SECP_384_R_1 => Some(Curve::P384),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        Refusal("EC private key on a curve other than P-256 or P-384".into())
                    })?;
                let bad = |e: p256::elliptic_curve::pkcs8::Error| {
                    Refusal(format!("malformed EC private key: {e}"))
                };
                let point = match curve {
                    Curve::P256 => p256::SecretKey::from_pkcs8_der(pkcs8)
                        .map_err(bad)?
                        .public_key()
                        .to_encoded_point(false)
                        .as_bytes()
                        .to_vec(),
                    Curve::P384 => p384::SecretKey::from_pkcs8_der(pkcs8)
                        .map_err(bad)?
                        .public_key()
                        .to_encoded_point(false)
                        .as_bytes()
                        .to_vec(),
                };
                Ok(KeyPublic::Ec(curve, point))
            }
            other => Err(Refusal(format!(
                "private key algorithm {other} is not supported for S/MIME decryption \
                 (RSA and EC P-256/P-384 are)"
            ))),
        }
    }

    fn of_cert(cert: &Certificate) -> Option<Self> {
        let spki = &cert.tbs_certificate.subject_public_key_info;
        match spki.algorithm.oid {
            rfc5912::RSA_ENCRYPTION => {
                let der = spki.to_der().ok()?;
                rsa::RsaPublicKey::from_public_key_der(&der)
                    .ok()
                    .map(KeyPublic::Rsa)
            }
            rfc5912::ID_EC_PUBLIC_KEY => {
                let curve = Curve::of(&spki.algorithm)?;
                let point = curve.public_point(spki.subject_public_key.raw_bytes())?;
                Some(KeyPublic::Ec(curve, point))
            }
            _ => None,
        }
    }
}

/// One PEM block: its label and decoded contents.
struct PemBlock {
    label: String,
    der: Zeroizing<Vec<u8>>,
}

/// The PEM blocks in `text`. Lenient where real files vary (line width, CRLF, text
/// around the blocks), strict where it matters: a block with RFC 1421 headers is an
/// OpenSSL legacy-encrypted key, which we refuse with advice.
fn pem_blocks(text: &[u8]) -> Result<Vec<PemBlock>, Refusal> {
    use base64::Engine;

    let text = std::str::from_utf8(text).map_err(|_| Refusal("PEM file is not text".into()))?;
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let label_end = after
            .find("-----")
            .ok_or_else(|| Refusal("malformed PEM: unterminated BEGIN line".into()))?;
        let label = &after[..label_end];
        let end_line = format!("-----END {label}-----");
        // The END line is looked for after the BEGIN line's dashes, which it could
        // otherwise share ("-----BEGIN X-----END X-----"): a body ending before it
        // starts was a slice out of order, and a panic (fuzz/, the keys_import target).
        let body_start = label_end + "-----".len();
        let body_end = after[body_start..]
            .find(&end_line)
            .map(|at| body_start + at)
            .ok_or_else(|| Refusal(format!("malformed PEM: no END line for {label}")))?;
        let body = &after[body_start..body_end];
        if body.contains(':') {
            return Err(Refusal(format!(
                "{label} is in OpenSSL's legacy encrypted PEM format; convert it first with \
                 `openssl pkcs8 -topk8` (it stays encrypted) and import that"
            )));
        }
        let base64: Zeroizing<String> =
            Zeroizing::new(body.chars().filter(|c| !c.is_ascii_whitespace()).collect());
        let der = base64::engine::general_purpose::STANDARD
            .decode(base64.as_bytes())
            .map_err(|e| Refusal(format!("malformed PEM {label}: {e}")))?;
        blocks.push(PemBlock {
            label: label.to_string(),
            der: Zeroizing::new(der),
        });
        rest = &after[body_end + end_line.len()..];
    }
    Ok(blocks)
}

fn read_pem(bytes: &[u8], passphrase: Option<&str>, found: &mut Pieces) -> Result<(), Refusal> {
    let blocks = pem_blocks(bytes)?;
    // Certificates first, so that a refusal about a key can name its certificate.
    for block in &blocks {
        if matches!(block.label.as_str(), "CERTIFICATE" | "X509 CERTIFICATE") {
            found.certs.push(
                Certificate::from_der(&block.der)
                    .map_err(|e| Refusal(format!("malformed certificate: {e}")))?,
            );
        }
    }
    for block in &blocks {
        match block.label.as_str() {
            "PRIVATE KEY" => found.keys.push(block.der.clone()),
            "RSA PRIVATE KEY" => {
                let key = rsa::RsaPrivateKey::from_pkcs1_der(&block.der)
                    .map_err(|e| Refusal(format!("malformed RSA PRIVATE KEY: {e}")))?;
                found.keys.push(to_pkcs8(key.to_pkcs8_der())?);
            }
            "EC PRIVATE KEY" => found.keys.push(sec1_to_pkcs8(&block.der)?),
            "ENCRYPTED PRIVATE KEY" => {
                let Some(passphrase) = passphrase else {
                    return Err(Refusal(format!(
                        "{} is passphrase-protected; import it with --passphrase-file",
                        found.describe()
                    )));
                };
                let info = rsa::pkcs8::EncryptedPrivateKeyInfo::try_from(block.der.as_slice())
                    .map_err(|e| Refusal(format!("malformed ENCRYPTED PRIVATE KEY: {e}")))?;
                let key = info.decrypt(passphrase).map_err(|e| {
                    Refusal(format!(
                        "{} does not decrypt: wrong passphrase, or an unsupported scheme ({e})",
                        found.describe()
                    ))
                })?;
                found.keys.push(Zeroizing::new(key.as_bytes().to_vec()));
            }
            "PKCS12" => read_pkcs12(&block.der, passphrase, found)?,
            // Chains, EC PARAMETERS and the like: nothing to import.
            _ => {}
        }
    }
    Ok(())
}

fn to_pkcs8(
    encoded: rsa::pkcs8::Result<der::SecretDocument>,
) -> Result<Zeroizing<Vec<u8>>, Refusal> {
    encoded
        .map(|doc| Zeroizing::new(doc.as_bytes().to_vec()))
        .map_err(|e| Refusal(format!("private key does not re-encode: {e}")))
}

/// A SEC1 `EC PRIVATE KEY` as PKCS#8. The curve comes from the key's parameters, or
/// from the key's length when they are absent.
fn sec1_to_pkcs8(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, Refusal> {
    use p256::elliptic_curve::pkcs8::EncodePrivateKey as _;
    if let Ok(key) = p256::SecretKey::from_sec1_der(der) {
        return to_pkcs8(key.to_pkcs8_der());
    }
    if let Ok(key) = p384::SecretKey::from_sec1_der(der) {
        return to_pkcs8(key.to_pkcs8_der());
    }
    Err(Refusal(
        "EC PRIVATE KEY is malformed or not on P-256 or P-384".into(),
    ))
}

/// Reads a PKCS#12 file through OpenSSL. Without a passphrase, the empty one is tried.
#[cfg(feature = "crypto-openssl")]
fn read_pkcs12(der: &[u8], passphrase: Option<&str>, found: &mut Pieces) -> Result<(), Refusal> {
    use openssl::pkcs12::Pkcs12;

    let pkcs12 = Pkcs12::from_der(der).map_err(|_| {
        Refusal("neither PKCS#12 nor a PEM certificate with its private key".into())
    })?;
    let parsed = match pkcs12.parse2(passphrase.unwrap_or("")) {
        Ok(parsed) => parsed,
        // Files from older Windows and NSS protect the certificates with RC2-40, which
        // OpenSSL 3 keeps in its legacy provider; load it once and try again.
        Err(e) if e.to_string().contains("unsupported") && legacy_provider() => pkcs12
            .parse2(passphrase.unwrap_or(""))
            .map_err(|e| pkcs12_refusal(passphrase, &e))?,
        Err(e) => return Err(pkcs12_refusal(passphrase, &e)),
    };
    if let Some(cert) = &parsed.cert {
        found.certs.push(x509_from_openssl(cert)?);
    }
    for cert in parsed.ca.iter().flatten() {
        found.certs.push(x509_from_openssl(cert)?);
    }
    if let Some(key) = &parsed.pkey {
        let pkcs8 = key
            .private_key_to_pkcs8()
            .map_err(|e| Refusal(format!("PKCS#12 private key does not re-encode: {e}")))?;
        found.keys.push(Zeroizing::new(pkcs8));
    }
    Ok(())
}

#[cfg(feature = "crypto-openssl")]
fn pkcs12_refusal(passphrase: Option<&str>, e: &openssl::error::ErrorStack) -> Refusal {
    Refusal(match passphrase {
        None => "the PKCS#12 file is passphrase-protected; import it with --passphrase-file".into(),
        Some(_) => format!("the PKCS#12 file does not open: wrong passphrase? ({e})"),
    })
}

#[cfg(feature = "crypto-openssl")]
fn x509_from_openssl(cert: &openssl::x509::X509Ref) -> Result<Certificate, Refusal> {
    cert.to_der()
        .ok()
        .and_then(|der| Certificate::from_der(&der).ok())
        .ok_or_else(|| Refusal("malformed certificate in the PKCS#12 file".into()))
}

/// Loads OpenSSL's legacy provider (RC2, for old PKCS#12 files) once; whether it is there.
#[cfg(feature = "crypto-openssl")]
fn legacy_provider() -> bool {
    use openssl::provider::Provider;
    use std::sync::OnceLock;
    // Kept for the life of the process: dropping a Provider unloads it.
    static LEGACY: OnceLock<Option<Provider>> = OnceLock::new();
    LEGACY
        .get_or_init(|| Provider::try_load(None, "legacy", true).ok())
        .is_some()
}

#[cfg(not(feature = "crypto-openssl"))]
fn read_pkcs12(_: &[u8], _: Option<&str>, _: &mut Pieces) -> Result<(), Refusal> {
    Err(Refusal(
        "this build has no PKCS#12 support (it needs the crypto-openssl feature); export the \
         certificate and its private key as PEM and import that"
            .into(),
    ))
}
