//! This gateway's transport identity: a P-256 key made on first use, and a self-signed
//! X.509 certificate for it that peers wrap bundles to and check this gateway's
//! signatures with. The private key never leaves the gateway: it is sealed at rest, and
//! no command prints it.
//!
//! P-256 because every CMS implementation opens a bundle wrapped to it (ECDH key
//! agreement, RFC 5753) and verifies its ECDSA signatures, `openssl cms` included, and
//! because it costs a fraction of an RSA key.

use std::str::FromStr;

use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::OctetString;
use der::referenced::OwnedToRef;
use der::{Any, Decode, Encode};
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::{KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::name::Name;
use x509_cert::spki::{AlgorithmIdentifierOwned, EncodePublicKey, SubjectPublicKeyInfoOwned};
use x509_cert::time::Validity;
use zeroize::Zeroizing;

use super::TransferError;
use crate::crypto::smime::SmimeKey;
use crate::keys::material;
use crate::org::ca::{random_serial, whole_seconds, x509_time};

/// How long a transport certificate is valid. Peers pin it by fingerprint; a gateway
/// lives long, and a new certificate means every peer must trust it again.
const VALIDITY: time::Duration = time::Duration::days(20 * 365);

/// The transport key and its certificate.
pub struct Identity {
    cert: Certificate,
    cert_der: Vec<u8>,
    fingerprint: String,
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh key and a self-signed certificate, `CN=sealgate transport <hostname>`,
    /// for digital signatures and key agreement.
    pub fn generate(hostname: &str, now: OffsetDateTime) -> Result<Identity, TransferError> {
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let subject = Name::from_str(&format!(
            "CN=sealgate transport {}",
            hostname.replace([',', '+', '=', '"', '\\', '<', '>', ';'], "-")
        ))
        .map_err(internal)?;
        let now = whole_seconds(now);
        let validity = Validity {
            not_before: x509_time(now - time::Duration::minutes(5)).map_err(internal)?,
            not_after: x509_time(now + VALIDITY).map_err(internal)?,
        };
        let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(internal)?;
        let mut builder = CertificateBuilder::new(
            Profile::Manual { issuer: None },
            random_serial().map_err(internal)?,
            validity,
            subject,
            spki.clone(),
            &key,
        )
        .map_err(internal)?;
        let usage = KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyAgreement);
        builder.add_extension(&usage).map_err(internal)?;
        let ski = SubjectKeyIdentifier::try_from(spki.owned_to_ref()).map_err(internal)?;
        builder.add_extension(&ski).map_err(internal)?;
        let cert = builder.build::<DerSignature>().map_err(internal)?;
        let cert_der = cert.to_der().map_err(internal)?;
        Ok(Identity {
            fingerprint: material::x509_fingerprint(&cert_der),
            cert,
            cert_der,
            key,
        })
    }

    /// The identity as [`Identity::cert_der`] and [`Identity::key_pkcs8`] stored it.
    pub fn from_stored(cert_der: &[u8], key_pkcs8: &[u8]) -> Result<Identity, TransferError> {
        let stored = |what: &str, e: &dyn std::fmt::Display| {
            TransferError::Internal(format!("the stored transport {what}: {e}"))
        };
        let cert = Certificate::from_der(cert_der).map_err(|e| stored("certificate", &e))?;
        let key = SigningKey::from_pkcs8_der(key_pkcs8).map_err(|e| stored("key", &e))?;
        let public = key
            .verifying_key()
            .to_public_key_der()
            .map_err(|e| stored("key", &e))?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| stored("certificate", &e))?;
        if public.as_bytes() != spki.as_slice() {
            return Err(TransferError::Internal(
                "the stored transport key does not belong to the stored certificate".into(),
            ));
        }
        Ok(Identity {
            fingerprint: material::x509_fingerprint(cert_der),
            cert,
            cert_der: cert_der.to_vec(),
            key,
        })
    }

    pub fn cert(&self) -> &Certificate {
        &self.cert
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// SHA-256 of the certificate's DER, upper-case hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The private key as PKCS#8 DER, for the caller to seal at rest.
    pub fn key_pkcs8(&self) -> Result<Zeroizing<Vec<u8>>, TransferError> {
        let document = self.key.to_pkcs8_der().map_err(internal)?;
        Ok(Zeroizing::new(document.as_bytes().to_vec()))
    }

    /// The key in the form S/MIME decryption takes, to open bundles wrapped to us.
    pub fn decryption_key(&self) -> Result<SmimeKey, TransferError> {
        Ok(SmimeKey {
            cert: self.cert.clone(),
            private_key: self.key_pkcs8()?.into(),
        })
    }

    /// `content` as a CMS SignedData (DER ContentInfo) signed by the transport key:
    /// ECDSA with SHA-256 over signed attributes holding the content's digest, the
    /// certificate carried along, the content inside (id-data).
    pub fn sign(&self, content: &[u8]) -> Result<Vec<u8>, TransferError> {
        let octets = OctetString::new(content).map_err(internal)?;
        let encapsulated = EncapsulatedContentInfo {
            econtent_type: rfc5911::ID_DATA,
            econtent: Some(Any::encode_from(&octets).map_err(internal)?),
        };
        let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: self.cert.tbs_certificate.issuer.clone(),
            serial_number: self.cert.tbs_certificate.serial_number.clone(),
        });
        let sha256 = AlgorithmIdentifierOwned {
            oid: rfc5912::ID_SHA_256,
            parameters: None,
        };
        let signer = SignerInfoBuilder::new(&self.key, sid, sha256.clone(), &encapsulated, None)
            .map_err(internal)?;
        let mut builder = SignedDataBuilder::new(&encapsulated);
        builder
            .add_digest_algorithm(sha256)
            .map_err(internal)?
            .add_certificate(CertificateChoices::Certificate(self.cert.clone()))
            .map_err(internal)?
            .add_signer_info::<SigningKey, DerSignature>(signer)
            .map_err(internal)?;
        builder
            .build()
            .map_err(internal)?
            .to_der()
            .map_err(internal)
    }
}

/// A certificate as PEM.
pub fn pem(der: &[u8]) -> String {
    use der::pem::LineEnding;
    der::pem::encode_string("CERTIFICATE", LineEnding::LF, der)
        .expect("PEM encoding of bytes in memory cannot fail")
}

/// A fingerprint as `openssl x509 -fingerprint -sha256` prints it: colon-separated
/// pairs, which two admins can read to each other over the phone.
pub fn display_fingerprint(fingerprint: &str) -> String {
    fingerprint
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

fn internal(e: impl std::fmt::Display) -> TransferError {
    TransferError::Internal(format!("transport identity: {e}"))
}
