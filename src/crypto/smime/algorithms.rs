//! The algorithms both directions use: the hash functions named by OID, ECDH on P-256
//! and P-384, the RFC 5753 key-agreement schemes with the X9.63 KDF, RFC 3394 AES key
//! wrap, and the content ciphers (AES-CBC, 3DES-CBC).

use aes::{Aes128, Aes192, Aes256};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, KeyIvInit};
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{AnyRef, ContextSpecific, OctetString, OctetStringRef};
use der::{Encode, Tag, TagMode, TagNumber};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand::rngs::OsRng;
use rsa::pkcs8::DecodePrivateKey;
use sha2::Digest;
use x509_cert::spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

pub(super) use crate::crypto::key_wrap::{aes_unwrap, aes_wrap};

use super::malformed;
use crate::crypto::CryptoError;

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

/// A hash function named by OID: OAEP and the key-agreement KDF use these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub(super) fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
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
pub(super) enum Curve {
    P256,
    P384,
}

impl Curve {
    /// The named curve in an id-ecPublicKey algorithm identifier.
    pub(super) fn of(algorithm: &AlgorithmIdentifierOwned) -> Option<Self> {
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
    pub(super) fn kdf(self) -> (Hash, ObjectIdentifier) {
        match self {
            Curve::P256 => (Hash::Sha256, DH_STD_SHA256_KDF),
            Curve::P384 => (Hash::Sha384, DH_STD_SHA384_KDF),
        }
    }

    /// The uncompressed point of `sec1` if it is a valid point on this curve.
    pub(super) fn public_point(self, sec1: &[u8]) -> Option<Vec<u8>> {
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
    pub(super) fn agree_ephemeral(self, peer: &[u8]) -> Option<(Vec<u8>, Zeroizing<Vec<u8>>)> {
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
    pub(super) fn agree_static(
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
pub(super) fn kdf_hash(scheme: &ObjectIdentifier) -> Option<Hash> {
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
pub(super) fn wrap_key_len(wrap: &ObjectIdentifier) -> Option<usize> {
    match *wrap {
        rfc5911::ID_AES_128_WRAP => Some(16),
        rfc5911::ID_AES_192_WRAP => Some(24),
        rfc5911::ID_AES_256_WRAP => Some(32),
        _ => None,
    }
}

/// ECC-CMS-SharedInfo (RFC 5753 §7.2): the KDF's SharedInfo, which binds the key-wrap
/// algorithm, the optional user keying material and the KEK length.
pub(super) fn ecc_cms_shared_info(
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
pub(super) fn x963_kdf(hash: Hash, z: &[u8], shared_info: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
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

/// A content-encryption algorithm and its IV.
pub(super) struct ContentCipher {
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
    pub(super) fn from_algorithm(
        algorithm: &AlgorithmIdentifierOwned,
    ) -> Result<Self, CryptoError> {
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

    pub(super) fn key_len(&self) -> usize {
        match self.kind {
            CipherKind::Aes128 => 16,
            CipherKind::Aes192 | CipherKind::DesEde3 => 24,
            CipherKind::Aes256 => 32,
        }
    }

    pub(super) fn block_len(&self) -> usize {
        match self.kind {
            CipherKind::DesEde3 => 8,
            _ => 16,
        }
    }

    /// Decrypts and unpads; `None` when the padding is wrong (a wrong key, mostly).
    pub(super) fn decrypt(&self, key: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
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
