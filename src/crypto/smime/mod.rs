//! S/MIME enveloped-data (RFC 8551 over CMS, RFC 5652): encrypt a MIME entity to
//! recipients' certificates, open one with SCKM keys, and import SCKM keys.
//!
//! - **Encrypt:** AES-256-CBC content. RSA recipients get a KeyTransRecipientInfo with
//!   PKCS#1 v1.5 key transport, which every client reads (RFC 8551 makes it the MUST for
//!   senders). EC P-256/P-384 recipients get a KeyAgreeRecipientInfo (RFC 5753):
//!   ephemeral-static ECDH, the X9.63 KDF with SHA-256 (P-256) or SHA-384 (P-384),
//!   AES-256 key wrap. The envelope itself comes from the cms crate's builder.
//! - **Decrypt:** the cms crate builds EnvelopedData but cannot open it, so the steps are
//!   here: BER to DER ([`ber`]), find the RecipientInfo for one of our certificates, unwrap
//!   the content key (RSA PKCS#1 v1.5 or RSAES-OAEP; ECDH for EC keys), then AES-CBC or
//!   3DES-CBC. With the `crypto-openssl` feature the RSA step runs in OpenSSL, in constant
//!   time; rsa 0.9's PKCS#1 v1.5 decryption is not (RUSTSEC-2023-0071).
//! - **Import:** PKCS#12 (through OpenSSL) or PEM certificate plus key, refused whole when
//!   the certificate is for signing only, names no address, or does not match the key.
//!
//! Nothing here signs. Everything that reads peer input is bounded and returns
//! [`CryptoError::Malformed`] rather than panicking.

use std::collections::BTreeSet;
use std::fmt;

use aes::{Aes128, Aes192, Aes256};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, KeyIvInit};
use cms::builder::{
    ContentEncryptionAlgorithm, EnvelopedDataBuilder, RecipientInfoBuilder, RecipientInfoType,
};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    KeyAgreeRecipientIdentifier, KeyAgreeRecipientInfo, KeyTransRecipientInfo,
    OriginatorIdentifierOrKey, OriginatorPublicKey, RecipientEncryptedKey, RecipientIdentifier,
    RecipientInfo,
};
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{AnyRef, BitString, ContextSpecific, OctetString, OctetStringRef};
use der::{Any, Decode, Encode, Reader, SliceReader, Tag, TagMode, TagNumber, Tagged};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand::RngCore;
use rand::rngs::OsRng;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use sha2::Digest;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use super::{CryptoError, Decrypted, MAX_PLAINTEXT, ber};
use crate::keys::material::{self, MAX_CERTS, MAX_KEY_BYTES, Refusal};

/// The largest message we try to open: the plaintext limit plus room for the envelope.
const MAX_MESSAGE: usize = MAX_PLAINTEXT + 1024 * 1024;
/// The most RecipientInfos we read from one message. Mail to a large list is encrypted to
/// hundreds of people; many more is an attack on our time.
const MAX_RECIPIENT_INFOS: usize = 1024;
/// The most recipient keys we read from one KeyAgreeRecipientInfo.
const MAX_KARI_KEYS: usize = 256;
/// The most unwrap attempts for one message. Each costs a private-key operation and a
/// pass over the content, so a message naming our certificate a thousand times must not
/// get a thousand of them.
const MAX_ATTEMPTS: usize = 4;

// Key agreement schemes of RFC 5753 (SEC 1), which const-oid's database lacks. For the
// prime curves we support the cofactor is 1, so the cofactor variants compute the same.
const DH_STD_SHA1_KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.133.16.840.63.0.2");
const DH_COFACTOR_SHA1_KDF: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.133.16.840.63.0.3");
const DH_STD_SHA224_KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.1.11.0");
const DH_STD_SHA256_KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.1.11.1");
const DH_STD_SHA384_KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.1.11.2");
const DH_STD_SHA512_KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.1.11.3");
const DH_COFACTOR_SHA224_KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.1.14.0");
const DH_COFACTOR_SHA256_KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.1.14.1");
const DH_COFACTOR_SHA384_KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.1.14.2");
const DH_COFACTOR_SHA512_KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.1.14.3");

/// An S/MIME SCKM key: the certificate and its private key (PKCS#8 DER, unencrypted; the
/// caller seals it at rest).
#[derive(Clone)]
pub struct SmimeKey {
    pub cert: Certificate,
    pub private_key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SmimeKey {
    // The private key never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmimeKey")
            .field("fingerprint", &fingerprint(&self.cert))
            .field("private_key", &"<redacted>")
            .finish()
    }
}

fn fingerprint(cert: &Certificate) -> String {
    cert.to_der()
        .map(|der| material::x509_fingerprint(&der))
        .unwrap_or_else(|_| "(unencodable certificate)".into())
}

fn malformed(reason: impl fmt::Display) -> CryptoError {
    CryptoError::Malformed(reason.to_string())
}

// ---------------------------------------------------------------------------------------
// Algorithms
// ---------------------------------------------------------------------------------------

/// A hash function named by OID: OAEP and the key-agreement KDF use these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        Some(match *oid {
            rfc5912::ID_SHA_1 => Hash::Sha1,
            rfc5912::ID_SHA_224 => Hash::Sha224,
            rfc5912::ID_SHA_256 => Hash::Sha256,
            rfc5912::ID_SHA_384 => Hash::Sha384,
            rfc5912::ID_SHA_512 => Hash::Sha512,
            _ => return None,
        })
    }

    fn digest(self, parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
            let mut hasher = D::new();
            for part in parts {
                hasher.update(part);
            }
            Zeroizing::new(hasher.finalize().to_vec())
        }
        match self {
            Hash::Sha1 => run::<sha1::Sha1>(parts),
            Hash::Sha224 => run::<sha2::Sha224>(parts),
            Hash::Sha256 => run::<sha2::Sha256>(parts),
            Hash::Sha384 => run::<sha2::Sha384>(parts),
            Hash::Sha512 => run::<sha2::Sha512>(parts),
        }
    }
}

/// The elliptic curves we do ECDH on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    /// The named curve in an id-ecPublicKey algorithm identifier.
    fn of(algorithm: &AlgorithmIdentifierOwned) -> Option<Self> {
        let oid = algorithm
            .parameters
            .as_ref()?
            .decode_as::<ObjectIdentifier>()
            .ok()?;
        match oid {
            rfc5912::SECP_256_R_1 => Some(Curve::P256),
            rfc5912::SECP_384_R_1 => Some(Curve::P384),
            _ => None,
        }
    }

    /// The KDF we use when we encrypt: the hash that matches the curve's strength
    /// (RFC 5753 §8; Suite B, RFC 6318).
    fn kdf(self) -> (Hash, ObjectIdentifier) {
        match self {
            Curve::P256 => (Hash::Sha256, DH_STD_SHA256_KDF),
            Curve::P384 => (Hash::Sha384, DH_STD_SHA384_KDF),
        }
    }

    /// The uncompressed point of `sec1` if it is a valid point on this curve.
    fn public_point(self, sec1: &[u8]) -> Option<Vec<u8>> {
        match self {
            Curve::P256 => p256::PublicKey::from_sec1_bytes(sec1)
                .ok()
                .map(|key| key.to_encoded_point(false).as_bytes().to_vec()),
            Curve::P384 => p384::PublicKey::from_sec1_bytes(sec1)
                .ok()
                .map(|key| key.to_encoded_point(false).as_bytes().to_vec()),
        }
    }

    /// Ephemeral-static ECDH towards `peer` (a valid point): our ephemeral public point
    /// (uncompressed) and the shared secret Z.
    fn agree_ephemeral(self, peer: &[u8]) -> Option<(Vec<u8>, Zeroizing<Vec<u8>>)> {
        macro_rules! agree {
            ($c:ident) => {{
                let peer = $c::PublicKey::from_sec1_bytes(peer).ok()?;
                let ephemeral = $c::ecdh::EphemeralSecret::random(&mut OsRng);
                let shared = ephemeral.diffie_hellman(&peer);
                let point = ephemeral.public_key().to_encoded_point(false);
                Some((
                    point.as_bytes().to_vec(),
                    Zeroizing::new(shared.raw_secret_bytes().to_vec()),
                ))
            }};
        }
        match self {
            Curve::P256 => agree!(p256),
            Curve::P384 => agree!(p384),
        }
    }

    /// Static-ephemeral ECDH on the receiving side: our PKCS#8 key with the sender's
    /// ephemeral point. `Err(None)` when the point is not on the curve (the message's
    /// fault), `Err(Some(..))` when our key is unusable.
    fn agree_static(
        self,
        pkcs8: &[u8],
        ephemeral: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Option<String>> {
        macro_rules! agree {
            ($c:ident) => {{
                let secret = $c::SecretKey::from_pkcs8_der(pkcs8)
                    .map_err(|e| Some(format!("EC private key: {e}")))?;
                let peer = $c::PublicKey::from_sec1_bytes(ephemeral).map_err(|_| None)?;
                let shared = $c::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }};
        }
        match self {
            Curve::P256 => agree!(p256),
            Curve::P384 => agree!(p384),
        }
    }
}

/// The hash of an RFC 5753 key-agreement scheme.
fn kdf_hash(scheme: &ObjectIdentifier) -> Option<Hash> {
    Some(match *scheme {
        DH_STD_SHA1_KDF | DH_COFACTOR_SHA1_KDF => Hash::Sha1,
        DH_STD_SHA224_KDF | DH_COFACTOR_SHA224_KDF => Hash::Sha224,
        DH_STD_SHA256_KDF | DH_COFACTOR_SHA256_KDF => Hash::Sha256,
        DH_STD_SHA384_KDF | DH_COFACTOR_SHA384_KDF => Hash::Sha384,
        DH_STD_SHA512_KDF | DH_COFACTOR_SHA512_KDF => Hash::Sha512,
        _ => return None,
    })
}

/// The key length of an AES key-wrap algorithm.
fn wrap_key_len(wrap: &ObjectIdentifier) -> Option<usize> {
    match *wrap {
        rfc5911::ID_AES_128_WRAP => Some(16),
        rfc5911::ID_AES_192_WRAP => Some(24),
        rfc5911::ID_AES_256_WRAP => Some(32),
        _ => None,
    }
}

/// ECC-CMS-SharedInfo (RFC 5753 §7.2): the KDF's SharedInfo, which binds the key-wrap
/// algorithm, the optional user keying material and the KEK length.
fn ecc_cms_shared_info(
    wrap: &AlgorithmIdentifierOwned,
    ukm: Option<&[u8]>,
    kek_len: usize,
) -> der::Result<Vec<u8>> {
    let mut body = wrap.to_der()?;
    if let Some(ukm) = ukm {
        ContextSpecific {
            tag_number: TagNumber::N0,
            tag_mode: TagMode::Explicit,
            value: OctetStringRef::new(ukm)?,
        }
        .encode_to_vec(&mut body)?;
    }
    let bits = u32::try_from(kek_len * 8).map_err(|_| der::ErrorKind::Overflow)?;
    ContextSpecific {
        tag_number: TagNumber::N2,
        tag_mode: TagMode::Explicit,
        value: OctetStringRef::new(&bits.to_be_bytes())?,
    }
    .encode_to_vec(&mut body)?;
    AnyRef::new(Tag::Sequence, &body)?.to_der()
}

/// ANSI X9.63 KDF (SEC 1 §3.6.1), as RFC 5753 uses it.
fn x963_kdf(hash: Hash, z: &[u8], shared_info: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    // The capacity keeps the buffer from reallocating, which would leave key bytes behind.
    let mut out = Zeroizing::new(Vec::with_capacity(len + 64));
    let mut counter: u32 = 1;
    while out.len() < len {
        out.extend_from_slice(&hash.digest(&[z, &counter.to_be_bytes(), shared_info]));
        counter += 1;
    }
    out.truncate(len);
    out
}

/// RFC 3394 AES key wrap with a KEK of 16, 24 or 32 bytes.
fn aes_wrap(kek: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0; key.len() + 8];
    let done = match kek.len() {
        16 => aes_kw::KekAes128::try_from(kek).ok()?.wrap(key, &mut out),
        24 => aes_kw::KekAes192::try_from(kek).ok()?.wrap(key, &mut out),
        32 => aes_kw::KekAes256::try_from(kek).ok()?.wrap(key, &mut out),
        _ => return None,
    };
    done.ok().map(|_| out)
}

/// RFC 3394 AES key unwrap; `None` when the integrity check fails.
fn aes_unwrap(kek: &[u8], wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    // A content key is at most 32 bytes; a longer wrapped key is not one of ours.
    if !(16..=72).contains(&wrapped.len()) {
        return None;
    }
    let mut out = Zeroizing::new(vec![0; wrapped.len() - 8]);
    let done = match kek.len() {
        16 => aes_kw::KekAes128::try_from(kek)
            .ok()?
            .unwrap(wrapped, &mut out),
        24 => aes_kw::KekAes192::try_from(kek)
            .ok()?
            .unwrap(wrapped, &mut out),
        32 => aes_kw::KekAes256::try_from(kek)
            .ok()?
            .unwrap(wrapped, &mut out),
        _ => return None,
    };
    done.ok().map(|_| out)
}

/// A content-encryption algorithm and its IV.
struct ContentCipher {
    kind: CipherKind,
    iv: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
enum CipherKind {
    Aes128,
    Aes192,
    Aes256,
    /// Older clients (and the IETF header-protection samples) still send it.
    DesEde3,
}

impl ContentCipher {
    fn from_algorithm(algorithm: &AlgorithmIdentifierOwned) -> Result<Self, CryptoError> {
        let kind = match algorithm.oid {
            rfc5911::ID_AES_128_CBC => CipherKind::Aes128,
            rfc5911::ID_AES_192_CBC => CipherKind::Aes192,
            rfc5911::ID_AES_256_CBC => CipherKind::Aes256,
            rfc5911::DES_EDE_3_CBC => CipherKind::DesEde3,
            other => {
                return Err(malformed(format!(
                    "unsupported content encryption algorithm {other}"
                )));
            }
        };
        let iv = algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<OctetString>().ok())
            .ok_or_else(|| malformed("content encryption algorithm without an IV"))?
            .into_bytes();
        let cipher = ContentCipher { kind, iv };
        if cipher.iv.len() != cipher.block_len() {
            return Err(malformed(format!(
                "IV of {} bytes for a {}-byte block cipher",
                cipher.iv.len(),
                cipher.block_len()
            )));
        }
        Ok(cipher)
    }

    fn key_len(&self) -> usize {
        match self.kind {
            CipherKind::Aes128 => 16,
            CipherKind::Aes192 | CipherKind::DesEde3 => 24,
            CipherKind::Aes256 => 32,
        }
    }

    fn block_len(&self) -> usize {
        match self.kind {
            CipherKind::DesEde3 => 8,
            _ => 16,
        }
    }

    /// Decrypts and unpads; `None` when the padding is wrong (a wrong key, mostly).
    fn decrypt(&self, key: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
        macro_rules! cbc_decrypt {
            ($cipher:ty) => {
                cbc::Decryptor::<$cipher>::new_from_slices(key, &self.iv)
                    .ok()?
                    .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
                    .ok()
            };
        }
        match self.kind {
            CipherKind::Aes128 => cbc_decrypt!(Aes128),
            CipherKind::Aes192 => cbc_decrypt!(Aes192),
            CipherKind::Aes256 => cbc_decrypt!(Aes256),
            CipherKind::DesEde3 => cbc_decrypt!(des::TdesEde3),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Encryption
// ---------------------------------------------------------------------------------------

/// Encrypts `plaintext` (a complete MIME entity) as CMS EnvelopedData to every recipient
/// at once: AES-256-CBC content, PKCS#1 v1.5 key transport for RSA certificates, ECDH key
/// agreement (RFC 5753, dhSinglePass-stdDH with the X9.63 KDF and AES-256 key wrap) for
/// EC P-256 and P-384 certificates. Returns the DER ContentInfo, for the caller to base64
/// into application/pkcs7-mime.
pub fn encrypt(plaintext: &[u8], recipients: &[Certificate]) -> Result<Vec<u8>, CryptoError> {
    if recipients.is_empty() {
        return Err(CryptoError::Key("no recipient certificates".into()));
    }
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(malformed(format!(
            "message of {} bytes is over the {MAX_PLAINTEXT}-byte limit",
            plaintext.len()
        )));
    }
    let mut builder =
        EnvelopedDataBuilder::new(None, plaintext, ContentEncryptionAlgorithm::Aes256Cbc, None)
            .map_err(|e| CryptoError::Internal(e.to_string()))?;
    // The builder puts the RecipientInfos in a SET, where a duplicate is an error.
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
        let added = match spki.algorithm.oid {
            rfc5912::RSA_ENCRYPTION => {
                let key = spki
                    .to_der()
                    .ok()
                    .and_then(|der| rsa::RsaPublicKey::from_public_key_der(&der).ok())
                    .ok_or_else(|| {
                        CryptoError::Key(format!("certificate {fingerprint}: unusable RSA key"))
                    })?;
                builder.add_recipient_info(RsaRecipient { rid, key })
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
                builder.add_recipient_info(EcRecipient { rid, curve, point })
            }
            other => {
                return Err(CryptoError::Key(format!(
                    "certificate {fingerprint}: key algorithm {other} cannot be encrypted to \
                     (RSA and EC P-256/P-384 can)"
                )));
            }
        };
        added.map_err(|e| CryptoError::Internal(e.to_string()))?;
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
        // Encrypting is not secret-dependent on our side, so rsa 0.9 is fine here.
        let encrypted = self
            .key
            .encrypt(&mut OsRng, rsa::Pkcs1v15Encrypt, content_key)
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

// ---------------------------------------------------------------------------------------
// Decryption
// ---------------------------------------------------------------------------------------

/// Decrypts CMS EnvelopedData (DER, or the indefinite-length BER that Thunderbird,
/// Outlook and `openssl cms -stream` send) with the first of `keys` that matches a
/// RecipientInfo: a KeyTransRecipientInfo by issuer and serial number or by subject key
/// identifier (RSA, PKCS#1 v1.5 or RSAES-OAEP), or a KeyAgreeRecipientInfo (EC P-256 and
/// P-384, ephemeral-static ECDH). Content: AES-128/192/256-CBC and 3DES-CBC.
///
/// Garbage, unsupported algorithms and oversized or too deeply nested input give
/// [`CryptoError::Malformed`]; no key named by the message gives [`CryptoError::NoKey`].
pub fn decrypt(message: &[u8], keys: &[SmimeKey]) -> Result<Decrypted, CryptoError> {
    let envelope = Envelope::parse(message)?;
    let cipher = ContentCipher::from_algorithm(&envelope.content_algorithm)?;
    if envelope.ciphertext.is_empty() || envelope.ciphertext.len() % cipher.block_len() != 0 {
        return Err(malformed(format!(
            "encrypted content of {} bytes is not whole blocks",
            envelope.ciphertext.len()
        )));
    }
    if envelope.ciphertext.len() > MAX_PLAINTEXT + cipher.block_len() {
        return Err(malformed("encrypted content is over the plaintext limit"));
    }

    let mut first_error = None;
    let mut attempts = 0;
    'keys: for key in keys {
        for slot in envelope.slots_for(&key.cert) {
            if attempts == MAX_ATTEMPTS {
                break 'keys;
            }
            attempts += 1;
            let opened = slot.unwrap(key, &cipher).and_then(|content_key| {
                cipher
                    .decrypt(&content_key, &envelope.ciphertext)
                    .ok_or_else(|| {
                        malformed(format!(
                            "the content does not decrypt with certificate {}: wrong key or \
                             damaged message",
                            fingerprint(&key.cert)
                        ))
                    })
            });
            match opened {
                Ok(plaintext) => {
                    return Ok(Decrypted {
                        plaintext,
                        fingerprint: fingerprint(&key.cert),
                    });
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    Err(first_error.unwrap_or(CryptoError::NoKey))
}

/// What decryption needs from an EnvelopedData.
struct Envelope {
    recipients: Vec<Recipient>,
    content_algorithm: AlgorithmIdentifierOwned,
    ciphertext: Vec<u8>,
}

/// The DER elements one after another in `bytes`, at most `max` of them.
fn elements(bytes: &[u8], max: usize) -> Result<Vec<AnyRef<'_>>, CryptoError> {
    let mut reader = SliceReader::new(bytes).map_err(malformed)?;
    let mut out = Vec::new();
    while !reader.is_finished() {
        if out.len() == max {
            return Err(malformed(format!("more than {max} elements")));
        }
        out.push(AnyRef::decode(&mut reader).map_err(malformed)?);
    }
    Ok(out)
}

impl Envelope {
    /// Reads the parts of an EnvelopedData that decryption uses. The structure is walked
    /// by hand rather than decoded whole with cms's `EnvelopedData`, for three reasons:
    /// a BER `[0] IMPLICIT` encryptedContent stays constructed after [`ber::to_der`] and
    /// der would refuse it; decoding a SET sorts it (quadratic in an attacker's hands);
    /// and one RecipientInfo of a kind we cannot read must not hide ours.
    fn parse(message: &[u8]) -> Result<Self, CryptoError> {
        if message.len() > MAX_MESSAGE {
            return Err(malformed(format!(
                "message of {} bytes is over the {MAX_MESSAGE}-byte limit",
                message.len()
            )));
        }
        let der = ber::to_der(message).map_err(|e| malformed(format!("not CMS: {e}")))?;
        let info = ContentInfo::from_der(&der)
            .map_err(|e| malformed(format!("not a CMS ContentInfo: {e}")))?;
        drop(der);
        match info.content_type {
            rfc5911::ID_ENVELOPED_DATA => {}
            rfc5911::ID_CT_AUTH_ENVELOPED_DATA => {
                return Err(malformed(
                    "AuthEnvelopedData (AES-GCM or ChaCha20-Poly1305 content) is not supported",
                ));
            }
            rfc5911::ID_SIGNED_DATA => {
                return Err(malformed(
                    "signed-data, not enveloped-data (the signature layer is outside)",
                ));
            }
            other => {
                return Err(malformed(format!(
                    "CMS content type {other} is not enveloped-data"
                )));
            }
        }
        if info.content.tag() != Tag::Sequence {
            return Err(malformed("EnvelopedData is not a SEQUENCE"));
        }
        // version, originatorInfo?, recipientInfos, encryptedContentInfo, unprotectedAttrs?
        let fields = elements(info.content.value(), 5)?;
        if fields.first().map(Tagged::tag) != Some(Tag::Integer) {
            return Err(malformed("EnvelopedData without a version"));
        }
        let set = fields
            .iter()
            .position(|f| f.tag() == Tag::Set)
            .ok_or_else(|| malformed("EnvelopedData without RecipientInfos"))?;
        let eci = fields
            .get(set + 1)
            .filter(|f| f.tag() == Tag::Sequence)
            .ok_or_else(|| malformed("EnvelopedData without EncryptedContentInfo"))?;

        let recipients: Vec<Recipient> = elements(fields[set].value(), MAX_RECIPIENT_INFOS)?
            .iter()
            .filter_map(Recipient::parse)
            .collect();
        if recipients.is_empty() {
            return Err(malformed("no readable RecipientInfo"));
        }

        // contentType, contentEncryptionAlgorithm, [0] IMPLICIT encryptedContent
        let eci = elements(eci.value(), 3)?;
        let content_algorithm = eci
            .get(1)
            .and_then(|alg| AlgorithmIdentifierOwned::from_der(&alg.to_der().ok()?).ok())
            .ok_or_else(|| malformed("EncryptedContentInfo without an algorithm"))?;
        let primitive = Tag::ContextSpecific {
            constructed: false,
            number: TagNumber::N0,
        };
        let constructed = Tag::ContextSpecific {
            constructed: true,
            number: TagNumber::N0,
        };
        let ciphertext = match eci.get(2) {
            Some(content) if content.tag() == primitive => content.value().to_vec(),
            // BER's segmented form: OCTET STRING pieces, already primitive after to_der.
            Some(content) if content.tag() == constructed => {
                ber::primitive_contents(content.value()).map_err(malformed)?
            }
            Some(_) => return Err(malformed("encryptedContent of the wrong type")),
            None => return Err(malformed("detached encrypted content is not supported")),
        };
        Ok(Envelope {
            recipients,
            content_algorithm,
            ciphertext,
        })
    }

    /// The places in this message where `cert`'s key may find the content key.
    fn slots_for<'a>(&'a self, cert: &'a Certificate) -> impl Iterator<Item = Slot<'a>> + 'a {
        self.recipients.iter().flat_map(move |recipient| {
            let found: Vec<Slot<'a>> = match recipient {
                Recipient::Ktri(ktri) if ktri_names(&ktri.rid, cert) => vec![Slot::Ktri(ktri)],
                Recipient::Kari(kari) => kari
                    .keys
                    .iter()
                    .filter(|(rid, _)| rid.names(cert))
                    .map(|(_, wrapped)| Slot::Kari(kari, wrapped))
                    .collect(),
                _ => Vec::new(),
            };
            found
        })
    }
}

/// A RecipientInfo of a kind we can open.
enum Recipient {
    Ktri(KeyTransRecipientInfo),
    Kari(Kari),
}

impl Recipient {
    /// `None` for kinds we do not open (KEK, password, other) and for ones we cannot read.
    fn parse(element: &AnyRef<'_>) -> Option<Self> {
        let kari = Tag::ContextSpecific {
            constructed: true,
            number: TagNumber::N1,
        };
        if element.tag() == Tag::Sequence {
            KeyTransRecipientInfo::from_der(&element.to_der().ok()?)
                .ok()
                .map(Recipient::Ktri)
        } else if element.tag() == kari {
            Kari::parse(element.value()).map(Recipient::Kari)
        } else {
            None
        }
    }
}

/// The parts of a KeyAgreeRecipientInfo (RFC 5652 §6.2.2) that decryption uses.
///
/// Read by hand because cms 0.2.3's `KeyAgreeRecipientIdentifier` cannot decode the
/// `rKeyId` alternative at all: it declares `[0] IMPLICIT RecipientKeyIdentifier`
/// primitive, while a SEQUENCE under an implicit tag is constructed, and der then
/// refuses either form. OpenSSL's `-keyid` sends that alternative.
struct Kari {
    originator: OriginatorIdentifierOrKey,
    ukm: Option<Vec<u8>>,
    key_enc_alg: AlgorithmIdentifierOwned,
    /// recipientEncryptedKeys: who, and the wrapped content key.
    keys: Vec<(KariRecipient, Vec<u8>)>,
}

/// KeyAgreeRecipientIdentifier.
enum KariRecipient {
    IssuerAndSerialNumber(IssuerAndSerialNumber),
    KeyId(SubjectKeyIdentifier),
}

impl KariRecipient {
    fn names(&self, cert: &Certificate) -> bool {
        match self {
            KariRecipient::IssuerAndSerialNumber(ias) => issued_as(ias, cert),
            KariRecipient::KeyId(ski) => has_key_id(ski, cert),
        }
    }
}

impl Kari {
    /// `value`: the contents of the `[1]` KeyAgreeRecipientInfo.
    fn parse(value: &[u8]) -> Option<Self> {
        let explicit = |n| Tag::ContextSpecific {
            constructed: true,
            number: n,
        };
        // version, [0] originator, [1] ukm?, keyEncryptionAlgorithm, recipientEncryptedKeys
        let fields = elements(value, 5).ok()?;
        let mut fields = fields.iter();
        if fields.next()?.tag() != Tag::Integer {
            return None;
        }
        let originator = fields
            .next()
            .filter(|f| f.tag() == explicit(TagNumber::N0))?;
        let originator = OriginatorIdentifierOrKey::from_der(originator.value()).ok()?;
        let mut next = fields.next()?;
        let mut ukm = None;
        if next.tag() == explicit(TagNumber::N1) {
            ukm = Some(OctetString::from_der(next.value()).ok()?.into_bytes());
            next = fields.next()?;
        }
        let key_enc_alg = AlgorithmIdentifierOwned::from_der(&next.to_der().ok()?).ok()?;
        let encrypted_keys = fields.next().filter(|f| f.tag() == Tag::Sequence)?;
        let mut keys = Vec::new();
        for rek in elements(encrypted_keys.value(), MAX_KARI_KEYS).ok()? {
            let [rid, wrapped] = elements(rek.value(), 2).ok()?.try_into().ok()?;
            let rid = if rid.tag() == Tag::Sequence {
                KariRecipient::IssuerAndSerialNumber(
                    IssuerAndSerialNumber::from_der(&rid.to_der().ok()?).ok()?,
                )
            } else if rid.tag() == explicit(TagNumber::N0) {
                // RecipientKeyIdentifier: subjectKeyIdentifier, date?, other?
                let key_id = *elements(rid.value(), 3).ok()?.first()?;
                KariRecipient::KeyId(SubjectKeyIdentifier::from_der(&key_id.to_der().ok()?).ok()?)
            } else {
                return None;
            };
            if wrapped.tag() != Tag::OctetString {
                return None;
            }
            keys.push((rid, wrapped.value().to_vec()));
        }
        Some(Kari {
            originator,
            ukm,
            key_enc_alg,
            keys,
        })
    }
}

fn issued_as(ias: &IssuerAndSerialNumber, cert: &Certificate) -> bool {
    ias.issuer == cert.tbs_certificate.issuer
        && ias.serial_number == cert.tbs_certificate.serial_number
}

fn has_key_id(ski: &SubjectKeyIdentifier, cert: &Certificate) -> bool {
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|ext| ext.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER)
        .any(|ext| {
            SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes()).is_ok_and(|own| own == *ski)
        })
}

fn ktri_names(rid: &RecipientIdentifier, cert: &Certificate) -> bool {
    match rid {
        RecipientIdentifier::IssuerAndSerialNumber(ias) => issued_as(ias, cert),
        RecipientIdentifier::SubjectKeyIdentifier(ski) => has_key_id(ski, cert),
    }
}

/// One wrapped copy of the content key that names our certificate.
enum Slot<'a> {
    Ktri(&'a KeyTransRecipientInfo),
    Kari(&'a Kari, &'a [u8]),
}

impl Slot<'_> {
    /// The content key for `cipher`, unwrapped with `key`.
    fn unwrap(
        &self,
        key: &SmimeKey,
        cipher: &ContentCipher,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        match self {
            Slot::Ktri(ktri) => {
                let padding = RsaPadding::from_algorithm(&ktri.key_enc_alg)?;
                match rsa_decrypt(&key.private_key, &padding, ktri.enc_key.as_bytes())? {
                    Some(content_key) if content_key.len() == cipher.key_len() => Ok(content_key),
                    // RFC 3218 §2.3: a failed unwrap goes on with a random key, so that a
                    // padding error looks like any other wrong key (Bleichenbacher, Marvin).
                    _ => {
                        let mut random = Zeroizing::new(vec![0; cipher.key_len()]);
                        OsRng.fill_bytes(&mut random);
                        Ok(random)
                    }
                }
            }
            Slot::Kari(kari, wrapped) => kari_unwrap(kari, wrapped, key, cipher.key_len()),
        }
    }
}

/// The content key from a KeyAgreeRecipientInfo (RFC 5753, ephemeral-static ECDH).
fn kari_unwrap(
    kari: &Kari,
    wrapped: &[u8],
    key: &SmimeKey,
    key_len: usize,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let OriginatorIdentifierOrKey::OriginatorKey(originator) = &kari.originator else {
        return Err(malformed(
            "static-static ECDH (an originator certificate) is not supported",
        ));
    };
    let scheme = &kari.key_enc_alg.oid;
    let hash = kdf_hash(scheme)
        .ok_or_else(|| malformed(format!("unsupported key agreement algorithm {scheme}")))?;
    let wrap = kari
        .key_enc_alg
        .parameters
        .as_ref()
        .and_then(|p| AlgorithmIdentifierOwned::from_der(&p.to_der().ok()?).ok())
        .ok_or_else(|| malformed("key agreement without a key-wrap algorithm"))?;
    let kek_len = wrap_key_len(&wrap.oid)
        .ok_or_else(|| malformed(format!("unsupported key-wrap algorithm {}", wrap.oid)))?;
    let spki = &key.cert.tbs_certificate.subject_public_key_info;
    let curve = (spki.algorithm.oid == rfc5912::ID_EC_PUBLIC_KEY)
        .then(|| Curve::of(&spki.algorithm))
        .flatten()
        .ok_or_else(|| {
            CryptoError::Key(format!(
                "certificate {} is not an EC P-256/P-384 key",
                fingerprint(&key.cert)
            ))
        })?;
    let ephemeral = originator
        .public_key
        .as_bytes()
        .ok_or_else(|| malformed("originator key is not whole bytes"))?;
    let z = curve
        .agree_static(&key.private_key, ephemeral)
        .map_err(|e| match e {
            Some(reason) => CryptoError::Key(reason),
            None => malformed("originator key is not a point on the recipient's curve"),
        })?;
    let ukm = kari.ukm.as_deref();
    let shared_info = ecc_cms_shared_info(&wrap, ukm, kek_len).map_err(malformed)?;
    let kek = x963_kdf(hash, &z, &shared_info, kek_len);
    aes_unwrap(&kek, wrapped)
        .filter(|content_key| content_key.len() == key_len)
        .ok_or_else(|| {
            malformed(format!(
                "the content key does not unwrap with certificate {}: wrong key or damaged message",
                fingerprint(&key.cert)
            ))
        })
}

/// RSA key transport padding, from the KeyTransRecipientInfo's algorithm.
#[derive(Debug)]
enum RsaPadding {
    Pkcs1,
    Oaep {
        hash: Hash,
        mgf_hash: Hash,
        label: Vec<u8>,
    },
}

impl RsaPadding {
    fn from_algorithm(algorithm: &AlgorithmIdentifierOwned) -> Result<Self, CryptoError> {
        match algorithm.oid {
            rfc5912::RSA_ENCRYPTION => Ok(RsaPadding::Pkcs1),
            rfc5912::ID_RSAES_OAEP => Self::oaep(algorithm.parameters.as_ref()),
            other => Err(malformed(format!(
                "unsupported key transport algorithm {other}"
            ))),
        }
    }

    /// RSAES-OAEP-params (RFC 8017 A.2.1); absent or NULL means all defaults (SHA-1).
    fn oaep(parameters: Option<&Any>) -> Result<Self, CryptoError> {
        let unsupported = |what: String| malformed(format!("RSAES-OAEP: unsupported {what}"));
        let der = match parameters {
            Some(p) if p.tag() != Tag::Null => Some(p.to_der().map_err(malformed)?),
            _ => None,
        };
        let params = match &der {
            Some(der) => rsa::pkcs1::RsaOaepParams::from_der(der)
                .map_err(|e| malformed(format!("RSAES-OAEP parameters: {e}")))?,
            None => rsa::pkcs1::RsaOaepParams::default(),
        };
        let hash = Hash::from_oid(&params.hash.oid)
            .ok_or_else(|| unsupported(format!("hash {}", params.hash.oid)))?;
        if params.mask_gen.oid != rfc5912::ID_MGF_1 {
            return Err(unsupported(format!(
                "mask generation {}",
                params.mask_gen.oid
            )));
        }
        let mgf_hash = match &params.mask_gen.parameters {
            Some(mgf) => Hash::from_oid(&mgf.oid)
                .ok_or_else(|| unsupported(format!("MGF1 hash {}", mgf.oid)))?,
            None => Hash::Sha1,
        };
        if params.p_source.oid != rfc5912::ID_P_SPECIFIED {
            return Err(unsupported(format!("label source {}", params.p_source.oid)));
        }
        let label = match &params.p_source.parameters {
            Some(label) => label
                .decode_as::<OctetStringRef<'_>>()
                .map_err(|e| malformed(format!("RSAES-OAEP label: {e}")))?
                .as_bytes()
                .to_vec(),
            None => Vec::new(),
        };
        Ok(RsaPadding::Oaep {
            hash,
            mgf_hash,
            label,
        })
    }
}

/// RSA-decrypts a wrapped content key with OpenSSL, whose PKCS#1 v1.5 and OAEP checks run
/// in constant time. `Ok(None)` when the padding does not check out; `Err` when our key
/// is unusable.
#[cfg(feature = "crypto-openssl")]
fn rsa_decrypt(
    pkcs8: &[u8],
    padding: &RsaPadding,
    wrapped: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, CryptoError> {
    use openssl::encrypt::Decrypter;
    use openssl::hash::MessageDigest;
    use openssl::pkey::{Id, PKey};
    use openssl::rsa::Padding;

    fn md(hash: Hash) -> MessageDigest {
        match hash {
            Hash::Sha1 => MessageDigest::sha1(),
            Hash::Sha224 => MessageDigest::sha224(),
            Hash::Sha256 => MessageDigest::sha256(),
            Hash::Sha384 => MessageDigest::sha384(),
            Hash::Sha512 => MessageDigest::sha512(),
        }
    }
    let internal = |e: openssl::error::ErrorStack| CryptoError::Internal(e.to_string());

    let key = PKey::private_key_from_pkcs8(pkcs8)
        .map_err(|e| CryptoError::Key(format!("private key: {e}")))?;
    if key.id() != Id::RSA {
        return Err(CryptoError::Key("not an RSA private key".into()));
    }
    let mut decrypter = Decrypter::new(&key).map_err(internal)?;
    match padding {
        RsaPadding::Pkcs1 => decrypter
            .set_rsa_padding(Padding::PKCS1)
            .map_err(internal)?,
        RsaPadding::Oaep {
            hash,
            mgf_hash,
            label,
        } => {
            decrypter
                .set_rsa_padding(Padding::PKCS1_OAEP)
                .map_err(internal)?;
            decrypter.set_rsa_oaep_md(md(*hash)).map_err(internal)?;
            decrypter.set_rsa_mgf1_md(md(*mgf_hash)).map_err(internal)?;
            if !label.is_empty() {
                decrypter.set_rsa_oaep_label(label).map_err(internal)?;
            }
        }
    }
    let mut out = Zeroizing::new(vec![0; decrypter.decrypt_len(wrapped).map_err(internal)?]);
    match decrypter.decrypt(wrapped, &mut out) {
        Ok(len) => {
            out.truncate(len);
            Ok(Some(out))
        }
        // The error stack was drained into the (dropped) ErrorStack.
        Err(_) => Ok(None),
    }
}

/// RSA-decrypts a wrapped content key with rsa 0.9, for builds without OpenSSL.
///
/// Timing advisory RUSTSEC-2023-0071 ("Marvin"): rsa 0.9's decryption is not constant
/// time, so a peer who can measure how long the gateway takes may, over very many
/// messages, learn enough to decrypt one. Blinding and the random-key fallback in
/// [`Slot::unwrap`] narrow it; the `crypto-openssl` build closes it.
#[cfg(not(feature = "crypto-openssl"))]
fn rsa_decrypt(
    pkcs8: &[u8],
    padding: &RsaPadding,
    wrapped: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, CryptoError> {
    use rsa::sha2::digest::DynDigest;

    fn boxed(hash: Hash) -> Box<dyn DynDigest + Send + Sync> {
        match hash {
            Hash::Sha1 => Box::new(sha1::Sha1::default()),
            Hash::Sha224 => Box::new(sha2::Sha224::default()),
            Hash::Sha256 => Box::new(sha2::Sha256::default()),
            Hash::Sha384 => Box::new(sha2::Sha384::default()),
            Hash::Sha512 => Box::new(sha2::Sha512::default()),
        }
    }

    let key = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8)
        .map_err(|e| CryptoError::Key(format!("RSA private key: {e}")))?;
    let result = match padding {
        RsaPadding::Pkcs1 => key.decrypt_blinded(&mut OsRng, rsa::Pkcs1v15Encrypt, wrapped),
        RsaPadding::Oaep {
            hash,
            mgf_hash,
            label,
        } => {
            // rsa 0.9 takes the label as a String.
            let label = match label.is_empty() {
                true => None,
                false => Some(String::from_utf8(label.clone()).map_err(|_| {
                    malformed("RSAES-OAEP label that is not UTF-8 (needs the OpenSSL build)")
                })?),
            };
            let oaep = rsa::Oaep {
                digest: boxed(*hash),
                mgf_digest: boxed(*mgf_hash),
                label,
            };
            key.decrypt_blinded(&mut OsRng, oaep, wrapped)
        }
    };
    Ok(result.ok().map(Zeroizing::new))
}

// ---------------------------------------------------------------------------------------
// SCKM import
// ---------------------------------------------------------------------------------------

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
    let mut found = Found::default();
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
struct Found {
    certs: Vec<Certificate>,
    keys: Vec<Zeroizing<Vec<u8>>>,
}

impl Found {
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
                    private_key: key,
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
        let body_end = after
            .find(&end_line)
            .ok_or_else(|| Refusal(format!("malformed PEM: no END line for {label}")))?;
        let body = &after[label_end + "-----".len()..body_end];
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

fn read_pem(bytes: &[u8], passphrase: Option<&str>, found: &mut Found) -> Result<(), Refusal> {
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
fn read_pkcs12(der: &[u8], passphrase: Option<&str>, found: &mut Found) -> Result<(), Refusal> {
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
fn read_pkcs12(_: &[u8], _: Option<&str>, _: &mut Found) -> Result<(), Refusal> {
    Err(Refusal(
        "this build has no PKCS#12 support (it needs the crypto-openssl feature); export the \
         certificate and its private key as PEM and import that"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    //! Checked against the other side's real tool: the `openssl` CLI makes the keys (in a
    //! temporary directory, at test time), opens what we encrypt and encrypts what we
    //! open. The corpus under `testdata/corpus/smime/` holds messages from real clients.

    use std::path::{Path, PathBuf};
    use std::process::Command;

    use base64::Engine;
    use tempfile::TempDir;

    use super::*;

    /// A MIME entity with 8-bit text and CRLF line ends, which must survive exactly.
    const ENTITY: &[u8] = b"Content-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: 8bit\r\n\r\n\
        Gr\xc3\xbc\xc3\x9fe aus dem Gateway.\r\n.\r\nFrom the gateway, with a dot line.\r\n";

    fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl CLI runs");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A party made by `openssl req`: `NAME.cert.pem` and `NAME.key.pem` (PKCS#8).
    struct Party {
        cert: PathBuf,
        key: PathBuf,
    }

    impl Party {
        /// `kind` is "rsa", "P-256" or "P-384".
        fn new(dir: &Path, name: &str, kind: &str, key_usage: &str) -> Party {
            let cert = dir.join(format!("{name}.cert.pem"));
            let key = dir.join(format!("{name}.key.pem"));
            let mut args = vec!["req", "-x509", "-nodes", "-days", "30", "-subj"];
            let subject = format!("/CN={name}");
            let san = format!("subjectAltName=email:{name}@example.com");
            let usage = format!("keyUsage=critical,{key_usage}");
            let curve = format!("ec_paramgen_curve:{kind}");
            args.push(&subject);
            match kind {
                "rsa" => args.extend(["-newkey", "rsa:2048"]),
                _ => args.extend(["-newkey", "ec", "-pkeyopt", &curve]),
            }
            args.extend(["-addext", &san, "-addext", &usage]);
            args.extend([
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ]);
            openssl(dir, &args);
            Party { cert, key }
        }

        fn encryption(dir: &Path, name: &str, kind: &str) -> Party {
            let usage = if kind == "rsa" {
                "keyEncipherment"
            } else {
                "keyAgreement"
            };
            Party::new(dir, name, kind, usage)
        }

        fn certificate(&self) -> Certificate {
            Certificate::load_pem_chain(&std::fs::read(&self.cert).unwrap())
                .unwrap()
                .remove(0)
        }

        fn sckm(&self) -> SmimeKey {
            let mut pem = std::fs::read(&self.cert).unwrap();
            pem.extend(std::fs::read(&self.key).unwrap());
            let mut keys = import_sckm(&pem, None).expect("imports");
            assert_eq!(keys.len(), 1);
            keys.remove(0)
        }

        /// `openssl cms -decrypt` of DER `message`.
        fn openssl_decrypt(&self, dir: &Path, message: &[u8]) -> Vec<u8> {
            let path = dir.join("for-openssl.p7m");
            std::fs::write(&path, message).unwrap();
            openssl(
                dir,
                &[
                    "cms",
                    "-decrypt",
                    "-binary",
                    "-inform",
                    "DER",
                    "-in",
                    path.to_str().unwrap(),
                    "-recip",
                    self.cert.to_str().unwrap(),
                    "-inkey",
                    self.key.to_str().unwrap(),
                ],
            )
        }

        /// `openssl cms -encrypt` of [`ENTITY`] to this party with `extra` options,
        /// returned as CMS bytes (PEM and S/MIME output are unwrapped).
        fn openssl_encrypt(&self, dir: &Path, extra: &[&str]) -> Vec<u8> {
            let input = dir.join("entity.txt");
            std::fs::write(&input, ENTITY).unwrap();
            // -keyopt applies to the -recip before it.
            let mut args = vec!["cms", "-encrypt", "-binary", "-in", input.to_str().unwrap()];
            args.extend(["-recip", self.cert.to_str().unwrap()]);
            args.extend(extra);
            let out = openssl(dir, &args);
            if out.starts_with(b"-----BEGIN") {
                pem_body(&out)
            } else if extra.contains(&"SMIME") {
                mime_body(&out)
            } else {
                out
            }
        }
    }

    fn pem_body(pem: &[u8]) -> Vec<u8> {
        let text: String = String::from_utf8_lossy(pem)
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    }

    /// The base64 body of a single-part application/pkcs7-mime message, decoded.
    fn mime_body(eml: &[u8]) -> Vec<u8> {
        let start = memchr::memmem::find(eml, b"\r\n\r\n")
            .map(|p| p + 4)
            .or_else(|| memchr::memmem::find(eml, b"\n\n").map(|p| p + 2))
            .expect("a header/body separator");
        let text: Vec<u8> = eml[start..]
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("a base64 body")
    }

    fn assert_malformed<T: fmt::Debug>(result: Result<T, CryptoError>, needle: &str) {
        match result {
            Err(CryptoError::Malformed(reason)) => assert!(
                reason.contains(needle),
                "expected a reason with {needle:?}, got {reason:?}"
            ),
            other => panic!("expected Malformed({needle:?}), got {other:?}"),
        }
    }

    #[test]
    fn openssl_opens_what_we_encrypt_to_rsa_and_ec_recipients_at_once() {
        let dir = TempDir::new().unwrap();
        let parties = [
            Party::encryption(dir.path(), "rsa", "rsa"),
            Party::encryption(dir.path(), "p256", "P-256"),
            Party::encryption(dir.path(), "p384", "P-384"),
        ];
        let certs: Vec<Certificate> = parties.iter().map(Party::certificate).collect();
        let message = encrypt(ENTITY, &certs).unwrap();
        assert_eq!(&message[..2], &[0x30, 0x82], "definite-length DER");
        for party in &parties {
            assert_eq!(party.openssl_decrypt(dir.path(), &message), ENTITY);
            let opened = decrypt(&message, &[party.sckm()]).unwrap();
            assert_eq!(opened.plaintext, ENTITY);
            assert_eq!(opened.fingerprint, fingerprint(&party.certificate()));
        }
    }

    #[test]
    fn a_ten_mib_entity_survives_both_ways() {
        let dir = TempDir::new().unwrap();
        let bob = Party::encryption(dir.path(), "bob", "rsa");
        let mut entity = b"Content-Type: application/octet-stream\r\n\r\n".to_vec();
        let mut noise = vec![0u8; 10 * 1024 * 1024];
        OsRng.fill_bytes(&mut noise);
        entity.extend(noise);
        let message = encrypt(&entity, &[bob.certificate()]).unwrap();
        assert!(bob.openssl_decrypt(dir.path(), &message) == entity);
        assert!(decrypt(&message, &[bob.sckm()]).unwrap().plaintext == entity);
        // And in BER, as a streaming client sends it.
        std::fs::write(dir.path().join("entity.txt"), &entity).unwrap();
        let input = dir.path().join("entity.txt");
        let ber = openssl(
            dir.path(),
            &[
                "cms",
                "-encrypt",
                "-binary",
                "-stream",
                "-aes256",
                "-outform",
                "DER",
                "-in",
                input.to_str().unwrap(),
                bob.cert.to_str().unwrap(),
            ],
        );
        assert_eq!(&ber[..2], &[0x30, 0x80]);
        assert!(decrypt(&ber, &[bob.sckm()]).unwrap().plaintext == entity);
    }

    #[test]
    fn encrypting_a_duplicate_recipient_once_and_refusing_a_signing_certificate() {
        let dir = TempDir::new().unwrap();
        let rsa = Party::encryption(dir.path(), "rsa", "rsa");
        let cert = rsa.certificate();
        let message = encrypt(ENTITY, &[cert.clone(), cert.clone()]).unwrap();
        assert_eq!(decrypt(&message, &[rsa.sckm()]).unwrap().plaintext, ENTITY);

        let signer = Party::new(dir.path(), "signer", "rsa", "digitalSignature");
        assert!(matches!(
            encrypt(ENTITY, &[signer.certificate()]),
            Err(CryptoError::Key(reason)) if reason.contains("signing only")
        ));
        assert!(matches!(encrypt(ENTITY, &[]), Err(CryptoError::Key(_))));
    }

    #[test]
    fn we_open_what_openssl_encrypts_to_rsa() {
        let dir = TempDir::new().unwrap();
        let bob = Party::encryption(dir.path(), "bob", "rsa");
        let key = bob.sckm();
        let variants: &[&[&str]] = &[
            &["-aes256", "-outform", "DER"],
            &["-aes128", "-outform", "DER"],
            &["-aes192", "-outform", "DER"],
            &["-des3", "-outform", "DER"],
            // Indefinite-length BER with a segmented encryptedContent.
            &["-aes256", "-stream", "-outform", "PEM"],
            &["-aes256", "-stream", "-outform", "SMIME"],
            &["-aes256", "-stream", "-outform", "DER"],
            // RSAES-OAEP, SHA-1 by default and SHA-256 on request.
            &[
                "-aes256",
                "-outform",
                "DER",
                "-keyopt",
                "rsa_padding_mode:oaep",
            ],
            &[
                "-aes256",
                "-outform",
                "DER",
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ],
            &[
                "-aes256",
                "-stream",
                "-outform",
                "PEM",
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
                "-keyopt",
                "rsa_mgf1_md:sha256",
            ],
            // Recipient named by subject key identifier instead of issuer and serial.
            &["-aes256", "-outform", "DER", "-keyid"],
        ];
        for variant in variants {
            let message = bob.openssl_encrypt(dir.path(), variant);
            if variant.contains(&"-stream") {
                assert_eq!(&message[..2], &[0x30, 0x80], "{variant:?} gives BER");
            }
            let opened = decrypt(&message, std::slice::from_ref(&key))
                .unwrap_or_else(|e| panic!("{variant:?}: {e}"));
            assert_eq!(opened.plaintext, ENTITY, "{variant:?}");
        }
    }

    #[test]
    fn we_open_what_openssl_encrypts_to_ec() {
        let dir = TempDir::new().unwrap();
        for curve in ["P-256", "P-384"] {
            let fran = Party::encryption(dir.path(), "fran", curve);
            let key = fran.sckm();
            let variants: &[&[&str]] = &[
                // OpenSSL's default KDF is the SHA-1 one.
                &["-aes256", "-outform", "DER"],
                &[
                    "-aes128",
                    "-outform",
                    "DER",
                    "-keyopt",
                    "ecdh_kdf_md:sha256",
                ],
                &[
                    "-aes256",
                    "-outform",
                    "DER",
                    "-keyopt",
                    "ecdh_kdf_md:sha384",
                ],
                &[
                    "-aes256",
                    "-stream",
                    "-outform",
                    "PEM",
                    "-keyopt",
                    "ecdh_kdf_md:sha512",
                ],
                &[
                    "-aes256",
                    "-outform",
                    "DER",
                    "-keyopt",
                    "ecdh_cofactor_mode:1",
                ],
                &["-aes192", "-outform", "DER", "-keyid"],
            ];
            for variant in variants {
                let message = fran.openssl_encrypt(dir.path(), variant);
                let opened = decrypt(&message, std::slice::from_ref(&key))
                    .unwrap_or_else(|e| panic!("{curve} {variant:?}: {e}"));
                assert_eq!(opened.plaintext, ENTITY, "{curve} {variant:?}");
            }
        }
    }

    #[test]
    fn the_first_matching_key_opens_and_strangers_get_no_key() {
        let dir = TempDir::new().unwrap();
        let alice = Party::encryption(dir.path(), "alice", "rsa");
        let bob = Party::encryption(dir.path(), "bob", "P-256");
        let carol = Party::encryption(dir.path(), "carol", "rsa");
        let message = encrypt(ENTITY, &[bob.certificate()]).unwrap();
        let opened = decrypt(&message, &[alice.sckm(), bob.sckm()]).unwrap();
        assert_eq!(opened.fingerprint, fingerprint(&bob.certificate()));
        assert!(matches!(
            decrypt(&message, &[alice.sckm(), carol.sckm()]),
            Err(CryptoError::NoKey)
        ));
        assert!(matches!(decrypt(&message, &[]), Err(CryptoError::NoKey)));
    }

    #[test]
    fn a_key_that_matches_by_name_but_not_by_secret_is_a_clean_error() {
        // Two certificates with the same issuer and serial (self-signed, same subject),
        // different keys: the name matches and the unwrap must fail quietly.
        let dir = TempDir::new().unwrap();
        let real = Party::encryption(dir.path(), "same", "rsa");
        let message = encrypt(ENTITY, &[real.certificate()]).unwrap();
        let other_dir = TempDir::new().unwrap();
        let impostor = Party::encryption(other_dir.path(), "same", "rsa");
        let mut key = impostor.sckm();
        key.cert = real.certificate();
        assert_malformed(decrypt(&message, &[key]), "wrong key");
    }

    #[test]
    fn unsupported_algorithms_are_clean_errors() {
        let dir = TempDir::new().unwrap();
        let bob = Party::encryption(dir.path(), "bob", "rsa");
        let key = bob.sckm();
        let camellia = bob.openssl_encrypt(dir.path(), &["-camellia256", "-outform", "DER"]);
        assert_malformed(
            decrypt(&camellia, std::slice::from_ref(&key)),
            "unsupported content",
        );
        let gcm = bob.openssl_encrypt(dir.path(), &["-aes-256-gcm", "-outform", "DER"]);
        assert_malformed(
            decrypt(&gcm, std::slice::from_ref(&key)),
            "AuthEnvelopedData",
        );
    }

    /// DER TLV with a definite length, for hand-made inputs.
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = body.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = (len as u32).to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (4 - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(body);
        out
    }

    fn enveloped_content_info(enveloped_data_body: &[u8]) -> Vec<u8> {
        let oid = rfc5911::ID_ENVELOPED_DATA.to_der().unwrap();
        let explicit = tlv(0xa0, &tlv(0x30, enveloped_data_body));
        tlv(0x30, &[oid, explicit].concat())
    }

    #[test]
    fn garbage_truncation_and_nesting_are_malformed_not_panics() {
        let dir = TempDir::new().unwrap();
        let bob = Party::encryption(dir.path(), "bob", "rsa");
        let key = bob.sckm();
        let keys = std::slice::from_ref(&key);

        for garbage in [
            &b""[..],
            b"\x00",
            b"\x30",
            b"\x30\x80",
            b"hello, this is not CMS at all",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x89\x01\x02\x03\x04\x05\x06\x07\x08\x09",
        ] {
            assert!(
                matches!(decrypt(garbage, keys), Err(CryptoError::Malformed(_))),
                "{garbage:?}"
            );
        }
        let deep: Vec<u8> = std::iter::repeat_n([0x30u8, 0x80], 200).flatten().collect();
        assert_malformed(decrypt(&deep, keys), "deeper");
        let mut deep_inside = enveloped_content_info(&[]);
        deep_inside.truncate(deep_inside.len() - 2);
        deep_inside.extend(std::iter::repeat_n([0x30u8, 0x80], 100).flatten());
        assert!(matches!(
            decrypt(&deep_inside, keys),
            Err(CryptoError::Malformed(_))
        ));

        // A RecipientInfos SET of 2000 entries: refused before anything is decoded.
        let version = tlv(0x02, &[0]);
        let many = tlv(0x31, &tlv(0x02, &[1]).repeat(2000));
        let eci = tlv(0x30, &rfc5911::ID_DATA.to_der().unwrap());
        let huge = enveloped_content_info(&[version.clone(), many, eci.clone()].concat());
        assert_malformed(decrypt(&huge, keys), "more than");
        // A SET of nothing we can read.
        let unreadable = tlv(0x31, &tlv(0x02, &[1]).repeat(3));
        let none = enveloped_content_info(&[version, unreadable, eci].concat());
        assert_malformed(decrypt(&none, keys), "no readable RecipientInfo");

        // Every truncation of a real message, DER and BER, and every single-byte flip.
        let der = encrypt(ENTITY, &[bob.certificate()]).unwrap();
        let ber = bob.openssl_encrypt(dir.path(), &["-aes128", "-stream", "-outform", "PEM"]);
        for message in [&der, &ber] {
            for len in 0..message.len() {
                assert!(
                    decrypt(&message[..len], keys).is_err(),
                    "truncated to {len}"
                );
            }
            for pos in 0..message.len() {
                let mut flipped = message.clone();
                flipped[pos] ^= 0xa5;
                // Any result but a panic; a flip in the ciphertext can still decrypt.
                let _ = decrypt(&flipped, keys);
            }
        }
    }

    #[test]
    fn signed_data_is_not_enveloped_data() {
        let dir = TempDir::new().unwrap();
        let alice = Party::new(dir.path(), "alice", "rsa", "digitalSignature");
        let input = dir.path().join("entity.txt");
        std::fs::write(&input, ENTITY).unwrap();
        let signed = openssl(
            dir.path(),
            &[
                "cms",
                "-sign",
                "-binary",
                "-nodetach",
                "-outform",
                "DER",
                "-in",
                input.to_str().unwrap(),
                "-signer",
                alice.cert.to_str().unwrap(),
                "-inkey",
                alice.key.to_str().unwrap(),
            ],
        );
        assert_malformed(decrypt(&signed, &[]), "signed-data");
    }

    // -----------------------------------------------------------------------------------
    // SCKM import
    // -----------------------------------------------------------------------------------

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn refusal(result: Result<Vec<SmimeKey>, Refusal>) -> String {
        match result {
            Err(Refusal(reason)) => reason,
            Ok(keys) => panic!("expected a refusal, got {keys:?}"),
        }
    }

    #[test]
    fn import_accepts_pem_certificate_with_each_key_format() {
        let dir = TempDir::new().unwrap();
        let d = dir.path();
        let rsa = Party::encryption(d, "rsa", "rsa");
        let ec = Party::encryption(d, "ec", "P-384");
        let cert_fpr = fingerprint(&rsa.certificate());

        // PKCS#8, key before the certificate, with a CA-like extra certificate around.
        let other = Party::encryption(d, "other", "rsa");
        let file = [read(&rsa.key), read(&other.cert), read(&rsa.cert)].concat();
        let keys = import_sckm(&file, None).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(fingerprint(&keys[0].cert), cert_fpr);

        // PKCS#1 "RSA PRIVATE KEY" and SEC1 "EC PRIVATE KEY" become PKCS#8.
        let pkcs1 = openssl(
            d,
            &["rsa", "-traditional", "-in", rsa.key.to_str().unwrap()],
        );
        assert!(pkcs1.starts_with(b"-----BEGIN RSA PRIVATE KEY"));
        let keys = import_sckm(&[read(&rsa.cert), pkcs1].concat(), None).unwrap();
        assert_eq!(
            keys[0].private_key.as_slice(),
            rsa.sckm().private_key.as_slice()
        );
        let sec1 = openssl(d, &["ec", "-in", ec.key.to_str().unwrap()]);
        assert!(sec1.starts_with(b"-----BEGIN EC PRIVATE KEY"));
        let keys = import_sckm(&[read(&ec.cert), sec1].concat(), None).unwrap();
        // The imported EC key decrypts.
        let message = encrypt(ENTITY, &[ec.certificate()]).unwrap();
        assert_eq!(decrypt(&message, &keys).unwrap().plaintext, ENTITY);

        // Encrypted PKCS#8: needs the passphrase, and the right one.
        let encrypted = openssl(
            d,
            &[
                "pkcs8",
                "-topk8",
                "-v2",
                "aes256",
                "-passout",
                "pass:pw",
                "-in",
                rsa.key.to_str().unwrap(),
            ],
        );
        let file = [read(&rsa.cert), encrypted].concat();
        assert_eq!(import_sckm(&file, Some("pw")).unwrap().len(), 1);
        let reason = refusal(import_sckm(&file, None));
        assert!(
            reason.contains("--passphrase-file") && reason.contains(&cert_fpr),
            "{reason}"
        );
        let reason = refusal(import_sckm(&file, Some("wrong")));
        assert!(reason.contains("wrong passphrase"), "{reason}");

        // OpenSSL's legacy encrypted PEM gets advice, not a parse error.
        let legacy = openssl(
            d,
            &[
                "rsa",
                "-traditional",
                "-aes256",
                "-passout",
                "pass:pw",
                "-in",
                rsa.key.to_str().unwrap(),
            ],
        );
        let reason = refusal(import_sckm(&[read(&rsa.cert), legacy].concat(), Some("pw")));
        assert!(reason.contains("pkcs8 -topk8"), "{reason}");
    }

    #[test]
    fn import_refuses_signing_only_mismatched_addressless_and_incomplete_files() {
        let dir = TempDir::new().unwrap();
        let d = dir.path();
        let signer = Party::new(d, "signer", "rsa", "digitalSignature");
        let reason = refusal(import_sckm(
            &[read(&signer.cert), read(&signer.key)].concat(),
            None,
        ));
        assert!(
            reason.contains("only digital signature")
                && reason.contains(&fingerprint(&signer.certificate())),
            "{reason}"
        );

        let alice = Party::encryption(d, "alice", "rsa");
        let bob = Party::encryption(d, "bob", "rsa");
        let reason = refusal(import_sckm(
            &[read(&alice.cert), read(&bob.key)].concat(),
            None,
        ));
        assert!(
            reason.contains("does not match")
                && reason.contains(&fingerprint(&alice.certificate())),
            "{reason}"
        );

        let nameless_cert = d.join("nameless.cert.pem");
        let nameless_key = d.join("nameless.key.pem");
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-nodes",
                "-days",
                "30",
                "-subj",
                "/CN=nobody",
                "-newkey",
                "rsa:2048",
                "-keyout",
                nameless_key.to_str().unwrap(),
                "-out",
                nameless_cert.to_str().unwrap(),
            ],
        );
        let reason = refusal(import_sckm(
            &[read(&nameless_cert), read(&nameless_key)].concat(),
            None,
        ));
        assert!(reason.contains("no e-mail address"), "{reason}");

        assert!(refusal(import_sckm(&read(&alice.cert), None)).contains("without its private key"));
        assert!(refusal(import_sckm(&read(&alice.key), None)).contains("without its certificate"));
        let der_cert = openssl(
            d,
            &[
                "x509",
                "-outform",
                "DER",
                "-in",
                alice.cert.to_str().unwrap(),
            ],
        );
        assert!(refusal(import_sckm(&der_cert, None)).contains("without its private key"));
        assert!(import_sckm(b"garbage", None).is_err());
        assert!(import_sckm(&vec![b'A'; MAX_KEY_BYTES + 1], None).is_err());
    }

    #[cfg(feature = "crypto-openssl")]
    #[test]
    fn import_reads_pkcs12_with_its_passphrase_only() {
        let dir = TempDir::new().unwrap();
        let d = dir.path();
        let bob = Party::encryption(d, "bob", "P-256");
        let export = |name: &str, pass: &str, extra: &[&str]| {
            let out = d.join(name);
            let passout = format!("pass:{pass}");
            let mut args = vec![
                "pkcs12",
                "-export",
                "-in",
                bob.cert.to_str().unwrap(),
                "-inkey",
                bob.key.to_str().unwrap(),
                "-passout",
                &passout,
                "-out",
                out.to_str().unwrap(),
            ];
            args.extend(extra);
            openssl(d, &args);
            read(&out)
        };
        let p12 = export("bob.p12", "pw", &[]);
        let keys = import_sckm(&p12, Some("pw")).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(fingerprint(&keys[0].cert), fingerprint(&bob.certificate()));
        let message = encrypt(ENTITY, &[bob.certificate()]).unwrap();
        assert_eq!(decrypt(&message, &keys).unwrap().plaintext, ENTITY);

        assert!(refusal(import_sckm(&p12, None)).contains("--passphrase-file"));
        assert!(refusal(import_sckm(&p12, Some("wrong"))).contains("wrong passphrase"));

        // An empty passphrase is no protection: accepted without one.
        let open = export("open.p12", "", &[]);
        assert_eq!(import_sckm(&open, None).unwrap().len(), 1);
        // RC2-40 certificate bags, as older Windows and NSS exports have them.
        let legacy = export("legacy.p12", "pw", &["-legacy"]);
        assert_eq!(import_sckm(&legacy, Some("pw")).unwrap().len(), 1);
    }

    #[cfg(not(feature = "crypto-openssl"))]
    #[test]
    fn import_explains_that_pkcs12_needs_openssl() {
        let p12 = std::fs::read(corpus("thunderbird-nss-smime/Bob.p12")).unwrap();
        assert!(refusal(import_sckm(&p12, Some("nss"))).contains("PEM"));
    }

    // -----------------------------------------------------------------------------------
    // Corpus: messages and keys from real clients (see testdata/corpus/smime/LICENSE-NOTES.md)
    // -----------------------------------------------------------------------------------

    fn corpus(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/corpus/smime")
            .join(path)
    }

    /// An SCKM key from a PEM certificate file and a PEM key file in the corpus.
    fn corpus_key(cert: &str, key: &str) -> SmimeKey {
        let file = [read(&corpus(cert)), read(&corpus(key))].concat();
        import_sckm(&file, None)
            .unwrap_or_else(|e| panic!("{cert}: {e}"))
            .remove(0)
    }

    /// The CMS bytes of a corpus file: a bare .p7m, or the body of a .eml/.env.
    fn corpus_message(path: &str) -> Vec<u8> {
        let bytes = read(&corpus(path));
        if path.ends_with(".p7m") {
            bytes
        } else {
            mime_body(&bytes)
        }
    }

    /// What `openssl cms -decrypt` makes of a corpus message: the reference we must match.
    fn openssl_opens(path: &str, cert: &str, key: &str) -> Vec<u8> {
        let format = if path.ends_with(".p7m") {
            "DER"
        } else {
            "SMIME"
        };
        openssl(
            Path::new(env!("CARGO_MANIFEST_DIR")),
            &[
                "cms",
                "-decrypt",
                "-binary",
                "-inform",
                format,
                "-in",
                corpus(path).to_str().unwrap(),
                "-recip",
                corpus(cert).to_str().unwrap(),
                "-inkey",
                corpus(key).to_str().unwrap(),
            ],
        )
    }

    const NSS_BOB: (&str, &str) = (
        "thunderbird-nss-smime/derived/Bob.cert.pem",
        "thunderbird-nss-smime/derived/Bob.key.pem",
    );
    const FRAN: (&str, &str) = (
        "thunderbird-smime-interop/derived/Fran.cert.pem",
        "thunderbird-smime-interop/derived/Fran.key.pem",
    );
    const FRAN_EC: (&str, &str) = (
        "thunderbird-smime-interop/derived/Fran-ec.cert.pem",
        "thunderbird-smime-interop/derived/Fran-ec.key.pem",
    );
    const LAMPS_BOB: (&str, &str) = (
        "rfc9216-lamps-examples-cms/lamps-bob.encrypt.crt",
        "rfc9216-lamps-examples-cms/lamps-bob.decrypt.p8.pem",
    );
    const DRAFT_BOB: (&str, &str) = (
        "autocrypt-protected-headers/derived/bob.cert.pem",
        "autocrypt-protected-headers/derived/bob.key.pem",
    );

    #[test]
    fn corpus_messages_from_real_clients_decrypt_like_openssl() {
        let opens: &[(&str, (&str, &str))] = &[
            // NSS (Thunderbird's S/MIME engine): indefinite-length BER, AES-128, PKCS#1 v1.5.
            ("thunderbird-nss-smime/alice.env.eml", NSS_BOB),
            (
                "thunderbird-nss-smime/alice.dsig.SHA256.multipart.env.eml",
                NSS_BOB,
            ),
            (
                "thunderbird-nss-smime/alice.sig.SHA256.opaque.env.eml",
                NSS_BOB,
            ),
            // OpenSSL: RSA-OAEP (SHA-1, label, SHA-256, SHA-256 MGF1; 3DES and AES) and
            // ECDH on P-384 (SHA-256 and SHA-512 KDFs).
            ("thunderbird-smime-interop/fran-oaep_ossl.env", FRAN),
            // rsa 0.9 (the crypto-rust build) takes OAEP labels as UTF-8 only.
            #[cfg(feature = "crypto-openssl")]
            ("thunderbird-smime-interop/fran-oaep-label_ossl.env", FRAN),
            (
                "thunderbird-smime-interop/fran-oaep-sha256hash_ossl.env",
                FRAN,
            ),
            (
                "thunderbird-smime-interop/fran-oaep-sha256hash-sha256mgf_ossl.env",
                FRAN,
            ),
            (
                "thunderbird-smime-interop/fran-ec_ossl-aes128-sha256.env",
                FRAN_EC,
            ),
            (
                "thunderbird-smime-interop/fran-ec_ossl-aes256-sha512.env",
                FRAN_EC,
            ),
            // IETF samples: RSA-OAEP, and a message to Bob (RSA) and Dana (X25519).
            (
                "rfc9216-lamps-examples-cms/encryptedForBobRSAOaep.p7m",
                LAMPS_BOB,
            ),
            (
                "rfc9216-lamps-examples-cms/encryptedForBobAndDana.p7m",
                LAMPS_BOB,
            ),
            // Header-protection samples: 3DES and AES-128 around signed-data.
            ("autocrypt-protected-headers/smime-sign+enc.eml", DRAFT_BOB),
            (
                "autocrypt-protected-headers/smime-sign+enc+legacy-disp.eml",
                DRAFT_BOB,
            ),
            (
                "autocrypt-protected-headers/smime-enc+legacy-disp.eml",
                DRAFT_BOB,
            ),
            (
                "rfc9788-header-protection-vectors/smime-enc-signed.eml",
                LAMPS_BOB,
            ),
            (
                "rfc9788-header-protection-vectors/smime-enc-signed-injected-strong-legacy.eml",
                LAMPS_BOB,
            ),
        ];
        for (path, (cert, key)) in opens {
            let opened = decrypt(&corpus_message(path), &[corpus_key(cert, key)])
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(opened.plaintext, openssl_opens(path, cert, key), "{path}");
            let cert_der = Certificate::load_pem_chain(&read(&corpus(cert))).unwrap()[0]
                .to_der()
                .unwrap();
            assert_eq!(opened.fingerprint, material::x509_fingerprint(&cert_der));
        }

        // The ones we cannot open, each for a real reason, as clean errors.
        let bob = corpus_key(LAMPS_BOB.0, LAMPS_BOB.1);
        let refused: &[(&str, &str)] = &[
            // cms 0.2 has no AuthEnvelopedData, and we do no ChaCha20-Poly1305 or X25519.
            (
                "rfc9216-lamps-examples-cms/authEnvelopedForBobChaCha20Poly1305.p7m",
                "AuthEnvelopedData",
            ),
            (
                "rfc9216-lamps-examples-cms/authEnvelopedForDanaX25519HKDF.p7m",
                "AuthEnvelopedData",
            ),
            // Signed outside, encrypted inside: the caller opens the signature first.
            (
                "thunderbird-nss-smime/alice.env.sig.SHA256.opaque.eml",
                "signed-data",
            ),
        ];
        for (path, reason) in refused {
            assert_malformed(
                decrypt(&corpus_message(path), std::slice::from_ref(&bob)),
                reason,
            );
        }
        #[cfg(not(feature = "crypto-openssl"))]
        assert_malformed(
            decrypt(
                &corpus_message("thunderbird-smime-interop/fran-oaep-label_ossl.env"),
                &[corpus_key(FRAN.0, FRAN.1)],
            ),
            "not UTF-8",
        );
        // Dana's key is X25519: refused at import, so it never reaches decrypt.
        let reason = refusal(import_sckm(
            &[
                read(&corpus("rfc9216-lamps-examples-cms/lamps-dana.encrypt.crt")),
                read(&corpus(
                    "rfc9216-lamps-examples-cms/lamps-dana.decrypt.p8.pem",
                )),
            ]
            .concat(),
            None,
        ));
        assert!(reason.contains("not supported"), "{reason}");
        // A message for someone else is NoKey, not an error about the message.
        assert!(matches!(
            decrypt(
                &corpus_message("thunderbird-nss-smime/alice.env.eml"),
                std::slice::from_ref(&bob)
            ),
            Err(CryptoError::NoKey)
        ));
    }

    #[cfg(feature = "crypto-openssl")]
    #[test]
    fn corpus_pkcs12_files_import_and_decrypt() {
        let cases = [
            (
                "thunderbird-nss-smime/Bob.p12",
                "nss",
                "thunderbird-nss-smime/alice.env.eml",
            ),
            (
                "thunderbird-smime-interop/Fran.p12",
                "nss",
                "thunderbird-smime-interop/fran-oaep_ossl.env",
            ),
            (
                "thunderbird-smime-interop/Fran-ec.p12",
                "nss",
                "thunderbird-smime-interop/fran-ec_ossl-aes256-sha512.env",
            ),
            // PEM-armoured ("-----BEGIN PKCS12-----").
            (
                "autocrypt-protected-headers/bob.p12",
                "bob",
                "autocrypt-protected-headers/smime-enc+legacy-disp.eml",
            ),
        ];
        for (p12, pass, message) in cases {
            let keys = import_sckm(&read(&corpus(p12)), Some(pass))
                .unwrap_or_else(|e| panic!("{p12}: {e}"));
            assert_eq!(keys.len(), 1, "{p12}");
            decrypt(&corpus_message(message), &keys).unwrap_or_else(|e| panic!("{message}: {e}"));
            assert!(refusal(import_sckm(&read(&corpus(p12)), None)).contains("--passphrase-file"));
        }
    }
}
