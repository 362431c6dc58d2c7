//! What a transform costs: whether carrying out a transaction's verdicts may take
//! long enough to belong on the blocking pool rather than on a runtime thread.

use crate::policy::{Treatment, Verdict};

/// The largest message whose encryption runs inline ([`Transform::is_heavy`](super::transform::Transform::is_heavy)).
/// The hand-off to the blocking pool and back costs 50–70 µs of CPU whatever the size:
/// at 100 KiB that was a tenth of an encrypted message's (SEIPDv1 640–700 µs on the
/// pool, 600 µs inline; relay benchmark, three rounds each). At this size an SEIPDv1
/// encryption (CFB and SHA-1, serial) to one key holds a runtime thread for about
/// 0.4 ms, to [`LIGHT_KEYS`] keys about 0.6 ms: a delay in the other sessions on that
/// thread that no SMTP peer can notice. Beyond it, the hold grows and the hand-off's
/// share shrinks.
pub const LIGHT_SIZE: usize = 128 * 1024;
/// The most recipient keys an inline encryption has.
pub const LIGHT_KEYS: usize = 4;

/// [`Transform::is_heavy`](super::transform::Transform::is_heavy), with whether the key store is local.
pub fn heavy(verdicts: &[Verdict], size: usize, local_store: bool) -> bool {
    let mut keys = 0;
    for verdict in verdicts {
        match verdict.treatment {
            Treatment::Decrypt(_) => return true,
            Treatment::Encrypt(_) => keys += 1,
            Treatment::Pass | Treatment::Refuse(_) => {}
        }
    }
    keys > 0 && (keys > LIGHT_KEYS || size > LIGHT_SIZE || !local_store)
}

#[cfg(test)]
mod tests {
    use super::{LIGHT_KEYS, LIGHT_SIZE, heavy};
    use crate::keys::{KeyEntry, KeyKind, Source};
    use crate::policy::{Treatment, Verdict};

    fn verdict(treatment: Treatment) -> Verdict {
        Verdict {
            treatment,
            tags: Default::default(),
            harvest: false,
            rule: None,
            note: None,
            smime_aes_gcm: false,
        }
    }

    fn key() -> KeyEntry {
        KeyEntry::sample(KeyKind::Pgp, Source::Sckm, "FPR")
    }

    #[test]
    fn decryption_large_wide_and_shared_store_encryption_go_to_the_blocking_pool() {
        let pass = verdict(Treatment::Pass);
        let encrypt = verdict(Treatment::Encrypt(key()));
        let decrypt = verdict(Treatment::Decrypt(vec![key()]));
        let small = 4 * 1024;
        let local = |verdicts: &[Verdict], size| heavy(verdicts, size, true);
        assert!(!local(std::slice::from_ref(&pass), 25 << 20));
        assert!(!heavy(std::slice::from_ref(&pass), small, false));
        assert!(!local(&[pass.clone(), encrypt.clone()], small));
        assert!(!local(std::slice::from_ref(&encrypt), LIGHT_SIZE));
        assert!(local(std::slice::from_ref(&encrypt), LIGHT_SIZE + 1));
        assert!(local(&[decrypt, pass], small));
        let wide = vec![encrypt; LIGHT_KEYS + 1];
        assert!(local(&wide, small));
        assert!(!local(&wide[..LIGHT_KEYS], small));
        // The shared store's material is a database round trip away.
        assert!(heavy(&wide[..1], small, false));
    }
}
