//! The transform: each recipient's treatment, as the policy's verdict gives it, carried
//! out. Recipients are put in groups that get the same message, and each group's
//! message is made: tagged, encrypted (one ciphertext per format, to all the group's
//! keys at once), decrypted (per recipient, with their own SCKM keys), or refused with
//! the verdict's reply. One group becomes one next-hop transaction.
//!
//! Which recipient gets what was decided by the policy before this runs
//! ([`super::plan`]); nothing here decides, it only does.

use std::sync::Arc;

use der::Decode;
use sequoia_openpgp as openpgp;

use super::marks;
use crate::config::Config;
use crate::crypto::pgp::armor;
use crate::crypto::{self, CryptoError, pgp, smime};
use crate::keys::secrets::{Sealer, SecretError};
use crate::keys::{KeyEntry, KeyKind, KeyStore, KeyStoreError};
use crate::mail::decrypted::{self, KeptSignature};
use crate::mail::envelope::Envelope;
use crate::mail::message::Message;
use crate::mail::mime::{self, Encrypted};
use crate::mail::payload::Payload;
use crate::policy::rule::Tags;
use crate::policy::{Treatment, Verdict};
use crate::smtp::reply::{self, Reply};

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
    /// encrypted message's (perf). A light encryption is a few public-key operations (an
    /// X25519 agreement is about 50 µs), reads of the embedded store, and a pass over at
    /// most [`super::cost::LIGHT_SIZE`] bytes: a fraction of a millisecond on a runtime thread.
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

    /// Decrypts for each recipient in `buckets.decrypt`; whoever's copy does not open
    /// (or was not encrypted) joins the pass-through buckets. `done` gets the truth.
    #[allow(clippy::too_many_arguments)]
    fn decrypt(
        &self,
        envelope: &Envelope,
        message: &Message,
        verdicts: &[Verdict],
        id: &str,
        status: &dyn Fn(&Verdict, &str) -> Option<String>,
        buckets: &mut Buckets,
        done: &mut [String],
    ) -> Vec<Group> {
        // Found where it lies when it can be, not in a copy of the whole message.
        let payload = Payload::of(message);
        let kind = payload.kind();
        let ciphertext = payload.ciphertext();
        let mut groups = Vec::new();
        for (i, keys) in std::mem::take(&mut buckets.decrypt) {
            let verdict = &verdicts[i];
            let rcpt = &envelope.recipients[i];
            let (Some(kind), Some(ciphertext)) = (kind, ciphertext.as_deref()) else {
                done[i] = match kind {
                    Some(kind) => {
                        tracing::info!(%id, recipient = %rcpt, format = kind.as_str(), "encrypted message without a readable payload: delivered as it arrived");
                        format!(
                            "not decrypted ({} without a readable payload)",
                            kind.as_str()
                        )
                    }
                    None => "not decrypted (not encrypted)".into(),
                };
                put(
                    &mut buckets.passed,
                    (verdict.tags.clone(), status(verdict, "passed")),
                    i,
                );
                continue;
            };
            let opened = self
                .decrypt_for(ciphertext, kind, &keys)
                .and_then(|(opened, signed)| {
                    let marker = format!("{}; key={}", kind.as_str(), opened.fingerprint);
                    let kept = signed.as_ref().map(|s| KeptSignature {
                        detached: &s.detached,
                        micalg: &s.micalg,
                        detached_over_crlf: s.detached_over_crlf,
                        message: &s.message,
                    });
                    let crypto::Decrypted {
                        plaintext,
                        fingerprint,
                    } = opened;
                    let (plain, form) = decrypted::decrypted_message(
                        payload.text(),
                        kind,
                        plaintext,
                        &marker,
                        kept,
                    )
                    .ok_or(TransformError::Build("decrypted"))?;
                    Ok((plain, fingerprint, form))
                });
            match opened {
                Ok((plain, fingerprint, form)) => {
                    let signature = form.map_or("none", |f| f.as_str());
                    tracing::info!(%id, recipient = %rcpt, format = kind.as_str(), key = %fingerprint, signature, "decrypted");
                    crate::telemetry::decryption(kind.as_str(), true);
                    done[i] = format!("decrypted {}", kind.as_str());
                    let status = status(verdict, &done[i]);
                    groups.push(Group {
                        label: format!("decrypted-{fingerprint}"),
                        recipients: vec![i],
                        message: marks::apply(&plain, &verdict.tags, status.as_deref()),
                        refusal: None,
                    });
                }
                Err(error) => {
                    tracing::info!(%id, recipient = %rcpt, format = kind.as_str(), %error, "not decrypted: delivered as it arrived");
                    crate::telemetry::decryption(kind.as_str(), false);
                    done[i] = format!("not decrypted ({error})");
                    put(
                        &mut buckets.passed,
                        (verdict.tags.clone(), status(verdict, "not decrypted")),
                        i,
                    );
                }
            }
        }
        groups
    }

    /// One ciphertext for every recipient in `members`, encrypted to all their keys
    /// (for S/MIME, with `content`).
    fn encrypt_group(
        &self,
        envelope: &Envelope,
        message: &Message,
        members: Vec<Member>,
        kind: KeyKind,
        content: SmimeContent,
        id: &str,
    ) -> Group {
        let recipients: Vec<usize> = members.iter().map(|(i, _)| *i).collect();
        let fingerprints: Vec<&str> = members
            .iter()
            .map(|(_, e)| e.fingerprint.as_str())
            .collect();
        let rcpts: Vec<&str> = recipients
            .iter()
            .map(|&i| envelope.recipients[i].as_str())
            .collect();
        match self.encrypt(message, &members, kind, content) {
            Ok(encrypted) => {
                let content = (kind == KeyKind::Smime).then_some(content.as_str());
                tracing::info!(%id, recipients = ?rcpts, format = kind.as_str(), content, keys = ?fingerprints, "encrypting");
                crate::telemetry::encryption(kind.as_str(), true);
                Group {
                    label: kind.as_str().into(),
                    recipients,
                    message: encrypted,
                    refusal: None,
                }
            }
            Err(error) => {
                // Fail closed: a recipient with a key never gets the message in clear
                // because encryption failed; the client is told to try again.
                tracing::error!(%id, recipients = ?rcpts, format = kind.as_str(), keys = ?fingerprints, %error, "encryption failed");
                crate::telemetry::encryption(kind.as_str(), false);
                Group {
                    label: "refused".into(),
                    recipients,
                    message: Message::default(),
                    refusal: Some(reply::local_error("encryption failed")),
                }
            }
        }
    }

    /// The encrypted message: the inner entity encrypted to every member's key, in its
    /// PGP/MIME or S/MIME wrapping.
    fn encrypt(
        &self,
        message: &Message,
        members: &[Member],
        kind: KeyKind,
        content: SmimeContent,
    ) -> Result<Message, TransformError> {
        let protect = self.config.crypto.protect_subject;
        let material = members
            .iter()
            .map(|(_, entry)| self.material(entry))
            .collect::<Result<Vec<_>, _>>()?;
        let bad = |entry: &KeyEntry, reason: String| TransformError::BadMaterial {
            fingerprint: entry.fingerprint.clone(),
            reason,
        };
        match kind {
            KeyKind::Pgp => {
                let parsed = members
                    .iter()
                    .zip(&material)
                    .map(|((_, e), m)| self.prepared.cert(&e.fingerprint, m).map_err(|x| bad(e, x)))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut certs: Vec<&openpgp::Cert> = parsed.iter().map(|c| &**c).collect();
                certs.extend(self.config.crypto.additional_decryption_key.as_ref());
                // The body is read where it lies, never joined: only the header is
                // copied (to cut it), and the message is held once more, encrypted, in
                // binary: it is armored as it is written out.
                let (head, body) = message.split_head();
                let entity_head =
                    mime::inner_entity(&head, protect).ok_or(TransformError::Unparseable)?;
                let (mut wrapped, closing) = mime::pgp_mime_frame(&head, protect)
                    .ok_or(TransformError::Build("PGP/MIME"))?;
                let pieces: Vec<_> = body.pieces().collect();
                let mut plaintext: Vec<&[u8]> = vec![&entity_head];
                plaintext.extend(pieces.iter().map(|piece| &piece[..]));
                let plaintext_len: usize = plaintext.iter().map(|p| p.len()).sum();
                // Room for the packets around the plaintext too (a PKESK per key, under
                // 1 KiB even for RSA-4096; a 16-byte tag per 64 KiB), so that a large
                // message is not moved as it grows.
                let overhead = plaintext_len / 1024 + 1024 * (certs.len() + 1);
                let mut binary = armor::Binary::with_capacity(plaintext_len + overhead);
                pgp::encrypt_into(&mut binary, &plaintext, &certs)?;
                let (binary, mut tail) = binary.finish();
                wrapped.extend_from_slice(armor::BEGIN_LINES);
                tail.extend_from_slice(&closing);
                Ok(Message::armored(wrapped, binary, tail))
            }
            KeyKind::Smime => {
                // The CMS builder takes the content in one piece.
                let raw = message.to_vec();
                let raw = &raw[..];
                let entity = mime::inner_entity(raw, protect).ok_or(TransformError::Unparseable)?;
                let certs = members
                    .iter()
                    .zip(&material)
                    .map(|((_, e), m)| {
                        x509_cert::Certificate::from_der(m).map_err(|x| bad(e, x.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let (der, smime_type) = match content {
                    SmimeContent::Cbc => (
                        smime::encrypt(&entity, &certs)?,
                        mime::SmimeType::EnvelopedData,
                    ),
                    SmimeContent::Gcm => (
                        smime::encrypt_authenticated(&entity, &certs)?,
                        mime::SmimeType::AuthEnvelopedData,
                    ),
                };
                mime::smime_enveloped(raw, &der, protect, smime_type)
                    .map(Message::new)
                    .ok_or(TransformError::Build("S/MIME"))
            }
        }
    }

    /// The key material of a cache entry.
    fn material(&self, entry: &KeyEntry) -> Result<Vec<u8>, TransformError> {
        self.keys
            .material(&entry.address, &entry.fingerprint)?
            .ok_or_else(|| TransformError::KeyVanished(entry.fingerprint.clone()))
    }

    /// Tries the recipient's own SCKM keys, in order; the error is the last key's. The
    /// ciphertext is in pieces, as it lies in the message.
    fn decrypt_for(
        &self,
        ciphertext: &[&[u8]],
        kind: Encrypted,
        keys: &[KeyEntry],
    ) -> Result<Opened, TransformError> {
        let wanted = match kind {
            Encrypted::PgpMime | Encrypted::InlinePgp => KeyKind::Pgp,
            Encrypted::Smime => KeyKind::Smime,
        };
        let mut last = TransformError::NoKeyOfKind;
        for entry in keys.iter().filter(|e| e.kind == wanted) {
            match self.decrypt_with(ciphertext, entry) {
                Ok(opened) => return Ok(opened),
                Err(e) => last = e,
            }
        }
        // S/MIME to a certificate the org certificate issued for an SCKM key (OpenPGP,
        // or S/MIME whose own certificate is another).
        if wanted == KeyKind::Smime {
            for entry in keys.iter().filter(|e| e.can_decrypt) {
                let issued = self.issued_smime_keys(entry)?;
                if issued.is_empty() {
                    continue;
                }
                match smime::decrypt(&joined(ciphertext), &issued) {
                    Ok(decrypted) => return Ok((decrypted, None)),
                    Err(e) => last = e.into(),
                }
            }
        }
        Err(last)
    }

    /// The S/MIME keys of an SCKM entry from the org certificate: each certificate it
    /// issued for the entry (expired ones too, for mail still on its way), with the
    /// secret of the key it carries: an S/MIME entry's own key, or the OpenPGP secret
    /// subkey whose public key it is.
    fn issued_smime_keys(&self, entry: &KeyEntry) -> Result<Vec<smime::SmimeKey>, TransformError> {
        let issued: Vec<_> = self
            .org
            .issued_to(&entry.address)?
            .into_iter()
            .filter(|c| c.fingerprint == entry.fingerprint)
            .collect();
        if issued.is_empty() {
            return Ok(Vec::new());
        }
        let sealed = self
            .keys
            .sealed_secret(&entry.fingerprint)?
            .ok_or_else(|| TransformError::NoSecret(entry.fingerprint.clone()))?;
        let secret = self.sealer.open_sealed(&entry.fingerprint, &sealed)?;
        if entry.kind == KeyKind::Smime {
            return Ok(issued
                .iter()
                .filter_map(|c| x509_cert::Certificate::from_der(&c.der).ok())
                .map(|cert| smime::SmimeKey {
                    cert,
                    private_key: secret.clone(),
                })
                .collect());
        }
        let tsks = pgp::parse_tsks(&secret)?;
        let mut keys = Vec::new();
        for issued in issued {
            let Ok(cert) = x509_cert::Certificate::from_der(&issued.der) else {
                continue;
            };
            let subkeys = tsks.iter().flat_map(|tsk| tsk.keys().unencrypted_secret());
            for subkey in subkeys {
                let public = subkey
                    .key()
                    .clone()
                    .parts_into_public()
                    .role_into_unspecified();
                let same = crate::org::ca::spki_of_openpgp(&public)
                    .is_ok_and(|spki| spki == cert.tbs_certificate.subject_public_key_info);
                if !same {
                    continue;
                }
                let secret = subkey.key().clone().role_into_unspecified();
                if let Ok(private_key) = crate::org::ca::pkcs8_of_openpgp_secret(&secret) {
                    keys.push(smime::SmimeKey {
                        cert: cert.clone(),
                        private_key,
                    });
                }
            }
        }
        Ok(keys)
    }

    /// Decrypts with one SCKM key: its sealed secret opened, and for S/MIME its
    /// certificate, which says which recipient info is ours.
    fn decrypt_with(
        &self,
        ciphertext: &[&[u8]],
        entry: &KeyEntry,
    ) -> Result<Opened, TransformError> {
        let sealed = self
            .keys
            .sealed_secret(&entry.fingerprint)?
            .ok_or_else(|| TransformError::NoSecret(entry.fingerprint.clone()))?;
        match entry.kind {
            KeyKind::Pgp => {
                let keys = self
                    .prepared
                    .secrets
                    .get(&entry.fingerprint, &sealed, |sealed| {
                        let secret = self.sealer.open_sealed(&entry.fingerprint, sealed)?;
                        Ok::<_, TransformError>(pgp::SecretKeys::new(&pgp::parse_tsks(&secret)?))
                    })?;
                let opened = pgp::open(ciphertext, &keys)?;
                Ok((opened.decrypted, opened.signed))
            }
            KeyKind::Smime => {
                let secret = self.sealer.open_sealed(&entry.fingerprint, &sealed)?;
                let material = self.material(entry)?;
                let cert = x509_cert::Certificate::from_der(&material).map_err(|e| {
                    TransformError::BadMaterial {
                        fingerprint: entry.fingerprint.clone(),
                        reason: e.to_string(),
                    }
                })?;
                let key = smime::SmimeKey {
                    cert,
                    private_key: zeroize::Zeroizing::new(secret.to_vec()),
                };
                // An S/MIME signature is inside the decrypted content (signed-data or
                // multipart/signed), and travels with it.
                Ok((smime::decrypt(&joined(ciphertext), &[key])?, None))
            }
        }
    }
}

/// The ciphertext in one piece, for S/MIME (whose ciphertext is one already, so this
/// copies nothing in practice: only PGP/MIME's is found in pieces).
fn joined<'a>(pieces: &[&'a [u8]]) -> std::borrow::Cow<'a, [u8]> {
    match pieces {
        [one] => std::borrow::Cow::Borrowed(one),
        many => std::borrow::Cow::Owned(many.concat()),
    }
}
