//! The Organization certificate: the X.509 CA with which sealgate issues each internal user
//! an S/MIME certificate for the user's own encryption key, and signs the CRL of the ones it
//! revoked.
//!
//! Pure: bytes in, bytes out, no I/O. The caller stores the CA (sealing its key at rest),
//! decides who gets a certificate and when, and checks that no user has the CA's address.
//! Certificates are built with x509-cert's builder; the CRL, which that builder cannot
//! make, is assembled from x509-cert's own types and signed with the same key.

mod crl;
mod key;
mod spki;
#[cfg(test)]
mod tests;
mod user;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use const_oid::db::rfc3280::EMAIL_ADDRESS;
use der::asn1::{GeneralizedTime, Ia5StringRef, OctetString, UtcTime, Utf8StringRef};
use der::referenced::OwnedToRef;
use der::{Any, Decode, Encode, Tag, Tagged};
use sha1::{Digest, Sha1};
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::name::{Name, RdnSequence};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use zeroize::Zeroizing;

use key::{CaKey, CaSignature};
pub use spki::{pkcs8_of_openpgp_secret, spki_of_certificate, spki_of_openpgp};
pub use x509_cert::spki::SubjectPublicKeyInfoOwned;

/// How far before `now` a user certificate starts, so that a peer whose clock is a little
/// behind does not see a certificate from the future.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// Octets in a serial number: 126 random bits, well inside RFC 5280's 20 octets.
const SERIAL_LEN: usize = 16;

/// What went wrong, and whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The admin's input cannot be used (a certificate that is not a CA, a key that does not
    /// match it, an expired CA, a malformed subject or address). The message says what to
    /// change.
    #[error("{0}")]
    Refused(String),
    /// A key of a type sealgate cannot sign with or put into an S/MIME certificate (a
    /// cv25519 encryption subkey, an Ed25519 CA key, a curve other than P-256/P-384). The
    /// message names the kinds that work.
    #[error("{0}")]
    Unsupported(String),
    /// sealgate failed at something that does not fail on good input (encoding, signing):
    /// a bug, not the admin's doing.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The Organization certificate and its private key.
pub struct Ca {
    /// The certificate, DER, as stored and as chains carry it.
    cert_der: Vec<u8>,
    /// `cert_der` parsed: the subject and extensions are read from it.
    cert: Certificate,
    /// The start of the certificate's validity, before which no user certificate starts.
    not_before: OffsetDateTime,
    /// The end of the certificate's validity, which no user certificate passes.
    not_after: OffsetDateTime,
    /// What issued certificates and the CRL name as their authorityKeyIdentifier: the CA's
    /// own subjectKeyIdentifier when it has one (validators match the two), else the SHA-1
    /// of its key (RFC 5280 section 4.2.1.2, method 1).
    key_id: Vec<u8>,
    /// Signs certificates and CRLs.
    key: CaKey,
    /// The key as PKCS#8 DER, encoded once, for [`Ca::key_pkcs8`].
    key_pkcs8: Zeroizing<Vec<u8>>,
}

/// A user certificate just issued.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its serial number as DER INTEGER content octets: what [`Ca::crl`] takes to revoke it.
    pub serial: Vec<u8>,
    /// The serial in upper-case hex, as `openssl x509 -serial` prints it.
    pub serial_hex: String,
    /// When it expires: the requested validity, or the CA's end when that comes first.
    pub not_after: OffsetDateTime,
}

impl fmt::Debug for Ca {
    // Never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.subject())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// A self-signed Organization certificate with a fresh P-256 key. `subject` is an RFC
    /// 4514 name such as `CN=Example Org CA,O=Example Org`, most specific first as RFC 4514
    /// writes it (openssl prints the encoded order: `O = Example Org, CN = Example Org
    /// CA`). The certificate is valid from `now` to `not_after` and carries the extensions a
    /// validator requires of a CA: basicConstraints cA (critical; path length 0, since it
    /// issues only user certificates), keyUsage keyCertSign and cRLSign (critical), and a
    /// subjectKeyIdentifier. It has no e-mail address unless `subject` names one.
    pub fn self_signed(
        subject: &str,
        now: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Ca, CaError> {
        let name = parse_subject(subject)?;
        let (now, not_after) = (whole_seconds(now), whole_seconds(not_after));
        if not_after <= now {
            return Err(CaError::Refused(format!(
                "the Organization certificate would expire ({not_after}) before it starts ({now})"
            )));
        }
        let key = CaKey::generate_p256()?;
        let public = key.public_spki()?;
        let validity = Validity {
            not_before: x509_time(now)?,
            not_after: x509_time(not_after)?,
        };
        let mut builder = CertificateBuilder::new(
            Profile::Manual { issuer: None },
            random_serial()?,
            validity,
            name,
            public.clone(),
            &key,
        )
        .map_err(building)?;
        let ski = SubjectKeyIdentifier::try_from(public.owned_to_ref()).map_err(encoding)?;
        let ca = BasicConstraints {
            ca: true,
            path_len_constraint: Some(0),
        };
        builder.add_extension(&ca).map_err(building)?;
        let usage = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
        builder.add_extension(&usage).map_err(building)?;
        builder.add_extension(&ski).map_err(building)?;
        let cert = builder.build::<CaSignature>().map_err(building)?;
        let cert_der = cert.to_der().map_err(encoding)?;
        Ca::assemble(cert, cert_der, key)
    }

    /// The keypair of the organization's own CA: `cert` (PEM or DER; from a PEM chain, the
    /// certificate of `key`) and `key` (PKCS#8, encrypted PKCS#8 opened with `passphrase`,
    /// or the traditional RSA/EC PEM forms; PEM or DER). Refuses a certificate that is not
    /// a CA, a key that is not the certificate's, and a certificate that has expired or has
    /// not begun at `now`.
    pub fn import(
        cert: &[u8],
        key: &[u8],
        passphrase: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Ca, CaError> {
        let key = CaKey::parse(key, passphrase)?;
        let certs = key::certificates(cert)?;
        if certs.is_empty() {
            return Err(CaError::Refused(
                "the certificate file holds no CERTIFICATE".into(),
            ));
        }
        let Some((cert, cert_der)) = certs
            .into_iter()
            .find(|(c, _)| key.matches(&c.tbs_certificate.subject_public_key_info))
        else {
            return Err(CaError::Refused(
                "the private key does not belong to the certificate".into(),
            ));
        };
        check_ca(&cert)?;
        let subject = &cert.tbs_certificate.subject;
        let validity = &cert.tbs_certificate.validity;
        let not_before = offset_time(validity.not_before)?;
        let not_after = offset_time(validity.not_after)?;
        if not_after <= now {
            return Err(CaError::Refused(format!(
                "the CA certificate {subject} expired at {not_after}"
            )));
        }
        // A CA made a moment ago on a machine whose clock is a little ahead is not refused.
        if now + CLOCK_SKEW < not_before {
            return Err(CaError::Refused(format!(
                "the CA certificate {subject} is not valid before {not_before}"
            )));
        }
        Ca::assemble(cert, cert_der, key)
    }

    /// A CA that [`Ca::cert_der`] and [`Ca::key_pkcs8`] stored. An expired one loads (it can
    /// still sign a CRL); [`Ca::issue`] refuses it.
    pub fn from_stored(cert_der: &[u8], key_pkcs8: &[u8]) -> Result<Ca, CaError> {
        let cert = Certificate::from_der(cert_der)
            .map_err(|e| CaError::Refused(format!("the stored certificate is unreadable: {e}")))?;
        let key = CaKey::from_pkcs8_der(key_pkcs8)?;
        if !key.matches(&cert.tbs_certificate.subject_public_key_info) {
            return Err(CaError::Refused(
                "the stored key does not belong to the stored certificate".into(),
            ));
        }
        check_ca(&cert)?;
        Ca::assemble(cert, cert_der.to_vec(), key)
    }

    /// `cert_der` is `cert` as the issuer signed it.
    fn assemble(cert: Certificate, cert_der: Vec<u8>, key: CaKey) -> Result<Ca, CaError> {
        let tbs = &cert.tbs_certificate;
        let not_before = offset_time(tbs.validity.not_before)?;
        let not_after = offset_time(tbs.validity.not_after)?;
        let key_id = match tbs.get::<SubjectKeyIdentifier>() {
            Ok(Some((_, ski))) => ski.0.as_bytes().to_vec(),
            _ => Sha1::digest(tbs.subject_public_key_info.subject_public_key.raw_bytes()).to_vec(),
        };
        let key_pkcs8 = key.to_pkcs8()?;
        Ok(Ca {
            cert_der,
            cert,
            not_before,
            not_after,
            key_id,
            key,
            key_pkcs8,
        })
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The private key as unencrypted PKCS#8 DER, for the caller to seal at rest.
    pub fn key_pkcs8(&self) -> Zeroizing<Vec<u8>> {
        self.key_pkcs8.clone()
    }

    /// When the certificate expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The subject as RFC 4514 text (`CN=Example Org CA,O=Example Org`).
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// The e-mail addresses the certificate carries, in the subject's emailAddress or as
    /// rfc822Name alternative names: the caller checks that none is a user's.
    pub fn emails(&self) -> Vec<String> {
        let tbs = &self.cert.tbs_certificate;
        let in_subject = tbs
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .filter(|atv| atv.oid == EMAIL_ADDRESS)
            .filter_map(|atv| attribute_text(&atv.value));
        let in_san = tbs
            .filter::<SubjectAltName>()
            .filter_map(Result::ok)
            .flat_map(|(_, san)| san.0)
            .filter_map(|name| match name {
                GeneralName::Rfc822Name(address) => Some(address.to_string()),
                _ => None,
            });
        in_subject.chain(in_san).collect()
    }

    /// The authorityKeyIdentifier of what the CA signs.
    fn authority_key_id(&self) -> Result<AuthorityKeyIdentifier, CaError> {
        Ok(AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(self.key_id.clone()).map_err(encoding)?),
            ..Default::default()
        })
    }
}

/// Refuses a certificate that may not issue certificates and CRLs.
fn check_ca(cert: &Certificate) -> Result<(), CaError> {
    let tbs = &cert.tbs_certificate;
    let subject = &tbs.subject;
    let unreadable = |what: &str, e: der::Error| {
        CaError::Refused(format!(
            "the certificate {subject} has an unreadable {what}: {e}"
        ))
    };
    let constraints = tbs
        .get::<BasicConstraints>()
        .map_err(|e| unreadable("basicConstraints", e))?;
    if !constraints.is_some_and(|(_, c)| c.ca) {
        return Err(CaError::Refused(format!(
            "the certificate {subject} is not a CA certificate (it lacks basicConstraints cA=TRUE): give the certificate of the organization's CA"
        )));
    }
    if let Some((_, usage)) = tbs
        .get::<KeyUsage>()
        .map_err(|e| unreadable("keyUsage", e))?
    {
        for (needed, name) in [
            (KeyUsages::KeyCertSign, "keyCertSign"),
            (KeyUsages::CRLSign, "cRLSign"),
        ] {
            if !usage.0.contains(needed) {
                return Err(CaError::Refused(format!(
                    "the CA certificate {subject} may not sign what sealgate signs with it: its keyUsage lacks {name}"
                )));
            }
        }
    }
    Ok(())
}

fn parse_subject(subject: &str) -> Result<Name, CaError> {
    let refused = |why: String| {
        CaError::Refused(format!(
            "the subject {subject:?} {why}; write an RFC 4514 name such as \"CN=Example Org CA,O=Example Org\""
        ))
    };
    let name = RdnSequence::from_str(subject)
        .map_err(|e| refused(format!("is not an RFC 4514 name ({e})")))?;
    if name.0.is_empty() {
        return Err(refused("is empty".into()));
    }
    Ok(name)
}

/// A random positive serial of [`SERIAL_LEN`] octets. Its first octet is between 0x40 and
/// 0x7f, so that the DER content octets are exactly the random octets (no sign octet, no
/// leading zero) and openssl prints them as they are.
pub(crate) fn random_serial() -> Result<SerialNumber, CaError> {
    use rand::RngCore;
    let mut octets = [0u8; SERIAL_LEN];
    rand::rngs::OsRng.fill_bytes(&mut octets);
    octets[0] = (octets[0] & 0x3f) | 0x40;
    SerialNumber::new(&octets).map_err(encoding)
}

/// `t` truncated to the second, as X.509 keeps it.
pub(crate) fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// `t` as RFC 5280 wants it: UTCTime through 2049, GeneralizedTime from 2050.
pub(crate) fn x509_time(t: OffsetDateTime) -> Result<Time, CaError> {
    let refused = || CaError::Refused(format!("{t} cannot be a certificate time"));
    let seconds = u64::try_from(t.unix_timestamp()).map_err(|_| refused())?;
    let date =
        der::DateTime::from_unix_duration(Duration::from_secs(seconds)).map_err(|_| refused())?;
    if date.year() <= UtcTime::MAX_YEAR {
        Ok(Time::UtcTime(
            UtcTime::from_date_time(date).map_err(encoding)?,
        ))
    } else {
        Ok(Time::GeneralTime(GeneralizedTime::from_date_time(date)))
    }
}

fn offset_time(t: Time) -> Result<OffsetDateTime, CaError> {
    i64::try_from(t.to_unix_duration().as_secs())
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| CaError::Refused(format!("the certificate time {t} is out of range")))
}

/// An attribute value's text, whichever string type it has.
fn attribute_text(value: &Any) -> Option<String> {
    match value.tag() {
        Tag::Ia5String => Ia5StringRef::try_from(value).ok().map(|s| s.to_string()),
        Tag::Utf8String => Utf8StringRef::try_from(value).ok().map(|s| s.to_string()),
        _ => None,
    }
}

fn encoding(e: der::Error) -> CaError {
    CaError::Internal(format!("DER encoding: {e}"))
}

fn building(e: x509_cert::builder::Error) -> CaError {
    CaError::Internal(format!("building a certificate: {e}"))
}
