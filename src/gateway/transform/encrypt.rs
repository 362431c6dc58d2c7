//! Encryption for the transform: one ciphertext per group, to all its keys at once, in
//! its PGP/MIME or S/MIME wrapping.

use der::Decode;
use sequoia_openpgp as openpgp;

use super::{Group, Member, SmimeContent, Transform, TransformError};
use crate::crypto::pgp::armor;
use crate::crypto::{pgp, smime};
use crate::keys::{KeyEntry, KeyKind};
use crate::mail::envelope::Envelope;
use crate::mail::message::Message;
use crate::mail::wrap;
use crate::smtp::reply;

impl Transform {
    /// One ciphertext for every recipient in `members`, encrypted to all their keys
    /// (for S/MIME, with `content`).
    pub(super) fn encrypt_group(
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
                let (entity_head, mut wrapped, closing) =
                    wrap::pgp_mime_parts(&head, protect).ok_or(TransformError::Unparseable)?;
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
                let entity = wrap::inner_entity(raw, protect).ok_or(TransformError::Unparseable)?;
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
                        wrap::SmimeType::EnvelopedData,
                    ),
                    SmimeContent::Gcm => (
                        smime::encrypt_authenticated(&entity, &certs)?,
                        wrap::SmimeType::AuthEnvelopedData,
                    ),
                };
                wrap::smime_enveloped(raw, &der, protect, smime_type)
                    .map(Message::new)
                    .ok_or(TransformError::Build("S/MIME"))
            }
        }
    }
}
