//! One rule as it is after loading: where it was written, the conditions it tests and
//! the actions it adds. Conditions are compiled (regexes, globs) once, at load time.

use std::fmt;
use std::sync::Arc;

use globset::GlobSet;
use regex::Regex;

use crate::keys::{KeyKind, Source};
use crate::smtp::reply::Reply;

/// Where a rule was written: the file name within `policy_dir`, and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Debug)]
pub struct Rule {
    pub origin: Origin,
    /// The admin's name for it, shown in logs, explain and the X-Sealgate header.
    pub name: Option<String>,
    pub when: Conditions,
    pub then: Actions,
    /// `continue = true`: add this rule's actions and go on to the next rule.
    pub continues: bool,
}

impl Rule {
    /// How logs and headers name the rule: its name, else where it is.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => self.origin.to_string(),
        }
    }
}

/// Every condition is optional; a rule matches when all the ones it has match.
/// The first group depends on the envelope only and is known at RCPT time; the rest
/// needs the message.
#[derive(Debug, Default)]
pub struct Conditions {
    pub sender: Option<Patterns>,
    pub recipient: Option<Patterns>,
    pub recipient_is: Option<Locality>,
    pub key: Option<KeyWant>,
    pub key_source: Option<Vec<Source>>,
    /// Only S/MIME certificates whose chain validated against `[keys] smime_trust`
    /// (true), or only keys that did not (false), count for `key`.
    pub chain_validated: Option<bool>,

    pub subject: Option<Regex>,
    pub headers: Vec<HeaderTest>,
    pub size_over: Option<u64>,
    pub size_under: Option<u64>,
    pub encrypted: Option<EncryptedWant>,
    pub signed: Option<bool>,
    pub attachment_name: Option<Globs>,
    pub attachment_type: Option<Globs>,
}

impl Conditions {
    /// Whether any condition needs the message, so the rule cannot be decided at RCPT.
    pub fn needs_content(&self) -> bool {
        self.subject.is_some()
            || !self.headers.is_empty()
            || self.size_over.is_some()
            || self.size_under.is_some()
            || self.encrypted.is_some()
            || self.signed.is_some()
            || self.attachment_name.is_some()
            || self.attachment_type.is_some()
    }

    /// Whether the rule has no condition at all, so it matches everything.
    pub fn is_empty(&self) -> bool {
        self.sender.is_none()
            && self.recipient.is_none()
            && self.recipient_is.is_none()
            && self.key.is_none()
            && self.key_source.is_none()
            && self.chain_validated.is_none()
            && !self.needs_content()
    }
}

/// Addresses, domains and globs as the admin wrote them, lower-cased. They are matched
/// through the chain's index (one glob set for all rules), not one by one.
#[derive(Debug, Clone)]
pub struct Patterns(pub Vec<String>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locality {
    Internal,
    External,
}

/// What the key cache must know about the recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWant {
    Any,
    Kind(KeyKind),
    None,
}

/// A header field (lower-case name) whose value must match a regex.
#[derive(Debug)]
pub struct HeaderTest {
    pub name: String,
    pub regex: Regex,
}

/// `encrypted = true | false | "pgp" | "smime"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptedWant {
    Yes,
    No,
    /// PGP/MIME or inline PGP.
    Pgp,
    Smime,
}

/// Globs over attachment names or MIME types, as written, and compiled.
#[derive(Debug)]
pub struct Globs {
    pub text: Vec<String>,
    pub set: GlobSet,
}

/// What a rule does. Every field is optional: a rule with `continue = true` adds the
/// fields it sets, and a later matching rule's fields replace earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions {
    pub action: Option<Action>,
    pub format: Option<Format>,
    pub no_key: Option<NoKey>,
    /// The text of the no-key refusal (`no_key = "reject"` or `"defer"`) instead of
    /// sealgate's own; the code stays. Printable ASCII, checked at load time.
    pub no_key_text: Option<String>,
    /// What to do when the recipient's key lookup could not be answered.
    pub lookup_offline: Option<LookupOffline>,
    /// Encrypt a message that is already encrypted (off unless a rule says so).
    pub encrypt_again: Option<bool>,
    /// The reply for `action = "reject"`.
    pub reply: Option<Reply>,
    pub harvest: Option<bool>,
    /// Overrides `[keys] encrypt_to_mailflow_keys`.
    pub use_mailflow_keys: Option<bool>,
    /// Overrides `[crypto] smime_authenticated_encryption`.
    pub smime_authenticated_encryption: Option<AuthenticatedEncryption>,
    pub tags: Tags,
}

impl Actions {
    /// Adds `later`'s actions: the fields it sets win; tags add up.
    pub fn merge(&mut self, later: &Actions) {
        fn set<T: Clone>(field: &mut Option<T>, later: &Option<T>) {
            if later.is_some() {
                field.clone_from(later);
            }
        }
        set(&mut self.action, &later.action);
        set(&mut self.format, &later.format);
        set(&mut self.no_key, &later.no_key);
        set(&mut self.no_key_text, &later.no_key_text);
        set(&mut self.lookup_offline, &later.lookup_offline);
        set(&mut self.encrypt_again, &later.encrypt_again);
        set(&mut self.reply, &later.reply);
        set(&mut self.harvest, &later.harvest);
        set(&mut self.use_mailflow_keys, &later.use_mailflow_keys);
        set(
            &mut self.smime_authenticated_encryption,
            &later.smime_authenticated_encryption,
        );
        self.tags.merge(&later.tags);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Encrypt,
    Decrypt,
    Pass,
    Reject,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Encrypt => "encrypt",
            Action::Decrypt => "decrypt",
            Action::Pass => "pass",
            Action::Reject => "reject",
        }
    }
}

/// Which encryption to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// What the recipient's key is; PGP when both kinds are known.
    #[default]
    Auto,
    Pgp,
    Smime,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Pgp => "pgp",
            Format::Smime => "smime",
        }
    }
}

/// When an S/MIME copy is AuthEnvelopedData with AES-256-GCM (RFC 5083) rather than
/// EnvelopedData with AES-256-CBC: `[crypto] smime_authenticated_encryption`, and a
/// rule's field of that name. A copy is AES-GCM only when every recipient of it may
/// have it; clients that cannot read it cannot open it at all, so CBC is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthenticatedEncryption {
    /// Always EnvelopedData (AES-256-CBC), which every client reads.
    #[default]
    Never,
    /// AES-GCM for a certificate whose owner's signed mail said its client reads it
    /// (its sMIMECapabilities, harvested with the certificate).
    WhenCapable,
    /// AES-GCM whatever the certificate's owner said: the admin knows they read it.
    Always,
}

impl AuthenticatedEncryption {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthenticatedEncryption::Never => "never",
            AuthenticatedEncryption::WhenCapable => "when_capable",
            AuthenticatedEncryption::Always => "always",
        }
    }

    /// Whether a recipient whose key cache entry says `reads_aes_gcm` may get AES-GCM.
    pub fn allows(self, reads_aes_gcm: bool) -> bool {
        match self {
            AuthenticatedEncryption::Never => false,
            AuthenticatedEncryption::WhenCapable => reads_aes_gcm,
            AuthenticatedEncryption::Always => true,
        }
    }
}

/// What to do when encryption is required and the recipient has no usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoKey {
    /// Refuse the recipient with a 5.7.1 reply: the safe default.
    #[default]
    Reject,
    SendClear,
    /// Refuse with a 4.7.1 reply: the client tries again later, when a key may be known.
    Defer,
}

impl NoKey {
    pub fn as_str(self) -> &'static str {
        match self {
            NoKey::Reject => "reject",
            NoKey::SendClear => "send_clear",
            NoKey::Defer => "defer",
        }
    }
}

/// What to do when encryption is required, the cache has no key, and the lookup
/// that might have found one could not be answered (SERVFAIL, timeout, no resolver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupOffline {
    /// 451 4.4.3: the client tries again later.
    Defer,
    /// Only where a rule says so: nothing goes out in clear because a lookup failed
    /// unless a rule allows it.
    SendClear,
}

impl LookupOffline {
    pub fn as_str(self) -> &'static str {
        match self {
            LookupOffline::Defer => "defer",
            LookupOffline::SendClear => "send_clear",
        }
    }
}

/// Marks a rule puts on the message for its recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Tags {
    /// Header fields to add, as (name, value).
    pub add_headers: Vec<(String, String)>,
    pub subject_prefix: Option<String>,
    /// Texts taken out of the subject (case-insensitive), such as `[secure]`.
    pub subject_remove: Vec<String>,
}

impl Tags {
    pub fn is_empty(&self) -> bool {
        self.add_headers.is_empty()
            && self.subject_prefix.is_none()
            && self.subject_remove.is_empty()
    }

    fn merge(&mut self, later: &Tags) {
        self.add_headers.extend(later.add_headers.iter().cloned());
        if later.subject_prefix.is_some() {
            self.subject_prefix.clone_from(&later.subject_prefix);
        }
        self.subject_remove
            .extend(later.subject_remove.iter().cloned());
    }
}
