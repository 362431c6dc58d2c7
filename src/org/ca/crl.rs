//! The CRL of the user certificates the Organization certificate revoked. x509-cert 0.2
//! has the types of a CRL but no builder for one: the TBSCertList is assembled from those
//! types and signed with the CA's key.

use der::asn1::Uint;
use der::{Decode, Encode, Tag};
use time::OffsetDateTime;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::AsExtension;
use x509_cert::ext::pkix::CrlNumber;
use x509_cert::serial_number::SerialNumber;

use super::{Ca, CaError, encoding, x509_time};

impl Ca {
    /// A version 2 CRL signed by the CA, listing `revoked` (serial as DER INTEGER content
    /// octets, as [`Issued::serial`](super::Issued::serial); revocation
    /// date), with CRL number `number`, issued
    /// `now` and next due at `next_update`.
    pub fn crl(
        &self,
        revoked: &[(Vec<u8>, OffsetDateTime)],
        number: u64,
        now: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Vec<u8>, CaError> {
        if next_update <= now {
            return Err(CaError::Refused(format!(
                "the CRL's next update ({next_update}) must come after its issue ({now})"
            )));
        }
        let entries = revoked
            .iter()
            .map(|(serial, date)| {
                Ok(RevokedCert {
                    serial_number: serial_number(serial)?,
                    revocation_date: x509_time(*date)?,
                    crl_entry_extensions: None,
                })
            })
            .collect::<Result<Vec<_>, CaError>>()?;
        let issuer = self.cert.tbs_certificate.subject.clone();
        let number = CrlNumber(Uint::new(&number.to_be_bytes()).map_err(encoding)?);
        let extensions = vec![
            self.authority_key_id()?
                .to_extension(&issuer, &[])
                .map_err(encoding)?,
            number.to_extension(&issuer, &[]).map_err(encoding)?,
        ];
        let algorithm = self.key.algorithm()?;
        let tbs = TbsCertList {
            version: x509_cert::Version::V2,
            signature: algorithm.clone(),
            issuer,
            this_update: x509_time(now)?,
            next_update: Some(x509_time(next_update)?),
            // RFC 5280 section 5.1.2.6: absent, not empty, when nothing is revoked.
            revoked_certificates: (!entries.is_empty()).then_some(entries),
            crl_extensions: Some(extensions),
        };
        let signature = self.key.sign(&tbs.to_der().map_err(encoding)?)?;
        let crl = CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: algorithm,
            signature,
        };
        crl.to_der().map_err(encoding)
    }
}

/// A serial given as DER INTEGER content octets, read as the DER INTEGER they make.
fn serial_number(content: &[u8]) -> Result<SerialNumber, CaError> {
    let refused = || {
        CaError::Refused(format!(
            "{} is not a certificate serial number",
            content
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
        ))
    };
    let len = u8::try_from(content.len())
        .ok()
        .filter(|len| (1..=21).contains(len))
        .ok_or_else(refused)?;
    let tlv = [&[Tag::Integer.octet(), len][..], content].concat();
    SerialNumber::from_der(&tlv).map_err(|_| refused())
}
