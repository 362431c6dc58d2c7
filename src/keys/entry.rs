//! One entry of the key cache, and the lifetime rules that depend on where it came from.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Keys harvested from mail live exactly this long. Hard-coded on purpose: the admin
/// guides of the commercial gateways fix it, and no setting may change it.
pub const MAILFLOW_LIFETIME: Duration = Duration::from_secs(180 * 24 * 60 * 60);

/// A mailflow key is established once seen in two messages this far apart at least;
/// a key seen for the first time does not replace an established one on its own.
pub const ESTABLISHED_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Where a key came from. The order is precedence: a key stored again from a
/// higher-ranked source takes that source; from a lower one, it is only "seen again".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Harvested from inbound mail.
    Mailflow,
    /// Found by a DNS (or WKD) lookup.
    Lookup,
    /// Imported by an admin with `sealgate keys import`.
    Admin,
    /// An internal user's escrowed key, with the secret of its encryption subkey.
    Sckm,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mailflow => "mailflow",
            Source::Lookup => "lookup",
            Source::Admin => "admin",
            Source::Sckm => "sckm",
        }
    }
}

/// Which keys harvested from mail the admin allows to be encrypted to (`[keys]`, or a
/// rule's `use_mailflow_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    /// `encrypt_to_mailflow_keys`.
    pub mailflow: bool,
    /// `encrypt_to_unvalidated_smime`: also S/MIME certificates whose chain did not
    /// validate against `smime_trust`.
    pub unvalidated_smime: bool,
}

impl Allowed {
    /// Every key that can encrypt, whatever its source: what the rules' key conditions
    /// see.
    pub const EVERY_SOURCE: Allowed = Allowed {
        mailflow: true,
        unvalidated_smime: true,
    };
    /// No key harvested from mail.
    pub const NO_MAILFLOW: Allowed = Allowed {
        mailflow: false,
        unvalidated_smime: false,
    };
}

/// What kind of key material an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// An OpenPGP certificate (transferable public key).
    Pgp,
    /// An X.509 certificate for S/MIME.
    Smime,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Pgp => "pgp",
            KeyKind::Smime => "smime",
        }
    }
}

/// One (address, key) pair in the cache. Its JSON form is what `keys list --json`
/// prints, so the field names are part of the interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// Lower-cased, IDNA-normalised.
    pub address: String,
    pub kind: KeyKind,
    /// Upper-case hex: the OpenPGP fingerprint, or SHA-256 of the X.509 DER.
    pub fingerprint: String,
    pub source: Source,
    /// When this entry was stored (for mailflow: harvested).
    #[serde(with = "time::serde::rfc3339")]
    pub added: OffsetDateTime,
    /// When the key was last seen in mail.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    /// When the cache drops the entry; `null` for admin and SCKM keys.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires: Option<OffsetDateTime>,
    /// Message-ID of the mail that brought a mailflow key.
    pub message_id: Option<String>,
    /// From address of the mail that brought a mailflow key.
    pub sender: Option<String>,
    /// The key has a valid encryption-capable (sub)key. Whether it *may* be used also
    /// depends on its source, its expiry and `[keys] encrypt_to_mailflow_keys`.
    pub can_encrypt: bool,
    /// The gateway holds the secret of the encryption key (SCKM entries only).
    pub can_decrypt: bool,
    /// When the key material says it was made; a newer key for an address replaces an
    /// older mailflow entry, never the other way round.
    #[serde(with = "time::serde::rfc3339")]
    pub key_created: OffsetDateTime,
    /// The key's own expiry (certificate notAfter, OpenPGP key expiration), if any.
    #[serde(with = "time::serde::rfc3339::option")]
    pub key_expires: Option<OffsetDateTime>,
    /// Valid only under a policy that accepts SHA-1 self-signatures (keys from PGP
    /// Desktop 9/10 or GnuPG 1.4): kept for decryption, never used to encrypt.
    #[serde(default)]
    pub legacy: bool,
    /// An SCKM key replaced by a newer one for the same user (a reset): it still
    /// decrypts old mail, but is never used to encrypt, until an admin deletes it.
    #[serde(default)]
    pub retired: bool,
    /// Mailflow keys: how many messages the key was seen in.
    #[serde(default)]
    pub seen: u32,
    /// A mailflow key that arrived while another key for the address was established:
    /// kept and listed, never used to encrypt, until it is established itself and the
    /// other stops appearing, or mail vouched for by DKIM or DMARC brings it.
    #[serde(default)]
    pub pending: bool,
    /// S/MIME: the certificate's chain was validated against `[keys] smime_trust` when
    /// it was harvested. Rules can ask for it (`chain_validated`).
    #[serde(default)]
    pub chain_validated: bool,
    /// The key is revoked: it is never used to encrypt again, and no copy of it that
    /// lacks the revocation (from mail, DNS or an old file) undoes that.
    #[serde(default)]
    pub revoked: bool,
    /// SCKM keys: the (sub)keys the gateway can decrypt with, newest first. The newest
    /// is current; older ones, kept when the user added a new encryption subkey, only
    /// decrypt mail still in flight to them.
    #[serde(default)]
    pub decrypt_subkeys: Vec<String>,
    /// S/MIME: the signer's sMIMECapabilities (RFC 8551 §2.5.2) in the latest signed
    /// mail that brought the certificate listed AES-GCM, so its client reads
    /// AuthEnvelopedData. `[crypto] smime_authenticated_encryption = "when_capable"`
    /// asks for it.
    #[serde(default)]
    pub reads_aes_gcm: bool,
    /// What the key is, from its material: filled in by `keys list`, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Box<super::describe::KeyDetails>>,
}

/// What an admin names a key by in `keys list` and `keys delete`: an address, or a
/// fingerprint as gpg prints it (groups of four, spaces), as openssl prints it (pairs,
/// colons), or plain, in any case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Address(String),
    Fingerprint(String),
}

impl Selector {
    pub fn parse(text: &str) -> Option<Selector> {
        if let Some(address) = super::address::normalize(text) {
            return Some(Selector::Address(address));
        }
        let hex: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != ':')
            .collect::<String>()
            .to_ascii_uppercase();
        (!hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
            .then_some(Selector::Fingerprint(hex))
    }

    /// Whether `entry` is named: by its address, or by its fingerprint.
    pub fn matches(&self, entry: &KeyEntry) -> bool {
        match self {
            Selector::Address(address) => entry.address == *address,
            Selector::Fingerprint(fingerprint) => entry.fingerprint == *fingerprint,
        }
    }
}

impl KeyEntry {
    /// An entry for `r@x.example` added now, for unit tests: it can encrypt, and
    /// decrypt when it is an SCKM key.
    #[cfg(test)]
    pub fn sample(kind: KeyKind, source: Source, fingerprint: &str) -> KeyEntry {
        let now = OffsetDateTime::now_utc();
        KeyEntry {
            address: "r@x.example".into(),
            kind,
            fingerprint: fingerprint.into(),
            source,
            added: now,
            last_seen: None,
            key_created: now,
            expires: None,
            key_expires: None,
            message_id: None,
            sender: None,
            can_encrypt: true,
            can_decrypt: source == Source::Sckm,
            legacy: false,
            retired: false,
            seen: 0,
            pending: false,
            chain_validated: false,
            revoked: false,
            decrypt_subkeys: Vec::new(),
            details: None,
            reads_aes_gcm: false,
        }
    }

    /// The cache expiry an entry of `source` stored at `added` gets.
    pub fn cache_expiry(
        source: Source,
        added: OffsetDateTime,
        lookup_ttl: Duration,
    ) -> Option<OffsetDateTime> {
        match source {
            Source::Mailflow => Some(added + MAILFLOW_LIFETIME),
            Source::Lookup => Some(added + lookup_ttl),
            Source::Admin | Source::Sckm => None,
        }
    }

    /// The cache has let go of this entry (it is purged at the next purge).
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires.is_some_and(|expires| expires <= now)
    }

    /// A mailflow key seen in at least two messages [`ESTABLISHED_AFTER`] apart.
    pub fn is_established(&self) -> bool {
        self.seen >= 2
            && self
                .last_seen
                .is_some_and(|last| last - self.added >= ESTABLISHED_AFTER)
    }

    /// Whether outbound mail may be encrypted to this key now: the one rule of which
    /// key is usable. The key itself must be able to (not legacy, retired, pending or
    /// expired, in the cache or by its own date), and a key harvested from mail only
    /// counts as far as the admin allows.
    pub fn usable_for_encryption(&self, now: OffsetDateTime, allowed: Allowed) -> bool {
        let allowed_source = match self.source {
            Source::Mailflow => {
                allowed.mailflow
                    && (self.kind != KeyKind::Smime
                        || self.chain_validated
                        || allowed.unvalidated_smime)
            }
            Source::Lookup | Source::Admin | Source::Sckm => true,
        };
        self.can_encrypt
            && !self.legacy
            && !self.retired
            && !self.revoked
            && !self.pending
            && !self.is_expired(now)
            && self.key_expires.is_none_or(|expires| expires > now)
            && allowed_source
    }
}
