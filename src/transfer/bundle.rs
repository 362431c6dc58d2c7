//! The bundle: what it holds, and how it is wrapped and opened.
//!
//! A bundle is the JSON document [`Bundle`], signed by the source's transport key (CMS
//! SignedData, ECDSA P-256 with SHA-256, the content inside), then encrypted to the
//! destination's transport certificate (CMS AuthEnvelopedData, AES-256-GCM, the content
//! key agreed by ephemeral-static ECDH), and written as PEM (`-----BEGIN CMS-----`).
//! Sign, then encrypt: the signature is hidden and bound to the content, and the
//! document names both gateways, so that a bundle signed for one gateway cannot be
//! re-encrypted and passed off to another. The README shows the `openssl cms` commands
//! that make and open one.

use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use const_oid::db::rfc5911;
use der::{Decode, Encode};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_cert::Certificate;
use zeroize::{Zeroize, Zeroizing};

use super::TransferError;
use super::identity::Identity;
use crate::crypto::{CryptoError, MAX_PLAINTEXT, smime};
use crate::keys::KeyEntry;
use crate::keys::harvest::smime::verify_up_to;
use crate::keys::material;
use crate::store::base64_bytes;

/// The `format` of a bundle this version writes and reads.
pub const FORMAT: &str = "sealgate-key-bundle/1";

/// The PEM label of a bundle file.
const PEM_LABEL: &str = "CMS";

/// What a bundle carries.
#[derive(Debug, Serialize, Deserialize)]
pub struct Bundle {
    /// [`FORMAT`].
    pub format: String,
    /// The SHA-256 fingerprint (upper-case hex) of the source's transport certificate.
    pub from: String,
    /// The same of the destination's: a bundle is for one gateway.
    pub to: String,
    /// Grows with each bundle the source makes: the destination refuses one that is not
    /// newer than the last it accepted from the source.
    pub sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    pub entries: Vec<BundleEntry>,
}

/// One key cache entry, as the source had it.
#[derive(Serialize, Deserialize)]
pub struct BundleEntry {
    /// The entry's fields, as `keys list --json` prints them.
    #[serde(flatten)]
    pub entry: KeyEntry,
    /// The key: a binary OpenPGP cert, or an X.509 certificate's DER.
    #[serde(with = "base64_bytes")]
    pub material: Vec<u8>,
    /// For SCKM entries: the secret the gateway holds, as `keys import-sckm` takes it
    /// (a binary OpenPGP key whose only secrets are encryption subkeys, or PEM
    /// certificate plus PKCS#8 key). Only ever inside the encrypted bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl std::fmt::Debug for BundleEntry {
    // Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleEntry")
            .field("address", &self.entry.address)
            .field("fingerprint", &self.entry.fingerprint)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Drop for BundleEntry {
    fn drop(&mut self) {
        if let Some(secret) = &mut self.secret {
            secret.zeroize();
        }
    }
}

/// A bundle opened: who signed it, and what it holds.
#[derive(Debug)]
pub struct Opened {
    /// The signer's transport certificate, as the bundle carried it.
    pub signer: Certificate,
    /// Its fingerprint.
    pub signer_fingerprint: String,
    pub bundle: Bundle,
}

/// Signs `bundle` with `identity` and encrypts it to `peer`; returns the PEM file.
pub fn wrap(
    bundle: &Bundle,
    identity: &Identity,
    peer: &Certificate,
) -> Result<String, TransferError> {
    let json = Zeroizing::new(
        serde_json::to_vec(bundle)
            .map_err(|e| TransferError::Internal(format!("the bundle does not serialize: {e}")))?,
    );
    let signed = Zeroizing::new(identity.sign(&json)?);
    drop(json);
    let enveloped =
        smime::encrypt_authenticated(&signed, std::slice::from_ref(peer)).map_err(|e| match e {
            CryptoError::Key(reason) => TransferError::Refused(format!(
                "the peer's certificate cannot be encrypted to: {reason}"
            )),
            other => TransferError::Internal(format!("wrapping the bundle: {other}")),
        })?;
    Ok(
        der::pem::encode_string(PEM_LABEL, der::pem::LineEnding::LF, &enveloped)
            .expect("PEM encoding of bytes in memory cannot fail"),
    )
}

/// Opens a bundle file (PEM or DER) with `identity`: decrypts it, checks its envelope is
/// exactly as made, and checks its one signature. Who signed it is the caller's to judge.
pub fn unwrap(file: &[u8], identity: &Identity) -> Result<Opened, TransferError> {
    let refused = |why: String| TransferError::Refused(why);
    let der = read_file(file)?;
    let key = identity.decryption_key()?;
    let plaintext = match smime::decrypt(&der, std::slice::from_ref(&key)) {
        Ok(decrypted) => Zeroizing::new(decrypted.plaintext),
        Err(CryptoError::NoKey) => {
            return Err(refused(format!(
                "the bundle is not for this gateway: it is not wrapped to this gateway's transport certificate ({})",
                super::display_fingerprint(identity.fingerprint())
            )));
        }
        Err(e) => {
            return Err(refused(format!(
                "the bundle is altered or damaged, and does not open: {e}"
            )));
        }
    };
    // The content is authentic; the few envelope fields nothing covers must be as made.
    smime::check_strict_envelope(&der)
        .map_err(|e| refused(format!("the bundle is altered: {e}")))?;

    let signed = verify_up_to(&plaintext, None, MAX_PLAINTEXT)
        .map_err(|e| refused(format!("the bundle's signature cannot be read: {e}")))?;
    let signer = match (signed.signers.as_slice(), signed.failures.as_slice()) {
        ([signer], []) => signer.cert.clone(),
        (_, [failure, ..]) => {
            return Err(refused(format!(
                "the bundle is altered: its signature does not verify ({failure})"
            )));
        }
        _ => {
            return Err(refused(
                "the bundle must carry exactly one signature, by its source's transport key".into(),
            ));
        }
    };
    let signer_der = signer
        .to_der()
        .map_err(|e| refused(format!("the signer's certificate does not encode: {e}")))?;
    let content = signed_content(&plaintext)?;
    let bundle: Bundle = serde_json::from_slice(&content)
        .map_err(|e| refused(format!("the bundle's content is not a key bundle: {e}")))?;
    if bundle.format != FORMAT {
        return Err(refused(format!(
            "the bundle's format {:?} is not {FORMAT:?}",
            bundle.format
        )));
    }
    Ok(Opened {
        signer_fingerprint: material::x509_fingerprint(&signer_der),
        signer,
        bundle,
    })
}

/// The DER of a bundle file: PEM (`CMS` or `PKCS7`) or DER as it is.
fn read_file(file: &[u8]) -> Result<Vec<u8>, TransferError> {
    let text = file.trim_ascii();
    if !text.starts_with(b"-----BEGIN ") {
        return Ok(file.to_vec());
    }
    let (label, der) = der::pem::decode_vec(text)
        .map_err(|e| TransferError::Refused(format!("the bundle is not valid PEM: {e}")))?;
    if label != PEM_LABEL && label != "PKCS7" {
        return Err(TransferError::Refused(format!(
            "the file holds a {label}, not a key bundle (CMS)"
        )));
    }
    Ok(der)
}

/// The content a (verified) SignedData carries: id-data, inside.
fn signed_content(signed: &[u8]) -> Result<Zeroizing<Vec<u8>>, TransferError> {
    let refused = |why: String| TransferError::Refused(format!("the bundle's content: {why}"));
    let info = ContentInfo::from_der(signed).map_err(|e| refused(e.to_string()))?;
    let data: SignedData = info
        .content
        .decode_as()
        .map_err(|e| refused(e.to_string()))?;
    if data.encap_content_info.econtent_type != rfc5911::ID_DATA {
        return Err(refused("not id-data".into()));
    }
    let econtent = data
        .encap_content_info
        .econtent
        .ok_or_else(|| refused("the signature carries no content".into()))?;
    let octets = econtent
        .decode_as::<der::asn1::OctetString>()
        .map_err(|e| refused(format!("not an OCTET STRING: {e}")))?;
    Ok(Zeroizing::new(octets.into_bytes()))
}
