//! Decryption for the transform: each recipient's copy opened with their own SCKM keys
//! (or the S/MIME keys the organization certificate issued them), and what it came to.

use std::sync::Arc;

use der::Decode;

use super::{Buckets, Group, Opened, Transform, TransformError, put};
use crate::crypto::{self, pgp, smime};
use crate::gateway::{marks, prepared};
use crate::keys::{KeyEntry, KeyKind};
use crate::mail::decrypted::{self, KeptSignature};
use crate::mail::envelope::Envelope;
use crate::mail::message::Message;
use crate::mail::mime::Encrypted;
use crate::mail::payload::Payload;
use crate::policy::Verdict;

impl Transform {
    /// Decrypts for each recipient in `buckets.decrypt`; whoever's copy does not open
    /// (or was not encrypted) joins the pass-through buckets. `done` gets the truth.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decrypt(
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
    /// subkey whose public key it is. Made once while the sealed secret and the issued
    /// certificates stay the same ([`Prepared`](crate::gateway::prepared::Prepared)).
    fn issued_smime_keys(
        &self,
        entry: &KeyEntry,
    ) -> Result<Arc<Vec<smime::SmimeKey>>, TransformError> {
        let issued: Vec<_> = self
            .org
            .issued_to(&entry.address)?
            .into_iter()
            .filter(|c| c.fingerprint == entry.fingerprint)
            .collect();
        if issued.is_empty() {
            return Ok(Arc::default());
        }
        let sealed = self
            .keys
            .sealed_secret(&entry.fingerprint)?
            .ok_or_else(|| TransformError::NoSecret(entry.fingerprint.clone()))?;
        let held =
            prepared::parts(std::iter::once(&sealed[..]).chain(issued.iter().map(|c| &c.der[..])));
        self.prepared
            .issued_smime
            .get(&entry.fingerprint, &held, |_| {
                let secret = self.sealer.open_sealed(&entry.fingerprint, &sealed)?;
                let certs = issued
                    .iter()
                    .filter_map(|c| x509_cert::Certificate::from_der(&c.der).ok());
                issued_keys(entry, certs, &secret)
            })
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
                let material = self.material(entry)?;
                // Kept while both the sealed secret and the certificate stay the same.
                let held = prepared::parts([&sealed[..], &material[..]]);
                let key = self
                    .prepared
                    .smime_secrets
                    .get(&entry.fingerprint, &held, |_| {
                        let secret = self.sealer.open_sealed(&entry.fingerprint, &sealed)?;
                        let cert = x509_cert::Certificate::from_der(&material).map_err(|e| {
                            TransformError::BadMaterial {
                                fingerprint: entry.fingerprint.clone(),
                                reason: e.to_string(),
                            }
                        })?;
                        Ok::<_, TransformError>(smime::SmimeKey {
                            cert,
                            private_key: zeroize::Zeroizing::new(secret.to_vec()).into(),
                        })
                    })?;
                // An S/MIME signature is inside the decrypted content (signed-data or
                // multipart/signed), and travels with it.
                Ok((
                    smime::decrypt(&joined(ciphertext), std::slice::from_ref(&*key))?,
                    None,
                ))
            }
        }
    }
}

/// `certs`, each with the secret of the key it carries, from `secret`: an S/MIME
/// entry's own key, or the OpenPGP secret subkey whose public key it is.
fn issued_keys(
    entry: &KeyEntry,
    certs: impl Iterator<Item = x509_cert::Certificate>,
    secret: &[u8],
) -> Result<Vec<smime::SmimeKey>, TransformError> {
    if entry.kind == KeyKind::Smime {
        // One key, decoded once for all its certificates.
        let private_key = smime::PrivateKey::new(zeroize::Zeroizing::new(secret.to_vec()));
        return Ok(certs
            .map(|cert| smime::SmimeKey {
                cert,
                private_key: private_key.clone(),
            })
            .collect());
    }
    let tsks = pgp::parse_tsks(secret)?;
    let mut keys = Vec::new();
    for cert in certs {
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
                    private_key: private_key.into(),
                });
            }
        }
    }
    Ok(keys)
}

/// The ciphertext in one piece, for S/MIME (whose ciphertext is one already, so this
/// copies nothing in practice: only PGP/MIME's is found in pieces).
fn joined<'a>(pieces: &[&'a [u8]]) -> std::borrow::Cow<'a, [u8]> {
    match pieces {
        [one] => std::borrow::Cow::Borrowed(one),
        many => std::borrow::Cow::Owned(many.concat()),
    }
}
