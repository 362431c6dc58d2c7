//! Signatures inside an encrypted message, kept for the recipient's client.
//!
//! A message that is signed and encrypted in one (`gpg -s -e`, RFC 3156 §6.2) loses its
//! signature when only the plaintext is delivered. sealgate holds no sender's cert and
//! verifies nothing; it keeps the signatures in two forms the client can verify:
//! - detached, over the plaintext: what a `multipart/signed` carries. A v4 or v6
//!   signature does not cover the literal data packet's metadata (file name, date,
//!   format), so the signature from inside the encrypted message verifies as a
//!   detached one over the same bytes;
//! - the signed message without its encryption (the signatures, then the literal data),
//!   which verifies as it is.

use openpgp::armor;
use openpgp::packet::{Literal, Packet};
use openpgp::serialize::Serialize;
use openpgp::types::{DataFormat, HashAlgorithm, SignatureType};
use sequoia_openpgp as openpgp;

use crate::crypto::CryptoError;

/// The signatures of a decrypted message.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The signature packets, armored as a detached signature (`PGP SIGNATURE`, LF line
    /// ends).
    pub detached: Vec<u8>,
    /// The hash algorithms, as RFC 3156's `micalg` parameter names them
    /// (`pgp-sha256`), comma-separated when there are several.
    pub micalg: String,
    /// Whether `detached` verifies over the plaintext with CRLF line ends, the form a
    /// MIME part has on the wire and that clients hand to the verifier: every signature
    /// is a text signature (whose hash is over CRLF line ends whatever the data has), or
    /// a binary one over plaintext that has CRLF line ends already.
    pub detached_over_crlf: bool,
    /// The signed message without its encryption, armored (`PGP MESSAGE`, LF line
    /// ends): verifiable as it is, whatever the line ends.
    pub message: Vec<u8>,
}

/// The kept forms of `signatures` (the packets, as the message carried them) over
/// `plaintext`; `None` when there are none.
pub(super) fn keep(
    signatures: Vec<Packet>,
    plaintext: &[u8],
) -> Result<Option<Signed>, CryptoError> {
    if signatures.is_empty() {
        return Ok(None);
    }
    let internal = |e: anyhow::Error| CryptoError::Internal(format!("{e:#}"));
    let over_crlf = |packet: &Packet| match packet {
        Packet::Signature(sig) => match sig.typ() {
            SignatureType::Text => true,
            SignatureType::Binary => has_crlf_line_ends(plaintext),
            _ => false,
        },
        // A signature sequoia cannot read (a LibrePGP v5 one, whose hash covers the
        // literal data's metadata, say): no promise about it detached.
        _ => false,
    };
    let detached_over_crlf = signatures.iter().all(over_crlf);

    let mut hashes: Vec<&str> = Vec::new();
    for packet in &signatures {
        if let Packet::Signature(sig) = packet {
            let name = micalg(sig.hash_algo());
            if !hashes.contains(&name) {
                hashes.push(name);
            }
        }
    }

    let mut detached = Vec::new();
    let mut writer = armor::Writer::new(&mut detached, armor::Kind::Signature)
        .map_err(|e| internal(e.into()))?;
    for packet in &signatures {
        packet.serialize(&mut writer).map_err(internal)?;
    }
    writer.finalize().map_err(|e| internal(e.into()))?;

    // The literal data's format follows the signatures': text signatures over text
    // (`u`, which readers treat as `t`).
    let text = signatures
        .iter()
        .all(|p| matches!(p, Packet::Signature(s) if s.typ() == SignatureType::Text));
    let mut literal = Literal::new(if text {
        DataFormat::Unicode
    } else {
        DataFormat::Binary
    });
    literal.set_body(plaintext.to_vec());
    let mut message = Vec::new();
    let mut writer =
        armor::Writer::new(&mut message, armor::Kind::Message).map_err(|e| internal(e.into()))?;
    // RFC 9580 §10.3: a signed message may be signatures followed by the message they
    // sign, with no one-pass signature packets.
    for packet in &signatures {
        packet.serialize(&mut writer).map_err(internal)?;
    }
    Packet::Literal(literal)
        .serialize(&mut writer)
        .map_err(internal)?;
    writer.finalize().map_err(|e| internal(e.into()))?;

    Ok(Some(Signed {
        detached,
        micalg: hashes.join(","),
        detached_over_crlf,
        message,
    }))
}

/// Whether every line end in `text` is a CRLF: no LF without a CR before it, and no
/// CR without an LF after it. The delivered entity has both made CRLF
/// (`mail::mime::crlf`), which would change the bytes a binary signature covers.
fn has_crlf_line_ends(text: &[u8]) -> bool {
    text.iter().enumerate().all(|(i, &b)| match b {
        b'\n' => i > 0 && text[i - 1] == b'\r',
        b'\r' => text.get(i + 1) == Some(&b'\n'),
        _ => true,
    })
}

/// RFC 3156 §5 and RFC 4880 §15's names for `micalg`.
fn micalg(hash: HashAlgorithm) -> &'static str {
    match hash {
        HashAlgorithm::MD5 => "pgp-md5",
        HashAlgorithm::SHA1 => "pgp-sha1",
        HashAlgorithm::RipeMD => "pgp-ripemd160",
        HashAlgorithm::SHA224 => "pgp-sha224",
        HashAlgorithm::SHA256 => "pgp-sha256",
        HashAlgorithm::SHA384 => "pgp-sha384",
        HashAlgorithm::SHA512 => "pgp-sha512",
        HashAlgorithm::SHA3_256 => "pgp-sha3-256",
        HashAlgorithm::SHA3_512 => "pgp-sha3-512",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_line_ends() {
        assert!(has_crlf_line_ends(b"a\r\nb\r\n"));
        assert!(has_crlf_line_ends(b"no line end"));
        assert!(!has_crlf_line_ends(b"a\r\nb\n"));
        assert!(!has_crlf_line_ends(b"\n"));
        assert!(!has_crlf_line_ends(b"a\rb\r\n"));
        assert!(!has_crlf_line_ends(b"a\r"));
    }
}
