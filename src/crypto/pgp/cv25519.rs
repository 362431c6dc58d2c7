//! Curve25519 ECDH session-key decryption with the secret key set up once.
//!
//! sequoia-openpgp's OpenSSL backend imports the secret scalar into OpenSSL for every
//! PKESK, and OpenSSL then derives its public key: a second scalar multiplication, as
//! costly as the agreement itself, and two imports through OpenSSL 3's provider
//! lookups. This holds the key as OpenSSL keeps it, so each decryption is the
//! agreement alone; sequoia's `decrypt_unwrap` does the rest (the KDF, the AES key
//! unwrap and the padding) as in its own path. Curve25519 is what GnuPG makes by
//! default, so this is the common SCKM key.

use openpgp::crypto::mpi::{self, Ciphertext};
use openpgp::crypto::{Decryptor, SessionKey, mem::Protected};
use openpgp::packet::Key;
use openpgp::packet::key::{PublicParts, SecretParts, UnspecifiedRole};
use openpgp::types::Curve;
use openssl::derive::Deriver;
use openssl::pkey::{Id, PKey, Private};
use sequoia_openpgp as openpgp;

/// A Curve25519 ECDH decryption key as OpenSSL holds it. A clone shares OpenSSL's key.
#[derive(Clone)]
pub struct Cv25519 {
    public: Key<PublicParts, UnspecifiedRole>,
    key: PKey<Private>,
}

impl Cv25519 {
    /// The key, if it is a Curve25519 ECDH key with unencrypted secret material;
    /// `None` otherwise (the caller then uses sequoia's own keypair).
    pub fn new(key: &Key<SecretParts, UnspecifiedRole>) -> Option<Cv25519> {
        let mpi::PublicKey::ECDH {
            curve: Curve::Cv25519,
            ..
        } = key.mpis()
        else {
            return None;
        };
        let secret = match key.optional_secret()? {
            openpgp::packet::key::SecretKeyMaterial::Unencrypted(secret) => secret,
            openpgp::packet::key::SecretKeyMaterial::Encrypted(_) => return None,
        };
        let key_pair = secret.map(|material| match material {
            mpi::SecretKeyMaterial::ECDH { scalar } => {
                // OpenPGP stores the scalar big-endian and may drop leading zeros;
                // X25519 takes 32 octets, little-endian (as sequoia does it).
                let mut raw: Protected = scalar.value_padded(32);
                raw.reverse();
                PKey::private_key_from_raw_bytes(&raw, Id::X25519).ok()
            }
            _ => None,
        })?;
        Some(Cv25519 {
            public: key.parts_as_public().clone(),
            key: key_pair,
        })
    }
}

impl Decryptor for Cv25519 {
    fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
        &self.public
    }

    fn decrypt(
        &mut self,
        ciphertext: &Ciphertext,
        plaintext_len: Option<usize>,
    ) -> openpgp::Result<SessionKey> {
        let Ciphertext::ECDH { e, .. } = ciphertext else {
            return Err(anyhow::anyhow!("not an ECDH ciphertext"));
        };
        let (ephemeral, _) = e.decode_point(&Curve::Cv25519)?;
        let ephemeral = PKey::public_key_from_raw_bytes(ephemeral, Id::X25519)?;
        let mut deriver = Deriver::new(&self.key)?;
        deriver.set_peer(&ephemeral)?;
        // OpenSSL refuses an ephemeral key of low order (an all-zero shared secret),
        // as in sequoia's path.
        let mut shared: Protected = vec![0; 32].into();
        let len = deriver.derive(&mut shared)?;
        if len != shared.len() {
            return Err(anyhow::anyhow!("X25519 gave {len} octets"));
        }
        openpgp::crypto::ecdh::decrypt_unwrap(&self.public, &shared, ciphertext, plaintext_len)
    }
}

#[cfg(test)]
mod tests {
    use crate::crypto::pgp::tests::encryption_subkey;
    use openpgp::cert::CipherSuite;
    use openpgp::crypto::mpi::{Ciphertext, MPI};
    use openpgp::crypto::{Decryptor, SessionKey};
    use sequoia_openpgp as openpgp;

    use super::Cv25519;

    #[test]
    fn the_prepared_key_opens_what_sequoia_encrypts_and_agrees_with_its_keypair() {
        let key = encryption_subkey(CipherSuite::Cv25519);
        let mut ours = Cv25519::new(&key).expect("a Curve25519 key");
        let mut theirs = key.clone().into_keypair().unwrap();
        for _ in 0..8 {
            let session = SessionKey::new(32).unwrap();
            let ciphertext = key.parts_as_public().encrypt(&session).unwrap();
            assert_eq!(ours.decrypt(&ciphertext, None).unwrap(), session);
            assert_eq!(theirs.decrypt(&ciphertext, None).unwrap(), session);
        }

        // An ephemeral key of small order (u = 0) would give an all-zero shared secret:
        // refused.
        let session = SessionKey::new(32).unwrap();
        let Ciphertext::ECDH { key: wrapped, .. } =
            key.parts_as_public().encrypt(&session).unwrap()
        else {
            panic!("not ECDH");
        };
        let low = Ciphertext::ECDH {
            e: MPI::new_compressed_point(&[0; 32]),
            key: wrapped,
        };
        assert!(ours.decrypt(&low, None).is_err());

        // An RSA key is not ours to handle.
        let key = encryption_subkey(CipherSuite::RSA2k);
        assert!(Cv25519::new(&key).is_none());
    }
}
