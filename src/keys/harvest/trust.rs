//! Whether an S/MIME certificate harvested from mail chains to a CA the admin trusts
//! (`[keys] smime_trust`, a PEM bundle). Without a trust store, any self-signed
//! certificate whose address matches would do; with one, the cache records which
//! certificates validated, and rules can ask (`chain_validated`).
//!
//! The path is built and checked by rustls-webpki, with the intermediates the signed
//! message carried, for the emailProtection key purpose (when the certificate names
//! purposes at all), at the time of harvesting. Revocation is not checked here.

use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use x509_cert::Certificate;

/// id-kp-emailProtection (1.3.6.1.5.5.7.3.4), DER contents.
const EMAIL_PROTECTION: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04];

/// The trust anchors of `[keys] smime_trust`.
pub struct SmimeTrust {
    anchors: Vec<TrustAnchor<'static>>,
}

impl std::fmt::Debug for SmimeTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmimeTrust")
            .field("anchors", &self.anchors.len())
            .finish()
    }
}

impl SmimeTrust {
    /// Reads a PEM bundle of CA certificates. Refused when it holds none, or one that
    /// is not a usable trust anchor.
    pub fn from_pem(pem: &[u8]) -> Result<SmimeTrust, String> {
        let mut anchors = Vec::new();
        for (i, der) in rustls_pki_pem(pem)?.into_iter().enumerate() {
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| format!("certificate {} of the bundle: {e:?}", i + 1))?;
            anchors.push(anchor.to_owned());
        }
        if anchors.is_empty() {
            return Err("no PEM certificate in it".into());
        }
        Ok(SmimeTrust { anchors })
    }

    /// Whether `cert` chains to one of the anchors through `intermediates`, and may be
    /// used for e-mail, at `now`.
    pub fn validates(
        &self,
        cert: &Certificate,
        intermediates: &[Certificate],
        now: time::OffsetDateTime,
    ) -> bool {
        use der::Encode;
        let Ok(der) = cert.to_der() else { return false };
        let der = CertificateDer::from(der);
        let Ok(end_entity) = webpki::EndEntityCert::try_from(&der) else {
            return false;
        };
        let intermediates: Vec<CertificateDer<'static>> = intermediates
            .iter()
            .filter_map(|c| c.to_der().ok())
            .map(CertificateDer::from)
            .collect();
        let Ok(seconds) = u64::try_from(now.unix_timestamp()) else {
            return false;
        };
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                &intermediates,
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds)),
                webpki::KeyUsage::required_if_present(EMAIL_PROTECTION),
                None,
                None,
            )
            .is_ok()
    }
}

/// The DER certificates of a PEM bundle.
fn rustls_pki_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM bundle: {e}"))
}
