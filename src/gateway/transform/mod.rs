//! The transform: each recipient's treatment, as the policy's verdict gives it, carried
//! out. Recipients are put in groups that get the same message, and each group's
//! message is made: tagged, encrypted (one ciphertext per format, to all the group's
//! keys at once), decrypted (per recipient, with their own SCKM keys), or refused with
//! the verdict's reply. One group becomes one next-hop transaction.
//!
//! Which recipient gets what was decided by the policy before this runs
//! ([`super::plan`]); nothing here decides, it only does. This module groups the
//! recipients and assembles what came of them; [`encrypt`] makes a group's ciphertext,
//! [`decrypt`] opens a recipient's copy.

mod decrypt;
mod encrypt;

use std::sync::Arc;

use super::marks;
use crate::config::Config;
use crate::crypto::{self, CryptoError, pgp};
use crate::keys::secrets::{Sealer, SecretError};
use crate::keys::{KeyEntry, KeyKind, KeyStore, KeyStoreError};
use crate::mail::envelope::Envelope;
use crate::mail::message::Message;
use crate::policy::rule::Tags;
use crate::policy::{Treatment, Verdict};
use crate::smtp::reply::Reply;

/// Carries out verdicts with the key cache's material and SCKM secrets.
pub struct Transform {
    pub keys: Arc<dyn KeyStore>,
    pub sealer: Arc<Sealer>,
    pub config: Arc<Config>,
    /// The user certificates the org certificate issued: S/MIME mail to them opens with
    /// the user's OpenPGP SCKM secret.
    pub org: crate::org::OrgStore,
    /// Recipients' certs parsed and SCKM secrets opened, kept between messages.
    pub prepared: super::prepared::Prepared,
}

/// What the transform made of one transaction.
#[derive(Debug)]
pub struct Carried {
    /// Every recipient is in exactly one group.
    pub groups: Vec<Group>,
    /// `done[i]`: what was done with recipient `i`'s copy, which is not always what its
    /// verdict asked for: a message to decrypt may not be encrypted, or may not open,
    /// and encryption may fail. "decrypted pgp", "not decrypted (...)", "encrypted
    /// smime", "encryption failed", "passed", "rejected", "deferred".
    pub done: Vec<String>,
}

/// Recipients that get the same message, in one next-hop transaction.
#[derive(Debug, Clone)]
pub struct Group {
    /// What the group got, for logs: "clear", "pgp", "smime", "decrypted-FPR",
    /// "refused".
    pub label: String,
    /// Indexes into the envelope's recipients.
    pub recipients: Vec<usize>,
    /// The message as this group gets it.
    pub message: Message,
    /// When set, the group is not handed on: its recipients fail with this reply (the
    /// policy refused them, or encryption was required and failed).
    pub refusal: Option<Reply>,
}

/// Why a recipient's treatment could not be carried out: whose fault it is, and
/// whether trying again can help, are in each variant's doc.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// mail-parser cannot read the message at all. The sender's; the same message
    /// will fail the same way.
    #[error("the message cannot be parsed")]
    Unparseable,
    /// The key cache failed. Ours; a retry may help.
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    /// The key the policy chose was deleted from the cache meanwhile. Nobody's; a
    /// retry gets a fresh verdict.
    #[error("key {0} vanished from the cache")]
    KeyVanished(String),
    /// Key material in the cache does not parse. Ours (a damaged cache); a retry will
    /// not help until an admin re-imports the key.
    #[error("key {fingerprint} in the cache cannot be read: {reason}")]
    BadMaterial { fingerprint: String, reason: String },
    /// Encryption or decryption failed; [`CryptoError`] says whose fault.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// An SCKM secret cannot be opened. Ours (a replaced KEK, a damaged store).
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The cache has no secret for an SCKM entry. Ours (a damaged store).
    #[error("no secret stored for {0}")]
    NoSecret(String),
    /// The org store failed. Ours; a retry may help.
    #[error(transparent)]
    Org(#[from] crate::org::OrgStoreError),
    /// The recipient has no SCKM key of the message's kind. Nobody's: the message was
    /// encrypted to a key we do not hold.
    #[error("no SCKM key of the message's kind")]
    NoKeyOfKind,
    /// The encrypted or decrypted MIME entity could not be put together. The sender's
    /// (a decrypted payload that is no MIME entity) or ours (a bug).
    #[error("cannot build the {0} message")]
    Build(&'static str),
}

/// How an S/MIME copy's content is encrypted, as the verdicts of its recipients allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SmimeContent {
    /// EnvelopedData, AES-256-CBC: what every client reads.
    Cbc,
    /// AuthEnvelopedData, AES-256-GCM.
    Gcm,
}

impl SmimeContent {
    fn as_str(self) -> &'static str {
        match self {
            SmimeContent::Cbc => "aes-256-cbc",
            SmimeContent::Gcm => "aes-256-gcm",
        }
    }
}

/// The marks a copy gets: the rule's tags, and the X-Sealgate line when it is on.
type Marks = (Tags, Option<String>);

/// A recipient (index) and the key their copy is encrypted to.
type Member = (usize, KeyEntry);

/// A decrypted message and, for OpenPGP, the signatures it carried.
type Opened = (crypto::Decrypted, Option<pgp::Signed>);

/// Recipients that get the same message: same treatment, tags and status line.
#[derive(Default)]
struct Buckets {
    refused: Vec<(Reply, Vec<usize>)>,
    passed: Vec<(Marks, Vec<usize>)>,
    /// By key kind and marks: the recipients with the key each one is encrypted to.
    encrypted: Vec<((KeyKind, Marks), Vec<Member>)>,
    decrypt: Vec<(usize, Vec<KeyEntry>)>,
}

/// Adds `item` to the bucket with `key`, or starts one.
fn put<K: PartialEq, T>(buckets: &mut Vec<(K, Vec<T>)>, key: K, item: T) {
    match buckets.iter_mut().find(|(k, _)| *k == key) {
        Some((_, items)) => items.push(item),
        None => buckets.push((key, vec![item])),
    }
}

impl Transform {
    /// Whether carrying out `verdicts` on a message of `size` bytes may take long: when
    /// someone's copy may be decrypted (an RSA private operation is milliseconds), or
    /// is encrypted and the message is large, goes to many keys, or needs key material
    /// from the shared store (a database round trip). The gateway then runs it on the
    /// blocking pool; otherwise inline, because the hand-off to another thread and back
    /// costs more than a plain message's whole transform, and was a sixth of a 4 KiB
    /// encrypted message's (perf). A light encryption is a few public-key operations (a
    /// Curve25519 key's ephemeral key and agreement are about 60 µs), reads of the
    /// embedded store, and a pass over at most [`super::cost::LIGHT_SIZE`] bytes: a
    /// fraction of a millisecond on a runtime thread.
    pub fn is_heavy(&self, verdicts: &[Verdict], size: usize) -> bool {
        super::cost::heavy(verdicts, size, self.keys.is_local())
    }

    /// The groups for one transaction, whose id (for the log) is `id`: `verdicts[i]` is
    /// the verdict for `envelope.recipients[i]`, and every recipient is in exactly one
    /// group.
    pub fn carry_out(
        &self,
        envelope: &Envelope,
        message: &Message,
        verdicts: &[Verdict],
        id: &str,
    ) -> Carried {
        let status_on = self.config.policy.header(envelope.direction);
        let status = |v: &Verdict, done: &str| {
            status_on.then(|| format!("{done}; rule={}", v.rule.as_deref().unwrap_or("none")))
        };
        // What the verdicts ask for; the decryption and encryption below correct it.
        let mut done: Vec<String> = verdicts.iter().map(Verdict::action_text).collect();
        let mut buckets = Buckets::default();
        for (i, verdict) in verdicts.iter().enumerate() {
            match &verdict.treatment {
                Treatment::Refuse(reply) => put(&mut buckets.refused, reply.clone(), i),
                Treatment::Pass => put(
                    &mut buckets.passed,
                    (verdict.tags.clone(), status(verdict, "passed")),
                    i,
                ),
                Treatment::Encrypt(key) => put(
                    &mut buckets.encrypted,
                    (
                        key.kind,
                        (
                            verdict.tags.clone(),
                            status(verdict, &verdict.action_text()),
                        ),
                    ),
                    (i, key.clone()),
                ),
                Treatment::Decrypt(keys) => buckets.decrypt.push((i, keys.clone())),
            }
        }
        let decrypted = if buckets.decrypt.is_empty() {
            Vec::new()
        } else {
            self.decrypt(
                envelope,
                message,
                verdicts,
                id,
                &status,
                &mut buckets,
                &mut done,
            )
        };
        let passed = buckets
            .passed
            .into_iter()
            .map(|((tags, status), recipients)| Group {
                label: "clear".into(),
                recipients,
                message: marks::apply(message, &tags, status.as_deref()),
                refusal: None,
            });
        let encrypted: Vec<Group> = buckets
            .encrypted
            .into_iter()
            .map(|((kind, (tags, status)), members)| {
                let tagged = marks::apply(message, &tags, None);
                // One copy for the group, so AES-GCM only if everyone in it may have it.
                let content = match members.iter().all(|(i, _)| verdicts[*i].smime_aes_gcm) {
                    true => SmimeContent::Gcm,
                    false => SmimeContent::Cbc,
                };
                let mut group = self.encrypt_group(envelope, &tagged, members, kind, content, id);
                if group.refusal.is_none() {
                    group.message =
                        marks::apply(&group.message, &Tags::default(), status.as_deref());
                } else {
                    for &i in &group.recipients {
                        done[i] = "encryption failed".into();
                    }
                }
                group
            })
            .collect();
        let refused = buckets
            .refused
            .into_iter()
            .map(|(reply, recipients)| Group {
                label: "refused".into(),
                recipients,
                message: Message::default(),
                refusal: Some(reply),
            });
        let groups = decrypted
            .into_iter()
            .chain(passed)
            .chain(encrypted)
            .chain(refused)
            .collect();
        Carried { groups, done }
    }

    /// The key material of a cache entry.
    fn material(&self, entry: &KeyEntry) -> Result<Vec<u8>, TransformError> {
        self.keys
            .material(&entry.address, &entry.fingerprint)?
            .ok_or_else(|| TransformError::KeyVanished(entry.fingerprint.clone()))
    }
}
