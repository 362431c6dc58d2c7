//! Keys made ready once per material rather than once per message: recipients' OpenPGP
//! certs parsed, and SCKM users' secrets (OpenPGP and S/MIME) unsealed with their
//! decryption keys set up.
//!
//! Whether a key may be used is decided on the key cache's entries before any of this,
//! every time; what is held here is used only while the cache still has the same bytes
//! for it (a key refreshed or imported again is made anew), and only after the cache
//! has named it for this message (a deleted key is never asked for).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openpgp::parse::Parse;
use sequoia_openpgp as openpgp;

use crate::crypto::{pgp, smime};

/// What the transform keeps between messages.
pub struct Prepared {
    /// Recipients' certs, parsed and canonicalized (self-signatures checked): 7 % of
    /// the gateway's CPU for a 4 KiB encrypted message (perf, the release binary). The
    /// cert's validity now (expiry, revocation) is still checked at each encryption.
    pub certs: ByMaterial<openpgp::Cert>,
    /// SCKM users' OpenPGP secrets, keyed by the sealed bytes: unsealing, parsing and
    /// validating the TSK and setting up the RSA key was about 0.7 ms of a 3.5 ms
    /// RSA-3072 decryption (benches/crypto.rs). One is used for [`SECRET_AGE`] at
    /// most, and older ones are dropped whenever a secret is opened: the secret of a
    /// key the admin deletes (never asked for again: the store no longer names it)
    /// leaves memory with the next opening after that, also on the other members of a
    /// cluster. The sealing key, which opens every secret, is in memory throughout
    /// anyway.
    pub secrets: ByMaterial<pgp::SecretKeys>,
    /// SCKM users' S/MIME keys, keyed by the sealed secret and the certificate, held
    /// as `secrets` are. OpenSSL decodes the RSA key from PKCS#8 once, on first use
    /// ([`smime::PrivateKey`]): 60 % of an RSA-2048 decryption when done per message.
    pub smime_secrets: ByMaterial<smime::SmimeKey>,
    /// The S/MIME keys of the certificates the org certificate issued for SCKM keys,
    /// keyed by the sealed secret and those certificates, held as `secrets` are.
    pub issued_smime: ByMaterial<Vec<smime::SmimeKey>>,
}

/// Certs held at most; past it, the map starts over (a gateway that encrypts to more
/// distinct keys than this re-parses some).
const PARSED_CERTS: usize = 4096;
/// SCKM secrets held at most.
const OPENED_SECRETS: usize = 4096;
/// How long an opened secret is used before it is opened again.
const SECRET_AGE: Duration = Duration::from_secs(10 * 60);

impl Default for Prepared {
    fn default() -> Prepared {
        Prepared {
            certs: ByMaterial::new(PARSED_CERTS, None),
            secrets: ByMaterial::new(OPENED_SECRETS, Some(SECRET_AGE)),
            smime_secrets: ByMaterial::new(OPENED_SECRETS, Some(SECRET_AGE)),
            issued_smime: ByMaterial::new(OPENED_SECRETS, Some(SECRET_AGE)),
        }
    }
}

impl Prepared {
    /// The cert of `fingerprint` parsed from `material`, parsed now unless held.
    pub fn cert(&self, fingerprint: &str, material: &[u8]) -> Result<Arc<openpgp::Cert>, String> {
        self.certs.get(fingerprint, material, |material| {
            openpgp::Cert::from_bytes(material).map_err(|e| e.to_string())
        })
    }
}

/// Material made of several parts, as one key for [`ByMaterial`]: each part after its
/// length, so that no other parts give the same bytes.
pub fn parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Values made from key material, by fingerprint, each used while the material is the
/// same bytes (and, with a maximum age, no longer than that).
pub struct ByMaterial<T> {
    held: Mutex<HashMap<String, Held<T>>>,
    capacity: usize,
    max_age: Option<Duration>,
}

struct Held<T> {
    material: Vec<u8>,
    made: Instant,
    value: Arc<T>,
}

impl<T> ByMaterial<T> {
    pub fn new(capacity: usize, max_age: Option<Duration>) -> ByMaterial<T> {
        ByMaterial {
            held: Mutex::new(HashMap::new()),
            capacity,
            max_age,
        }
    }

    /// The value for `fingerprint` made from `material`: the one held, or `make`'s,
    /// which is then held. `make` runs outside the lock.
    pub fn get<E>(
        &self,
        fingerprint: &str,
        material: &[u8],
        make: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        let lock = || self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let fresh = |held: &Held<T>| self.max_age.is_none_or(|age| now - held.made < age);
        if let Some(held) = lock().get(fingerprint)
            && held.material[..] == *material
            && fresh(held)
        {
            return Ok(held.value.clone());
        }
        let value = Arc::new(make(material)?);
        let mut map = lock();
        map.retain(|_, held| fresh(held));
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(
            fingerprint.to_string(),
            Held {
                material: material.to_vec(),
                made: now,
                value: value.clone(),
            },
        );
        Ok(value)
    }

    /// How many values are held.
    pub fn len(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use openpgp::cert::CertBuilder;
    use openpgp::serialize::SerializeInto;
    use sequoia_openpgp as openpgp;

    use super::{ByMaterial, Prepared};

    #[test]
    fn a_cert_is_parsed_again_only_when_its_material_changes() {
        let (cert, _) = CertBuilder::new()
            .add_userid("<bob@example.org>")
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        let (other, _) = CertBuilder::new()
            .add_userid("<bob@example.org>")
            .generate()
            .unwrap();
        let (material, changed) = (cert.to_vec().unwrap(), other.to_vec().unwrap());
        let prepared = Prepared::default();
        let first = prepared.cert("FPR", &material).unwrap();
        assert!(Arc::ptr_eq(
            &first,
            &prepared.cert("FPR", &material).unwrap()
        ));
        let refreshed = prepared.cert("FPR", &changed).unwrap();
        assert_eq!(*refreshed, other);
        assert!(prepared.cert("BAD", b"not a cert").is_err());
    }

    #[test]
    fn a_value_is_made_again_once_it_is_too_old_and_old_ones_leave() {
        let held = ByMaterial::<u32>::new(8, Some(Duration::from_millis(50)));
        let made = |n| move |_: &[u8]| Ok::<_, ()>(n);
        assert_eq!(*held.get("A", b"a", made(1)).unwrap(), 1);
        assert_eq!(*held.get("A", b"a", made(2)).unwrap(), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(*held.get("B", b"b", made(3)).unwrap(), 3);
        // A's value was too old: it left when B's was made, and is made again.
        assert_eq!(held.len(), 1);
        assert_eq!(*held.get("A", b"a", made(4)).unwrap(), 4);
        // A failure is not held.
        assert!(held.get("C", b"c", |_| Err::<u32, _>(())).is_err());
        assert_eq!(held.len(), 2);
    }

    #[test]
    fn past_its_capacity_the_map_starts_over() {
        let held = ByMaterial::<u32>::new(2, None);
        for (i, name) in ["A", "B", "C"].into_iter().enumerate() {
            held.get(name, b"x", |_| Ok::<_, ()>(i as u32)).unwrap();
        }
        assert_eq!(held.len(), 1);
        assert_eq!(*held.get("C", b"x", |_| Ok::<_, ()>(9)).unwrap(), 2);
    }
}
