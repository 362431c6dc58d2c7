//! The SEIPD packet (RFC 9580 §5.13) around a literal data packet, written as the
//! plaintext streams in, with definite lengths:
//!
//! - v1: AES-256 in CFB mode (RustCrypto's cfb-mode) over a random prefix, the literal
//!   packet and the MDC packet, whose SHA-1 is RustCrypto's sha1;
//! - v2: AES-256 in OCB mode ([`super::ocb`]: OpenSSL's, keyed once) in 64 KiB chunks,
//!   each sealed as its plaintext comes, keyed by HKDF as [`super::aed`] opens it.
//!
//! Why not sequoia's encryptor: it hashes the v1 MDC with SHA-1 *with collision
//! detection*, always: 3.5 of the 8.3 million instructions it took to encrypt 100 KiB
//! (callgrind). Collision detection guards a verifier against forged colliding
//! signatures; an MDC we compute over our own plaintext has nothing to detect. It writes
//! v2 in 4 KiB chunks, each with a new OpenSSL cipher context. And it buffers the packet
//! through a 4 MiB partial-body filter, which glibc hands back to the kernel after each
//! message. Here the lengths are known, so each packet gets a definite length.
//!
//! sequoia still makes the PKESKs for other than Curve25519 keys, and reads everything.

use std::io::Write;

use aes::Aes256;
use cfb_mode::BufEncryptor;
use cfb_mode::cipher::KeyIvInit;
use rand::RngCore;
use rand::rngs::OsRng;
use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

use super::aed::Seipd2Sealer;

/// v2's chunks are of this size: each has its nonce and tag.
const PIECE: usize = 64 * 1024;
/// Plaintext is encrypted this much at a time: v1's in one buffer that is reused, v2's
/// from where it lies into one buffer for its ciphertext. With 64 KiB here a 25 MiB
/// message's peak was 0.1–0.2 MiB higher (relay benchmark), and the crypto benchmark
/// shows no cost in the smaller slices.
const SLICE: usize = 16 * 1024;
/// v2's chunk size octet: chunks of `2^(10 + 6)` octets, [`PIECE`]. RFC 9580 has every
/// reader take up to 4 MiB (octet 16); OpenPGP.js writes 256 KiB, sequoia 4 KiB.
const CHUNK_SIZE_OCTET: u8 = 10;
const _: () = assert!(1 << (CHUNK_SIZE_OCTET + 6) == PIECE);
/// AES's block size: the random prefix is one block and its last two bytes again.
const BLOCK: usize = 16;
/// An OCB tag, after each v2 chunk and at the end.
const TAG: usize = 16;
/// The literal packet's body before the data: format `b` (binary), no file name, no
/// date (what sequoia's `LiteralWriter` writes by default).
const LITERAL_FIELDS: [u8; 6] = [b'b', 0, 0, 0, 0, 0];
/// The MDC packet's header: tag 19, new format, 20 bytes of SHA-1 to follow.
const MDC_HEADER: [u8; 2] = [0xD3, 0x14];

/// Writes the SEIPDv1 packet of `plaintext` (in pieces) encrypted with the AES-256
/// `session_key` to `out`.
pub fn write(out: &mut dyn Write, session_key: &[u8], plaintext: &[&[u8]]) -> std::io::Result<()> {
    let literal = Literal::of(plaintext)?;
    let encrypted_len = BLOCK + 2 + literal.len() + MDC_HEADER.len() + Sha1::output_size();
    let mut seipd_header = vec![0xD2]; // Tag 18, new format.
    length(&mut seipd_header, 1 + encrypted_len)?;
    seipd_header.push(1); // Version 1.
    out.write_all(&seipd_header)?;

    let mut cipher = BufEncryptor::<Aes256>::new_from_slices(session_key, &[0; BLOCK])
        .map_err(|_| std::io::Error::other("the session key is not an AES-256 key"))?;
    let mut mdc = Sha1::new();
    let mut pieces = Pieces::new(encrypted_len);
    let mut seal = |piece: &mut Vec<u8>| {
        cipher.encrypt(piece);
        out.write_all(piece)
    };
    let mut prefix = Zeroizing::new([0u8; BLOCK + 2]);
    OsRng
        .try_fill_bytes(&mut prefix[..BLOCK])
        .map_err(std::io::Error::other)?;
    prefix.copy_within(BLOCK - 2..BLOCK, BLOCK);
    for part in [&prefix[..], &literal.header, &LITERAL_FIELDS]
        .into_iter()
        .chain(plaintext.iter().copied())
        .chain([&MDC_HEADER[..]])
    {
        mdc.update(part);
        pieces.write(part, &mut seal)?;
    }
    pieces.write(&mdc.finalize(), &mut seal)?;
    pieces.finish(&mut seal)
}

/// Writes the SEIPDv2 packet of `plaintext` (in pieces) encrypted with the AES-256
/// `session_key` to `out`.
pub fn write_v2(
    out: &mut dyn Write,
    session_key: &[u8],
    plaintext: &[&[u8]],
) -> std::io::Result<()> {
    let literal = Literal::of(plaintext)?;
    let chunks = literal.len().div_ceil(PIECE);
    let mut salt = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut salt)
        .map_err(std::io::Error::other)?;
    let crypto = |e: crate::crypto::CryptoError| std::io::Error::other(e.to_string());
    let mut sealer = Seipd2Sealer::new(session_key, &salt, CHUNK_SIZE_OCTET).map_err(crypto)?;
    let mut seipd_header = vec![0xD2]; // Tag 18, new format.
    length(
        &mut seipd_header,
        4 + salt.len() + literal.len() + chunks * TAG + TAG,
    )?;
    seipd_header.extend_from_slice(&sealer.fields());
    seipd_header.extend_from_slice(&salt);
    out.write_all(&seipd_header)?;

    // Each chunk is sealed as its plaintext comes, a slice at a time, straight from
    // the message's pieces: no chunk is gathered, and what is held besides the output
    // is one slice's ciphertext.
    let mut sealed = Vec::with_capacity(SLICE.min(literal.len()) + 2 * TAG);
    let (mut index, mut in_chunk) = (0u64, 0usize);
    for part in [&literal.header[..], &LITERAL_FIELDS]
        .into_iter()
        .chain(plaintext.iter().copied())
    {
        let mut bytes = part;
        while !bytes.is_empty() {
            if in_chunk == 0 {
                sealer.begin_chunk(index).map_err(crypto)?;
            }
            let (now, later) = bytes.split_at(bytes.len().min(SLICE).min(PIECE - in_chunk));
            sealer.update(now, &mut sealed).map_err(crypto)?;
            in_chunk += now.len();
            bytes = later;
            if in_chunk == PIECE {
                sealer.end_chunk(&mut sealed).map_err(crypto)?;
                (index, in_chunk) = (index + 1, 0);
            }
            out.write_all(&sealed)?;
            sealed.clear();
        }
    }
    // A chunk is never empty: one that is not ended has plaintext.
    if in_chunk > 0 {
        sealer.end_chunk(&mut sealed).map_err(crypto)?;
        index += 1;
        out.write_all(&sealed)?;
    }
    debug_assert_eq!(index, chunks as u64);
    let tag = sealer.finish(index, literal.len() as u64).map_err(crypto)?;
    out.write_all(&tag)
}

/// The literal data packet's header, for a body of the literal fields and the data.
struct Literal {
    header: Vec<u8>,
    body_len: usize,
}

impl Literal {
    fn of(data: &[&[u8]]) -> std::io::Result<Literal> {
        let body_len = LITERAL_FIELDS.len() + data.iter().map(|p| p.len()).sum::<usize>();
        let mut header = vec![0xCB]; // Tag 11, new format.
        length(&mut header, body_len)?;
        Ok(Literal { header, body_len })
    }

    /// The whole packet's length.
    fn len(&self) -> usize {
        self.header.len() + self.body_len
    }
}

/// An OpenPGP new-format body length (RFC 9580 §4.2.1.1): one, two or five octets.
fn length(out: &mut Vec<u8>, len: usize) -> std::io::Result<()> {
    match len {
        0..192 => out.push(len as u8),
        192..8384 => {
            let rest = len - 192;
            out.extend_from_slice(&[(rest >> 8) as u8 + 192, rest as u8]);
        }
        _ => {
            let len = u32::try_from(len)
                .map_err(|_| std::io::Error::other("the message is over 4 GiB"))?;
            out.push(0xFF);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    Ok(())
}

/// v1's plaintext gathered into pieces of [`SLICE`] octets (the last may be shorter),
/// each handed to `seal` to be encrypted and written.
struct Pieces {
    /// Zeroized when dropped: until it is sealed, a piece is plaintext.
    buffer: Zeroizing<Vec<u8>>,
}

type Seal<'a> = dyn FnMut(&mut Vec<u8>) -> std::io::Result<()> + 'a;

impl Pieces {
    fn new(total: usize) -> Pieces {
        Pieces {
            buffer: Zeroizing::new(Vec::with_capacity(SLICE.min(total))),
        }
    }

    fn write(&mut self, mut bytes: &[u8], seal: &mut Seal) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let room = SLICE - self.buffer.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = later;
            if self.buffer.len() == SLICE {
                seal(&mut self.buffer)?;
                self.buffer.clear();
            }
        }
        Ok(())
    }

    /// Seals what is left, if anything.
    fn finish(&mut self, seal: &mut Seal) -> std::io::Result<()> {
        if !self.buffer.is_empty() {
            seal(&mut self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openpgp::cert::CertBuilder;
    use openpgp::parse::{PacketParser, PacketParserResult, Parse};
    use openpgp::types::Features;
    use openpgp::{Packet, packet::SEIP};
    use sequoia_openpgp as openpgp;

    use super::length;
    use crate::crypto::pgp::{dearmor, decrypt, encrypt, encrypt_into};

    #[test]
    fn sequoia_opens_what_is_written_and_refuses_it_tampered() {
        // A key that does not say it reads SEIPDv2, as GnuPG's do not, and one that does
        // (sequoia's default).
        let features = [
            (Features::empty().set_seipdv1(), ["PKESK3", "SEIPDv1"]),
            (Features::sequoia(), ["PKESK6", "SEIPDv2"]),
        ];
        for (features, packets) in features {
            let (tsk, _) = CertBuilder::new()
                .add_userid("<bob@example.org>")
                .set_features(features)
                .unwrap()
                .add_transport_encryption_subkey()
                .generate()
                .unwrap();
            let cert = tsk.clone().strip_secret_key_material();
            // Across the length encodings, and for v2 a literal packet of exactly one
            // and two chunks (6 octets of header and 6 of fields), and one octet over.
            for size in [0, 100, 8000, 65524, 65525, 70_000, 131_060, 200_000] {
                let plaintext: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
                let armored = encrypt(&plaintext, std::slice::from_ref(&cert)).unwrap();
                let opened = decrypt(&armored, std::slice::from_ref(&tsk)).unwrap();
                assert_eq!(opened.plaintext, plaintext, "{size} bytes, {packets:?}");
                // The gateway gives the plaintext in pieces (the entity's header, the
                // body's chunks), which chunks and slices cut across.
                let (a, b) = (size / 3, (size / 3 + 7).min(size));
                let pieces = [&plaintext[..a], &plaintext[a..b], &plaintext[b..]];
                let mut in_pieces = Vec::new();
                encrypt_into(&mut in_pieces, &pieces, &[&cert]).unwrap();
                let opened = decrypt(&in_pieces, std::slice::from_ref(&tsk)).unwrap();
                assert_eq!(opened.plaintext, plaintext, "{size} bytes in pieces");

                let binary = dearmor::dearmor_message(&armored).into_owned();
                let mut ppr = PacketParser::from_bytes(&binary).unwrap();
                let mut tags = Vec::new();
                while let PacketParserResult::Some(pp) = ppr {
                    tags.push(match &pp.packet {
                        Packet::PKESK(p) => format!("PKESK{}", p.version()),
                        Packet::SEIP(SEIP::V1(_)) => "SEIPDv1".into(),
                        Packet::SEIP(SEIP::V2(_)) => "SEIPDv2".into(),
                        other => format!("{:?}", other.tag()),
                    });
                    ppr = pp.next().unwrap().1;
                }
                assert_eq!(tags, packets, "{size} bytes");

                // Any byte changed in the encrypted data (for v2: in the last chunk or
                // the final tag) fails the MDC or a tag: nothing comes out.
                for back in [1, 20, 30] {
                    let mut tampered = binary.clone();
                    let at = tampered.len() - back;
                    tampered[at] ^= 1;
                    assert!(
                        decrypt(&tampered, std::slice::from_ref(&tsk)).is_err(),
                        "{size} bytes, {packets:?}, byte -{back}"
                    );
                }
            }
        }
    }

    #[test]
    fn lengths_take_one_two_or_five_octets() {
        let encoded = |len| {
            let mut out = Vec::new();
            length(&mut out, len).unwrap();
            out
        };
        assert_eq!(encoded(0), [0]);
        assert_eq!(encoded(191), [191]);
        assert_eq!(encoded(192), [192, 0]);
        assert_eq!(encoded(8383), [223, 255]);
        assert_eq!(encoded(8384), [255, 0, 0, 0x20, 0xC0]);
        assert_eq!(encoded(100_000), [255, 0, 1, 0x86, 0xA0]);
    }
}
