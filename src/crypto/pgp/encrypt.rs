//! Encryption: one OpenPGP message to every recipient cert, never signed, in ASCII
//! armor with CRLF line ends.

use std::io::Write;
use std::time::SystemTime;

use openpgp::cert::Preferences;
use openpgp::crypto::SessionKey;
use openpgp::packet::key::{PublicParts, UnspecifiedRole};
use openpgp::packet::pkesk::{PKESK3, PKESK6};
use openpgp::packet::{Key, PKESK};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::Serialize;
use openpgp::types::{PublicKeyAlgorithm, SymmetricAlgorithm};
use openpgp::{Cert, Packet};
use rand::RngCore;
use rand::rngs::OsRng;
use sequoia_openpgp as openpgp;
use zeroize::Zeroizing;

use super::armor::ArmorWriter;
use super::encryption_keys;
use crate::crypto::CryptoError;

/// Encrypts `plaintext` (a complete MIME entity) to every recipient cert at once, to each
/// cert's valid, alive, non-revoked encryption-capable subkeys (transport and storage).
/// Never signs. SEIPDv1 unless every recipient cert advertises SEIPDv2 support in its
/// features, then SEIPDv2 (sequoia's `Encryptor` makes exactly that choice). Returns an
/// ASCII-armored `-----BEGIN PGP MESSAGE-----` block with CRLF line endings.
///
/// A cert that is revoked, expired, invalid under the standard policy (legacy SHA-1
/// keys included) or without a usable encryption subkey is a [`CryptoError::Key`]:
/// encrypting to the others only would silently leave a recipient out.
pub fn encrypt(plaintext: &[u8], recipients: &[Cert]) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(plaintext.len() / 3 * 4 + plaintext.len() / 24 + 1024);
    let recipients: Vec<&Cert> = recipients.iter().collect();
    let mut armor = ArmorWriter::new(&mut out);
    encrypt_into(&mut armor, &[plaintext], &recipients)?;
    armor.finish();
    Ok(out)
}

/// [`encrypt`], the binary message written to `out` as it is made, and the plaintext
/// given in pieces (an entity's header and the message's body chunks, never joined): a
/// large message is then held once as it came and once encrypted (in binary, see
/// [`super::armor::Binary`]), and never as a joined plaintext, nor armored besides. On
/// an error, `out` has had a part of a message, to be thrown away.
pub fn encrypt_into(
    out: &mut dyn Write,
    plaintext: &[&[u8]],
    recipients: &[&Cert],
) -> Result<(), CryptoError> {
    if recipients.is_empty() {
        return Err(CryptoError::Key("no recipient keys".into()));
    }
    let policy = StandardPolicy::new();
    let now = SystemTime::now();
    let mut keys = Vec::new();
    let mut seipdv2 = true;
    for cert in recipients {
        let found = encryption_keys(cert, &policy, now)?;
        seipdv2 &= found.cert.features().is_some_and(|f| f.supports_seipdv2());
        keys.extend(found.keys);
    }
    // The choices sequoia's `Encryptor::for_recipients` makes: SEIPDv2 (OCB) when every
    // recipient reads it, else SEIPDv1; AES-256. The PKESKs are made here (see
    // `session_key_packet`), the SEIPD packet by [`super::seipd`].
    let session_key = session_key()?;
    for key in &keys {
        let key = key.key().parts_as_public().role_as_unspecified();
        session_key_packet(key, &session_key, seipdv2)?
            .serialize(out)
            .map_err(internal)?;
    }
    if seipdv2 {
        super::seipd::write_v2(out, &session_key, plaintext).map_err(internal_io)?;
    } else {
        super::seipd::write(out, &session_key, plaintext).map_err(internal_io)?;
    }
    Ok(())
}

/// The message's cipher: AES-256, which every OpenPGP implementation reads (sequoia's
/// default too).
const CIPHER: SymmetricAlgorithm = SymmetricAlgorithm::AES256;

/// A fresh session key from the operating system's CSPRNG.
fn session_key() -> Result<SessionKey, CryptoError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    debug_assert_eq!(CIPHER.key_size().ok(), Some(bytes.len()));
    OsRng
        .try_fill_bytes(&mut bytes[..])
        .map_err(|e| CryptoError::Internal(format!("no randomness: {e}")))?;
    Ok(SessionKey::from(&bytes[..]))
}

/// The PKESK that gives `key` the session key: v6 for SEIPDv2, v3 for SEIPDv1, as
/// sequoia's encryptor writes them. A Curve25519 ECDH key's is made by
/// [`super::ecdh`]; any other key's by sequoia.
fn session_key_packet(
    key: &Key<PublicParts, UnspecifiedRole>,
    session_key: &SessionKey,
    seipdv2: bool,
) -> Result<Packet, CryptoError> {
    // The session key as the PKESK carries it for ECDH: the cipher octet (v3 only),
    // the key, and its checksum.
    let mut psk = Zeroizing::new(Vec::with_capacity(35));
    if !seipdv2 {
        psk.push(u8::from(CIPHER));
    }
    psk.extend_from_slice(session_key);
    psk.extend_from_slice(&super::ecdh::checksum(session_key));
    let pkesk = match (super::ecdh::encrypt(key, &psk), seipdv2) {
        (Some(esk), true) => PKESK6::new(
            Some(key.fingerprint()),
            PublicKeyAlgorithm::ECDH,
            esk.map_err(CryptoError::Internal)?,
        )
        .map(PKESK::from),
        (Some(esk), false) => PKESK3::new(
            Some(key.keyid()),
            PublicKeyAlgorithm::ECDH,
            esk.map_err(CryptoError::Internal)?,
        )
        .map(PKESK::from),
        (None, true) => PKESK6::for_recipient(session_key, key).map(PKESK::from),
        (None, false) => PKESK3::for_recipient(CIPHER, session_key, key).map(PKESK::from),
    };
    pkesk.map(Packet::PKESK).map_err(internal)
}

fn internal(e: anyhow::Error) -> CryptoError {
    CryptoError::Internal(format!("{e:#}"))
}

fn internal_io(e: std::io::Error) -> CryptoError {
    CryptoError::Internal(e.to_string())
}
