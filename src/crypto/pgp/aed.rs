//! AEAD-chunked OpenPGP data that sequoia does not open here: the LibrePGP "AEAD
//! Encrypted Data" packet (tag 20, AED v1), and RFC 9580's SEIPDv2 in a mode this
//! build's sequoia backend cannot run (EAX, with OpenSSL). And the framing of the
//! SEIPDv2 that sealgate writes ([`Seipd2Sealer`]).
//!
//! The AED packet (draft-koch-librepgp, formerly RFC 4880bis §5.16) is what RNP (`rnp
//! --aead`, Thunderbird) and GnuPG 2.4 write. RFC 9580 did not take it up (its SEIPDv2
//! replaced it), and sequoia-openpgp 2 has no parser for it: it reads the packet as
//! `Unknown`. rpgp (the `pgp` crate) reads tag 20 since 2025, but OCB only (RNP's
//! `--aead=eax` is refused), and it would bring a second OpenPGP implementation in for
//! one packet. SEIPDv2 sequoia parses, and decrypts in OCB and GCM through OpenSSL;
//! EAX, which RFC 9580 names too, OpenSSL does not have.
//!
//! What is here is only the framing around RustCrypto's AEAD modes (`ocb3`, `eax`,
//! `aes`) and HKDF; the session key comes from sequoia (the PKESK), and the packets
//! inside go back to sequoia's parser. The two framings share their chunks: each chunk's
//! ciphertext and a 16-octet tag, then a final 16-octet tag over no data, whose
//! associated data adds the total number of plaintext octets so that a message cut at a
//! chunk boundary fails too. They differ in the rest:
//!
//! - AED v1: the header is version (1), cipher, AEAD algorithm (1 = EAX, 2 = OCB), chunk
//!   size octet `c` (chunks of `2^(c+6)` octets) and the starting IV (16 octets for EAX,
//!   15 for OCB). The session key is the message key; a chunk's nonce is the IV with its
//!   low eight octets XORed with the chunk index (big-endian); its associated data is
//!   the five octets (`0xD4`, version, cipher, AEAD, `c`) and the chunk index.
//! - SEIPDv2 (RFC 9580 §5.13.2): version (2), cipher, AEAD algorithm, `c` and a 32-octet
//!   salt. HKDF-SHA256 of the session key, with the salt, and the five octets (`0xD2`,
//!   version, cipher, AEAD, `c`) as info, gives the message key and an IV eight octets
//!   shorter than the nonce; a chunk's nonce is the IV followed by the chunk index
//!   (big-endian), and its associated data is the five octets alone.
//!
//! Nothing is released before every chunk's tag and the final tag have been checked.

use aes::{Aes128, Aes192, Aes256};
use eax::Eax;
use eax::aead::consts::U15;
use eax::aead::generic_array::GenericArray;
use eax::aead::{AeadInPlace, KeyInit};
use ocb3::Ocb3;
use openpgp::crypto::SessionKey;
use openpgp::types::{AEADAlgorithm, SymmetricAlgorithm};
use sequoia_openpgp as openpgp;
use zeroize::Zeroizing;

use super::ocb::Ocb256;
use crate::crypto::CryptoError;

/// Every AEAD algorithm here has 16-octet tags.
const TAG_LEN: usize = 16;
/// The largest chunk size octet the specs ask readers to accept (4 MiB chunks, GnuPG's
/// default; RFC 9580 allows no more either); larger ones are refused before any memory
/// is sized by them.
const MAX_CHUNK_SIZE_OCTET: u8 = 16;

/// The AEAD algorithms of the packet, by their OpenPGP numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Eax,
    Ocb,
}

impl Mode {
    fn from_octet(octet: u8) -> Option<Mode> {
        match octet {
            1 => Some(Mode::Eax),
            2 => Some(Mode::Ocb),
            _ => None,
        }
    }

    fn octet(self) -> u8 {
        match self {
            Mode::Eax => 1,
            Mode::Ocb => 2,
        }
    }

    fn nonce_len(self) -> usize {
        match self {
            Mode::Eax => 16,
            Mode::Ocb => 15,
        }
    }
}

/// Which of the two packets, with what its header carries beyond the shared fields.
#[derive(Debug)]
enum Framing<'a> {
    /// LibrePGP AED v1, with its starting IV.
    LibrePgp { iv: &'a [u8] },
    /// RFC 9580 SEIPDv2, with its salt.
    Seipd2 { salt: &'a [u8] },
}

/// The fields of a SEIPDv2 header, as sequoia parsed them.
#[derive(Debug, Clone)]
pub(super) struct Seipd2Header {
    pub(super) cipher: SymmetricAlgorithm,
    /// The AEAD algorithm's number.
    pub(super) mode: u8,
    /// In octets.
    pub(super) chunk_size: u64,
    pub(super) salt: [u8; 32],
}

/// A parsed packet body.
#[derive(Debug)]
pub(super) struct Aed<'a> {
    pub(super) cipher: SymmetricAlgorithm,
    pub(super) mode: Mode,
    chunk_size_octet: u8,
    framing: Framing<'a>,
    /// The chunks with their tags, then the final tag.
    encrypted: &'a [u8],
}

impl<'a> Aed<'a> {
    /// Reads an AED packet body (as sequoia hands it over, partial body lengths joined).
    pub(super) fn parse(body: &'a [u8]) -> Result<Aed<'a>, CryptoError> {
        let malformed = |what: &str| CryptoError::Malformed(format!("AEAD packet: {what}"));
        let [version, cipher, mode, chunk_size_octet, rest @ ..] = body else {
            return Err(malformed("truncated header"));
        };
        if *version != 1 {
            return Err(malformed(&format!("unknown version {version}")));
        }
        let mode = Mode::from_octet(*mode)
            .ok_or_else(|| malformed(&format!("unsupported AEAD algorithm {mode}")))?;
        if rest.len() < mode.nonce_len() {
            return Err(malformed("truncated"));
        }
        let (iv, encrypted) = rest.split_at(mode.nonce_len());
        Aed::new(
            *cipher,
            mode,
            *chunk_size_octet,
            Framing::LibrePgp { iv },
            encrypted,
        )
    }

    /// A SEIPDv2 packet's encrypted data, with the header fields sequoia parsed.
    pub(super) fn seipd2(
        header: &'a Seipd2Header,
        encrypted: &'a [u8],
    ) -> Result<Aed<'a>, CryptoError> {
        let mode = Mode::from_octet(header.mode).ok_or_else(|| {
            CryptoError::Malformed(format!(
                "SEIPDv2: unsupported AEAD algorithm {}",
                header.mode
            ))
        })?;
        // Sequoia has checked that the chunk size is a power of two of at least 64.
        let chunk_size_octet =
            u8::try_from(header.chunk_size.trailing_zeros().saturating_sub(6)).unwrap_or(u8::MAX);
        Aed::new(
            u8::from(header.cipher),
            mode,
            chunk_size_octet,
            Framing::Seipd2 { salt: &header.salt },
            encrypted,
        )
    }

    fn new(
        cipher: u8,
        mode: Mode,
        chunk_size_octet: u8,
        framing: Framing<'a>,
        encrypted: &'a [u8],
    ) -> Result<Aed<'a>, CryptoError> {
        if chunk_size_octet > MAX_CHUNK_SIZE_OCTET {
            return Err(CryptoError::Malformed(format!(
                "AEAD packet: chunk size octet {chunk_size_octet} is over {MAX_CHUNK_SIZE_OCTET}"
            )));
        }
        if encrypted.len() < TAG_LEN {
            return Err(CryptoError::Malformed("AEAD packet: truncated".into()));
        }
        Ok(Aed {
            cipher: SymmetricAlgorithm::from(cipher),
            mode,
            chunk_size_octet,
            framing,
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
        let (message_key, iv) = self.message_key(session_key)?;
        let cipher = Cipher::new(self.cipher, self.mode, &message_key)?;
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
            if !cipher.open(&self.nonce(&iv, index), &ad, &mut plaintext[start..], tag) {
                return Err(CryptoError::Malformed(format!(
                    "AEAD packet: chunk {index} fails authentication (tampered or corrupt)"
                )));
            }
            index += 1;
        }
        let ad = self.associated_data(index, Some(plaintext.len() as u64));
        if !cipher.open(&self.nonce(&iv, index), &ad, &mut [], final_tag) {
            return Err(CryptoError::Malformed(
                "AEAD packet: the final tag fails authentication (truncated or tampered)".into(),
            ));
        }
        Ok(plaintext)
    }

    /// The key the chunks are encrypted with, and the IV their nonces start from.
    fn message_key(
        &self,
        session_key: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), CryptoError> {
        match self.framing {
            Framing::LibrePgp { iv } => Ok((Zeroizing::new(session_key.to_vec()), iv.to_vec())),
            Framing::Seipd2 { salt } => {
                let key_len = self.cipher.key_size().map_err(|_| {
                    CryptoError::Malformed(format!("SEIPDv2: unsupported cipher {}", self.cipher))
                })?;
                let iv_len = self.mode.nonce_len() - 8;
                let mut okm = Zeroizing::new(vec![0; key_len + iv_len]);
                hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), session_key)
                    .expand(&self.header(), &mut okm)
                    .map_err(|_| CryptoError::Malformed("SEIPDv2: HKDF output too long".into()))?;
                let iv = okm[key_len..].to_vec();
                okm.truncate(key_len);
                Ok((okm, iv))
            }
        }
    }

    /// The packet's tag as a new-format header octet, then its version, cipher, AEAD
    /// algorithm and chunk size octet: the start of every chunk's associated data.
    fn header(&self) -> [u8; 5] {
        let (tag, version) = match self.framing {
            Framing::LibrePgp { .. } => (20, 1),
            Framing::Seipd2 { .. } => (18, 2),
        };
        [
            0xC0 | tag,
            version,
            u8::from(self.cipher),
            self.mode.octet(),
            self.chunk_size_octet,
        ]
    }

    /// The nonce of chunk `index` (or of the final tag, after the last chunk).
    fn nonce(&self, iv: &[u8], index: u64) -> Vec<u8> {
        let mut nonce = iv.to_vec();
        match self.framing {
            Framing::LibrePgp { .. } => {
                let low = nonce.len() - 8;
                for (n, i) in nonce[low..].iter_mut().zip(index.to_be_bytes()) {
                    *n ^= i;
                }
            }
            Framing::Seipd2 { .. } => nonce.extend_from_slice(&index.to_be_bytes()),
        }
        nonce
    }

    /// The header octets, for AED the chunk index, and for the final tag the total
    /// number of plaintext octets.
    fn associated_data(&self, index: u64, total: Option<u64>) -> Vec<u8> {
        let mut ad = self.header().to_vec();
        if matches!(self.framing, Framing::LibrePgp { .. }) {
            ad.extend_from_slice(&index.to_be_bytes());
        }
        if let Some(total) = total {
            ad.extend_from_slice(&total.to_be_bytes());
        }
        ad
    }
}

/// The writing side of SEIPDv2 ([`super::seipd::write_v2`]): the message key, IV,
/// nonces and associated data are the ones [`Aed`] derives to open the packet, so the
/// two sides cannot drift apart. The chunks are sealed by OpenSSL's OCB
/// ([`Ocb256`]), not by `ocb3`: ocb3 0.1 sealed 100 KiB in 39 µs in a program of its
/// own, but in about 180 µs compiled into sealgate (perf: byte-wise stores, then wide
/// loads of the same bytes); OpenSSL takes 17 µs.
pub(super) struct Seipd2Sealer<'a> {
    framing: Aed<'a>,
    ocb: Ocb256,
    iv: Vec<u8>,
}

impl<'a> Seipd2Sealer<'a> {
    /// The AEAD algorithm: OCB, which every SEIPDv2 reader must have (RFC 9580 §5.13.2),
    /// with AES-256.
    const AEAD: AEADAlgorithm = AEADAlgorithm::OCB;

    /// A sealer with the `salt`, for chunks of `2^(chunk_size_octet + 6)` octets.
    pub(super) fn new(
        session_key: &[u8],
        salt: &'a [u8; 32],
        chunk_size_octet: u8,
    ) -> Result<Seipd2Sealer<'a>, CryptoError> {
        let framing = Aed {
            cipher: SymmetricAlgorithm::AES256,
            mode: Mode::Ocb,
            chunk_size_octet,
            framing: Framing::Seipd2 { salt },
            encrypted: &[],
        };
        debug_assert_eq!(u8::from(Self::AEAD), framing.mode.octet());
        let (key, iv) = framing.message_key(session_key)?;
        let ocb = Ocb256::new(&SessionKey::from(&key[..]), framing.mode.nonce_len())?;
        Ok(Seipd2Sealer { framing, ocb, iv })
    }

    /// The packet body's fields before the salt: version, cipher, AEAD algorithm and
    /// chunk size octet.
    pub(super) fn fields(&self) -> [u8; 4] {
        let [_, fields @ ..] = self.framing.header();
        fields
    }

    /// Starts chunk `index`, whose plaintext [`Seipd2Sealer::update`] then takes in as
    /// many pieces as it comes in, and [`Seipd2Sealer::end_chunk`] ends with its tag.
    pub(super) fn begin_chunk(&mut self, index: u64) -> Result<(), CryptoError> {
        let ad = self.framing.associated_data(index, None);
        let nonce = self.framing.nonce(&self.iv, index);
        self.ocb.begin(&nonce, &ad)
    }

    /// Seals the next piece of the chunk's plaintext, appending ciphertext to `out`.
    pub(super) fn update(
        &mut self,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        self.ocb.update(plaintext, out)
    }

    /// Ends the chunk: the rest of its ciphertext and its tag, appended to `out`.
    pub(super) fn end_chunk(&mut self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.ocb.end(out)
    }

    /// The final tag, after `chunks` chunks holding `total` plaintext octets.
    pub(super) fn finish(&mut self, chunks: u64, total: u64) -> Result<[u8; TAG_LEN], CryptoError> {
        let ad = self.framing.associated_data(chunks, Some(total));
        let mut tag = Vec::with_capacity(TAG_LEN);
        self.seal(chunks, &ad, &[], &mut tag)?;
        tag.try_into()
            .map_err(|_| CryptoError::Internal("AEAD: a tag of the wrong length".into()))
    }

    fn seal(
        &mut self,
        index: u64,
        ad: &[u8],
        plaintext: &[u8],
        sealed: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let nonce = self.framing.nonce(&self.iv, index);
        self.ocb.seal(&nonce, ad, plaintext, sealed)
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
        // The nonce's length is the mode's: `Aed::parse` took an IV of that length, and
        // a SEIPDv2 IV is eight octets shorter, before the chunk index.
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
