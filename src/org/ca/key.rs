//! The Organization certificate's private key: read from what an admin hands over (PEM or
//! DER; PKCS#8, encrypted PKCS#8, or the traditional RSA and EC forms), kept as PKCS#8, and
//! used as the signer of x509-cert's builder and of CRLs.

use der::asn1::BitString;
use der::{Decode, Document, Encode};
use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncryptedPrivateKeyInfo, PrivateKeyInfo};
use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use sha2::Sha256;
use signature::{Keypair, SignatureEncoding, Signer};
use x509_cert::Certificate;
use x509_cert::spki::{
    AlgorithmIdentifierOwned, DecodePublicKey, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    ObjectIdentifier, SignatureBitStringEncoding, SubjectPublicKeyInfoOwned,
};
use zeroize::Zeroizing;

use super::CaError;
use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, RSA_ENCRYPTION, SECP_256_R_1, SECP_384_R_1};

/// RSA keys shorter than this are refused: NIST and the CA/Browser Forum retired them.
const MIN_RSA_BITS: usize = 2048;

/// A CA signing key, with its public half.
pub(super) struct CaKey {
    signer: Kind,
    /// Encoded once, so that [`Keypair::verifying_key`], which cannot fail, only clones it.
    public: CaPublicKey,
}

/// The kinds of signing key every S/MIME client verifies.
enum Kind {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    /// RSA PKCS#1 v1.5 with SHA-256 (sha256WithRSAEncryption), what RSA CAs sign with.
    /// Boxed: it is twice the size of the EC keys.
    Rsa(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
}

impl CaKey {
    fn new(signer: Kind) -> Result<CaKey, CaError> {
        let public = match &signer {
            Kind::P256(k) => k.verifying_key().to_public_key_der(),
            Kind::P384(k) => k.verifying_key().to_public_key_der(),
            Kind::Rsa(k) => k.verifying_key().to_public_key_der(),
        }
        .map_err(|e| CaError::Internal(format!("encoding the CA's public key: {e}")))?;
        Ok(CaKey {
            signer,
            public: CaPublicKey(public),
        })
    }

    /// A fresh P-256 key, the kind a self-signed Organization certificate gets.
    pub(super) fn generate_p256() -> Result<CaKey, CaError> {
        Self::new(Kind::P256(p256::ecdsa::SigningKey::random(
            &mut rand::rngs::OsRng,
        )))
    }

    /// Reads the key an admin hands over, PEM or DER. `passphrase` opens an encrypted
    /// PKCS#8 key.
    pub(super) fn parse(input: &[u8], passphrase: Option<&str>) -> Result<CaKey, CaError> {
        let Some(blocks) = pem_blocks(input)? else {
            return Self::parse_der(input, passphrase);
        };
        let mut keys = blocks
            .iter()
            // A key file may carry the certificate, or openssl ecparam's curve, beside the key.
            .filter(|(label, _)| !matches!(label.as_str(), "CERTIFICATE" | "EC PARAMETERS"))
            .collect::<Vec<_>>();
        let (label, der) = match keys.len() {
            1 => keys.remove(0),
            0 => return Err(CaError::Refused("the key file holds no private key".into())),
            n => {
                return Err(CaError::Refused(format!(
                    "the key file holds {n} PEM blocks besides certificates; give only the CA's private key"
                )));
            }
        };
        match label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(der),
            "ENCRYPTED PRIVATE KEY" => Self::decrypt_pkcs8(der, passphrase),
            "RSA PRIVATE KEY" => Self::from_rsa(
                RsaPrivateKey::from_pkcs1_der(der)
                    .map_err(|e| CaError::Refused(format!("unreadable RSA PRIVATE KEY: {e}")))?,
            ),
            "EC PRIVATE KEY" => Self::from_sec1_der(der),
            other => Err(CaError::Unsupported(format!(
                "a {other} cannot be the CA key: give an RSA (2048 bits or more) or NIST P-256/P-384 key in PKCS#8 or the traditional RSA/EC PEM form"
            ))),
        }
    }

    fn parse_der(der: &[u8], passphrase: Option<&str>) -> Result<CaKey, CaError> {
        if PrivateKeyInfo::try_from(der).is_ok() {
            Self::from_pkcs8_der(der)
        } else if EncryptedPrivateKeyInfo::try_from(der).is_ok() {
            Self::decrypt_pkcs8(der, passphrase)
        } else if let Ok(key) = RsaPrivateKey::from_pkcs1_der(der) {
            Self::from_rsa(key)
        } else if sec1::EcPrivateKey::try_from(der).is_ok() {
            Self::from_sec1_der(der)
        } else {
            Err(CaError::Refused(
                "the key is neither a PEM nor a DER private key (PKCS#8, PKCS#1 or SEC1)".into(),
            ))
        }
    }

    fn decrypt_pkcs8(der: &[u8], passphrase: Option<&str>) -> Result<CaKey, CaError> {
        let Some(passphrase) = passphrase else {
            return Err(CaError::Refused(
                "the key is encrypted: give its passphrase".into(),
            ));
        };
        let encrypted = EncryptedPrivateKeyInfo::try_from(der)
            .map_err(|e| CaError::Refused(format!("unreadable ENCRYPTED PRIVATE KEY: {e}")))?;
        let plain = encrypted.decrypt(passphrase).map_err(|e| {
            CaError::Refused(format!(
                "the key does not open with this passphrase (or uses a cipher sealgate lacks): {e}"
            ))
        })?;
        Self::from_pkcs8_der(plain.as_bytes())
    }

    /// Reads an unencrypted PKCS#8 key, the form [`CaKey::to_pkcs8`] stores.
    pub(super) fn from_pkcs8_der(der: &[u8]) -> Result<CaKey, CaError> {
        let info = PrivateKeyInfo::try_from(der)
            .map_err(|e| CaError::Refused(format!("unreadable PKCS#8 private key: {e}")))?;
        let unreadable = |e: pkcs8::Error| CaError::Refused(format!("unreadable private key: {e}"));
        match info.algorithm.oid {
            RSA_ENCRYPTION => {
                Self::from_rsa(RsaPrivateKey::from_pkcs8_der(der).map_err(unreadable)?)
            }
            ID_EC_PUBLIC_KEY => match info.algorithm.parameters_oid().ok() {
                Some(SECP_256_R_1) => Self::new(Kind::P256(
                    p256::SecretKey::from_pkcs8_der(der)
                        .map_err(unreadable)?
                        .into(),
                )),
                Some(SECP_384_R_1) => Self::new(Kind::P384(
                    p384::SecretKey::from_pkcs8_der(der)
                        .map_err(unreadable)?
                        .into(),
                )),
                curve => Err(unsupported_curve(curve)),
            },
            other => Err(CaError::Unsupported(format!(
                "a {} key cannot be the CA key: give an RSA (2048 bits or more) or NIST P-256/P-384 key",
                oid_name(&other)
            ))),
        }
    }

    fn from_sec1_der(der: &[u8]) -> Result<CaKey, CaError> {
        let key = sec1::EcPrivateKey::try_from(der)
            .map_err(|e| CaError::Refused(format!("unreadable EC PRIVATE KEY: {e}")))?;
        let curve = key.parameters.and_then(|p| p.named_curve());
        let unreadable = |_| CaError::Refused("unreadable EC PRIVATE KEY".into());
        match curve {
            Some(SECP_256_R_1) => Self::new(Kind::P256(
                p256::SecretKey::from_sec1_der(der)
                    .map_err(unreadable)?
                    .into(),
            )),
            Some(SECP_384_R_1) => Self::new(Kind::P384(
                p384::SecretKey::from_sec1_der(der)
                    .map_err(unreadable)?
                    .into(),
            )),
            curve => Err(unsupported_curve(curve)),
        }
    }

    fn from_rsa(key: RsaPrivateKey) -> Result<CaKey, CaError> {
        let bits = key.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(CaError::Refused(format!(
                "the CA's RSA key has {bits} bits; sealgate signs with {MIN_RSA_BITS} bits or more"
            )));
        }
        Self::new(Kind::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(key))))
    }

    /// The key as unencrypted PKCS#8 DER, for the caller to seal at rest.
    pub(super) fn to_pkcs8(&self) -> Result<Zeroizing<Vec<u8>>, CaError> {
        let document = match &self.signer {
            Kind::P256(k) => p256::SecretKey::from(k).to_pkcs8_der(),
            Kind::P384(k) => p384::SecretKey::from(k).to_pkcs8_der(),
            Kind::Rsa(k) => rsa_private(k).to_pkcs8_der(),
        };
        document
            .map(|d| d.to_bytes())
            .map_err(|e| CaError::Internal(format!("encoding the CA key as PKCS#8: {e}")))
    }

    /// The public half, as a certificate carries it.
    pub(super) fn public_spki(&self) -> Result<SubjectPublicKeyInfoOwned, CaError> {
        SubjectPublicKeyInfoOwned::from_der(self.public.0.as_bytes())
            .map_err(|e| CaError::Internal(format!("decoding the CA's public key: {e}")))
    }

    /// Whether `spki` (a certificate's) is this key's public half. Compared as keys, not as
    /// bytes, so that an encoding a certificate may choose (a compressed point) still matches.
    pub(super) fn matches(&self, spki: &SubjectPublicKeyInfoOwned) -> bool {
        let Ok(der) = spki.to_der() else {
            return false;
        };
        match &self.signer {
            Kind::P256(k) => p256::ecdsa::VerifyingKey::from_public_key_der(&der)
                .is_ok_and(|v| v == *k.verifying_key()),
            Kind::P384(k) => p384::ecdsa::VerifyingKey::from_public_key_der(&der)
                .is_ok_and(|v| v == *k.verifying_key()),
            Kind::Rsa(k) => rsa::RsaPublicKey::from_public_key_der(&der)
                .is_ok_and(|v| v == rsa_private(k).to_public_key()),
        }
    }

    /// The algorithm [`CaKey::sign`] signs with, as a signed structure names it.
    pub(super) fn algorithm(&self) -> Result<AlgorithmIdentifierOwned, CaError> {
        self.signature_algorithm_identifier()
            .map_err(|e| CaError::Internal(format!("the CA key's signature algorithm: {e}")))
    }

    /// Signs `message` (a TBSCertList), returning the signature as its BIT STRING.
    pub(super) fn sign(&self, message: &[u8]) -> Result<BitString, CaError> {
        let signature: CaSignature = self
            .try_sign(message)
            .map_err(|e| CaError::Internal(format!("signing with the CA key: {e}")))?;
        signature
            .to_bitstring()
            .map_err(|e| CaError::Internal(format!("encoding the CA's signature: {e}")))
    }
}

/// The public half of a [`CaKey`], as SPKI DER: what x509-cert's builder asks a signer for.
#[derive(Clone)]
pub(super) struct CaPublicKey(Document);

impl EncodePublicKey for CaPublicKey {
    fn to_public_key_der(&self) -> x509_cert::spki::Result<Document> {
        Ok(self.0.clone())
    }
}

/// A signature by a [`CaKey`] as its algorithm encodes it: ECDSA's DER `Ecdsa-Sig-Value`,
/// or RSA's bare signature.
pub(super) struct CaSignature(Vec<u8>);

impl SignatureBitStringEncoding for CaSignature {
    fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

impl Keypair for CaKey {
    type VerifyingKey = CaPublicKey;

    fn verifying_key(&self) -> CaPublicKey {
        self.public.clone()
    }
}

impl DynSignatureAlgorithmIdentifier for CaKey {
    fn signature_algorithm_identifier(&self) -> x509_cert::spki::Result<AlgorithmIdentifierOwned> {
        match &self.signer {
            Kind::P256(k) => k.signature_algorithm_identifier(),
            Kind::P384(k) => k.signature_algorithm_identifier(),
            Kind::Rsa(k) => k.signature_algorithm_identifier(),
        }
    }
}

impl Signer<CaSignature> for CaKey {
    fn try_sign(&self, message: &[u8]) -> Result<CaSignature, signature::Error> {
        Ok(CaSignature(match &self.signer {
            Kind::P256(k) => {
                let signature: p256::ecdsa::DerSignature = k.try_sign(message)?;
                signature.to_vec()
            }
            Kind::P384(k) => {
                let signature: p384::ecdsa::DerSignature = k.try_sign(message)?;
                signature.to_vec()
            }
            Kind::Rsa(k) => {
                let signature: rsa::pkcs1v15::Signature = k.try_sign(message)?;
                signature.to_vec()
            }
        }))
    }
}

/// Reads the certificates in `input`, PEM (any number) or DER (one), each with its DER as
/// given: a re-encoding could differ from what the issuer signed.
pub(super) fn certificates(input: &[u8]) -> Result<Vec<(Certificate, Vec<u8>)>, CaError> {
    let read = |der: Vec<u8>| match Certificate::from_der(&der) {
        Ok(cert) => Ok((cert, der)),
        Err(e) => Err(CaError::Refused(format!("unreadable certificate: {e}"))),
    };
    match pem_blocks(input)? {
        None => Ok(vec![read(input.to_vec())?]),
        Some(blocks) => blocks
            .into_iter()
            .filter(|(label, _)| label == "CERTIFICATE")
            .map(|(_, der)| read(der))
            .collect(),
    }
}

/// A PEM block's label and DER.
type PemBlock = (String, Vec<u8>);

/// The PEM blocks in `input` as (label, DER), or None when `input` is not PEM. Text around
/// the blocks (openssl's `Bag Attributes`, or `x509 -text` output) is skipped.
fn pem_blocks(input: &[u8]) -> Result<Option<Vec<PemBlock>>, CaError> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
    };
    let mut blocks = Vec::new();
    let mut at = 0;
    while let Some(start) = find(input, BEGIN, at) {
        let unterminated = || CaError::Refused("a PEM block has no END line".into());
        let end_line = find(input, END, start).ok_or_else(unterminated)?;
        // The END line closes with the dashes after its label.
        let close = find(input, b"-----", end_line + END.len()).ok_or_else(unterminated)? + 5;
        let block = &input[start..close];
        match der::pem::decode_vec(block) {
            Ok((label, der)) => blocks.push((label.to_string(), der)),
            Err(_) if find(block, b"Proc-Type:", 0).is_some() => {
                return Err(CaError::Unsupported(
                    "the key is encrypted in OpenSSL's legacy PEM form; convert it to encrypted PKCS#8 first: openssl pkcs8 -topk8 -v2 aes-256-cbc -in KEY.pem -out KEY.p8.pem".into(),
                ));
            }
            Err(e) => return Err(CaError::Refused(format!("unreadable PEM block: {e}"))),
        }
        at = close;
    }
    Ok((!blocks.is_empty()).then_some(blocks))
}

fn rsa_private(key: &rsa::pkcs1v15::SigningKey<Sha256>) -> &RsaPrivateKey {
    key.as_ref()
}

fn unsupported_curve(curve: Option<ObjectIdentifier>) -> CaError {
    let name = curve.map_or("an unnamed curve".to_string(), |c| oid_name(&c));
    CaError::Unsupported(format!(
        "an EC key on {name} cannot be the CA key: S/MIME clients verify NIST P-256 and P-384 (or RSA)"
    ))
}

/// An OID as its name in const-oid's database, else dotted.
pub(super) fn oid_name(oid: &ObjectIdentifier) -> String {
    const_oid::db::DB
        .by_oid(oid)
        .map_or_else(|| oid.to_string(), str::to_string)
}
