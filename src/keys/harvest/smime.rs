//! S/MIME signatures: the certificates of the signers whose signature over the content
//! verifies. Only those may be harvested; a certificate that merely rides along in a
//! SignedData proves nothing.
//!
//! The signature check follows RFC 5652 §5.4: the messageDigest attribute must equal
//! the content's digest, and the signature must verify over the DER of the signed
//! attributes as a SET OF. RSA PKCS#1 v1.5 and ECDSA (P-256, P-384) are supported.
//!
//! A verified signer's sMIMECapabilities attribute (RFC 8551 §2.5.2), which the
//! signature covers, says what its client can decrypt; we note whether that includes
//! AES-GCM, so that mail to it may be sent as AuthEnvelopedData.

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5911, rfc5912};
use der::{Decode, Encode};
use sha2::Digest;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::crypto::ber;
use crate::keys::material::Refusal;

/// The most signers we look at in one message.
const MAX_SIGNERS: usize = 8;
/// The largest signature we read. Real ones, with the signer's chain, are a few KiB.
pub const MAX_SIGNATURE: usize = 256 * 1024;
/// The most certificates a SignedData may carry. Real ones carry the signer's chain;
/// the `der` crate checks the order of a SET OF with an insertion sort that encodes
/// both sides of every comparison, so decoding costs the square of their number
/// (10,000 certificates took 36 s). They are counted before anything is decoded.
pub const MAX_CERTIFICATES: usize = 32;

/// What a SignedData carries, once its signatures are checked.
pub struct Signed {
    /// The signers whose signature verifies.
    pub signers: Vec<Signer>,
    /// Why the other signer infos did not count.
    pub failures: Vec<String>,
    /// Every certificate the SignedData carried: the intermediates of a chain.
    pub certificates: Vec<Certificate>,
}

/// A signer whose signature verifies.
pub struct Signer {
    pub cert: Certificate,
    /// Its signed sMIMECapabilities list AES-GCM (id-aes128-GCM or id-aes256-GCM): its
    /// client reads AuthEnvelopedData.
    pub reads_aes_gcm: bool,
}

/// Checks a SignedData (DER or BER). `detached` is the signed content of a
/// multipart/signed; `None` means the content is inside (opaque signed-data).
pub fn verify(signature: &[u8], detached: Option<&[u8]>) -> Result<Signed, Refusal> {
    verify_up_to(signature, detached, MAX_SIGNATURE)
}

/// [`verify`] for a SignedData of up to `limit` bytes: one that carries its content
/// (a key transfer bundle) may be far larger than a mail signature.
pub fn verify_up_to(
    signature: &[u8],
    detached: Option<&[u8]>,
    limit: usize,
) -> Result<Signed, Refusal> {
    if signature.len() > limit {
        return Err(Refusal(format!(
            "signature of {} bytes is over the {limit}-byte limit",
            signature.len()
        )));
    }
    let der =
        ber::to_der(signature).map_err(|e| Refusal(format!("signature is not valid BER: {e}")))?;
    let carried = certificate_count(&der)
        .map_err(|e| Refusal(format!("signature is not a CMS SignedData: {e}")))?;
    if carried > MAX_CERTIFICATES {
        return Err(Refusal(format!(
            "signature carries more than {MAX_CERTIFICATES} certificates"
        )));
    }
    let info = ContentInfo::from_der(&der)
        .map_err(|e| Refusal(format!("signature is not a CMS ContentInfo: {e}")))?;
    if info.content_type != rfc5911::ID_SIGNED_DATA {
        return Err(Refusal(format!(
            "CMS content {} is not signed-data",
            info.content_type
        )));
    }
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|e| Refusal(format!("malformed SignedData: {e}")))?;

    let inner;
    let content = match detached {
        Some(content) => content,
        None => {
            let econtent = signed
                .encap_content_info
                .econtent
                .as_ref()
                .ok_or_else(|| Refusal("opaque signed-data without content".into()))?;
            inner = der::asn1::OctetString::from_der(
                &econtent.to_der().map_err(|e| Refusal(e.to_string()))?,
            )
            .map_err(|e| Refusal(format!("signed content is not an OCTET STRING: {e}")))?;
            inner.as_bytes()
        }
    };

    let certificates: Vec<&Certificate> = signed
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|choice| match choice {
            CertificateChoices::Certificate(cert) => Some(cert),
            CertificateChoices::Other(_) => None,
        })
        .collect();

    let mut result = Signed {
        signers: Vec::new(),
        failures: Vec::new(),
        certificates: certificates.iter().map(|c| (*c).clone()).collect(),
    };
    // The content is hashed once per digest algorithm, not once per signer.
    let mut digests: Vec<(ObjectIdentifier, Vec<u8>)> = Vec::new();
    for signer in signed.signer_infos.0.iter().take(MAX_SIGNERS) {
        let Some(cert) = certificates.iter().find(|c| identifies(&signer.sid, c)) else {
            result
                .failures
                .push("the signer's certificate is not in the message".into());
            continue;
        };
        let oid = signer.digest_alg.oid;
        let content_digest = match digests.iter().find(|(o, _)| *o == oid) {
            Some((_, digest)) => digest.clone(),
            None => match digest(&oid, content) {
                Some(d) => {
                    digests.push((oid, d.clone()));
                    d
                }
                None => {
                    result
                        .failures
                        .push(format!("unsupported digest algorithm {oid}"));
                    continue;
                }
            },
        };
        match check_signer(signer, cert, &content_digest) {
            Ok(()) => result.signers.push(Signer {
                cert: (*cert).clone(),
                reads_aes_gcm: reads_aes_gcm(signer),
            }),
            Err(reason) => result.failures.push(reason),
        }
    }
    Ok(result)
}

/// How many certificates a SignedData (DER, in its ContentInfo) carries, up to one
/// more than [`MAX_CERTIFICATES`], found by walking the outer structure without
/// decoding any certificate: linear in the input.
fn certificate_count(der: &[u8]) -> der::Result<usize> {
    use der::asn1::AnyRef;
    use der::{Reader, SliceReader, TagNumber, Tagged};
    let info = AnyRef::from_der(der)?;
    let mut fields = SliceReader::new(info.value())?;
    let _content_type = AnyRef::decode(&mut fields)?;
    let explicit = AnyRef::decode(&mut fields)?;
    let signed_data = AnyRef::from_der(explicit.value())?;
    let mut fields = SliceReader::new(signed_data.value())?;
    for _version_digests_encapsulated in 0..3 {
        AnyRef::decode(&mut fields)?;
    }
    if fields.is_finished() {
        return Ok(0);
    }
    let certificates = AnyRef::decode(&mut fields)?;
    if certificates.tag().number() != TagNumber::N0 || !certificates.tag().is_context_specific() {
        return Ok(0);
    }
    let mut set = SliceReader::new(certificates.value())?;
    let mut count = 0;
    while !set.is_finished() && count <= MAX_CERTIFICATES {
        AnyRef::decode(&mut set)?;
        count += 1;
    }
    Ok(count)
}

/// Whether the signer's sMIMECapabilities attribute lists AES-GCM. RFC 8551 §2.7.1:
/// a sender may use what the recipient announced in its most recent signed mail. No
/// attribute, or one that does not decode, announces nothing. Call it only for a
/// signer whose signature verified: the attribute is as trustworthy as the signature.
fn reads_aes_gcm(signer: &SignerInfo) -> bool {
    signer
        .signed_attrs
        .iter()
        .flat_map(|attrs| attrs.iter())
        .filter(|attr| attr.oid == rfc5911::SMIME_CAPABILITIES)
        .flat_map(|attr| attr.values.iter())
        // SMIMECapabilities ::= SEQUENCE OF SMIMECapability, which has the shape of an
        // AlgorithmIdentifier: capabilityID, parameters OPTIONAL.
        .filter_map(|value| value.decode_as::<Vec<AlgorithmIdentifierOwned>>().ok())
        .flatten()
        .any(|capability| {
            matches!(
                capability.oid,
                rfc5911::ID_AES_128_GCM | rfc5911::ID_AES_256_GCM
            )
        })
}

/// Whether `sid` names `cert`.
fn identifies(sid: &SignerIdentifier, cert: &Certificate) -> bool {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            ias.issuer == cert.tbs_certificate.issuer
                && ias.serial_number == cert.tbs_certificate.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .filter(|ext| ext.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER)
            .any(|ext| {
                SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes())
                    .is_ok_and(|own| own == *ski)
            }),
    }
}

/// A digest algorithm we accept, by OID.
fn digest(algorithm: &ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    Some(match *algorithm {
        rfc5912::ID_SHA_1 => sha1::Sha1::digest(data).to_vec(),
        rfc5912::ID_SHA_256 => sha2::Sha256::digest(data).to_vec(),
        rfc5912::ID_SHA_384 => sha2::Sha384::digest(data).to_vec(),
        rfc5912::ID_SHA_512 => sha2::Sha512::digest(data).to_vec(),
        _ => return None,
    })
}

/// Checks one signer, given the digest of the content under its digest algorithm.
fn check_signer(
    signer: &SignerInfo,
    cert: &Certificate,
    content_digest: &[u8],
) -> Result<(), String> {
    let digest_oid = signer.digest_alg.oid;
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or("signature without signed attributes (not S/MIME)")?;
    let message_digest = attrs
        .iter()
        .find(|attr| attr.oid == rfc5911::ID_MESSAGE_DIGEST)
        .and_then(|attr| attr.values.iter().next())
        .and_then(|value| value.decode_as::<der::asn1::OctetString>().ok())
        .ok_or("no messageDigest attribute")?;
    if message_digest.as_bytes() != content_digest {
        return Err("the content does not match its signature (messageDigest differs)".into());
    }
    let signed_bytes = attrs
        .to_der()
        .map_err(|e| format!("signed attributes do not encode: {e}"))?;
    let attrs_digest = digest(&digest_oid, &signed_bytes).expect("checked above");
    verify_signature(
        cert,
        &digest_oid,
        &attrs_digest,
        signer.signature.as_bytes(),
    )
}

fn verify_signature(
    cert: &Certificate,
    digest_oid: &ObjectIdentifier,
    prehash: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    use signature::hazmat::PrehashVerifier;

    let spki = &cert.tbs_certificate.subject_public_key_info;
    let key_bytes = spki.subject_public_key.raw_bytes();
    let bad = |e: signature::Error| format!("the signature does not verify: {e}");
    match spki.algorithm.oid {
        rfc5912::RSA_ENCRYPTION => {
            let der = spki.to_der().map_err(|e| e.to_string())?;
            let key = <rsa::RsaPublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_der(&der)
                .map_err(|e| format!("unusable RSA key: {e}"))?;
            let sig = rsa::pkcs1v15::Signature::try_from(signature).map_err(bad)?;
            let result = match *digest_oid {
                rfc5912::ID_SHA_1 => rsa::pkcs1v15::VerifyingKey::<sha1::Sha1>::new(key)
                    .verify_prehash(prehash, &sig),
                rfc5912::ID_SHA_256 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key)
                    .verify_prehash(prehash, &sig),
                rfc5912::ID_SHA_384 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(key)
                    .verify_prehash(prehash, &sig),
                rfc5912::ID_SHA_512 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(key)
                    .verify_prehash(prehash, &sig),
                _ => return Err(format!("unsupported digest algorithm {digest_oid}")),
            };
            result.map_err(bad)
        }
        rfc5912::ID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            match curve {
                Some(rfc5912::SECP_256_R_1) => {
                    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes).map_err(bad)?;
                    let sig = p256::ecdsa::Signature::from_der(signature).map_err(bad)?;
                    key.verify_prehash(prehash, &sig).map_err(bad)
                }
                Some(rfc5912::SECP_384_R_1) => {
                    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes).map_err(bad)?;
                    let sig = p384::ecdsa::Signature::from_der(signature).map_err(bad)?;
                    key.verify_prehash(prehash, &sig).map_err(bad)
                }
                other => Err(format!("unsupported EC curve {other:?}")),
            }
        }
        other => Err(format!("unsupported signature key algorithm {other}")),
    }
}

#[cfg(test)]
mod tests {
    use der::Any;
    use der::asn1::SetOfVec;
    use x509_cert::attr::Attribute;

    use super::*;

    /// A SignerInfo from `openssl cms -sign`, whose sMIMECapabilities list AES-CBC,
    /// 3DES and RC2 but no AES-GCM.
    fn openssl_signer_info() -> SignerInfo {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
            "-days",
            "2",
            "-subj",
            "/CN=signer",
        ]);
        std::fs::write(dir.path().join("m.txt"), b"hello\r\n").unwrap();
        run(&[
            "cms", "-sign", "-in", "m.txt", "-signer", "c.pem", "-inkey", "k.pem", "-outform",
            "DER", "-out", "s.der",
        ]);
        let der = std::fs::read(dir.path().join("s.der")).unwrap();
        let signed: SignedData = ContentInfo::from_der(&der)
            .unwrap()
            .content
            .decode_as()
            .unwrap();
        signed.signer_infos.0.get(0).unwrap().clone()
    }

    /// `signer` with its sMIMECapabilities value replaced by `value`.
    fn with_capabilities(signer: &SignerInfo, value: Any) -> SignerInfo {
        let mut attrs: Vec<Attribute> = signer
            .signed_attrs
            .iter()
            .flat_map(|a| a.iter().cloned())
            .filter(|attr| attr.oid != rfc5911::SMIME_CAPABILITIES)
            .collect();
        attrs.push(Attribute {
            oid: rfc5911::SMIME_CAPABILITIES,
            values: SetOfVec::try_from(vec![value]).unwrap(),
        });
        let mut changed = signer.clone();
        changed.signed_attrs = Some(SetOfVec::try_from(attrs).unwrap());
        changed
    }

    fn capabilities(oids: &[ObjectIdentifier]) -> Any {
        let list: Vec<AlgorithmIdentifierOwned> = oids
            .iter()
            .map(|&oid| AlgorithmIdentifierOwned {
                oid,
                parameters: None,
            })
            .collect();
        Any::encode_from(&list).unwrap()
    }

    #[test]
    fn aes_gcm_is_read_from_the_signed_smime_capabilities() {
        let openssl = openssl_signer_info();
        assert!(
            openssl
                .signed_attrs
                .iter()
                .flat_map(|attrs| attrs.iter())
                .any(|a| a.oid == rfc5911::SMIME_CAPABILITIES),
            "openssl lists capabilities"
        );
        assert!(!reads_aes_gcm(&openssl), "but not AES-GCM");

        let cbc = rfc5911::ID_AES_256_CBC;
        for (listed, reads) in [
            (vec![rfc5911::ID_AES_256_GCM, cbc], true),
            (vec![cbc, rfc5911::ID_AES_128_GCM], true),
            // Only the two names RFC 8551 §2.7 gives AES-GCM count.
            (vec![rfc5911::ID_AES_192_GCM, cbc], false),
            (vec![cbc], false),
            (vec![], false),
        ] {
            let signer = with_capabilities(&openssl, capabilities(&listed));
            assert_eq!(reads_aes_gcm(&signer), reads, "{listed:?}");
        }
        // A value that is no SEQUENCE OF capabilities announces nothing.
        let garbage = with_capabilities(
            &openssl,
            Any::encode_from(&rfc5911::ID_AES_256_GCM).unwrap(),
        );
        assert!(!reads_aes_gcm(&garbage));
        // No signed attributes at all.
        let mut bare = openssl.clone();
        bare.signed_attrs = None;
        assert!(!reads_aes_gcm(&bare));
    }
}
