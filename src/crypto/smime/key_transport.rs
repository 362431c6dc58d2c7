//! RSA key transport on the receiving side: the padding a KeyTransRecipientInfo names
//! (PKCS#1 v1.5 or RSAES-OAEP), and the RSA decryption of the content key, in constant
//! time through OpenSSL or, without the `crypto-openssl` feature, with rsa 0.9.

use const_oid::db::rfc5912;
use der::asn1::OctetStringRef;
use der::{Any, Decode, Encode, Tag, Tagged};
use x509_cert::spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use super::algorithms::Hash;
use super::{PrivateKey, malformed};
use crate::crypto::CryptoError;

/// RSA key transport padding, from the KeyTransRecipientInfo's algorithm.
#[derive(Debug)]
pub(super) enum RsaPadding {
    Pkcs1,
    Oaep {
        hash: Hash,
        mgf_hash: Hash,
        label: Vec<u8>,
    },
}

impl RsaPadding {
    pub(super) fn from_algorithm(
        algorithm: &AlgorithmIdentifierOwned,
    ) -> Result<Self, CryptoError> {
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

/// An RSA private key as OpenSSL holds it (its Montgomery and blinding values are made
/// with the first operation and kept too).
#[cfg(feature = "crypto-openssl")]
pub(super) type RsaKey = openssl::pkey::PKey<openssl::pkey::Private>;

/// The RSA key in PKCS#8 DER, or why it is none.
#[cfg(feature = "crypto-openssl")]
pub(super) fn rsa_key(pkcs8: &[u8]) -> Result<RsaKey, String> {
    use openssl::pkey::{Id, PKey};
    let key = PKey::private_key_from_pkcs8(pkcs8).map_err(|e| format!("private key: {e}"))?;
    if key.id() != Id::RSA {
        return Err("not an RSA private key".into());
    }
    Ok(key)
}

/// RSA-decrypts a wrapped content key with OpenSSL, whose PKCS#1 v1.5 and OAEP checks run
/// in constant time. `Ok(None)` when the padding does not check out; `Err` when our key
/// is unusable.
#[cfg(feature = "crypto-openssl")]
pub(super) fn rsa_decrypt(
    key: &PrivateKey,
    padding: &RsaPadding,
    wrapped: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, CryptoError> {
    use openssl::encrypt::Decrypter;
    use openssl::hash::MessageDigest;
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

    let mut decrypter = Decrypter::new(key.rsa()?).map_err(internal)?;
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

/// An RSA private key as rsa 0.9 holds it, with its CRT values.
#[cfg(not(feature = "crypto-openssl"))]
pub(super) type RsaKey = rsa::RsaPrivateKey;

/// The RSA key in PKCS#8 DER, or why it is none.
#[cfg(not(feature = "crypto-openssl"))]
pub(super) fn rsa_key(pkcs8: &[u8]) -> Result<RsaKey, String> {
    use rsa::pkcs8::DecodePrivateKey;
    rsa::RsaPrivateKey::from_pkcs8_der(pkcs8).map_err(|e| format!("RSA private key: {e}"))
}

/// RSA-decrypts a wrapped content key with rsa 0.9, for builds without OpenSSL.
///
/// Timing advisory RUSTSEC-2023-0071 ("Marvin"): rsa 0.9's decryption is not constant
/// time, so a peer who can measure how long the gateway takes may, over very many
/// messages, learn enough to decrypt one. Blinding and the random-key fallback in
/// [`Slot::unwrap`](super::decrypt::Slot::unwrap) narrow it; the `crypto-openssl` build closes it.
#[cfg(not(feature = "crypto-openssl"))]
pub(super) fn rsa_decrypt(
    key: &PrivateKey,
    padding: &RsaPadding,
    wrapped: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, CryptoError> {
    use rand::rngs::OsRng;
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

    let key = key.rsa()?;
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
