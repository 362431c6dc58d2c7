//! The certificates the Organization certificate issues to users: an S/MIME certificate
//! for the address and the user's own encryption key.

use std::time::Duration;

use const_oid::db::rfc4519::CN;
use const_oid::db::rfc5280::ID_KP_EMAIL_PROTECTION;
use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, RSA_ENCRYPTION};
use const_oid::{AssociatedOid, ObjectIdentifier};
use der::asn1::{Ia5String, SetOfVec, Utf8StringRef};
use der::referenced::OwnedToRef;
use der::{Any, Encode};
use time::OffsetDateTime;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::AsExtension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

use super::key::{CaSignature, oid_name};
use super::{
    CLOCK_SKEW, Ca, CaError, Issued, building, encoding, random_serial, whole_seconds, x509_time,
};

impl Ca {
    /// An S/MIME certificate for `address` and the user's encryption key `spki`: subject
    /// CN=address (an empty subject and a critical alternative name when the address is
    /// longer than a CN may be), the address as rfc822Name, keyUsage keyEncipherment (RSA)
    /// or keyAgreement (EC), extendedKeyUsage emailProtection, basicConstraints cA=FALSE,
    /// and key identifiers. It starts five minutes before `now` (for peers whose clocks lag)
    /// but not before the CA, and ends after `validity`, or with the CA if that comes first:
    /// it never outlives the CA.
    pub fn issue(
        &self,
        address: &str,
        spki: &SubjectPublicKeyInfoOwned,
        now: OffsetDateTime,
        validity: Duration,
    ) -> Result<Issued, CaError> {
        let now = whole_seconds(now);
        if now >= self.not_after {
            return Err(CaError::Refused(format!(
                "the Organization certificate {} expired at {}: replace it before issuing certificates",
                self.subject(),
                self.not_after
            )));
        }
        if validity < Duration::from_secs(1) {
            return Err(CaError::Refused(
                "a user certificate's validity must be at least a second".into(),
            ));
        }
        let address = mailbox(address)?;
        let usage = match spki.algorithm.oid {
            RSA_ENCRYPTION => KeyUsages::KeyEncipherment,
            ID_EC_PUBLIC_KEY => KeyUsages::KeyAgreement,
            other => {
                return Err(CaError::Unsupported(format!(
                    "a {} key cannot get an S/MIME certificate: it needs an RSA or NIST P-256/P-384 encryption key",
                    oid_name(&other)
                )));
            }
        };
        let not_after = time::Duration::try_from(validity)
            .ok()
            .and_then(|v| now.checked_add(v))
            .map_or(self.not_after, |end| end.min(self.not_after));
        let not_after = whole_seconds(not_after);
        // Nested in the CA's validity at both ends, which strict validators ask for.
        let not_before = (now - CLOCK_SKEW).max(self.not_before);
        let validity = Validity {
            not_before: x509_time(not_before)?,
            not_after: x509_time(not_after)?,
        };
        let serial = random_serial()?;
        let issuer = self.cert.tbs_certificate.subject.clone();
        let mut builder = CertificateBuilder::new(
            Profile::Manual {
                issuer: Some(issuer),
            },
            serial.clone(),
            validity,
            user_subject(&address)?,
            spki.clone(),
            &self.key,
        )
        .map_err(building)?;
        let not_ca = BasicConstraints {
            ca: false,
            path_len_constraint: None,
        };
        builder.add_extension(&not_ca).map_err(building)?;
        builder
            .add_extension(&KeyUsage(usage.into()))
            .map_err(building)?;
        let email = NonCritical(ExtendedKeyUsage(vec![ID_KP_EMAIL_PROTECTION]));
        builder.add_extension(&email).map_err(building)?;
        let name = Ia5String::new(&address).map_err(encoding)?;
        let san = SubjectAltName(vec![GeneralName::Rfc822Name(name)]);
        builder.add_extension(&san).map_err(building)?;
        let ski = SubjectKeyIdentifier::try_from(spki.owned_to_ref()).map_err(encoding)?;
        builder.add_extension(&ski).map_err(building)?;
        builder
            .add_extension(&self.authority_key_id()?)
            .map_err(building)?;
        let cert = builder.build::<CaSignature>().map_err(building)?;
        let serial = serial.as_bytes().to_vec();
        Ok(Issued {
            der: cert.to_der().map_err(encoding)?,
            serial_hex: serial.iter().map(|b| format!("{b:02X}")).collect(),
            serial,
            not_after,
        })
    }
}

/// An extension that x509-cert marks critical, marked non-critical: extendedKeyUsage, which
/// the S/MIME Baseline Requirements ask not to be critical, so that a client that reads it
/// as restricting other uses still accepts the certificate.
struct NonCritical<T>(T);

impl<T: AssociatedOid> AssociatedOid for NonCritical<T> {
    const OID: ObjectIdentifier = T::OID;
}

impl<T: Encode> Encode for NonCritical<T> {
    fn encoded_len(&self) -> der::Result<der::Length> {
        self.0.encoded_len()
    }

    fn encode(&self, writer: &mut impl der::Writer) -> der::Result<()> {
        self.0.encode(writer)
    }
}

impl<T: AssociatedOid + Encode> AsExtension for NonCritical<T> {
    fn critical(&self, _subject: &Name, _extensions: &[x509_cert::ext::Extension]) -> bool {
        false
    }
}

/// The subject of a user certificate: CN=address, or empty when the address is longer
/// than RFC 5280's 64-character CN (the alternative name then carries it, critical).
fn user_subject(address: &str) -> Result<Name, CaError> {
    const UB_COMMON_NAME: usize = 64;
    if address.len() > UB_COMMON_NAME {
        return Ok(RdnSequence(Vec::new()));
    }
    let cn = AttributeTypeAndValue {
        oid: CN,
        value: Any::encode_from(&Utf8StringRef::new(address).map_err(encoding)?)
            .map_err(encoding)?,
    };
    let rdn = RelativeDistinguishedName(SetOfVec::try_from(vec![cn]).map_err(encoding)?);
    Ok(RdnSequence(vec![rdn]))
}

/// `address` as an rfc822Name may carry it: ASCII, with an IDN domain in A-labels.
fn mailbox(address: &str) -> Result<String, CaError> {
    let refused = || CaError::Refused(format!("{address:?} is not an e-mail address"));
    let (local, domain) = address.rsplit_once('@').ok_or_else(refused)?;
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if local.is_empty() || domain.is_empty() || address.chars().any(char::is_whitespace) {
        return Err(refused());
    }
    if !local.is_ascii() {
        return Err(CaError::Unsupported(format!(
            "{address:?} has a non-ASCII local part, which needs an SmtpUTF8Mailbox name (RFC 8398) that sealgate does not issue"
        )));
    }
    let domain = idna::domain_to_ascii(domain).map_err(|_| refused())?;
    if !printable(local) || !printable(&domain) || domain.is_empty() {
        return Err(refused());
    }
    Ok(format!("{local}@{domain}"))
}
