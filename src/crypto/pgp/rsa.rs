//! RSA session-key decryption with the whole private key.
//!
//! sequoia-openpgp's OpenSSL backend hands OpenSSL an RSA key of `n`, `e` and `d` only,
//! so every decryption is one exponentiation by the full-size `d`: about four times the
//! work of the CRT form with `p` and `q`, which OpenPGP secret keys carry anyway. For an
//! RSA-3072 SCKM key that was 7 of the 9 ms a 100 KiB message took to decrypt (see
//! benches/crypto.rs). This gives OpenSSL the whole key, and sequoia's PKESK code does
//! the rest (the checksum, the cipher byte) as before. The padding check is OpenSSL's,
//! as it is in sequoia's own path.

use openpgp::crypto::mpi::{self, Ciphertext};
use openpgp::crypto::{Decryptor, SessionKey};
use openpgp::packet::Key;
use openpgp::packet::key::{PublicParts, SecretParts, UnspecifiedRole};
use openssl::bn::{BigNum, BigNumContext};
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use sequoia_openpgp as openpgp;

/// An RSA decryption key in OpenSSL's CRT form. A clone shares OpenSSL's key (and the
/// blinding and Montgomery setup it makes on first use).
#[derive(Clone)]
pub struct CrtRsa {
    public: Key<PublicParts, UnspecifiedRole>,
    key: PKey<Private>,
}

impl CrtRsa {
    /// The key, if it is an RSA key with unencrypted secret material; `None` otherwise
    /// (the caller then uses sequoia's own keypair).
    pub fn new(key: &Key<SecretParts, UnspecifiedRole>) -> Option<CrtRsa> {
        let mpi::PublicKey::RSA { e, n } = key.mpis() else {
            return None;
        };
        let secret = match key.optional_secret()? {
            openpgp::packet::key::SecretKeyMaterial::Unencrypted(secret) => secret,
            openpgp::packet::key::SecretKeyMaterial::Encrypted(_) => return None,
        };
        let rsa = secret.map(|material| match material {
            mpi::SecretKeyMaterial::RSA { d, p, q, u } => crt_key(
                n.value(),
                e.value(),
                d.value(),
                p.value(),
                q.value(),
                u.value(),
            )
            .ok(),
            _ => None,
        })?;
        Some(CrtRsa {
            public: key.parts_as_public().clone(),
            key: PKey::from_rsa(rsa).ok()?,
        })
    }
}

/// OpenPGP keeps `p < q` and `u = p⁻¹ mod q`; OpenSSL wants `iqmp = q⁻¹ mod p`. With
/// the primes given to OpenSSL the other way round, `u` is its `iqmp` as it is.
fn crt_key(
    n: &[u8],
    e: &[u8],
    d: &[u8],
    p: &[u8],
    q: &[u8],
    u: &[u8],
) -> Result<Rsa<Private>, openssl::error::ErrorStack> {
    let mut cx = BigNumContext::new_secure()?;
    let bn = BigNum::from_slice;
    let secure = |bytes: &[u8]| -> Result<BigNum, openssl::error::ErrorStack> {
        let mut n = BigNum::new_secure()?;
        n.copy_from_slice(bytes)?;
        Ok(n)
    };
    let (d, first, second, iqmp) = (secure(d)?, secure(q)?, secure(p)?, secure(u)?);
    let one = BigNum::from_u32(1)?;
    let mut first_less_one = BigNum::new_secure()?;
    first_less_one.checked_sub(&first, &one)?;
    let mut second_less_one = BigNum::new_secure()?;
    second_less_one.checked_sub(&second, &one)?;
    let mut dmp1 = BigNum::new_secure()?;
    dmp1.nnmod(&d, &first_less_one, &mut cx)?;
    let mut dmq1 = BigNum::new_secure()?;
    dmq1.nnmod(&d, &second_less_one, &mut cx)?;
    Rsa::from_private_components(bn(n)?, bn(e)?, d, first, second, dmp1, dmq1, iqmp)
}

impl Decryptor for CrtRsa {
    fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
        &self.public
    }

    fn decrypt(
        &mut self,
        ciphertext: &Ciphertext,
        _plaintext_len: Option<usize>,
    ) -> openpgp::Result<SessionKey> {
        let Ciphertext::RSA { c } = ciphertext else {
            return Err(anyhow::anyhow!("not an RSA ciphertext"));
        };
        let mut cx = openssl::pkey_ctx::PkeyCtx::new(&self.key)?;
        cx.decrypt_init()?;
        cx.set_rsa_padding(Padding::PKCS1)?;
        let mut out = zeroize::Zeroizing::new(vec![0u8; self.key.size()]);
        let len = cx.decrypt(c.value(), Some(&mut out[..]))?;
        Ok(SessionKey::from(&out[..len]))
    }
}

#[cfg(test)]
mod tests {
    use crate::crypto::pgp::tests::encryption_subkey;
    use openpgp::cert::CipherSuite;
    use openpgp::crypto::{Decryptor, SessionKey};
    use sequoia_openpgp as openpgp;

    use super::CrtRsa;

    #[test]
    fn the_crt_key_opens_what_sequoia_encrypts_and_agrees_with_its_keypair() {
        let key = encryption_subkey(CipherSuite::RSA2k);
        for _ in 0..4 {
            let session = SessionKey::new(32).unwrap();
            let ciphertext = key.parts_as_public().encrypt(&session).unwrap();
            let mut ours = CrtRsa::new(&key).expect("an RSA key");
            assert_eq!(ours.decrypt(&ciphertext, None).unwrap(), session);
            let mut theirs = key.clone().into_keypair().unwrap();
            assert_eq!(theirs.decrypt(&ciphertext, None).unwrap(), session);
        }
        // A cv25519 key is not ours to handle.
        let key = encryption_subkey(CipherSuite::Cv25519);
        assert!(CrtRsa::new(&key).is_none());
    }
}
