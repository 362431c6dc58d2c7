//! S/MIME enveloped-data and authEnveloped-data (RFC 8551 over CMS, RFC 5652 and RFC
//! 5083): encrypt a MIME entity to recipients' certificates, open one with SCKM keys,
//! and import SCKM keys.
//!
//! - **Encrypt:** EnvelopedData with AES-256-CBC content ([`encrypt`]), which every
//!   client reads, or for recipients known to read it AuthEnvelopedData with
//!   AES-256-GCM ([`encrypt_authenticated`]). RSA recipients get a KeyTransRecipientInfo
//!   with PKCS#1 v1.5 key transport, which every client reads (RFC 8551 makes it the
//!   MUST for senders). EC P-256/P-384 recipients get a KeyAgreeRecipientInfo (RFC
//!   5753): ephemeral-static ECDH, the X9.63 KDF with SHA-256 (P-256) or SHA-384
//!   (P-384), AES-256 key wrap. EnvelopedData comes from the cms crate's builder;
//!   AuthEnvelopedData, which cms 0.2.3 does not have, is put together here.
//! - **Decrypt:** the cms crate builds EnvelopedData but cannot open it, so the steps are
//!   here: BER to DER ([`ber`](super::ber)), find the RecipientInfo for one of our certificates, unwrap
//!   the content key (RSA PKCS#1 v1.5 or RSAES-OAEP; ECDH for EC keys), then AES-CBC or
//!   3DES-CBC, or for AuthEnvelopedData AES-GCM, whose tag is checked first. With the
//!   `crypto-openssl` feature the RSA step runs in OpenSSL, in constant time; rsa 0.9's
//!   PKCS#1 v1.5 decryption is not (RUSTSEC-2023-0071).
//! - **Import:** PKCS#12 (through OpenSSL) or PEM certificate plus key, refused whole when
//!   the certificate is for signing only, names no address, or does not match the key.
//!
//! Nothing here signs. Everything that reads peer input is bounded and returns
//! [`CryptoError::Malformed`] rather than panicking.
//!
//! # Layout
//!
//! - `encrypt`: EnvelopedData and AuthEnvelopedData to RSA (KeyTransRecipientInfo) and
//!   EC (KeyAgreeRecipientInfo) recipients.
//! - `decrypt`: reading the EnvelopedData or AuthEnvelopedData and its RecipientInfos,
//!   finding ours, unwrapping the content key and decrypting the content.
//! - `auth_enveloped`: the AuthEnvelopedData structure cms 0.2.3 lacks, GCMParameters,
//!   and AES-GCM from the aes-gcm crate.
//! - `key_transport`: the RSA step of decryption (PKCS#1 v1.5 and RSAES-OAEP), in OpenSSL
//!   or in rsa 0.9.
//! - `algorithms`: what both directions share: hashes, the curves, the X9.63 KDF, AES key
//!   wrap, the content ciphers.
//! - `import`: SCKM import from PKCS#12 or PEM.
//! - `strict`: the envelope of a key transfer bundle, where every byte must be as made.

mod algorithms;
mod auth_enveloped;
mod decrypt;
mod encrypt;
mod import;
mod key_transport;
mod strict;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, OnceLock};

use der::Encode;
use x509_cert::Certificate;
use zeroize::Zeroizing;

use super::CryptoError;
use crate::keys::material;
use key_transport::RsaKey;

pub use decrypt::decrypt;
pub use encrypt::{encrypt, encrypt_authenticated};
pub use import::import_sckm;
pub use strict::check_strict_envelope;

/// An S/MIME SCKM key: the certificate and its private key (unencrypted; the caller
/// seals it at rest).
#[derive(Clone)]
pub struct SmimeKey {
    pub cert: Certificate,
    pub private_key: PrivateKey,
}

/// A private key as PKCS#8 DER, and its RSA key as the decryption backend holds it,
/// made from the DER the first time it is used and kept with it; clones share both.
/// OpenSSL 3's PKCS#8 decoder costs more than the RSA operation itself (perf: 60 % of
/// an RSA-2048 decryption), so a key kept between messages is decoded once.
#[derive(Clone)]
pub struct PrivateKey(Arc<Decoded>);

struct Decoded {
    pkcs8: Zeroizing<Vec<u8>>,
    rsa: OnceLock<Result<RsaKey, String>>,
}

impl PrivateKey {
    pub fn new(pkcs8: Zeroizing<Vec<u8>>) -> PrivateKey {
        PrivateKey(Arc::new(Decoded {
            pkcs8,
            rsa: OnceLock::new(),
        }))
    }

    /// The key as PKCS#8 DER.
    pub fn pkcs8(&self) -> &[u8] {
        &self.0.pkcs8
    }

    /// The RSA key, decoded now unless it was before; an error when it is none.
    fn rsa(&self) -> Result<&RsaKey, CryptoError> {
        self.0
            .rsa
            .get_or_init(|| key_transport::rsa_key(&self.0.pkcs8))
            .as_ref()
            .map_err(|e| CryptoError::Key(e.clone()))
    }

    /// Whether the RSA key has been decoded (for tests).
    #[cfg(test)]
    fn decoded(&self) -> Option<bool> {
        self.0.rsa.get().map(Result::is_ok)
    }
}

impl From<Zeroizing<Vec<u8>>> for PrivateKey {
    fn from(pkcs8: Zeroizing<Vec<u8>>) -> PrivateKey {
        PrivateKey::new(pkcs8)
    }
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
