//! Encryption: one OpenPGP message to every recipient cert, never signed, in ASCII
//! armor with CRLF line ends.

use std::io::Write;
use std::time::SystemTime;

use openpgp::Cert;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Recipient};
use sequoia_openpgp as openpgp;

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

    let mut binary = Vec::with_capacity(plaintext.len() + 1024);
    let message = Message::new(&mut binary);
    let message = Encryptor::for_recipients(message, keys)
        .build()
        .map_err(internal)?;
    let mut literal = LiteralWriter::new(message).build().map_err(internal)?;
    literal.write_all(plaintext).map_err(internal_io)?;
    literal.finalize().map_err(internal)?;
    Ok(armor_message(&binary))
}

/// ASCII armor (RFC 9580 §6.2) with the CRLF line ends mail needs, in one base64 pass.
/// Sequoia's armor writer ends lines with LF, and running it and then converting line
/// ends cost more than the encryption itself (see benches/crypto.rs). The CRC24 footer
/// is written although RFC 9580 no longer asks for it: without it, GnuPG 2.2 reads the
/// END line as more base64 when the last data line is a full one.
fn armor_message(binary: &[u8]) -> Vec<u8> {
    use base64::Engine;
    const LINE: usize = 64;
    // Slice-by-16: the bytewise table cost more than the base64 encoding.
    const CRC24: crc::Crc<u32, crc::Table<16>> =
        crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_24_OPENPGP);
    let engine = &base64::engine::general_purpose::STANDARD;
    let encoded = engine.encode(binary);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / LINE * 2 + 80);
    out.extend_from_slice(b"-----BEGIN PGP MESSAGE-----\r\n\r\n");
    for line in encoded.as_bytes().chunks(LINE) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    let checksum = CRC24.checksum(binary).to_be_bytes();
    out.push(b'=');
    out.extend_from_slice(engine.encode(&checksum[1..]).as_bytes());
    out.extend_from_slice(b"\r\n-----END PGP MESSAGE-----\r\n");
    out
}

fn internal(e: anyhow::Error) -> CryptoError {
    CryptoError::Internal(format!("{e:#}"))
}

fn internal_io(e: std::io::Error) -> CryptoError {
    CryptoError::Internal(e.to_string())
}
