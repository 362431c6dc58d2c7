//! Encryption: CMS EnvelopedData with AES-256-CBC content, or AuthEnvelopedData with
//! AES-256-GCM content, with a KeyTransRecipientInfo for each RSA recipient and a
//! KeyAgreeRecipientInfo for each EC one. Both envelopes get their RecipientInfos from
//! the same builders.

use std::collections::BTreeSet;

use cms::builder::{
    ContentEncryptionAlgorithm, EnvelopedDataBuilder, RecipientInfoBuilder, RecipientInfoType,
};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    KeyAgreeRecipientIdentifier, KeyAgreeRecipientInfo, KeyTransRecipientInfo,
    OriginatorIdentifierOrKey, OriginatorPublicKey, RecipientEncryptedKey, RecipientIdentifier,
    RecipientInfo, RecipientInfos,
};
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{BitString, OctetString};
use der::{Any, Encode};
use rand::RngCore;
use rand::rngs::OsRng;
use rsa::pkcs8::DecodePublicKey;
use x509_cert::Certificate;
use x509_cert::spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use super::algorithms::{Curve, aes_wrap, ecc_cms_shared_info, x963_kdf};
use super::auth_enveloped;
use super::malformed;
use crate::crypto::{CryptoError, MAX_PLAINTEXT};
use crate::keys::material;

/// Encrypts `plaintext` (a complete MIME entity) as CMS EnvelopedData to every recipient
/// at once: AES-256-CBC content, PKCS#1 v1.5 key transport for RSA certificates, ECDH key
/// agreement (RFC 5753, dhSinglePass-stdDH with the X9.63 KDF and AES-256 key wrap) for
/// EC P-256 and P-384 certificates. Returns the DER ContentInfo, for the caller to base64
/// into application/pkcs7-mime; smime-type=enveloped-data.
pub fn encrypt(plaintext: &[u8], recipients: &[Certificate]) -> Result<Vec<u8>, CryptoError> {
    let recipients = recipient_infos(plaintext, recipients)?;
    let mut builder =
        EnvelopedDataBuilder::new(None, plaintext, ContentEncryptionAlgorithm::Aes256Cbc, None)
            .map_err(|e| CryptoError::Internal(e.to_string()))?;
    for recipient in recipients {
        builder
            .add_recipient_info(recipient)
            .map_err(|e| CryptoError::Internal(e.to_string()))?;
    }
    let enveloped = builder
        .build_with_rng(&mut OsRng)
        .map_err(|e| CryptoError::Internal(format!("building EnvelopedData: {e}")))?;
    let content = Any::encode_from(&enveloped).map_err(|e| CryptoError::Internal(e.to_string()))?;
    ContentInfo {
        content_type: rfc5911::ID_ENVELOPED_DATA,
        content,
    }
    .to_der()
    .map_err(|e| CryptoError::Internal(e.to_string()))
}

/// Encrypts `plaintext` as CMS AuthEnvelopedData (RFC 5083) with AES-256-GCM content
/// (RFC 5084: a random 12-byte nonce, a 16-byte tag), to the same recipients and with
/// the same key transport and key agreement as [`encrypt`]. Only for recipients known
/// to read it: older clients cannot. Returns the DER ContentInfo, for the caller to
/// base64 into application/pkcs7-mime; smime-type=authEnveloped-data.
pub fn encrypt_authenticated(
    plaintext: &[u8],
    recipients: &[Certificate],
) -> Result<Vec<u8>, CryptoError> {
    let recipients = recipient_infos(plaintext, recipients)?;
    let internal = |e: &dyn std::fmt::Display| CryptoError::Internal(e.to_string());
    let mut content_key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(content_key.as_mut());
    let sealed = auth_enveloped::seal(&content_key, plaintext)?;
    let infos = recipients
        .into_iter()
        .map(|mut recipient| recipient.build(content_key.as_ref()))
        .collect::<Result<Vec<RecipientInfo>, _>>()
        .map_err(|e| CryptoError::Internal(format!("building AuthEnvelopedData: {e}")))?;
    drop(content_key);
    let infos = RecipientInfos::try_from(infos).map_err(|e| internal(&e))?;
    let data = auth_enveloped::auth_enveloped_data(infos, sealed).map_err(|e| internal(&e))?;
    ContentInfo {
        content_type: rfc5911::ID_CT_AUTH_ENVELOPED_DATA,
        content: Any::encode_from(&data).map_err(|e| internal(&e))?,
    }
    .to_der()
    .map_err(|e| internal(&e))
}

/// A RecipientInfo builder for each distinct certificate in `recipients`, after the
/// checks both envelopes make: someone to encrypt to, a plaintext within the limit, and
/// certificates that may be encrypted to.
fn recipient_infos(
    plaintext: &[u8],
    recipients: &[Certificate],
) -> Result<Vec<Recipient>, CryptoError> {
    if recipients.is_empty() {
        return Err(CryptoError::Key("no recipient certificates".into()));
    }
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(malformed(format!(
            "message of {} bytes is over the {MAX_PLAINTEXT}-byte limit",
            plaintext.len()
        )));
    }
    let mut out = Vec::with_capacity(recipients.len());
    // The RecipientInfos are a SET, where a duplicate is an error.
    let mut seen = BTreeSet::new();
    for cert in recipients {
        let der = cert
            .to_der()
            .map_err(|e| CryptoError::Key(format!("certificate does not encode: {e}")))?;
        let fingerprint = material::x509_fingerprint(&der);
        if !seen.insert(fingerprint.clone()) {
            continue;
        }
        if !material::x509_can_encrypt(cert) {
            return Err(CryptoError::Key(format!(
                "certificate {fingerprint} is for signing only"
            )));
        }
        let rid = IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        };
        let spki = &cert.tbs_certificate.subject_public_key_info;
        let recipient = match spki.algorithm.oid {
            rfc5912::RSA_ENCRYPTION => {
                let key = spki
                    .to_der()
                    .ok()
                    .and_then(|der| rsa::RsaPublicKey::from_public_key_der(&der).ok())
                    .ok_or_else(|| {
                        CryptoError::Key(format!("certificate {fingerprint}: unusable RSA key"))
                    })?;
                Recipient::Rsa(RsaRecipient { rid, key })
            }
            rfc5912::ID_EC_PUBLIC_KEY => {
                let curve = Curve::of(&spki.algorithm).ok_or_else(|| {
                    CryptoError::Key(format!(
                        "certificate {fingerprint}: EC curve not supported (P-256 and P-384 are)"
                    ))
                })?;
                let point = curve
                    .public_point(spki.subject_public_key.raw_bytes())
                    .ok_or_else(|| {
                        CryptoError::Key(format!("certificate {fingerprint}: invalid EC key"))
                    })?;
                Recipient::Ec(EcRecipient { rid, curve, point })
            }
            other => {
                return Err(CryptoError::Key(format!(
                    "certificate {fingerprint}: key algorithm {other} cannot be encrypted to \
                     (RSA and EC P-256/P-384 can)"
                )));
            }
        };
        out.push(recipient);
    }
    Ok(out)
}

/// One recipient's RecipientInfo builder, by the kind of key in their certificate.
enum Recipient {
    Rsa(RsaRecipient),
    Ec(EcRecipient),
}

impl RecipientInfoBuilder for Recipient {
    fn recipient_info_type(&self) -> RecipientInfoType {
        match self {
            Recipient::Rsa(rsa) => rsa.recipient_info_type(),
            Recipient::Ec(ec) => ec.recipient_info_type(),
        }
    }

    fn recipient_info_version(&self) -> CmsVersion {
        match self {
            Recipient::Rsa(rsa) => rsa.recipient_info_version(),
            Recipient::Ec(ec) => ec.recipient_info_version(),
        }
    }

    fn build(&mut self, content_key: &[u8]) -> Result<RecipientInfo, cms::builder::Error> {
        match self {
            Recipient::Rsa(rsa) => rsa.build(content_key),
            Recipient::Ec(ec) => ec.build(content_key),
        }
    }
}

/// A KeyTransRecipientInfo for an RSA certificate. The cms crate has one too, but it
/// leaves out the NULL parameters RFC 3370 §4.2.1 asks for.
struct RsaRecipient {
    rid: IssuerAndSerialNumber,
    key: rsa::RsaPublicKey,
}

impl RecipientInfoBuilder for RsaRecipient {
    fn recipient_info_type(&self) -> RecipientInfoType {
        RecipientInfoType::Ktri
    }

    fn recipient_info_version(&self) -> CmsVersion {
        CmsVersion::V0
    }

    fn build(&mut self, content_key: &[u8]) -> Result<RecipientInfo, cms::builder::Error> {
        let encrypted = pkcs1_encrypt(&self.key, content_key)
            .map_err(|e| cms::builder::Error::Builder(format!("RSA key transport: {e}")))?;
        Ok(RecipientInfo::Ktri(KeyTransRecipientInfo {
            version: CmsVersion::V0,
            rid: RecipientIdentifier::IssuerAndSerialNumber(self.rid.clone()),
            key_enc_alg: AlgorithmIdentifierOwned {
                oid: rfc5912::RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            enc_key: OctetString::new(encrypted)?,
        }))
    }
}

/// PKCS #1 v1.5 encryption of the content key. In the `crypto-openssl` build it is
/// OpenSSL's: rsa 0.9's modular arithmetic (num-bigint-dig) was 75 % of encrypting
/// 100 KiB to an RSA-2048 certificate (callgrind). Encrypting is not secret-dependent
/// on our side, so either is safe here.
#[cfg(feature = "crypto-openssl")]
fn pkcs1_encrypt(key: &rsa::RsaPublicKey, content_key: &[u8]) -> Result<Vec<u8>, String> {
    use openssl::bn::BigNum;
    use rsa::traits::PublicKeyParts;
    let bn = |n: &rsa::BigUint| BigNum::from_slice(&n.to_bytes_be()).map_err(|e| e.to_string());
    let rsa = openssl::rsa::Rsa::from_public_components(bn(key.n())?, bn(key.e())?)
        .map_err(|e| e.to_string())?;
    let mut out = vec![0; rsa.size() as usize];
    let len = rsa
        .public_encrypt(content_key, &mut out, openssl::rsa::Padding::PKCS1)
        .map_err(|e| e.to_string())?;
    out.truncate(len);
    Ok(out)
}

#[cfg(not(feature = "crypto-openssl"))]
fn pkcs1_encrypt(key: &rsa::RsaPublicKey, content_key: &[u8]) -> Result<Vec<u8>, String> {
    key.encrypt(&mut OsRng, rsa::Pkcs1v15Encrypt, content_key)
        .map_err(|e| e.to_string())
}

/// A KeyAgreeRecipientInfo for an EC certificate (RFC 5753 §3.1.1): a fresh ephemeral
/// key per recipient, no user keying material.
struct EcRecipient {
    rid: IssuerAndSerialNumber,
    curve: Curve,
    /// The recipient's public point, already checked to be on the curve.
    point: Vec<u8>,
}

impl RecipientInfoBuilder for EcRecipient {
    fn recipient_info_type(&self) -> RecipientInfoType {
        RecipientInfoType::Kari
    }

    fn recipient_info_version(&self) -> CmsVersion {
        CmsVersion::V3
    }

    fn build(&mut self, content_key: &[u8]) -> Result<RecipientInfo, cms::builder::Error> {
        let failed =
            |what: &str| cms::builder::Error::Builder(format!("ECDH key agreement: {what}"));
        let (ephemeral, z) = self
            .curve
            .agree_ephemeral(&self.point)
            .ok_or_else(|| failed("invalid recipient key"))?;
        let wrap = AlgorithmIdentifierOwned {
            oid: rfc5911::ID_AES_256_WRAP,
            parameters: None,
        };
        let (hash, scheme) = self.curve.kdf();
        let kek = x963_kdf(hash, &z, &ecc_cms_shared_info(&wrap, None, 32)?, 32);
        let wrapped = aes_wrap(&kek, content_key).ok_or_else(|| failed("key wrap"))?;
        Ok(RecipientInfo::Kari(KeyAgreeRecipientInfo {
            version: CmsVersion::V3,
            originator: OriginatorIdentifierOrKey::OriginatorKey(OriginatorPublicKey {
                // RFC 5753: the parameters SHOULD be absent; the curve is the recipient's.
                algorithm: AlgorithmIdentifierOwned {
                    oid: rfc5912::ID_EC_PUBLIC_KEY,
                    parameters: None,
                },
                public_key: BitString::from_bytes(&ephemeral)?,
            }),
            ukm: None,
            key_enc_alg: AlgorithmIdentifierOwned {
                oid: scheme,
                parameters: Some(Any::encode_from(&wrap)?),
            },
            recipient_enc_keys: vec![RecipientEncryptedKey {
                rid: KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(self.rid.clone()),
                enc_key: OctetString::new(wrapped)?,
            }],
        }))
    }
}
