//! Encryption: one OpenPGP message to every recipient cert, never signed, in ASCII
//! armor with CRLF line ends.

use std::io::Write;
use std::time::SystemTime;

use openpgp::Cert;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Recipient};
use sequoia_openpgp as openpgp;

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
    encrypt_into(&mut out, &[plaintext], &recipients)?;
    Ok(out)
}

/// [`encrypt`], the armored message appended to `out` as it is made, and the plaintext
/// given in pieces (an entity's header and the message's body chunks, never joined):
/// a large message is then held once as it came and once encrypted, and never as a
/// joined plaintext, a binary ciphertext and an armored one besides. On an error,
/// `out` holds a part of a message, to be thrown away.
pub fn encrypt_into(
    out: &mut Vec<u8>,
    plaintext: &[&[u8]],
    recipients: &[&Cert],
) -> Result<(), CryptoError> {
    if recipients.is_empty() {
        return Err(CryptoError::Key("no recipient keys".into()));
    }
    let policy = StandardPolicy::new();
    let now = SystemTime::now();
    let mut keys: Vec<Recipient> = Vec::new();
    for cert in recipients {
        keys.extend(
            encryption_keys(cert, &policy, now)?
                .keys
                .into_iter()
                .map(Recipient::from),
        );
    }

    let mut armor = ArmorWriter::new(out);
    let message = Message::new(&mut armor);
    let message = Encryptor::for_recipients(message, keys)
        .build()
        .map_err(internal)?;
    let mut literal = LiteralWriter::new(message).build().map_err(internal)?;
    for piece in plaintext {
        literal.write_all(piece).map_err(internal_io)?;
    }
    literal.finalize().map_err(internal)?;
    armor.finish();
    Ok(())
}

fn internal(e: anyhow::Error) -> CryptoError {
    CryptoError::Internal(format!("{e:#}"))
}

fn internal_io(e: std::io::Error) -> CryptoError {
    CryptoError::Internal(e.to_string())
}
