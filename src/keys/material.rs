//! Key material to cache entries: OpenPGP certs (sequoia-openpgp) and X.509
//! certificates (x509-cert), each checked for what makes it worth caching.
//!
//! Every function here is bounded: at most [`MAX_KEY_BYTES`] of input, [`MAX_CERTS`]
//! certificates per block and [`MAX_USERIDS`] user IDs per key, so that a key bomb
//! costs a refusal, not memory or minutes of CPU.

use std::collections::BTreeSet;
use std::time::SystemTime;

use der::{Decode, DecodePem, Encode};
use openpgp::cert::CertParser;
use openpgp::cert::amalgamation::{ValidAmalgamation, ValidateAmalgamation};
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::types::RevocationStatus;
use sequoia_openpgp as openpgp;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages, SubjectAltName, name::GeneralName};

use super::address;
use super::entry::{KeyKind, Source};
use super::store::Candidate;

/// The largest key block or certificate we parse.
pub const MAX_KEY_BYTES: usize = 256 * 1024;
/// The most certificates we take from one block.
pub const MAX_CERTS: usize = 16;
/// The most user IDs an OpenPGP key may have. Real keys have a handful; each one
/// validated costs a pass over the key in sequoia, so this bounds the work per key.
pub const MAX_USERIDS: usize = 64;

/// Why a key was not cached. It names the reason in an admin's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(reason.into()))
}

/// Provenance of a key, carried into its entries.
#[derive(Debug, Clone)]
pub struct Origin {
    pub source: Source,
    pub message_id: Option<String>,
    pub sender: Option<String>,
}

/// A public key that passed the checks, before it is tied to its addresses.
struct PublicKey {
    kind: KeyKind,
    fingerprint: String,
    created: OffsetDateTime,
    expires: Option<OffsetDateTime>,
    /// A binary OpenPGP cert, or an X.509 certificate's DER.
    material: Vec<u8>,
    /// Revoked by its owner: cached to be known as revoked, never to encrypt to.
    revoked: bool,
}

impl PublicKey {
    /// One key cache candidate per address: public keys only, never a secret.
    fn candidates(
        self,
        addresses: impl IntoIterator<Item = String>,
        origin: &Origin,
    ) -> Vec<Candidate> {
        addresses
            .into_iter()
            .map(|address| Candidate {
                address,
                kind: self.kind,
                fingerprint: self.fingerprint.clone(),
                source: origin.source,
                message_id: origin.message_id.clone(),
                sender: origin.sender.clone(),
                can_encrypt: !self.revoked,
                can_decrypt: false,
                key_created: self.created,
                key_expires: self.expires,
                material: self.material.clone(),
                legacy: false,
                sealed_secret: None,
                authenticated: false,
                chain_validated: false,
                revoked: self.revoked,
                decrypt_subkeys: Vec::new(),
                reads_aes_gcm: false,
                carried: None,
            })
            .collect()
    }
}

fn to_offset(time: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(time)
}

fn to_system(time: OffsetDateTime) -> SystemTime {
    SystemTime::from(time)
}

/// Parses every OpenPGP cert in `bytes` (armored or binary), at most [`MAX_CERTS`].
pub fn parse_pgp(bytes: &[u8]) -> Result<Vec<openpgp::Cert>, Refusal> {
    if bytes.len() > MAX_KEY_BYTES {
        return refuse(format!(
            "key block of {} bytes is over the {MAX_KEY_BYTES}-byte limit",
            bytes.len()
        ));
    }
    too_many_userids(bytes)?;
    let parser =
        CertParser::from_bytes(bytes).map_err(|e| Refusal(format!("not an OpenPGP key: {e}")))?;
    let mut certs = Vec::new();
    for cert in parser.take(MAX_CERTS) {
        certs.push(cert.map_err(|e| Refusal(format!("malformed OpenPGP key: {e}")))?);
    }
    if certs.is_empty() {
        return refuse("no OpenPGP key in it");
    }
    Ok(certs)
}

/// Refuses a key block in which one key has more than [`MAX_USERIDS`] user IDs, after
/// reading packet headers only: building the cert first would cost time that grows
/// faster than the number of user IDs (sorting, deduplicating) before it is refused.
fn too_many_userids(bytes: &[u8]) -> Result<(), Refusal> {
    use openpgp::Packet;
    use openpgp::parse::{PacketParserResult, Parse};
    let Ok(mut result) = openpgp::parse::PacketParser::from_bytes(bytes) else {
        // Whatever it is, the cert parser says what is wrong with it.
        return Ok(());
    };
    let mut userids = 0;
    while let PacketParserResult::Some(pp) = result {
        match &pp.packet {
            Packet::PublicKey(_) | Packet::SecretKey(_) => userids = 0,
            Packet::UserID(_) => {
                userids += 1;
                if userids > MAX_USERIDS {
                    return refuse(format!(
                        "a key has more than the {MAX_USERIDS} user IDs a key may have here"
                    ));
                }
            }
            _ => {}
        }
        result = match pp.next() {
            Ok((_, next)) => next,
            Err(_) => return Ok(()),
        };
    }
    Ok(())
}

/// Entries for an OpenPGP cert, one per e-mail address in its valid user IDs. With
/// `only`, just that address, and the stored cert keeps only the user IDs for it. A
/// cert that is expired or has no valid encryption-capable subkey is refused. A revoked
/// cert is not: its entries say it is revoked, so that a cached copy is marked and never
/// encrypted to again.
pub fn pgp_candidates(
    cert: &openpgp::Cert,
    only: Option<&str>,
    origin: &Origin,
    now: OffsetDateTime,
) -> Result<Vec<Candidate>, Refusal> {
    let policy = StandardPolicy::new();
    let fingerprint = cert.fingerprint().to_hex();
    let valid = cert.with_policy(&policy, to_system(now)).map_err(|e| {
        Refusal(format!(
            "key {fingerprint} has no valid self-signature: {e}"
        ))
    })?;
    let revoked = matches!(valid.revocation_status(), RevocationStatus::Revoked(_));
    if !revoked {
        crate::crypto::pgp::encryption_keys(cert, &policy, to_system(now)).map_err(
            |e| match e {
                crate::crypto::CryptoError::Key(reason) => Refusal(reason),
                other => Refusal(format!("key {fingerprint}: {other}")),
            },
        )?;
    }
    let userids = cert.userids().count();
    if userids > MAX_USERIDS {
        return refuse(format!(
            "key {fingerprint} has {userids} user IDs, more than the {MAX_USERIDS} a key may have here"
        ));
    }
    // Only the user IDs with an address we want are validated: sequoia validates one
    // with a pass over the whole cert, so validating them all costs the square of
    // their number (a key with 4,000 user IDs took 52 s of CPU).
    let mut addresses = BTreeSet::new();
    for userid in cert.userids() {
        let Some(normalized) = userid
            .userid()
            .email()
            .ok()
            .flatten()
            .and_then(address::normalize)
        else {
            continue;
        };
        if only.is_some_and(|only| only != normalized) || addresses.contains(&normalized) {
            continue;
        }
        let revoked = match userid.with_policy(&policy, to_system(now)) {
            Ok(valid) => matches!(valid.revocation_status(), RevocationStatus::Revoked(_)),
            Err(_) => continue,
        };
        if !revoked {
            addresses.insert(normalized);
        }
    }
    if addresses.is_empty() {
        return refuse(match only {
            Some(only) => format!("key {fingerprint} has no valid user ID for {only}"),
            None => format!("key {fingerprint} has no valid user ID with an e-mail address"),
        });
    }

    let public = cert.clone().strip_secret_key_material();
    let public = match only {
        // Keep nothing that names anyone else: the entry is for this address only.
        Some(_) => public.retain_userids(|ua| {
            ua.userid()
                .email()
                .ok()
                .flatten()
                .and_then(address::normalize)
                .is_some_and(|a| addresses.contains(&a))
        }),
        None => public,
    };
    let material = public
        .to_vec()
        .map_err(|e| Refusal(format!("key {fingerprint} cannot be serialized: {e}")))?;
    let key_created = to_offset(cert.primary_key().key().creation_time());
    let key_expires = valid.primary_key().key_expiration_time().map(to_offset);
    let key = PublicKey {
        kind: KeyKind::Pgp,
        fingerprint,
        created: key_created,
        expires: key_expires,
        material,
        revoked,
    };
    Ok(key.candidates(addresses, origin))
}

/// Parses X.509 certificates: PEM (one or more) or a single DER certificate.
pub fn parse_x509(bytes: &[u8]) -> Result<Vec<Certificate>, Refusal> {
    if bytes.len() > MAX_KEY_BYTES {
        return refuse(format!(
            "certificate file of {} bytes is over the {MAX_KEY_BYTES}-byte limit",
            bytes.len()
        ));
    }
    let blocks = pem_certificates(bytes);
    if blocks.len() > MAX_CERTS {
        return refuse(format!("more than {MAX_CERTS} certificates in one file"));
    }
    if !blocks.is_empty() {
        return blocks
            .into_iter()
            .map(|block| {
                Certificate::from_pem(block)
                    .map_err(|e| Refusal(format!("malformed PEM certificate: {e}")))
            })
            .collect();
    }
    Certificate::from_der(bytes)
        .map(|cert| vec![cert])
        .map_err(|e| Refusal(format!("not an X.509 certificate: {e}")))
}

const PEM_BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
const PEM_END: &[u8] = b"-----END CERTIFICATE-----";

/// The PEM certificate blocks in `bytes`, at most one more than [`MAX_CERTS`]. RFC 7468
/// lets explanatory text surround them: `openssl x509 -text` writes a dump before the
/// block, `openssl s_client -showcerts` writes lines between blocks.
fn pem_certificates(bytes: &[u8]) -> Vec<&[u8]> {
    let mut blocks = Vec::new();
    let mut rest = bytes;
    while blocks.len() <= MAX_CERTS {
        let Some(start) = memchr::memmem::find(rest, PEM_BEGIN) else {
            break;
        };
        // An unterminated block is handed on whole, for the PEM parser to refuse.
        let end = memchr::memmem::find(&rest[start..], PEM_END)
            .map_or(rest.len(), |len| start + len + PEM_END.len());
        blocks.push(&rest[start..end]);
        rest = &rest[end..];
    }
    blocks
}

/// The e-mail addresses a certificate is for: its rfc822Name SANs, or, only when it has
/// none, the emailAddress attributes of its subject.
pub fn x509_addresses(cert: &Certificate) -> BTreeSet<String> {
    let mut addresses = BTreeSet::new();
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME
            && let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes())
        {
            for name in san.0 {
                if let GeneralName::Rfc822Name(email) = name {
                    addresses.extend(address::normalize(email.as_str()));
                }
            }
        }
    }
    if addresses.is_empty() {
        for rdn in cert.tbs_certificate.subject.0.iter() {
            for attr in rdn.0.iter() {
                if attr.oid == const_oid::db::rfc3280::EMAIL_ADDRESS
                    && let Ok(email) = der::asn1::Ia5StringRef::try_from(&attr.value)
                {
                    addresses.extend(address::normalize(email.as_str()));
                }
            }
        }
    }
    addresses
}

/// Whether the certificate's key usage allows encryption (keyEncipherment or
/// keyAgreement). A certificate without the extension may be used for anything
/// (RFC 5280 §4.2.1.3).
pub fn x509_can_encrypt(cert: &Certificate) -> bool {
    let usage = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|ext| ext.extn_id == const_oid::db::rfc5280::ID_CE_KEY_USAGE);
    match usage {
        None => true,
        Some(ext) => KeyUsage::from_der(ext.extn_value.as_bytes()).is_ok_and(|usage| {
            usage.0.contains(KeyUsages::KeyEncipherment)
                || usage.0.contains(KeyUsages::KeyAgreement)
        }),
    }
}

/// Upper-case hex SHA-256 of the DER certificate: its fingerprint in the key cache.
pub fn x509_fingerprint(der: &[u8]) -> String {
    hex_upper(&Sha256::digest(der))
}

pub fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Entries for an S/MIME certificate, one per address it names (with `only`, just that
/// one). Refused when outside its validity period, when its key usage does not allow
/// encryption, or when it names no (matching) address.
pub fn x509_candidates(
    cert: &Certificate,
    only: Option<&str>,
    origin: &Origin,
    now: OffsetDateTime,
) -> Result<Vec<Candidate>, Refusal> {
    let der = cert
        .to_der()
        .map_err(|e| Refusal(format!("certificate cannot be encoded: {e}")))?;
    let fingerprint = x509_fingerprint(&der);
    let validity = &cert.tbs_certificate.validity;
    let not_before = to_offset(validity.not_before.to_system_time());
    let not_after = to_offset(validity.not_after.to_system_time());
    if now < not_before {
        return refuse(format!(
            "certificate {fingerprint} is not valid before {not_before}"
        ));
    }
    if now >= not_after {
        return refuse(format!("certificate {fingerprint} expired at {not_after}"));
    }
    if !x509_can_encrypt(cert) {
        return refuse(format!(
            "certificate {fingerprint} is for signing only (no keyEncipherment or keyAgreement)"
        ));
    }
    let addresses: Vec<String> = x509_addresses(cert)
        .into_iter()
        .filter(|a| only.is_none_or(|only| only == a))
        .collect();
    if addresses.is_empty() {
        return refuse(match only {
            Some(only) => format!("certificate {fingerprint} is not for {only}"),
            None => format!("certificate {fingerprint} names no e-mail address"),
        });
    }
    let key = PublicKey {
        kind: KeyKind::Smime,
        fingerprint,
        created: not_before,
        expires: Some(not_after),
        material: der,
        revoked: false,
    };
    Ok(key.candidates(addresses, origin))
}

/// Entries for a file an admin imports: OpenPGP (armored or binary) or X.509 (PEM or
/// DER). Secret key material is refused: that is `keys import-sckm`'s business.
pub fn import_candidates(
    bytes: &[u8],
    origin: &Origin,
    now: OffsetDateTime,
) -> Result<Vec<Candidate>, Refusal> {
    let looks_x509 = !pem_certificates(bytes).is_empty()
        || (bytes.first() == Some(&0x30) && Certificate::from_der(bytes).is_ok());
    let mut candidates = Vec::new();
    if looks_x509 {
        // A certificate with its private key (one PEM file, as many tools write it)
        // is an SCKM key, not a public one.
        if memchr::memmem::find(bytes, b"PRIVATE KEY-----").is_some() {
            return refuse(
                "the file contains a private key; public certificates only here (SCKM keys use keys import-sckm)",
            );
        }
        for cert in parse_x509(bytes)? {
            candidates.extend(x509_candidates(&cert, None, origin, now)?);
        }
        return Ok(candidates);
    }
    for cert in parse_pgp(bytes)? {
        if cert.is_tsk() {
            return refuse(format!(
                "key {} contains secret key material; public keys only here (SCKM keys use keys import-sckm)",
                cert.fingerprint().to_hex()
            ));
        }
        candidates.extend(pgp_candidates(&cert, None, origin, now)?);
    }
    Ok(candidates)
}
