//! Decryption with stored keys: at most [`MAX_PKESKS`] tries, a bounded plaintext, and
//! a failure sorted into whose fault it is (malformed message or no key of ours).

use std::cell::Cell;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};

use openpgp::crypto::SessionKey;
use openpgp::packet::key::{SecretParts, UnspecifiedRole};
use openpgp::packet::{Key, PKESK, SKESK};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use openpgp::policy::Policy;
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Cert, KeyHandle};
use sequoia_openpgp as openpgp;

use super::policy::{legacy_policy, purpose};
use crate::crypto::{CryptoError, Decrypted, MAX_PLAINTEXT};

/// The most PKESK packets (one per recipient key) that [`decrypt`] tries. Each try may
/// cost a public-key operation per key, so a message listing thousands of recipients
/// must not cost thousands of them. A message whose PKESK for us comes later than this
/// is not opened (`NoKey`).
pub const MAX_PKESKS: usize = 64;

/// How much plaintext sequoia's decryptor holds back before handing data out. Its
/// default (25 MiB) exists to check signatures before releasing anything; we check no
/// signatures, and read to the end (where the MDC or AEAD tag is checked) before
/// returning anything, so a small buffer keeps memory down without weakening anything.
const DECRYPT_BUFFER: usize = 1024 * 1024;

/// Decrypts an OpenPGP message (armored or binary) with the given TSKs, whose encryption
/// subkeys carry unencrypted secret material. Output over [`MAX_PLAINTEXT`] is
/// [`CryptoError::Malformed`]; see [`decrypt_with_limit`].
pub fn decrypt(message: &[u8], keys: &[Cert]) -> Result<Decrypted, CryptoError> {
    decrypt_with_limit(message, keys, MAX_PLAINTEXT)
}

/// [`decrypt`] with the plaintext limit given: more than `limit` bytes of output (a
/// compression bomb, say) is [`CryptoError::Malformed`], after reading at most
/// `limit + 1` bytes of it.
///
/// At most [`MAX_PKESKS`] PKESKs are looked at. Truncated, tampered or garbage input,
/// input that is not encrypted at all, and unsupported algorithms are `Malformed`; a
/// message none of `keys` can open (including one encrypted only to a password) is
/// [`CryptoError::NoKey`]. Signatures inside are neither verified nor required: the
/// recipient's client verifies them. `Decrypted::fingerprint` is the fingerprint of the
/// cert whose subkey opened the message.
pub fn decrypt_with_limit(
    message: &[u8],
    keys: &[Cert],
    limit: usize,
) -> Result<Decrypted, CryptoError> {
    // This runs on whatever the internet sends, inside the SMTP session: a panic in
    // sequoia is one message that passes undecrypted, not a dead session. sequoia-openpgp
    // 2.4.2 has one that any sender can reach (found by fuzz/, the decrypt target): a
    // message that ends inside a SEIPDv1 packet less than the block size plus 24 bytes
    // in, once a key of ours has opened the session key (an unwrap at parse.rs:6367;
    // tests/fuzz_regressions.rs).
    catch_unwind(AssertUnwindSafe(|| decrypt_inner(message, keys, limit))).unwrap_or_else(|_| {
        Err(CryptoError::Malformed(
            "the OpenPGP parser failed on this message".into(),
        ))
    })
}

/// How far the decryption helper got; read after a failure to tell whose fault it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No encryption container was reached (yet).
    NotReached,
    /// No key decrypted any PKESK we looked at.
    NoKey,
    /// One of our keys decrypted a session key, but it does not open the encrypted data:
    /// the container is truncated or corrupt.
    Broken,
    /// One of our keys decrypted a session key for a cipher we cannot run.
    Unsupported(SymmetricAlgorithm),
    /// A key opened it.
    Opened,
}

fn decrypt_inner(message: &[u8], keys: &[Cert], limit: usize) -> Result<Decrypted, CryptoError> {
    let policy = legacy_policy();
    let stage = Cell::new(Stage::NotReached);
    let helper = Helper {
        keys: decryption_keys(keys, &policy),
        stage: &stage,
        opened: None,
    };
    let builder = DecryptorBuilder::from_bytes(message).map_err(malformed)?;
    let mut decryptor = builder
        .buffer_size(DECRYPT_BUFFER)
        .with_policy(&policy, None, helper)
        .map_err(|e| failure(stage.get(), e))?;

    let mut plaintext = Vec::new();
    let read = (&mut decryptor)
        .take((limit as u64).saturating_add(1))
        .read_to_end(&mut plaintext);
    if let Err(e) = read {
        return Err(CryptoError::Malformed(format!(
            "the encrypted data is corrupt or truncated: {e}"
        )));
    }
    if plaintext.len() > limit {
        return Err(CryptoError::Malformed(format!(
            "the plaintext is over the {limit}-byte limit (compression bomb?)"
        )));
    }
    // Signed-only or plain literal messages go through sequoia's decryptor without ever
    // asking for a key. They are not ours to "decrypt".
    match (stage.get(), decryptor.helper_ref().opened.clone()) {
        (Stage::Opened, Some(fingerprint)) => Ok(Decrypted {
            plaintext,
            fingerprint,
        }),
        _ => Err(CryptoError::Malformed(
            "not an encrypted OpenPGP message".into(),
        )),
    }
}

fn malformed(e: anyhow::Error) -> CryptoError {
    CryptoError::Malformed(format!("{e:#}"))
}

fn failure(stage: Stage, e: anyhow::Error) -> CryptoError {
    match stage {
        Stage::NoKey => CryptoError::NoKey,
        Stage::Broken => CryptoError::Malformed(format!(
            "the session key does not open the encrypted data (corrupt or truncated): {e:#}"
        )),
        Stage::Unsupported(algo) => {
            CryptoError::Malformed(format!("unsupported symmetric algorithm {algo}"))
        }
        Stage::NotReached | Stage::Opened => malformed(e),
    }
}

/// An encryption-capable key with unencrypted secret material, and the cert it is in.
struct DecryptionKey {
    cert: Cert,
    key: Key<SecretParts, UnspecifiedRole>,
}

/// Every decryption key in `certs`. Expired and revoked keys stay in: an SCKM key that
/// was reset or has run out must still open the mail sent to it before.
fn decryption_keys(certs: &[Cert], policy: &dyn Policy) -> Vec<DecryptionKey> {
    let mut keys = Vec::new();
    for cert in certs {
        for ka in cert
            .keys()
            .with_policy(policy, None)
            .unencrypted_secret()
            .filter(|ka| purpose(ka.key().parts_as_public(), ka.key_flags()).encrypt)
        {
            keys.push(DecryptionKey {
                cert: cert.clone(),
                key: ka.key().clone(),
            });
        }
    }
    keys
}

/// Sequoia's streaming decryptor calls this once per encryption layer.
struct Helper<'a> {
    keys: Vec<DecryptionKey>,
    stage: &'a Cell<Stage>,
    /// The fingerprint of the cert that opened the message.
    opened: Option<String>,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }

    fn check(&mut self, _structure: MessageStructure) -> openpgp::Result<()> {
        // We decrypt; the recipient's client verifies whatever signatures are inside.
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        let mut failed = Stage::NoKey;
        for pkesk in pkesks.iter().take(MAX_PKESKS) {
            let recipient = pkesk.recipient();
            // A PKESK without a recipient (a hidden recipient, key ID 0) may be for any
            // of our keys.
            let candidates = self.keys.iter().filter(|k| match &recipient {
                Some(handle) => handle.aliases(k.key.key_handle()),
                None => true,
            });
            for candidate in candidates {
                let Ok(mut keypair) = candidate.key.clone().into_keypair() else {
                    continue;
                };
                if let Some((algo, session_key)) = pkesk.decrypt(&mut keypair, sym_algo) {
                    if decrypt(algo, &session_key) {
                        self.stage.set(Stage::Opened);
                        self.opened = Some(candidate.cert.fingerprint().to_hex());
                        return Ok(Some(candidate.cert.clone()));
                    }
                    failed = match algo {
                        Some(algo) if !algo.is_supported() => Stage::Unsupported(algo),
                        _ => Stage::Broken,
                    };
                }
            }
        }
        self.stage.set(failed);
        Err(anyhow::anyhow!("none of the keys opens this message"))
    }
}
