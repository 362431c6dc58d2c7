//! What leaves for partners: `keys export ADDRESS` (the certified key) and the
//! certified keys `org publish` writes out.

use openpgp::Cert;
use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::certificate::smime_export;
use super::{Answer, OrgContext};
use crate::org::{OrgError, key, renew};

/// `keys export ADDRESS`: the user's current key with the org certification, armored.
pub(super) fn keys_export(
    cx: &OrgContext,
    address: &str,
    smime: bool,
    now: OffsetDateTime,
) -> Result<Answer, OrgError> {
    let Some(address) = crate::keys::address::normalize(address) else {
        return Err(OrgError::Refused(format!("{address:?} is not an address")));
    };
    if smime {
        return smime_export(cx, &address, now);
    }
    let entry = cx
        .keys
        .find(&address)?
        .into_iter()
        .filter(|e| renew::eligible(e, cx.config))
        .max_by_key(|e| e.key_created)
        .ok_or_else(|| {
            OrgError::Refused(format!(
                "no current key of an internal user for {address} (SCKM or imported)"
            ))
        })?;
    let (cert, certified) = certified_key(cx, &entry, now)?;
    let mut messages = Vec::new();
    if !certified {
        messages.push(format!(
            "{address}: the key is not certified by the org key (yet): run sealgate org renew"
        ));
    }
    // Only public material leaves: an SCKM entry's material is its public cert.
    let armored = cert.armored().to_vec().expect("a cert serializes");
    Ok(Answer {
        messages,
        output: String::from_utf8(armored).expect("armor is ASCII"),
    })
}

/// `entry`'s public cert with the org key's certification when it has a current one,
/// and whether it has.
pub(super) fn certified_key(
    cx: &OrgContext,
    entry: &crate::keys::KeyEntry,
    now: OffsetDateTime,
) -> Result<(Cert, bool), OrgError> {
    let material = cx
        .keys
        .material(&entry.address, &entry.fingerprint)?
        .ok_or_else(|| OrgError::Internal(format!("key {} vanished", entry.fingerprint)))?;
    let cert = Cert::from_bytes(&material)
        .map_err(|e| OrgError::Internal(format!("cached key {}: {e}", entry.fingerprint)))?;
    match cx.store.certification(&entry.address, &entry.fingerprint)? {
        Some(c) if c.expires > now => Ok((key::with_certifications(cert, &c.signatures)?, true)),
        _ => Ok((cert, false)),
    }
}

/// One published key, as `org publish` gets it.
#[derive(Debug, Serialize, Deserialize)]
pub struct PublishedKey {
    pub address: String,
    /// The binary public cert with its certification, base64; empty when the user has
    /// only an S/MIME certificate to publish.
    pub key: String,
    /// The user's current certificate from the org certificate, DER in base64.
    #[serde(default)]
    pub certificate: Option<String>,
}

/// The certified key of every internal user the org vouches for (the newest, when a
/// user has several): only certified ones, since publishing says the org stands by them.
pub(super) fn published(cx: &OrgContext, now: OffsetDateTime) -> Result<Answer, OrgError> {
    use base64::Engine;
    let mut newest: std::collections::BTreeMap<String, crate::keys::KeyEntry> =
        std::collections::BTreeMap::new();
    for entry in cx
        .keys
        .list()?
        .into_iter()
        .filter(|e| renew::eligible(e, cx.config))
    {
        let keep = newest
            .get(&entry.address)
            .is_none_or(|old| old.key_created < entry.key_created);
        if keep {
            newest.insert(entry.address.clone(), entry);
        }
    }
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut keys = Vec::new();
    let mut messages = Vec::new();
    for entry in newest.values() {
        let certificate = cx
            .store
            .issued_to(&entry.address)?
            .into_iter()
            .filter(|c| c.revoked.is_none() && c.not_after > now)
            .max_by_key(|c| c.not_after)
            .map(|c| b64(&c.der));
        let key = match entry.kind {
            crate::keys::KeyKind::Pgp => match certified_key(cx, entry, now)? {
                (cert, true) => b64(&cert.to_vec().expect("a cert serializes")),
                (_, false) => {
                    messages.push(format!(
                        "{}: key not published: not certified by the org key (run sealgate org renew)",
                        entry.address
                    ));
                    String::new()
                }
            },
            crate::keys::KeyKind::Smime => String::new(),
        };
        if !key.is_empty() || certificate.is_some() {
            keys.push(PublishedKey {
                address: entry.address.clone(),
                key,
                certificate,
            });
        }
    }
    Ok(Answer {
        messages,
        output: serde_json::to_string(&keys).expect("keys serialize"),
    })
}
