//! AuthEnvelopedData (RFC 5083) with AES-GCM content (RFC 5084): the ASN.1 structure
//! that cms 0.2.3 lacks (0.3 has it, on the next RustCrypto generation), the GCM
//! parameters, and the AEAD step both directions use, from the aes-gcm crate.
//!
//! The structure is built with der's derive from cms's own RecipientInfos and
//! EncryptedContentInfo, and [`encrypt`](super::encrypt) encodes it. Decryption does not
//! decode it whole: [`decrypt`](super::decrypt) walks AuthEnvelopedData with the same
//! code as EnvelopedData (they share every field up to the encrypted content), for the
//! reasons given there, and takes only [`Gcm`] and the tag from here.

use aes::{Aes128, Aes192, Aes256};
use aes_gcm::AesGcm;
use aes_gcm::aead::consts::{U12, U13, U14, U15, U16};
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use cms::content_info::CmsVersion;
use cms::enveloped_data::{EncryptedContentInfo, OriginatorInfo, RecipientInfos};
use const_oid::db::rfc5911;
use der::asn1::OctetString;
use der::{Any, Sequence};
use rand::RngCore;
use rand::rngs::OsRng;
use x509_cert::attr::Attributes;
use x509_cert::spki::AlgorithmIdentifierOwned;

use super::malformed;
use crate::crypto::CryptoError;

/// AuthEnvelopedData (RFC 5083 §2.1).
///
/// ```text
/// AuthEnvelopedData ::= SEQUENCE {
///   version CMSVersion,
///   originatorInfo [0] IMPLICIT OriginatorInfo OPTIONAL,
///   recipientInfos RecipientInfos,
///   authEncryptedContentInfo EncryptedContentInfo,
///   authAttrs [1] IMPLICIT AuthAttributes OPTIONAL,
///   mac MessageAuthenticationCode,
///   unauthAttrs [2] IMPLICIT UnauthAttributes OPTIONAL }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(super) struct AuthEnvelopedData {
    /// Always 0 (RFC 5083 §2.1).
    pub version: CmsVersion,
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub originator_info: Option<OriginatorInfo>,
    pub recip_infos: RecipientInfos,
    pub auth_encrypted_content_info: EncryptedContentInfo,
    /// Authenticated, not encrypted; their DER as a SET OF is GCM's associated data.
    #[asn1(
        context_specific = "1",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub auth_attrs: Option<Attributes>,
    /// The GCM tag.
    pub mac: OctetString,
    #[asn1(
        context_specific = "2",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub unauth_attrs: Option<Attributes>,
}

/// GCMParameters (RFC 5084 §3.2).
///
/// ```text
/// GCMParameters ::= SEQUENCE {
///   aes-nonce        OCTET STRING, -- recommended size is 12 octets
///   aes-ICVlen       AES-GCM-ICVlen DEFAULT 12 }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(super) struct GcmParameters {
    pub nonce: OctetString,
    #[asn1(default = "default_icv_len")]
    pub icv_len: u8,
}

fn default_icv_len() -> u8 {
    12
}

/// The nonce length we read and write. RFC 5084 recommends 12 octets, and every
/// client we know of (OpenSSL, NSS, Bouncy Castle, Windows) sends exactly that; other
/// lengths go through an extra GHASH step that nobody exercises.
const NONCE_LEN: usize = 12;

/// The tag length we write: the longest RFC 5084 allows.
const TAG_LEN: u8 = 16;

/// AES-GCM content encryption as an AlgorithmIdentifier names it: key size, nonce and
/// tag length.
#[derive(Debug)]
pub(super) struct Gcm {
    key_len: usize,
    nonce: [u8; NONCE_LEN],
    icv_len: usize,
}

impl Gcm {
    /// Reads id-aes128-GCM, id-aes192-GCM or id-aes256-GCM with its GCMParameters.
    pub(super) fn from_algorithm(algorithm: &AlgorithmIdentifierOwned) -> Result<Gcm, CryptoError> {
        let key_len = match algorithm.oid {
            rfc5911::ID_AES_128_GCM => 16,
            rfc5911::ID_AES_192_GCM => 24,
            rfc5911::ID_AES_256_GCM => 32,
            other => {
                return Err(malformed(format!(
                    "unsupported authenticated content encryption algorithm {other} (AES-GCM is \
                     supported)"
                )));
            }
        };
        let params: GcmParameters = algorithm
            .parameters
            .as_ref()
            .ok_or_else(|| malformed("AES-GCM without parameters"))?
            .decode_as()
            .map_err(|e| malformed(format!("AES-GCM parameters: {e}")))?;
        let nonce = params.nonce.as_bytes().try_into().map_err(|_| {
            malformed(format!(
                "AES-GCM nonce of {} bytes (only {NONCE_LEN} is supported)",
                params.nonce.as_bytes().len()
            ))
        })?;
        if !(12..=16).contains(&params.icv_len) {
            return Err(malformed(format!(
                "AES-GCM tag length {} is not 12 to 16",
                params.icv_len
            )));
        }
        Ok(Gcm {
            key_len,
            nonce,
            icv_len: usize::from(params.icv_len),
        })
    }

    pub(super) fn key_len(&self) -> usize {
        self.key_len
    }

    /// The tag length the parameters announce; the `mac` field must have it.
    pub(super) fn tag_len(&self) -> usize {
        self.icv_len
    }

    /// Checks the tag over `aad` and `ciphertext` and only then decrypts; `None` when the
    /// tag does not match (a wrong key, or a damaged or altered message). Nothing of the
    /// plaintext exists before the tag has checked out: aes-gcm compares the tag (in
    /// constant time) before it applies the key stream.
    pub(super) fn open(
        &self,
        key: &[u8],
        ciphertext: &[u8],
        aad: &[u8],
        tag: &[u8],
    ) -> Option<Vec<u8>> {
        if tag.len() != self.icv_len {
            return None;
        }
        let nonce = GenericArray::from_slice(&self.nonce);
        let mut buffer = ciphertext.to_vec();
        macro_rules! open {
            ($aes:ty, $tag:ty) => {
                AesGcm::<$aes, U12, $tag>::new_from_slice(key)
                    .ok()?
                    .decrypt_in_place_detached(
                        nonce,
                        aad,
                        &mut buffer,
                        GenericArray::from_slice(tag),
                    )
                    .ok()?
            };
        }
        macro_rules! by_tag_len {
            ($aes:ty) => {
                match self.icv_len {
                    12 => open!($aes, U12),
                    13 => open!($aes, U13),
                    14 => open!($aes, U14),
                    15 => open!($aes, U15),
                    16 => open!($aes, U16),
                    _ => return None,
                }
            };
        }
        match self.key_len {
            16 => by_tag_len!(Aes128),
            24 => by_tag_len!(Aes192),
            32 => by_tag_len!(Aes256),
            _ => return None,
        }
        Some(buffer)
    }
}

/// AES-256-GCM-encrypted content, as AuthEnvelopedData carries it.
pub(super) struct Sealed {
    /// id-aes256-GCM with a fresh nonce and the tag length.
    pub algorithm: AlgorithmIdentifierOwned,
    pub ciphertext: Vec<u8>,
    /// The tag, for the `mac` field.
    pub tag: Vec<u8>,
}

/// Encrypts `plaintext` with AES-256-GCM under `key` and a random nonce, with no
/// associated data (we send no authAttrs: RFC 5083 needs them only for content other
/// than id-data).
pub(super) fn seal(key: &[u8; 32], plaintext: &[u8]) -> Result<Sealed, CryptoError> {
    let internal = |what: &str| CryptoError::Internal(format!("AES-GCM: {what}"));
    let mut nonce = [0u8; NONCE_LEN];
    // A nonce is never reused under a key: every message gets a fresh random key.
    OsRng.fill_bytes(&mut nonce);
    let mut ciphertext = plaintext.to_vec();
    let tag = AesGcm::<Aes256, U12, U16>::new_from_slice(key)
        .map_err(|_| internal("key"))?
        .encrypt_in_place_detached(GenericArray::from_slice(&nonce), b"", &mut ciphertext)
        .map_err(|_| internal("content too long"))?;
    let params = GcmParameters {
        nonce: OctetString::new(nonce.to_vec()).map_err(|e| internal(&e.to_string()))?,
        icv_len: TAG_LEN,
    };
    Ok(Sealed {
        algorithm: AlgorithmIdentifierOwned {
            oid: rfc5911::ID_AES_256_GCM,
            parameters: Some(Any::encode_from(&params).map_err(|e| internal(&e.to_string()))?),
        },
        ciphertext,
        tag: tag.to_vec(),
    })
}

/// The AuthEnvelopedData for content sealed by [`seal`] and its recipients.
pub(super) fn auth_enveloped_data(
    recip_infos: RecipientInfos,
    sealed: Sealed,
) -> der::Result<AuthEnvelopedData> {
    Ok(AuthEnvelopedData {
        version: CmsVersion::V0,
        originator_info: None,
        recip_infos,
        auth_encrypted_content_info: EncryptedContentInfo {
            content_type: rfc5911::ID_DATA,
            content_enc_alg: sealed.algorithm,
            encrypted_content: Some(OctetString::new(sealed.ciphertext)?),
        },
        auth_attrs: None,
        mac: OctetString::new(sealed.tag)?,
        unauth_attrs: None,
    })
}
