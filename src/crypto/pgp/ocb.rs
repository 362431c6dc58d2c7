//! AES-256-OCB sealing for the SEIPDv2 sealgate writes ([`super::aed::Seipd2Sealer`]),
//! keyed once per message.
//!
//! sequoia's backend makes a new OpenSSL cipher context for every chunk and for the
//! final tag, and OpenSSL 3 looks the cipher up in its provider tables for each (twice:
//! the OCB context and the block cipher under it). Sealing a 4 KiB message (one chunk
//! and the final tag) took 5.0 % of the gateway's CPU that way, and takes 2.7 % here
//! (perf): the cipher is fetched once per process, the key is set once per message,
//! and each chunk only sets its nonce. The crypto-rust build keeps sequoia's path.

use openpgp::crypto::SessionKey;
use sequoia_openpgp as openpgp;

use crate::crypto::CryptoError;

/// Every tag is 16 octets.
const TAG_LEN: usize = 16;

/// AES-256-OCB with one key, sealing one nonce at a time: [`Ocb256::begin`], the
/// plaintext in as many [`Ocb256::update`]s as it comes in, and [`Ocb256::end`].
pub(super) struct Ocb256 {
    #[cfg(feature = "crypto-openssl")]
    context: openssl::cipher_ctx::CipherCtx,
    /// Plaintext octets given and ciphertext octets made since `begin`: equal at `end`.
    #[cfg(feature = "crypto-openssl")]
    counts: (usize, usize),
    #[cfg(not(feature = "crypto-openssl"))]
    key: SessionKey,
    /// sequoia seals a whole chunk in one call: its nonce, associated data and
    /// plaintext, gathered until `end`.
    #[cfg(not(feature = "crypto-openssl"))]
    pending: (Vec<u8>, Vec<u8>, zeroize::Zeroizing<Vec<u8>>),
}

#[cfg(feature = "crypto-openssl")]
static AES_256_OCB: std::sync::LazyLock<
    Result<openssl::cipher::Cipher, openssl::error::ErrorStack>,
> = std::sync::LazyLock::new(|| openssl::cipher::Cipher::fetch(None, "AES-256-OCB", None));

fn internal(e: impl std::fmt::Display) -> CryptoError {
    CryptoError::Internal(format!("AES-256-OCB: {e}"))
}

impl Ocb256 {
    /// Keyed with `key` (32 octets), for nonces of `nonce_len` octets.
    pub(super) fn new(key: &SessionKey, nonce_len: usize) -> Result<Ocb256, CryptoError> {
        if key.len() != 32 {
            return Err(internal("the key is not 32 octets"));
        }
        #[cfg(feature = "crypto-openssl")]
        {
            let cipher = AES_256_OCB.as_ref().map_err(internal)?;
            let mut context = openssl::cipher_ctx::CipherCtx::new().map_err(internal)?;
            context
                .encrypt_init(Some(cipher), None, None)
                .and_then(|()| context.set_iv_length(nonce_len))
                .and_then(|()| context.encrypt_init(None, Some(key), None))
                .map_err(internal)?;
            Ok(Ocb256 {
                context,
                counts: (0, 0),
            })
        }
        #[cfg(not(feature = "crypto-openssl"))]
        {
            // sequoia takes the nonce's length from the nonce.
            let _ = nonce_len;
            Ok(Ocb256 {
                key: key.clone(),
                pending: Default::default(),
            })
        }
    }

    /// Starts sealing under `nonce`, with the associated data `ad`.
    pub(super) fn begin(&mut self, nonce: &[u8], ad: &[u8]) -> Result<(), CryptoError> {
        #[cfg(feature = "crypto-openssl")]
        {
            self.counts = (0, 0);
            let context = &mut self.context;
            context
                .encrypt_init(None, None, Some(nonce))
                .and_then(|()| context.cipher_update(ad, None).map(drop))
                .map_err(internal)
        }
        #[cfg(not(feature = "crypto-openssl"))]
        {
            self.pending = (nonce.to_vec(), ad.to_vec(), Default::default());
            Ok(())
        }
    }

    /// Seals `plaintext`, the next of what `begin` started, appending what ciphertext
    /// there is to `out`: OpenSSL holds back no more than a block, which `end` gives.
    pub(super) fn update(
        &mut self,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        #[cfg(feature = "crypto-openssl")]
        {
            out.reserve(plaintext.len() + TAG_LEN);
            let made = self
                .context
                .cipher_update_vec(plaintext, out)
                .map_err(internal)?;
            self.counts.0 += plaintext.len();
            self.counts.1 += made;
            Ok(())
        }
        #[cfg(not(feature = "crypto-openssl"))]
        {
            let _ = out;
            self.pending.2.extend_from_slice(plaintext);
            Ok(())
        }
    }

    /// Ends what `begin` started: the rest of the ciphertext and the tag, appended to
    /// `out`.
    pub(super) fn end(&mut self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        #[cfg(feature = "crypto-openssl")]
        {
            out.reserve(2 * TAG_LEN);
            let made = self.context.cipher_final_vec(out).map_err(internal)?;
            self.counts.1 += made;
            if self.counts.0 != self.counts.1 {
                return Err(internal(
                    "OpenSSL returned a ciphertext of the wrong length",
                ));
            }
            let at = out.len();
            out.resize(at + TAG_LEN, 0);
            self.context.tag(&mut out[at..]).map_err(internal)
        }
        #[cfg(not(feature = "crypto-openssl"))]
        {
            use openpgp::types::{AEADAlgorithm, SymmetricAlgorithm};
            let (nonce, ad, plaintext) = std::mem::take(&mut self.pending);
            let at = out.len();
            out.resize(at + plaintext.len() + TAG_LEN, 0);
            AEADAlgorithm::OCB
                .context(SymmetricAlgorithm::AES256, &self.key, &ad, &nonce)
                .and_then(|context| context.for_encryption())
                .and_then(|mut context| context.encrypt_seal(&mut out[at..], &plaintext))
                .map_err(|e| internal(format!("{e:#}")))
        }
    }

    /// `plaintext` sealed under `nonce` with the associated data `ad`, in one piece: the
    /// ciphertext and its tag, in `sealed` (which is cleared first).
    pub(super) fn seal(
        &mut self,
        nonce: &[u8],
        ad: &[u8],
        plaintext: &[u8],
        sealed: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        sealed.clear();
        self.begin(nonce, ad)?;
        self.update(plaintext, sealed)?;
        self.end(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::Ocb256;
    use eax::aead::consts::U15;
    use eax::aead::{AeadInPlace, KeyInit};
    use openpgp::crypto::SessionKey;
    use sequoia_openpgp as openpgp;

    /// RustCrypto's `ocb3`, another implementation than OpenSSL's, is the reference:
    /// one keyed context must seal as it does, nonce after nonce, whatever the length,
    /// in one piece or in several.
    #[test]
    fn one_keyed_context_seals_every_nonce_as_ocb3_does() {
        let key = SessionKey::from(&(0u8..32).collect::<Vec<_>>()[..]);
        let mut ocb = Ocb256::new(&key, 15).unwrap();
        let ad = [0xD2, 2, 9, 2, 10];
        for (index, len) in [
            (0u64, 0usize),
            (1, 1),
            (2, 15),
            (3, 16),
            (4, 17),
            (5, 65536),
            (6, 4000),
        ] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 + index as usize) as u8).collect();
            let mut nonce = vec![0xA5; 7];
            nonce.extend_from_slice(&index.to_be_bytes());
            let mut sealed = vec![0xFF; 3];
            ocb.seal(&nonce, &ad, &plaintext, &mut sealed).unwrap();
            let reference = ocb3::Ocb3::<aes::Aes256, U15>::new_from_slice(&key).unwrap();
            let mut expected = plaintext.clone();
            let tag = reference
                .encrypt_in_place_detached(nonce[..].into(), &ad, &mut expected)
                .unwrap();
            expected.extend_from_slice(&tag);
            assert_eq!(sealed, expected, "chunk {index}, {len} octets");
            // The same, the plaintext given in uneven pieces, as a chunk comes from a
            // message's pieces.
            let mut streamed = vec![0xFF; 3];
            ocb.begin(&nonce, &ad).unwrap();
            for piece in plaintext.chunks(len / 3 + 5) {
                ocb.update(piece, &mut streamed).unwrap();
            }
            ocb.end(&mut streamed).unwrap();
            assert_eq!(
                streamed[3..],
                expected,
                "chunk {index}, {len} octets in pieces"
            );
        }
    }

    #[test]
    fn a_key_of_another_length_is_refused() {
        assert!(Ocb256::new(&SessionKey::from(&[0u8; 16][..]), 15).is_err());
    }
}
