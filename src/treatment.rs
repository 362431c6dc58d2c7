//! The built-in treatment of recipients, until policy rule files take over: outbound
//! mail is encrypted to every external recipient with a usable key, inbound mail is
//! decrypted for internal recipients whose SCKM key opens it, and everyone else gets
//! the message as it arrived.
//!
//! It is a [`Classifier`]: it groups recipients by treatment and makes each group's
//! message. Recipients that share an encryption format share one ciphertext,
//! encrypted to all their keys at once.

use std::sync::Arc;

use der::Decode;
use openpgp::parse::Parse;
use sequoia_openpgp as openpgp;
use time::OffsetDateTime;

use crate::classify::{Classifier, Group};
use crate::config::{Config, Direction};
use crate::crypto::{self, pgp, smime};
use crate::envelope::{Envelope, domain_of};
use crate::keys::secrets::Sealer;
use crate::keys::{KeyEntry, KeyKind, KeyStore, Source, address};
use crate::message::Message;
use crate::mime::{self, Encrypted};
use crate::smtp::reply;

/// Encrypts outbound, decrypts inbound, using the key cache.
pub struct Builtin {
    pub keys: Arc<dyn KeyStore>,
    pub sealer: Arc<Sealer>,
    pub config: Arc<Config>,
}

impl Classifier for Builtin {
    /// Heavy only when some recipient's mail will be encrypted or may be decrypted:
    /// one key cache lookup per recipient, a few microseconds each.
    fn is_heavy(&self, envelope: &Envelope) -> bool {
        let now = OffsetDateTime::now_utc();
        let mailflow_ok = self.config.keys.encrypt_to_mailflow_keys;
        envelope
            .recipients
            .iter()
            .any(|rcpt| match envelope.direction {
                Direction::Outbound => {
                    !self.config.is_internal_domain(domain_of(rcpt))
                        && self
                            .entries(rcpt)
                            .iter()
                            .any(|e| e.usable_for_encryption(now, mailflow_ok))
                }
                Direction::Inbound => self
                    .entries(rcpt)
                    .iter()
                    .any(|e| e.source == Source::Sckm && e.can_decrypt),
            })
    }

    fn classify(&self, envelope: &Envelope, message: &Message) -> Vec<Group> {
        let now = OffsetDateTime::now_utc();
        match envelope.direction {
            Direction::Outbound => self.outbound(envelope, message, now),
            Direction::Inbound => self.inbound(envelope, message),
        }
    }
}

/// One group for everyone in `recipients`, with the message as it is.
fn clear(recipients: Vec<usize>, message: &Message) -> Group {
    Group {
        treatment: "clear".into(),
        recipients,
        message: message.clone(),
        refusal: None,
    }
}

impl Builtin {
    /// The entries for a recipient, or none (a lookup failure is logged and means none).
    fn entries(&self, recipient: &str) -> Vec<KeyEntry> {
        let Some(address) = address::normalize(recipient) else {
            return Vec::new();
        };
        self.keys.find(&address).unwrap_or_else(|e| {
            tracing::error!(%recipient, error = %e, "key cache lookup failed");
            Vec::new()
        })
    }

    fn outbound(&self, envelope: &Envelope, message: &Message, now: OffsetDateTime) -> Vec<Group> {
        let mailflow_ok = self.config.keys.encrypt_to_mailflow_keys;
        let mut plain = Vec::new();
        let mut pgp_rcpts: Vec<(usize, KeyEntry)> = Vec::new();
        let mut smime_rcpts: Vec<(usize, KeyEntry)> = Vec::new();
        for (i, rcpt) in envelope.recipients.iter().enumerate() {
            if self.config.is_internal_domain(domain_of(rcpt)) {
                plain.push(i);
                continue;
            }
            let usable: Vec<KeyEntry> = self
                .entries(rcpt)
                .into_iter()
                .filter(|e| e.usable_for_encryption(now, mailflow_ok))
                .collect();
            // Both kinds known: PGP is the built-in choice until policy chooses.
            let choice = usable
                .iter()
                .find(|e| e.kind == KeyKind::Pgp)
                .or_else(|| usable.first());
            match choice {
                Some(e) if e.kind == KeyKind::Pgp => pgp_rcpts.push((i, e.clone())),
                Some(e) => smime_rcpts.push((i, e.clone())),
                None => plain.push(i),
            }
        }
        if pgp_rcpts.is_empty() && smime_rcpts.is_empty() {
            return vec![clear(plain, message)];
        }
        let raw = message.to_vec();
        if let Some(kind) = mime::encrypted(&raw) {
            tracing::info!(format = kind.as_str(), "already encrypted: sent as it is");
            return vec![clear((0..envelope.recipients.len()).collect(), message)];
        }
        let protect = self.config.crypto.protect_subject;
        let mut groups = Vec::new();
        if !plain.is_empty() {
            groups.push(clear(plain, message));
        }
        if !pgp_rcpts.is_empty() {
            groups.push(self.encrypt_group(envelope, &raw, pgp_rcpts, KeyKind::Pgp, protect));
        }
        if !smime_rcpts.is_empty() {
            groups.push(self.encrypt_group(envelope, &raw, smime_rcpts, KeyKind::Smime, protect));
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
        protect: bool,
    ) -> Group {
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

    fn inbound(&self, envelope: &Envelope, message: &Message) -> Vec<Group> {
        let all: Vec<usize> = (0..envelope.recipients.len()).collect();
        let holders: Vec<(usize, Vec<KeyEntry>)> = envelope
            .recipients
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let sckm = self
                    .entries(r)
                    .into_iter()
                    .filter(|e| e.source == Source::Sckm && e.can_decrypt)
                    .collect::<Vec<_>>();
                (i, sckm)
            })
            .filter(|(_, keys)| !keys.is_empty())
            .collect();
        if holders.is_empty() {
            return vec![clear(all, message)];
        }
        let raw = message.to_vec();
        let Some(kind) = mime::encrypted(&raw) else {
            return vec![clear(all, message)];
        };
        let Some(ciphertext) = mime::ciphertext(&raw, kind) else {
            tracing::info!(
                format = kind.as_str(),
                "encrypted message without a readable payload: delivered as it arrived"
            );
            return vec![clear(all, message)];
        };
        let mut groups = Vec::new();
        let mut untouched: Vec<usize> = all.clone();
        for (i, mut keys) in holders {
            // The current key first; retired ones still open older mail.
            keys.sort_by_key(|e| e.retired);
            let rcpt = &envelope.recipients[i];
            match self.decrypt_for(&ciphertext, kind, &keys) {
                Ok(opened) => {
                    let marker = format!("{}; key={}", kind.as_str(), opened.fingerprint);
                    match mime::decrypted(&raw, kind, &opened.plaintext, &marker) {
                        Some(plain) => {
                            tracing::info!(recipient = %rcpt, format = kind.as_str(), key = %opened.fingerprint, "decrypted");
                            untouched.retain(|&u| u != i);
                            groups.push(Group {
                                treatment: format!("decrypted-{}", opened.fingerprint),
                                recipients: vec![i],
                                message: Message::new(plain),
                                refusal: None,
                            });
                        }
                        None => {
                            tracing::info!(recipient = %rcpt, "decrypted content is not a MIME entity: delivered as it arrived")
                        }
                    }
                }
                Err(error) => {
                    tracing::info!(recipient = %rcpt, format = kind.as_str(), %error, "not decrypted: delivered as it arrived");
                }
            }
        }
        if !untouched.is_empty() {
            groups.insert(0, clear(untouched, message));
        }
        groups
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
