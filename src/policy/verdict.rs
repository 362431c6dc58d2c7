//! From a chain's decision to what is done for one recipient: the key chosen for
//! encryption, the SCKM keys tried for decryption, or the reply that refuses them.
//!
//! Pure: the caller gives the recipient's cache entries and the time.

use time::OffsetDateTime;

use super::rule::{Action, Actions, AuthenticatedEncryption, Format, LookupOffline, NoKey, Tags};
use super::{Chain, Decision};
use crate::keys::{Allowed, KeyEntry, KeyKind, Source};
use crate::mail::Direction;
use crate::smtp::reply::{self, Reply};

/// What happens to one recipient's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Treatment {
    /// The message as it is.
    Pass,
    /// Encrypted to this key.
    Encrypt(KeyEntry),
    /// Decrypted with the first of these SCKM keys that opens it (current key first).
    Decrypt(Vec<KeyEntry>),
    /// Not handed on: a 5xx refuses, a 4xx defers.
    Refuse(Reply),
}

/// The treatment, with everything the log, the header and the transform need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub treatment: Treatment,
    pub tags: Tags,
    pub harvest: bool,
    /// The deciding rule's label, or `None` when no rule decided.
    pub rule: Option<String>,
    /// Why the treatment differs from the action, when it does ("no usable key").
    pub note: Option<&'static str>,
    /// The recipient may get S/MIME as AuthEnvelopedData with AES-GCM (an S/MIME key,
    /// and `smime_authenticated_encryption` allows it for that key). Their copy is
    /// AES-GCM only if every recipient of it may.
    pub smime_aes_gcm: bool,
}

/// What the caller knows about the recipient besides the rules' decision: the keys it
/// has, whether the message is already encrypted, whether a key lookup failed.
pub struct Circumstances<'a> {
    pub recipient: &'a str,
    /// The recipient's cache entries (all of them; this picks).
    pub entries: &'a [KeyEntry],
    pub now: OffsetDateTime,
    /// What `[keys]` allows of harvested keys; a rule's `use_mailflow_keys` overrides
    /// the mailflow part.
    pub allowed: Allowed,
    /// `[crypto] smime_authenticated_encryption`; a rule's field of that name overrides
    /// it.
    pub authenticated_encryption: AuthenticatedEncryption,
    /// Whether the message is already encrypted; `None` before DATA.
    pub already_encrypted: Option<bool>,
    /// How the recipient's key lookup ended, when one was made.
    pub lookup: Lookup,
}

/// How a recipient's key lookup ended, as far as the verdict cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lookup {
    /// Answered, or none was made: the cache entries are what is known.
    #[default]
    Answered,
    /// Not answered this time (SERVFAIL, timeout, no resolver, the key cache down), so
    /// "no key" is not known to be true: the rule's `lookup_offline` decides.
    Unavailable,
    /// Not answered, and no lookup can be until an admin acts: the gateway's resolver
    /// strips DNSSEC (or otherwise cannot validate), so no key record can be trusted. A
    /// retry cannot help, so this is no outage: the rule's `no_key` decides, at once.
    CannotValidate,
}

impl Verdict {
    pub fn new(chain: &Chain, decision: &Decision, cx: &Circumstances) -> Verdict {
        let actions = &decision.actions;
        let mut verdict = Verdict {
            treatment: Treatment::Pass,
            tags: actions.tags.clone(),
            // Keys are harvested from inbound mail only.
            harvest: chain.direction == Direction::Inbound && actions.harvest.unwrap_or(true),
            rule: decision.matched.last().map(|&i| chain.rules[i].label()),
            note: None,
            smime_aes_gcm: false,
        };
        match decision.action() {
            Action::Pass => {}
            Action::Reject => {
                verdict.treatment =
                    Treatment::Refuse(actions.reply.clone().unwrap_or(reply::REJECTED_BY_POLICY));
            }
            // Only inbound mail is decrypted; `check` warns about such a rule.
            Action::Decrypt if chain.direction == Direction::Outbound => {
                verdict.note = Some("decrypt does nothing on the outbound chain");
            }
            Action::Decrypt => {
                let mut keys: Vec<KeyEntry> = cx
                    .entries
                    .iter()
                    .filter(|e| e.source == Source::Sckm && e.can_decrypt)
                    .cloned()
                    .collect();
                keys.sort_by_key(|e| e.retired);
                if keys.is_empty() {
                    verdict.note = Some("no SCKM key to decrypt with");
                } else {
                    verdict.treatment = Treatment::Decrypt(keys);
                }
            }
            Action::Encrypt => {
                let allowed = Allowed {
                    mailflow: actions.use_mailflow_keys.unwrap_or(cx.allowed.mailflow),
                    ..cx.allowed
                };
                let format = actions.format.unwrap_or_default();
                match choose_key(cx.entries, format, cx.now, allowed) {
                    Some(_)
                        if cx.already_encrypted == Some(true)
                            && actions.encrypt_again != Some(true) =>
                    {
                        verdict.note = Some("already encrypted: sent as it is");
                    }
                    Some(key) => {
                        let authenticated = actions
                            .smime_authenticated_encryption
                            .unwrap_or(cx.authenticated_encryption);
                        verdict.smime_aes_gcm =
                            key.kind == KeyKind::Smime && authenticated.allows(key.reads_aes_gcm);
                        verdict.treatment = Treatment::Encrypt(key);
                    }
                    None => {
                        let (treatment, note) = without_key(actions, format, cx);
                        verdict.treatment = treatment;
                        verdict.note = Some(note);
                    }
                }
            }
        }
        verdict
    }

    /// A short name of what is done, for logs and the X-Sealgate header, as far as the
    /// verdict alone knows it. Whether a message is decrypted depends on the message
    /// and the keys (it may not be encrypted, or may not open), so a verdict to decrypt
    /// says "decrypt" and never claims it was done: the transform says what was.
    pub fn action_text(&self) -> String {
        match &self.treatment {
            Treatment::Pass => "passed".into(),
            Treatment::Encrypt(key) => format!("encrypted {}", key.kind.as_str()),
            Treatment::Decrypt(_) => "decrypt".into(),
            Treatment::Refuse(reply) if reply.is_temporary() => "deferred".into(),
            Treatment::Refuse(_) => "rejected".into(),
        }
    }

    /// What the verdict asks the transform to do: "pass", "encrypt pgp", "decrypt",
    /// "reject", "defer". The log puts it beside what was done.
    pub fn asks(&self) -> String {
        match &self.treatment {
            Treatment::Pass => "pass".into(),
            Treatment::Encrypt(key) => format!("encrypt {}", key.kind.as_str()),
            Treatment::Decrypt(_) => "decrypt".into(),
            Treatment::Refuse(reply) if reply.is_temporary() => "defer".into(),
            Treatment::Refuse(_) => "reject".into(),
        }
    }
}

/// What happens to a recipient that a rule wants encrypted when no usable key was
/// chosen, with the note for the log: the one place where `no_key`, `lookup_offline` and
/// how the key lookup ended meet.
fn without_key(actions: &Actions, format: Format, cx: &Circumstances) -> (Treatment, &'static str) {
    let no_key = actions.no_key.unwrap_or_default();
    match cx.lookup {
        // Whether a key exists is not known. Unless the rule says what to do then, a
        // rule that requires encryption defers, and one that would send in clear
        // without a key sends in clear.
        Lookup::Unavailable => {
            let offline = actions.lookup_offline.unwrap_or(match no_key {
                NoKey::SendClear => LookupOffline::SendClear,
                NoKey::Reject | NoKey::Defer => LookupOffline::Defer,
            });
            match offline {
                LookupOffline::SendClear => (Treatment::Pass, "key lookup failed: sent in clear"),
                LookupOffline::Defer => (
                    Treatment::Refuse(reply::lookup_unavailable(cx.recipient)),
                    "key lookup failed: deferred",
                ),
            }
        }
        // No key can be found until the resolver is fixed: as if there were none, so
        // that the sender hears the rule's answer now, not a 451 for days; the reply
        // says why. `lookup_offline` is for outages, and this is none.
        Lookup::CannotValidate => match no_key {
            NoKey::SendClear => (
                Treatment::Pass,
                "resolver cannot validate DNSSEC: sent in clear",
            ),
            NoKey::Reject => (
                Treatment::Refuse(reply::encryption_required_without_dnssec(cx.recipient)),
                "resolver cannot validate DNSSEC: rejected",
            ),
            NoKey::Defer => (
                Treatment::Refuse(reply::no_key_yet_without_dnssec(cx.recipient)),
                "resolver cannot validate DNSSEC: deferred",
            ),
        },
        Lookup::Answered => match no_key {
            NoKey::SendClear => (Treatment::Pass, "no usable key: sent in clear"),
            NoKey::Reject => (
                Treatment::Refuse(in_rule_words(
                    reply::encryption_required(cx.recipient, missing(format)),
                    actions,
                )),
                "no usable key: rejected",
            ),
            NoKey::Defer => (
                Treatment::Refuse(in_rule_words(
                    reply::no_key_yet(cx.recipient, missing(format)),
                    actions,
                )),
                "no usable key: deferred",
            ),
        },
    }
}

/// What the recipient lacks when no key of `format` is usable: the refusal names it,
/// so that "no S/MIME certificate" is not mistaken for "no key at all" by a sender
/// whose recipient has an OpenPGP key.
fn missing(format: Format) -> reply::MissingKey {
    match format {
        Format::Auto => reply::MissingKey::Any,
        Format::Pgp => reply::MissingKey::Pgp,
        Format::Smime => reply::MissingKey::Smime,
    }
}

/// The no-key refusal in the rule's `no_key_text`, when it has one.
fn in_rule_words(refusal: Reply, actions: &Actions) -> Reply {
    match &actions.no_key_text {
        Some(text) => reply::no_key_in_rule_words(refusal, text),
        None => refusal,
    }
}

/// The key to encrypt to, of the format asked for: the most trusted source first (an
/// SCKM or admin key, over a lookup's, over one harvested from mail, which a spoofed
/// message can plant), then for `auto` PGP before S/MIME, then the newest.
fn choose_key(
    entries: &[KeyEntry],
    format: Format,
    now: OffsetDateTime,
    allowed: Allowed,
) -> Option<KeyEntry> {
    let rank = |source: Source| match source {
        Source::Sckm | Source::Admin => 2,
        Source::Lookup => 1,
        Source::Mailflow => 0,
    };
    let wanted = |kind: KeyKind| match format {
        Format::Pgp => kind == KeyKind::Pgp,
        Format::Smime => kind == KeyKind::Smime,
        Format::Auto => true,
    };
    entries
        .iter()
        .filter(|e| wanted(e.kind) && e.usable_for_encryption(now, allowed))
        .max_by_key(|e| (rank(e.source), e.kind == KeyKind::Pgp, e.added))
        .cloned()
}
