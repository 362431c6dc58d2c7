//! The transform: each recipient's verdict carried out. Recipients are grouped by
//! what they get, and each group's message is made: tagged, encrypted (one ciphertext
//! per format, to all the group's keys at once), decrypted (per recipient, with their
//! own SCKM keys), or refused with the verdict's reply.
//!
//! It is the gateway's [`Classifier`]; which recipient gets what was decided by the
//! policy before it runs ([`crate::gateway::plan`]).

use std::sync::Arc;

use der::Decode;
use openpgp::parse::Parse;
use sequoia_openpgp as openpgp;

use crate::config::Config;
use crate::crypto::{self, pgp, smime};
use crate::gateway::classify::{Classifier, Group};
use crate::gateway::marks;
use crate::keys::secrets::Sealer;
use crate::keys::{KeyEntry, KeyKind, KeyStore};
use crate::mail::envelope::Envelope;
use crate::mail::message::Message;
use crate::mail::mime::{self, Encrypted};
use crate::policy::rule::Tags;
use crate::policy::{Treatment, Verdict};
use crate::smtp::reply::{self, Reply};

/// Carries out verdicts with the key cache's material and SCKM secrets.
pub struct Transform {
    pub keys: Arc<dyn KeyStore>,
    pub sealer: Arc<Sealer>,
    pub config: Arc<Config>,
}

/// The marks a copy gets: the rule's tags, and the X-Sealgate line when it is on.
type Marks = (Tags, Option<String>);

/// A recipient (index) and the key their copy is encrypted to.
type Member = (usize, KeyEntry);

/// Recipients that get the same message: same treatment class, tags and status line.
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

impl Classifier for Transform {
    /// Heavy only when someone's copy is encrypted or may be decrypted.
    fn is_heavy(&self, verdicts: &[Verdict]) -> bool {
        verdicts
            .iter()
            .any(|v| matches!(v.treatment, Treatment::Encrypt(_) | Treatment::Decrypt(_)))
    }

    fn classify(&self, envelope: &Envelope, message: &Message, verdicts: &[Verdict]) -> Vec<Group> {
        let status_on = self.config.policy.header(envelope.direction);
        let status = |v: &Verdict, done: &str| {
            status_on.then(|| format!("{done}; rule={}", v.rule.as_deref().unwrap_or("none")))
        };
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
        if !buckets.decrypt.is_empty() {
            self.decrypt(envelope, message, verdicts, &status, &mut buckets)
        } else {
            Vec::new()
        }
        .into_iter()
        .chain(
            buckets
                .passed
                .into_iter()
                .map(|((tags, status), recipients)| Group {
                    treatment: "clear".into(),
                    recipients,
                    message: marks::apply(message, &tags, status.as_deref()),
                    refusal: None,
                }),
        )
        .chain(
            buckets
                .encrypted
                .into_iter()
                .map(|((kind, (tags, status)), members)| {
                    let tagged = marks::apply(message, &tags, None);
                    let mut group = self.encrypt_group(envelope, &tagged.to_vec(), members, kind);
                    if group.refusal.is_none() {
                        group.message =
                            marks::apply(&group.message, &Tags::default(), status.as_deref());
                    }
                    group
                }),
        )
        .chain(
            buckets
                .refused
                .into_iter()
                .map(|(reply, recipients)| Group {
                    treatment: "refused".into(),
                    recipients,
                    message: Message::default(),
                    refusal: Some(reply),
                }),
        )
        .collect()
    }
}

impl Transform {
    /// Decrypts for each recipient in `buckets.decrypt`; whoever's copy does not open
    /// (or was not encrypted) joins the pass-through buckets.
    fn decrypt(
        &self,
        envelope: &Envelope,
        message: &Message,
        verdicts: &[Verdict],
        status: &dyn Fn(&Verdict, &str) -> Option<String>,
        buckets: &mut Buckets,
    ) -> Vec<Group> {
        let raw = message.to_vec();
        let kind = mime::encrypted(&raw);
        let ciphertext = kind.and_then(|kind| mime::ciphertext(&raw, kind));
        let mut groups = Vec::new();
        for (i, keys) in std::mem::take(&mut buckets.decrypt) {
            let verdict = &verdicts[i];
            let rcpt = &envelope.recipients[i];
            let (Some(kind), Some(ciphertext)) = (kind, ciphertext.as_deref()) else {
                if let Some(kind) = kind {
                    tracing::info!(recipient = %rcpt, format = kind.as_str(), "encrypted message without a readable payload: delivered as it arrived");
                }
                put(
                    &mut buckets.passed,
                    (verdict.tags.clone(), status(verdict, "passed")),
                    i,
                );
                continue;
            };
            let opened = self
                .decrypt_for(ciphertext, kind, &keys)
                .and_then(|opened| {
                    let marker = format!("{}; key={}", kind.as_str(), opened.fingerprint);
                    mime::decrypted(&raw, kind, &opened.plaintext, &marker)
                        .map(|plain| (plain, opened.fingerprint))
                        .ok_or_else(|| "the decrypted content is not a MIME entity".to_string())
                });
            match opened {
                Ok((plain, fingerprint)) => {
                    tracing::info!(recipient = %rcpt, format = kind.as_str(), key = %fingerprint, "decrypted");
                    let done = status(verdict, &format!("decrypted {}", kind.as_str()));
                    groups.push(Group {
                        treatment: format!("decrypted-{fingerprint}"),
                        recipients: vec![i],
                        message: marks::apply(&Message::new(plain), &verdict.tags, done.as_deref()),
                        refusal: None,
                    });
                }
                Err(error) => {
                    tracing::info!(recipient = %rcpt, format = kind.as_str(), %error, "not decrypted: delivered as it arrived");
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

    /// One ciphertext for every recipient in `members`, encrypted to all their keys.
    fn encrypt_group(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        members: Vec<(usize, KeyEntry)>,
        kind: KeyKind,
    ) -> Group {
        let protect = self.config.crypto.protect_subject;
        let recipients: Vec<usize> = members.iter().map(|(i, _)| *i).collect();
        let fingerprints: Vec<&str> = members
            .iter()
            .map(|(_, e)| e.fingerprint.as_str())
            .collect();
        let result = (|| -> Result<Vec<u8>, String> {
            let entity = mime::inner_entity(raw, protect).ok_or("the message cannot be parsed")?;
            let material: Vec<Vec<u8>> = members
                .iter()
                .map(|(_, e)| {
                    self.keys
                        .material(&e.address, &e.fingerprint)
                        .map_err(|err| err.to_string())?
                        .ok_or_else(|| format!("key {} vanished from the cache", e.fingerprint))
                })
                .collect::<Result<_, _>>()?;
            match kind {
                KeyKind::Pgp => {
                    let mut certs = material
                        .iter()
                        .map(|m| openpgp::Cert::from_bytes(m).map_err(|e| e.to_string()))
                        .collect::<Result<Vec<_>, _>>()?;
                    certs.extend(self.config.crypto.additional_decryption_key.clone());
                    let armored = pgp::encrypt(&entity, &certs).map_err(|e| e.to_string())?;
                    mime::pgp_mime(raw, &armored, protect)
                        .ok_or_else(|| "cannot build PGP/MIME".into())
                }
                KeyKind::Smime => {
                    let certs = material
                        .iter()
                        .map(|m| x509_cert::Certificate::from_der(m).map_err(|e| e.to_string()))
                        .collect::<Result<Vec<_>, _>>()?;
                    let der = smime::encrypt(&entity, &certs).map_err(|e| e.to_string())?;
                    mime::smime_enveloped(raw, &der, protect)
                        .ok_or_else(|| "cannot build S/MIME".into())
                }
            }
        })();
        let rcpts: Vec<&str> = recipients
            .iter()
            .map(|&i| envelope.recipients[i].as_str())
            .collect();
        match result {
            Ok(encrypted) => {
                tracing::info!(recipients = ?rcpts, format = kind.as_str(), keys = ?fingerprints, "encrypting");
                Group {
                    treatment: kind.as_str().into(),
                    recipients,
                    message: Message::new(encrypted),
                    refusal: None,
                }
            }
            Err(error) => {
                // Fail closed: a recipient with a key never gets the message in clear
                // because encryption failed; the client is told to try again.
                tracing::error!(recipients = ?rcpts, format = kind.as_str(), keys = ?fingerprints, %error, "encryption failed");
                Group {
                    treatment: "refused".into(),
                    recipients,
                    message: Message::default(),
                    refusal: Some(reply::local_error("encryption failed")),
                }
            }
        }
    }

    /// Tries the recipient's own SCKM keys, in order.
    fn decrypt_for(
        &self,
        ciphertext: &[u8],
        kind: Encrypted,
        keys: &[KeyEntry],
    ) -> Result<crypto::Decrypted, String> {
        let wanted = match kind {
            Encrypted::PgpMime | Encrypted::InlinePgp => KeyKind::Pgp,
            Encrypted::Smime => KeyKind::Smime,
        };
        let mut last = String::from("no SCKM key of the message's kind");
        for entry in keys.iter().filter(|e| e.kind == wanted) {
            let secret = match self.keys.sealed_secret(&entry.fingerprint) {
                Ok(Some(sealed)) => match self.sealer.open_sealed(&entry.fingerprint, &sealed) {
                    Ok(secret) => secret,
                    Err(e) => {
                        last = e.to_string();
                        continue;
                    }
                },
                Ok(None) => {
                    last = format!("no secret stored for {}", entry.fingerprint);
                    continue;
                }
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let result = match wanted {
                KeyKind::Pgp => {
                    pgp::parse_tsks(&secret).and_then(|tsks| pgp::decrypt(ciphertext, &tsks))
                }
                KeyKind::Smime => {
                    let cert = self
                        .keys
                        .material(&entry.address, &entry.fingerprint)
                        .ok()
                        .flatten()
                        .and_then(|m| x509_cert::Certificate::from_der(&m).ok());
                    match cert {
                        Some(cert) => smime::decrypt(
                            ciphertext,
                            &[smime::SmimeKey {
                                cert,
                                private_key: zeroize::Zeroizing::new(secret.to_vec()),
                            }],
                        ),
                        None => Err(crypto::CryptoError::Key(format!(
                            "certificate {} is missing",
                            entry.fingerprint
                        ))),
                    }
                }
            };
            match result {
                Ok(opened) => return Ok(opened),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }
}
