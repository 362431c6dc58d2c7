//! The LibrePGP "AEAD Encrypted Data" packet (tag 20, AED v1; draft-koch-librepgp,
//! formerly RFC 4880bis §5.16), which RNP (`rnp --aead`, Thunderbird) and GnuPG 2.4
//! write. RFC 9580 did not take it up (its SEIPDv2 replaced it), and sequoia-openpgp 2
//! has no parser for it: it reads the packet as `Unknown`.
//!
//! Why this is written here: rpgp (the `pgp` crate) reads tag 20 since 2025, but OCB
//! only (RNP's `--aead=eax` is refused), and it would bring a second OpenPGP
//! implementation in for one packet. What is here is only the packet's framing around
//! RustCrypto's AEAD modes (`ocb3`, `eax`, `aes`); the session key comes from sequoia
//! (the PKESK), and the packets inside go back to sequoia's parser.
//!
//! The framing (draft-koch-librepgp-03 §5.16, RFC 4880bis-10 §5.16):
//! - version (1), cipher, AEAD algorithm (1 = EAX, 2 = OCB), chunk size octet `c`
//!   (chunks of `2^(c+6)` octets), and the starting IV (16 octets for EAX, 15 for OCB);
//! - then the chunks, each its ciphertext and a 16-octet tag, and a final 16-octet tag
//!   over no data at all;
//! - each chunk's nonce is the IV with its low eight octets XORed with the chunk index
//!   (big-endian); its associated data is the packet's first five octets as written
//!   with a new-format header (`0xD4`, version, cipher, AEAD, `c`) and the chunk index;
//!   the final tag's associated data adds the total number of plaintext octets, so a
//!   message cut at a chunk boundary fails too.
//!
//! Nothing is released before every chunk's tag and the final tag have been checked.

use aes::{Aes128, Aes192, Aes256};
use eax::Eax;
use eax::aead::consts::U15;
use eax::aead::generic_array::GenericArray;
use eax::aead::{AeadInPlace, KeyInit};
use ocb3::Ocb3;
use openpgp::types::SymmetricAlgorithm;
use sequoia_openpgp as openpgp;
use zeroize::Zeroizing;

use crate::crypto::CryptoError;

/// The packet's tag in a new-format header: the first octet of every chunk's
/// associated data.
const TAG_OCTET: u8 = 0xC0 | 20;
const VERSION: u8 = 1;
/// Every AEAD algorithm here has 16-octet tags.
const TAG_LEN: usize = 16;
/// The largest chunk size octet the spec asks readers to accept (4 MiB chunks, GnuPG's
/// default); larger ones are refused before any memory is sized by them.
const MAX_CHUNK_SIZE_OCTET: u8 = 16;

/// The AEAD algorithms of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Eax,
    Ocb,
}

impl Mode {
    fn iv_len(self) -> usize {
        match self {
            Mode::Eax => 16,
            Mode::Ocb => 15,
        }
    }
}

/// A parsed AED packet body.
#[derive(Debug)]
pub(super) struct Aed<'a> {
    pub(super) cipher: SymmetricAlgorithm,
    pub(super) mode: Mode,
    chunk_size_octet: u8,
    iv: &'a [u8],
    /// The chunks with their tags, then the final tag.
    encrypted: &'a [u8],
}

impl<'a> Aed<'a> {
    /// Reads the packet body (as sequoia hands it over, partial body lengths joined).
    pub(super) fn parse(body: &'a [u8]) -> Result<Aed<'a>, CryptoError> {
        let malformed = |what: &str| CryptoError::Malformed(format!("AEAD packet: {what}"));
        let [version, cipher, mode, chunk_size_octet, rest @ ..] = body else {
            return Err(malformed("truncated header"));
        };
        if *version != VERSION {
            return Err(malformed(&format!("unknown version {version}")));
        }
        let mode = match mode {
            1 => Mode::Eax,
            2 => Mode::Ocb,
            other => return Err(malformed(&format!("unsupported AEAD algorithm {other}"))),
        };
        if *chunk_size_octet > MAX_CHUNK_SIZE_OCTET {
            return Err(malformed(&format!(
                "chunk size octet {chunk_size_octet} is over {MAX_CHUNK_SIZE_OCTET}"
            )));
        }
        if rest.len() < mode.iv_len() + TAG_LEN {
            return Err(malformed("truncated"));
        }
        let (iv, encrypted) = rest.split_at(mode.iv_len());
        Ok(Aed {
            cipher: SymmetricAlgorithm::from(*cipher),
            mode,
            chunk_size_octet: *chunk_size_octet,
            iv,
            encrypted,
        })
    }

    /// Decrypts with `session_key` into the inner packets. More than `limit` octets of
    /// them is `Malformed`, found before decrypting past the limit. A tag that does not
    /// check, in any chunk or at the end, is `Malformed`, and nothing is returned.
    pub(super) fn decrypt(
        &self,
        session_key: &[u8],
        limit: usize,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let cipher = Cipher::new(self.cipher, self.mode, session_key)?;
        let chunk_size = 1usize << (self.chunk_size_octet + 6);
        let (chunks, final_tag) = self.encrypted.split_at(self.encrypted.len() - TAG_LEN);
        // Zeroized on every way out: a failure must not leave plaintext behind either.
        let mut plaintext = Zeroizing::new(Vec::with_capacity(chunks.len().min(limit)));
        let mut index = 0u64;
        for chunk in chunks.chunks(chunk_size + TAG_LEN) {
            let Some(length) = chunk.len().checked_sub(TAG_LEN) else {
                return Err(CryptoError::Malformed(
                    "AEAD packet: a chunk shorter than its tag (truncated)".into(),
                ));
            };
            if plaintext.len() + length > limit {
                return Err(CryptoError::Malformed(format!(
                    "the plaintext is over the {limit}-byte limit"
                )));
            }
            let (ciphertext, tag) = chunk.split_at(length);
            let start = plaintext.len();
            plaintext.extend_from_slice(ciphertext);
            let ad = self.associated_data(index, None);
            if !cipher.open(&self.nonce(index), &ad, &mut plaintext[start..], tag) {
                return Err(CryptoError::Malformed(format!(
                    "AEAD packet: chunk {index} fails authentication (tampered or corrupt)"
                )));
            }
            index += 1;
        }
        let ad = self.associated_data(index, Some(plaintext.len() as u64));
        if !cipher.open(&self.nonce(index), &ad, &mut [], final_tag) {
            return Err(CryptoError::Malformed(
                "AEAD packet: the final tag fails authentication (truncated or tampered)".into(),
            ));
        }
        Ok(plaintext)
    }

    /// The IV with the chunk index XORed into its low eight octets.
    fn nonce(&self, index: u64) -> Vec<u8> {
        let mut nonce = self.iv.to_vec();
        let low = nonce.len() - 8;
        for (n, i) in nonce[low..].iter_mut().zip(index.to_be_bytes()) {
            *n ^= i;
        }
        nonce
    }

    /// The header octets and the chunk index; for the final tag also the total number
    /// of plaintext octets.
    fn associated_data(&self, index: u64, total: Option<u64>) -> Vec<u8> {
        let mode = match self.mode {
            Mode::Eax => 1,
            Mode::Ocb => 2,
        };
        let mut ad = vec![
            TAG_OCTET,
            VERSION,
            u8::from(self.cipher),
            mode,
            self.chunk_size_octet,
        ];
        ad.extend_from_slice(&index.to_be_bytes());
        if let Some(total) = total {
            ad.extend_from_slice(&total.to_be_bytes());
        }
        ad
    }
}

/// An AEAD mode keyed with the session key. Only AES: it is what RNP and GnuPG write
/// (Camellia or Twofish in this packet is refused as unsupported).
enum Cipher {
    Eax128(Box<Eax<Aes128>>),
    Eax192(Box<Eax<Aes192>>),
    Eax256(Box<Eax<Aes256>>),
    Ocb128(Box<Ocb3<Aes128, U15>>),
    Ocb192(Box<Ocb3<Aes192, U15>>),
    Ocb256(Box<Ocb3<Aes256, U15>>),
}

impl Cipher {
    fn new(algo: SymmetricAlgorithm, mode: Mode, key: &[u8]) -> Result<Cipher, CryptoError> {
        let wrong_key = || {
            CryptoError::Malformed(format!(
                "AEAD packet: a {}-octet session key for {algo}",
                key.len()
            ))
        };
        macro_rules! keyed {
            ($variant:ident, $mode:ty) => {
                Cipher::$variant(Box::new(
                    <$mode>::new_from_slice(key).map_err(|_| wrong_key())?,
                ))
            };
        }
        Ok(match (algo, mode) {
            (SymmetricAlgorithm::AES128, Mode::Eax) => keyed!(Eax128, Eax<Aes128>),
            (SymmetricAlgorithm::AES192, Mode::Eax) => keyed!(Eax192, Eax<Aes192>),
            (SymmetricAlgorithm::AES256, Mode::Eax) => keyed!(Eax256, Eax<Aes256>),
            (SymmetricAlgorithm::AES128, Mode::Ocb) => keyed!(Ocb128, Ocb3<Aes128, U15>),
            (SymmetricAlgorithm::AES192, Mode::Ocb) => keyed!(Ocb192, Ocb3<Aes192, U15>),
            (SymmetricAlgorithm::AES256, Mode::Ocb) => keyed!(Ocb256, Ocb3<Aes256, U15>),
            (algo, mode) => {
                return Err(CryptoError::Malformed(format!(
                    "AEAD packet: unsupported cipher {algo} with {mode:?}"
                )));
            }
        })
    }

    /// Decrypts `buffer` in place with the nonce `iv` and checks `tag`: whether it
    /// checks.
    fn open(&self, iv: &[u8], ad: &[u8], buffer: &mut [u8], tag: &[u8]) -> bool {
        let tag = GenericArray::from_slice(tag);
        // The nonce's length is the mode's: `Aed::parse` took an IV of that length.
        let result = match self {
            Cipher::Eax128(c) => {
                c.decrypt_in_place_detached(GenericArray::from_slice(iv), ad, buffer, tag)
            }
            Cipher::Eax192(c) => {
                c.decrypt_in_place_detached(GenericArray::from_slice(iv), ad, buffer, tag)
            }
            Cipher::Eax256(c) => {
                c.decrypt_in_place_detached(GenericArray::from_slice(iv), ad, buffer, tag)
            }
            Cipher::Ocb128(c) => {
                c.decrypt_in_place_detached(GenericArray::from_slice(iv), ad, buffer, tag)
            }
            Cipher::Ocb192(c) => {
                c.decrypt_in_place_detached(GenericArray::from_slice(iv), ad, buffer, tag)
            }
            Cipher::Ocb256(c) => {
                c.decrypt_in_place_detached(GenericArray::from_slice(iv), ad, buffer, tag)
            }
        };
        result.is_ok()
    }
}
