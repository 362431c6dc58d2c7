//! What `keys list` shows of a key, as an admin knows it from `gpg --list-keys` or
//! `openssl x509 -text`: the algorithm and size, the key's own dates, its user IDs or
//! subject, and, for OpenPGP, each subkey with what it is for and whether the gateway
//! can decrypt with it. Read from the cached material when listed; nothing here is
//! stored.

use std::time::SystemTime;

use der::{Decode, Encode};
use openpgp::cert::amalgamation::ValidAmalgamation;
use openpgp::packet::Key;
use openpgp::packet::key::{PublicParts, UnspecifiedRole};
use openpgp::parse::Parse;
use openpgp::types::{KeyFlags, RevocationStatus};
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_cert::Certificate;

use super::entry::{KeyEntry, KeyKind};

/// A key's own description.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDetails {
    /// "ed25519", "rsa3072", "ecdsa P-256", ...
    pub algorithm: String,
    /// What the primary key (or the certificate) is for: gpg's letters for OpenPGP
    /// (S sign, C certify, E encrypt, A authenticate), keyUsage names for X.509.
    pub usage: String,
    /// OpenPGP user IDs; for X.509, the subject.
    pub user_ids: Vec<String>,
    /// X.509: the issuer and the serial number (hex).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub serial: Option<String>,
    /// OpenPGP subkeys.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub subkeys: Vec<SubkeyDetails>,
}

/// One OpenPGP subkey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubkeyDetails {
    pub fingerprint: String,
    pub algorithm: String,
    pub usage: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires: Option<OffsetDateTime>,
    pub revoked: bool,
    /// The gateway holds this subkey's secret (SCKM) and decrypts with it.
    pub decrypts: bool,
    /// The encryption subkey mail to this key is encrypted to (the newest).
    pub current: bool,
}

/// Describes `entry`'s key from its cached material; an empty description when the
/// material does not parse (the entry is still listed).
pub fn describe(entry: &KeyEntry, material: &[u8]) -> KeyDetails {
    match entry.kind {
        KeyKind::Pgp => openpgp::Cert::from_bytes(material)
            .map(|cert| pgp(entry, &cert))
            .unwrap_or_default(),
        KeyKind::Smime => Certificate::from_der(material)
            .map(|cert| x509(&cert))
            .unwrap_or_default(),
    }
}

fn pgp(entry: &KeyEntry, cert: &openpgp::Cert) -> KeyDetails {
    // Legacy keys are listed too: what they are is worth showing even when they are
    // no longer fit to encrypt to.
    let policy = crate::crypto::pgp::legacy_policy();
    let now = SystemTime::now();
    let valid = cert.with_policy(&policy, now).ok();
    let flags_of = |fingerprint: &openpgp::Fingerprint| {
        valid.as_ref().and_then(|v| {
            v.keys()
                .find(|k| k.key().fingerprint() == *fingerprint)
                .and_then(|k| k.key_flags())
        })
    };
    let primary = cert.primary_key().key();
    let current: Vec<String> =
        crate::crypto::pgp::encryption_keys(cert, &openpgp::policy::StandardPolicy::new(), now)
            .map(|keys| {
                keys.keys
                    .iter()
                    .map(|k| k.key().fingerprint().to_hex())
                    .collect()
            })
            .unwrap_or_default();
    let subkeys = cert
        .keys()
        .subkeys()
        .map(|sub| {
            let key = sub.key();
            let fingerprint = key.fingerprint().to_hex();
            let valid_sub = valid.as_ref().and_then(|v| {
                v.keys()
                    .subkeys()
                    .find(|k| k.key().fingerprint() == key.fingerprint())
            });
            SubkeyDetails {
                algorithm: algorithm(key.role_as_unspecified()),
                usage: letters(flags_of(&key.fingerprint())),
                created: OffsetDateTime::from(key.creation_time()),
                expires: valid_sub
                    .as_ref()
                    .and_then(|k| k.key_expiration_time())
                    .map(OffsetDateTime::from),
                revoked: valid_sub
                    .as_ref()
                    .is_some_and(|k| matches!(k.revocation_status(), RevocationStatus::Revoked(_))),
                decrypts: entry.decrypt_subkeys.contains(&fingerprint),
                current: current.contains(&fingerprint),
                fingerprint,
            }
        })
        .collect();
    KeyDetails {
        algorithm: algorithm(primary.role_as_unspecified()),
        usage: letters(flags_of(&primary.fingerprint())),
        user_ids: cert
            .userids()
            .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
            .collect(),
        issuer: None,
        serial: None,
        subkeys,
    }
}

/// gpg's names: "rsa3072", "ed25519", "cv25519", "nistp256", ...
fn algorithm(key: &Key<PublicParts, UnspecifiedRole>) -> String {
    use openpgp::crypto::mpi::PublicKey;
    use openpgp::types::Curve;
    let curve = |curve: &Curve| match curve {
        Curve::Ed25519 => "ed25519".to_string(),
        Curve::Cv25519 => "cv25519".to_string(),
        Curve::NistP256 => "nistp256".to_string(),
        Curve::NistP384 => "nistp384".to_string(),
        Curve::NistP521 => "nistp521".to_string(),
        Curve::BrainpoolP256 => "brainpoolP256r1".to_string(),
        Curve::BrainpoolP384 => "brainpoolP384r1".to_string(),
        Curve::BrainpoolP512 => "brainpoolP512r1".to_string(),
        other => other.to_string().to_lowercase(),
    };
    match key.mpis() {
        PublicKey::RSA { .. } => format!("rsa{}", key.mpis().bits().unwrap_or(0)),
        PublicKey::DSA { .. } => format!("dsa{}", key.mpis().bits().unwrap_or(0)),
        PublicKey::ElGamal { .. } => format!("elg{}", key.mpis().bits().unwrap_or(0)),
        PublicKey::EdDSA { curve: c, .. }
        | PublicKey::ECDSA { curve: c, .. }
        | PublicKey::ECDH { curve: c, .. } => curve(c),
        PublicKey::Ed25519 { .. } => "ed25519".into(),
        PublicKey::Ed448 { .. } => "ed448".into(),
        PublicKey::X25519 { .. } => "cv25519".into(),
        PublicKey::X448 { .. } => "cv448".into(),
        _ => key.pk_algo().to_string().to_lowercase(),
    }
}

/// gpg's usage letters, in its order: S, C, E, A.
fn letters(flags: Option<KeyFlags>) -> String {
    let Some(flags) = flags else {
        return String::new();
    };
    let mut out = String::new();
    for (has, letter) in [
        (flags.for_signing(), 'S'),
        (flags.for_certification(), 'C'),
        (
            flags.for_transport_encryption() || flags.for_storage_encryption(),
            'E',
        ),
        (flags.for_authentication(), 'A'),
    ] {
        if has {
            out.push(letter);
        }
    }
    out
}

fn x509(cert: &Certificate) -> KeyDetails {
    use x509_cert::ext::pkix::KeyUsage;
    let tbs = &cert.tbs_certificate;
    let spki = &tbs.subject_public_key_info;
    let algorithm = match spki.algorithm.oid {
        const_oid::db::rfc5912::RSA_ENCRYPTION => {
            // The modulus is the first INTEGER of the RSAPublicKey.
            let bits = rsa_bits(spki.subject_public_key.raw_bytes()).unwrap_or(0);
            format!("rsa{bits}")
        }
        const_oid::db::rfc5912::ID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok());
            match curve {
                Some(const_oid::db::rfc5912::SECP_256_R_1) => "ecdsa P-256".into(),
                Some(const_oid::db::rfc5912::SECP_384_R_1) => "ecdsa P-384".into(),
                Some(const_oid::db::rfc5912::SECP_521_R_1) => "ecdsa P-521".into(),
                other => format!("ec {other:?}"),
            }
        }
        other => other.to_string(),
    };
    let usage = tbs
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_KEY_USAGE)
        .and_then(|e| KeyUsage::from_der(e.extn_value.as_bytes()).ok())
        .map(|ku| {
            ku.0.into_iter()
                .map(|flag| format!("{flag:?}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    KeyDetails {
        algorithm,
        usage,
        user_ids: vec![tbs.subject.to_string()],
        issuer: Some(tbs.issuer.to_string()),
        serial: tbs
            .serial_number
            .to_der()
            .ok()
            .map(|_| hex(tbs.serial_number.as_bytes())),
        subkeys: Vec::new(),
    }
}

/// The bit length of an RSAPublicKey's modulus.
fn rsa_bits(der: &[u8]) -> Option<usize> {
    use der::{Reader, SliceReader};
    let sequence = der::asn1::AnyRef::from_der(der).ok()?;
    let mut fields = SliceReader::new(sequence.value()).ok()?;
    let modulus = der::asn1::UintRef::decode(&mut fields).ok()?;
    let _ = fields.is_finished();
    let bytes = modulus.as_bytes();
    let leading = bytes.first().map_or(0, |b| b.leading_zeros() as usize);
    Some(bytes.len() * 8 - leading)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
