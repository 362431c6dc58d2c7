//! The Organization key: an OpenPGP key of the organization's own, certify-only, that
//! vouches for internal users' keys with short-lived third-party certifications.
//! Partners who trust it (`gpg --edit-key ORG trust`) see every key it certified as
//! valid while the certification runs.
//!
//! Pure functions on sequoia certs: making the key, checking one made elsewhere, and
//! certifying a user's key.

use std::time::{Duration, SystemTime};

use openpgp::Cert;
use openpgp::cert::{CertBuilder, CipherSuite};
use openpgp::crypto::Password;
use openpgp::packet::signature::SignatureBuilder;
use openpgp::packet::{Packet, Signature};
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::types::{KeyFlags, SignatureType};
use sequoia_openpgp as openpgp;
use time::OffsetDateTime;

use super::OrgError;

/// Makes the Organization key: an Ed25519 primary that only certifies (it never signs
/// mail, and has no encryption subkey: no one encrypts to the organization), with one
/// user ID, `name`, and no expiry unless `expires` says otherwise.
pub fn generate(
    name: &str,
    expires: Option<Duration>,
    now: OffsetDateTime,
) -> Result<Cert, OrgError> {
    let (cert, _) = CertBuilder::new()
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_creation_time(SystemTime::from(now))
        .set_primary_key_flags(KeyFlags::empty().set_certification())
        .set_validity_period(expires)
        .add_userid(name)
        .generate()
        .map_err(|e| OrgError::Internal(format!("making the org key: {e}")))?;
    Ok(cert)
}

/// Checks an org key made elsewhere (`org import`): one cert whose secret primary key
/// can certify, unlocked with `passphrase` when it is protected. Returns it unlocked.
pub fn check_import(bytes: &[u8], passphrase: Option<&str>) -> Result<Cert, OrgError> {
    let refused = |why: String| OrgError::Refused(why);
    let certs: Vec<Cert> = openpgp::cert::CertParser::from_bytes(bytes)
        .map_err(|e| refused(format!("not an OpenPGP key: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| refused(format!("not an OpenPGP key: {e}")))?;
    let [cert] = <[Cert; 1]>::try_from(certs).map_err(|certs| {
        refused(format!(
            "{} keys in the file; the org key is one",
            certs.len()
        ))
    })?;
    let policy = StandardPolicy::new();
    let valid = cert
        .with_policy(&policy, None)
        .map_err(|e| refused(format!("key {} is not valid: {e}", cert.fingerprint())))?;
    if !valid.primary_key().for_certification() {
        return Err(refused(format!(
            "key {}: its primary key cannot certify",
            cert.fingerprint()
        )));
    }
    let primary = cert.primary_key().key().clone();
    let Ok(secret) = primary.parts_into_secret() else {
        return Err(refused(format!(
            "key {} has no secret primary key: export it with --export-secret-keys",
            cert.fingerprint()
        )));
    };
    let unlocked = if secret.has_unencrypted_secret() {
        secret
    } else {
        let Some(passphrase) = passphrase else {
            return Err(refused(format!(
                "key {} is protected by a passphrase: give it with --passphrase-file",
                cert.fingerprint()
            )));
        };
        secret
            .decrypt_secret(&Password::from(passphrase))
            .map_err(|_| {
                refused(format!(
                    "the passphrase does not unlock key {}",
                    cert.fingerprint()
                ))
            })?
    };
    let (cert, _) = cert
        .insert_packets(Packet::from(unlocked.role_into_primary()))
        .map_err(|e| OrgError::Internal(format!("unlocking the org key: {e}")))?;
    Ok(cert)
}

/// The org key's certifications of `user`'s user IDs for `address` (each one whose
/// e-mail address is `address`, compared case-insensitively), made `now` and valid for
/// `validity`. None when no user ID names the address.
pub fn certify(
    org: &Cert,
    user: &Cert,
    address: &str,
    now: OffsetDateTime,
    validity: Duration,
) -> Result<Vec<Signature>, OrgError> {
    let mut signer = org
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .and_then(|k| k.into_keypair())
        .map_err(|e| OrgError::Internal(format!("the org key's secret: {e}")))?;
    let mut signatures = Vec::new();
    for ua in user.userids() {
        let email = ua.userid().email_normalized().ok().flatten();
        if email.as_deref() != Some(address) {
            continue;
        }
        let signature = SignatureBuilder::new(SignatureType::GenericCertification)
            .set_signature_creation_time(SystemTime::from(now))
            .and_then(|b| b.set_signature_validity_period(validity))
            .and_then(|b| b.sign_userid_binding(&mut signer, user.primary_key().key(), ua.userid()))
            .map_err(|e| OrgError::Internal(format!("certifying {address}: {e}")))?;
        signatures.push(signature);
    }
    Ok(signatures)
}

/// Signature packets, serialized one after the other (how they are stored).
pub fn serialize(signatures: &[Signature]) -> Vec<u8> {
    signatures
        .iter()
        .flat_map(|s| {
            Packet::from(s.clone())
                .to_vec()
                .expect("a signature serializes")
        })
        .collect()
}

/// `user` with the stored certifications `signatures` added.
pub fn with_certifications(user: Cert, signatures: &[u8]) -> Result<Cert, OrgError> {
    let packets = openpgp::PacketPile::from_bytes(signatures)
        .map_err(|e| OrgError::Internal(format!("stored certification: {e}")))?;
    user.insert_packets(packets.into_children())
        .map(|(cert, _)| cert)
        .map_err(|e| OrgError::Internal(format!("adding the certification: {e}")))
}

/// The armored public key (`org export`), or with `secret` the armored keypair.
pub fn armored(cert: &Cert, secret: bool) -> Vec<u8> {
    if secret {
        cert.as_tsk().armored().to_vec()
    } else {
        cert.armored().to_vec()
    }
    .expect("a cert serializes")
}
