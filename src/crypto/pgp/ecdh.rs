//! The encrypted session key for a Curve25519 ECDH key (RFC 9580 §5.1.4, from RFC
//! 6637): the ephemeral key and the X25519 agreement in ring, the KDF in sha2, the AES
//! key wrap in aes-kw.
//!
//! This is what sequoia's `Key::encrypt` does for these keys, step for step. It is
//! done here because sequoia-openpgp 2.4.2's OpenSSL backend makes it slow: it imports
//! the recipient's key into OpenSSL and generates the ephemeral key there, through
//! OpenSSL 3's provider lookups, and instantiates a new DRBG for each random draw. That
//! was 30 % of the gateway's CPU for a 4 KiB message encrypted to a cv25519 key (perf,
//! the release binary), for work that needs two scalar multiplications. Those two are
//! still a quarter of that message's CPU, so they are done where they are fastest:
//! ring's X25519 uses BoringSSL's field arithmetic with the ADX and BMI2 instructions
//! where the CPU has them, 60 µs for the ephemeral key and the agreement on the
//! benchmark's machine against 71 µs in x25519-dalek's portable code. Any other key,
//! and a Cv25519 key with KDF parameters other than the usual ones, goes to sequoia.

use openpgp::crypto::SessionKey;
use openpgp::crypto::mpi::{self, MPI};
use openpgp::packet::Key;
use openpgp::packet::key::{KeyParts, KeyRole};
use openpgp::types::{Curve, HashAlgorithm, PublicKeyAlgorithm, SymmetricAlgorithm};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::rand::SystemRandom;
use sequoia_openpgp as openpgp;
use sha2::Digest;
use zeroize::Zeroizing;

use crate::crypto::key_wrap::aes_wrap;

/// Session keys are padded (PKCS #5) to this length before they are wrapped: a
/// multiple of 8 octets, as RFC 9580 §11.5 asks, and the same whatever the cipher, as
/// sequoia pads them, so that the wrapped key does not tell the cipher.
const PADDED_LEN: usize = 40;

/// The encrypted session key for `recipient` when it is a Curve25519 ECDH key with
/// parameters this handles; `None` sends the caller to sequoia. `psk` is the session
/// key as the PKESK carries it (with the cipher octet for v3, and the checksum).
pub fn encrypt<P: KeyParts, R: KeyRole>(
    recipient: &Key<P, R>,
    psk: &[u8],
) -> Option<Result<mpi::Ciphertext, String>> {
    let mpi::PublicKey::ECDH {
        curve: Curve::Cv25519,
        q,
        hash,
        sym,
    } = recipient.mpis()
    else {
        return None;
    };
    let kek_len = match sym {
        SymmetricAlgorithm::AES128 => 16,
        SymmetricAlgorithm::AES192 => 24,
        SymmetricAlgorithm::AES256 => 32,
        _ => return None,
    };
    if !matches!(
        hash,
        HashAlgorithm::SHA256 | HashAlgorithm::SHA384 | HashAlgorithm::SHA512
    ) {
        return None;
    }
    Some(wrap(recipient, q, *hash, *sym, kek_len, psk))
}

fn wrap<P: KeyParts, R: KeyRole>(
    recipient: &Key<P, R>,
    q: &MPI,
    hash: HashAlgorithm,
    sym: SymmetricAlgorithm,
    kek_len: usize,
    psk: &[u8],
) -> Result<mpi::Ciphertext, String> {
    let point: [u8; 32] = q
        .decode_point(&Curve::Cv25519)
        .ok()
        .and_then(|(x, _)| x.try_into().ok())
        .ok_or("the recipient's Curve25519 key is malformed")?;
    let ephemeral = EphemeralPrivateKey::generate(&X25519, &SystemRandom::new())
        .map_err(|_| "no ephemeral Curve25519 key: the system's random source failed")?;
    let public = ephemeral
        .compute_public_key()
        .map_err(|_| "no public key for the ephemeral Curve25519 key")?;
    // ring refuses a key of low order, which gives everybody the same (all-zero)
    // shared secret, as OpenSSL (sequoia's path) refuses it.
    let shared: Zeroizing<[u8; 32]> = agreement::agree_ephemeral(
        ephemeral,
        &UnparsedPublicKey::new(&X25519, point),
        |shared| shared.try_into().map(Zeroizing::new),
    )
    .map_err(|_| "the recipient's Curve25519 key is of low order")?
    .map_err(|_| "X25519 gave a shared secret of the wrong length")?;

    // m = session key (with its cipher octet and checksum) || PKCS#5 padding.
    if psk.len() >= PADDED_LEN {
        return Err("the session key is too long to wrap".into());
    }
    let mut m = Zeroizing::new(Vec::with_capacity(PADDED_LEN));
    m.extend_from_slice(psk);
    let pad = PADDED_LEN - psk.len();
    m.resize(PADDED_LEN, pad as u8);

    // Z = KDF(S, Param): one hash of 00 00 00 01 || S || Param, cut to the KEK's length.
    let param = kdf_param(recipient, hash, sym);
    let z = match hash {
        HashAlgorithm::SHA256 => digest::<sha2::Sha256>(&shared[..], &param),
        HashAlgorithm::SHA384 => digest::<sha2::Sha384>(&shared[..], &param),
        _ => digest::<sha2::Sha512>(&shared[..], &param),
    };
    let wrapped = aes_wrap(&z[..kek_len], &m).ok_or("AES key wrap failed")?;
    Ok(mpi::Ciphertext::ECDH {
        e: MPI::new_compressed_point(public.as_ref()),
        key: wrapped.into_boxed_slice(),
    })
}

fn digest<D: Digest>(shared: &[u8], param: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut hash = D::new();
    hash.update([0, 0, 0, 1]);
    hash.update(shared);
    hash.update(param);
    Zeroizing::new(hash.finalize().to_vec())
}

/// Param = curve OID length || curve OID || public key algorithm (18) || 03 01 || KDF
/// hash || KEK cipher || "Anonymous Sender    " || the recipient key's fingerprint.
fn kdf_param<P: KeyParts, R: KeyRole>(
    recipient: &Key<P, R>,
    hash: HashAlgorithm,
    sym: SymmetricAlgorithm,
) -> Vec<u8> {
    let oid = Curve::Cv25519.oid();
    let fingerprint = recipient.fingerprint();
    let mut param = Vec::with_capacity(1 + oid.len() + 5 + 20 + 32);
    param.push(oid.len() as u8);
    param.extend_from_slice(oid);
    param.push(PublicKeyAlgorithm::ECDH.into());
    param.extend_from_slice(&[3, 1, hash.into(), sym.into()]);
    param.extend_from_slice(b"Anonymous Sender    ");
    param.extend_from_slice(fingerprint.as_bytes());
    param
}

/// `SessionKey` is sequoia's; this is the checksum its PKESKs append for ECDH.
pub fn checksum(session_key: &SessionKey) -> [u8; 2] {
    session_key
        .iter()
        .map(|&b| u16::from(b))
        .fold(0u16, u16::wrapping_add)
        .to_be_bytes()
}

#[cfg(test)]
mod tests {
    use crate::crypto::pgp::tests::encryption_subkey;
    use openpgp::cert::{CertBuilder, CipherSuite};
    use openpgp::crypto::SessionKey;
    use openpgp::crypto::mpi::{self, MPI};
    use openpgp::packet::Key;
    use openpgp::packet::key::{PublicParts, UnspecifiedRole};
    use openpgp::packet::pkesk::{PKESK3, PKESK6};
    use openpgp::types::{Curve, HashAlgorithm, PublicKeyAlgorithm, SymmetricAlgorithm};
    use sequoia_openpgp as openpgp;

    use super::{checksum, encrypt};

    #[test]
    fn sequoia_opens_the_session_key_in_v3_and_v6_pkesks() {
        let (cert, _) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        let secret = cert.keys().subkeys().secret().next().unwrap().key().clone();
        let public = secret.parts_as_public().role_as_unspecified();
        let mut keypair = secret
            .clone()
            .role_into_unspecified()
            .into_keypair()
            .unwrap();
        for _ in 0..8 {
            let session_key = SessionKey::new(32).unwrap();
            // v3: the cipher octet, the key and its checksum.
            let mut psk = vec![u8::from(SymmetricAlgorithm::AES256)];
            psk.extend_from_slice(&session_key);
            psk.extend_from_slice(&checksum(&session_key));
            let esk = encrypt(public, &psk).expect("a Cv25519 key").unwrap();
            let v3 = PKESK3::new(Some(public.keyid()), PublicKeyAlgorithm::ECDH, esk).unwrap();
            let (algo, opened) = v3.decrypt(&mut keypair, None).expect("v3 opens");
            assert_eq!(algo, SymmetricAlgorithm::AES256);
            assert_eq!(opened, session_key);
            // v6: no cipher octet.
            let esk = encrypt(public, &psk[1..]).unwrap().unwrap();
            let v6 =
                PKESK6::new(Some(public.fingerprint()), PublicKeyAlgorithm::ECDH, esk).unwrap();
            let opened = v6
                .decrypt(&mut keypair, Some(SymmetricAlgorithm::AES256))
                .expect("v6 opens");
            assert_eq!(opened, session_key);
        }
    }

    #[test]
    fn other_keys_go_to_sequoia_and_a_low_order_key_is_refused() {
        let key = encryption_subkey(CipherSuite::RSA2k);
        assert!(encrypt(&key, b"psk").is_none());

        // Points of small order as a recipient's key: u = 0 and u = 1 (little-endian),
        // with which every ephemeral key gives the all-zero shared secret.
        for first in [0u8, 1] {
            let mut u = [0u8; 32];
            u[0] = first;
            let low: Key<PublicParts, UnspecifiedRole> = openpgp::packet::key::Key4::new(
                std::time::SystemTime::now(),
                PublicKeyAlgorithm::ECDH,
                mpi::PublicKey::ECDH {
                    curve: Curve::Cv25519,
                    q: MPI::new_compressed_point(&u),
                    hash: HashAlgorithm::SHA256,
                    sym: SymmetricAlgorithm::AES128,
                },
            )
            .unwrap()
            .into();
            let result = encrypt(&low, &[0; 35]).expect("a Cv25519 key");
            assert!(result.unwrap_err().contains("low order"), "u = {first}");
        }
    }
}
