//! `[org] autocrypt_outbound`: outbound mail from an internal user carries an
//! `Autocrypt:` field (Autocrypt Level 1) with the user's key, so that partners' mail
//! clients learn it from ordinary mail.
//!
//! Only for a user the org vouches for ([`super::renew::eligible`]), only when the
//! envelope sender is the `From:` address (Autocrypt's `addr` must be the From address),
//! and never over an `Autocrypt:` field the user's client wrote. The key is in the
//! minimal form Autocrypt asks for: the primary key, the user ID of the address (with the
//! org certification when it has a current one) and the current encryption subkey.

use std::sync::Arc;

use openpgp::Cert;
use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use sequoia_openpgp as openpgp;
use time::OffsetDateTime;

use super::{OrgStore, key, renew};
use crate::config::Config;
use crate::keys::{KeyKind, KeyStore};
use crate::mail::message::Message;

/// How much of the header is read to find `From:` and `Autocrypt:`.
const HEAD_LIMIT: usize = 256 * 1024;

/// What adding the field needs.
pub struct Autocrypt {
    pub keys: Arc<dyn KeyStore>,
    pub org: OrgStore,
    pub config: Arc<Config>,
}

impl Autocrypt {
    /// `message` with the sender's `Autocrypt:` field first, or `None` when it gets none.
    pub fn add(&self, message: &Message, sender: &str) -> Option<Message> {
        let now = OffsetDateTime::now_utc();
        add(
            message,
            sender,
            self.keys.as_ref(),
            &self.org,
            &self.config,
            now,
        )
    }
}

/// `message` with the sender's `Autocrypt:` field first, or `None` when it gets none.
pub fn add(
    message: &Message,
    sender: &str,
    keys: &dyn KeyStore,
    org: &OrgStore,
    config: &Config,
    now: OffsetDateTime,
) -> Option<Message> {
    if !config.org.autocrypt_outbound {
        return None;
    }
    let sender = crate::keys::address::normalize(sender)?;
    let head = message.header_block(HEAD_LIMIT);
    let parsed = crate::mail::parser::parser().parse_headers(&head)?;
    if parsed.header("Autocrypt").is_some() {
        return None;
    }
    let from = parsed.from()?.first()?.address()?;
    if crate::keys::address::normalize(from).as_deref() != Some(sender.as_str()) {
        return None;
    }
    let field = field(&sender, keys, org, config, now)?;
    let mut with = message.clone();
    with.prepend(field.into_bytes());
    Some(with)
}

/// The folded `Autocrypt:` field, CRLF-terminated.
fn field(
    address: &str,
    keys: &dyn KeyStore,
    org: &OrgStore,
    config: &Config,
    now: OffsetDateTime,
) -> Option<String> {
    use base64::Engine;
    let entry = keys
        .find(address)
        .ok()?
        .into_iter()
        .filter(|e| e.kind == KeyKind::Pgp && renew::eligible(e, config))
        .max_by_key(|e| e.key_created)?;
    let material = keys.material(&entry.address, &entry.fingerprint).ok()??;
    let mut cert = Cert::from_bytes(&material).ok()?;
    if let Ok(Some(c)) = org.certification(&entry.address, &entry.fingerprint)
        && c.expires > now
    {
        cert = key::with_certifications(cert, &c.signatures).ok()?;
    }
    let minimal = minimal(cert, address, now)?;
    let data = base64::engine::general_purpose::STANDARD.encode(minimal.to_vec().ok()?);
    let mut field = format!("Autocrypt: addr={address}; keydata=");
    for chunk in data.as_bytes().chunks(76) {
        field.push_str("\r\n ");
        field.push_str(std::str::from_utf8(chunk).ok()?);
    }
    field.push_str("\r\n");
    Some(field)
}

/// The cert with only the user ID of `address` and the current encryption subkey.
fn minimal(cert: Cert, address: &str, now: OffsetDateTime) -> Option<Cert> {
    let policy = openpgp::policy::StandardPolicy::new();
    let current = crate::crypto::pgp::encryption_keys(&cert, &policy, now.into())
        .ok()?
        .keys
        .first()?
        .key()
        .fingerprint();
    let cert = cert.retain_userids(|ua| {
        ua.userid().email_normalized().ok().flatten().as_deref() == Some(address)
    });
    Some(cert.retain_subkeys(|ka| ka.key().fingerprint() == current))
}
