//! Policy rule files: ordered chains of rules that admins edit in `policy_dir`, and
//! what they decide for each recipient.
//!
//! - [`load`] reads the files (every error as `path:line: message`); [`lint`] finds
//!   rules that can never match or cannot be decided when an admin may expect.
//! - [`eval`] walks a chain for one recipient: pure, no I/O, no clock.
//! - [`verdict`] turns the chain's decision and the recipient's keys into a treatment.
//! - [`content`] reads the facts about a message that content conditions test.
//!
//! The policy in force is held by [`Live`], which is swapped whole on reload, so a
//! transaction keeps the policy it started with.

pub mod content;
pub mod eval;
pub mod explain;
mod fields;
pub mod index;
pub mod lint;
pub mod load;
pub mod rule;
pub mod verdict;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::keys::{KeyKind, Source};
use crate::mail::Direction;
pub use content::{Content, Needs};
pub use eval::{Decision, Evaluation};
use index::Index;
use rule::Rule;
pub use verdict::{Treatment, Verdict};

/// Both chains.
#[derive(Debug)]
pub struct Policy {
    pub inbound: Chain,
    pub outbound: Chain,
}

impl Policy {
    pub fn new(inbound: Vec<Rule>, outbound: Vec<Rule>) -> Policy {
        Policy {
            inbound: Chain::new(Direction::Inbound, inbound),
            outbound: Chain::new(Direction::Outbound, outbound),
        }
    }

    pub fn chain(&self, direction: Direction) -> &Chain {
        match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }
}

/// One direction's rules, in order, with the index over their address patterns.
#[derive(Debug)]
pub struct Chain {
    pub direction: Direction,
    pub rules: Vec<Rule>,
    senders: Index,
    recipients: Index,
    /// What of the message the content conditions read.
    pub needs: Needs,
    /// Some rule encrypts: only then are keys looked up for recipients.
    pub may_encrypt: bool,
    /// Some rule has a `key`, `key_source` or `chain_validated` condition.
    pub tests_keys: bool,
}

impl Chain {
    fn new(direction: Direction, rules: Vec<Rule>) -> Chain {
        let senders = Index::new(
            rules
                .iter()
                .map(|r| r.when.sender.as_ref().map(|p| &p.0[..])),
        );
        let recipients = Index::new(
            rules
                .iter()
                .map(|r| r.when.recipient.as_ref().map(|p| &p.0[..])),
        );
        let needs = rules.iter().fold(Needs::default(), |needs, rule| {
            let w = &rule.when;
            needs.union(Needs {
                headers: w.subject.is_some() || !w.headers.is_empty(),
                structure: w.encrypted.is_some()
                    || w.signed.is_some()
                    || w.attachment_name.is_some()
                    || w.attachment_type.is_some(),
            })
        });
        let may_encrypt = rules
            .iter()
            .any(|r| r.then.action == Some(rule::Action::Encrypt));
        let tests_keys = rules.iter().any(|r| {
            r.when.key.is_some() || r.when.key_source.is_some() || r.when.chain_validated.is_some()
        });
        Chain {
            direction,
            may_encrypt,
            tests_keys,
            rules,
            senders,
            recipients,
            needs,
        }
    }
}

impl Chain {
    /// Whether a key lookup for a recipient could change what this chain does with
    /// them, given what the envelope already decided: only outbound, for an external
    /// recipient without a usable key, when some rule encrypts, and when a rule tests
    /// keys or the recipient may end up at an encrypt rule (an internal recipient or a
    /// reject needs none).
    pub fn wants_lookup(&self, at_rcpt: &Evaluation, internal: bool, has_usable_key: bool) -> bool {
        let may_matter = self.tests_keys
            || match at_rcpt {
                Evaluation::NeedsContent => true,
                Evaluation::Decided(d) => d.action() == rule::Action::Encrypt,
            };
        self.direction == Direction::Outbound
            && !internal
            && !has_usable_key
            && self.may_encrypt
            && may_matter
    }
}

/// What is known about one recipient before the message arrives.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The envelope sender, lower-cased; empty for `<>`.
    pub sender: String,
    /// The recipient, lower-cased.
    pub recipient: String,
    /// In one of `internal_domains`.
    pub internal: bool,
    /// The keys the cache holds for the recipient that could encrypt now, from any
    /// source (whether mailflow keys may be used is the action's business).
    pub keys: Vec<KeyFact>,
}

impl Facts {
    /// The facts for `recipient`, with its cache entries: every key that could encrypt
    /// now counts, whatever its source.
    pub fn from_entries(
        sender: &str,
        recipient: &str,
        internal: bool,
        entries: &[crate::keys::KeyEntry],
        now: time::OffsetDateTime,
    ) -> Facts {
        let keys = entries
            .iter()
            .filter(|e| e.usable_for_encryption(now, crate::keys::Allowed::EVERY_SOURCE))
            .map(|e| KeyFact {
                kind: e.kind,
                source: e.source,
                chain_validated: e.chain_validated,
            })
            .collect();
        Facts::new(sender, recipient, internal, keys)
    }

    pub fn new(sender: &str, recipient: &str, internal: bool, keys: Vec<KeyFact>) -> Facts {
        Facts {
            sender: sender.to_lowercase(),
            recipient: recipient.to_lowercase(),
            internal,
            keys,
        }
    }
}

/// One usable key, as key conditions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFact {
    pub kind: KeyKind,
    pub source: Source,
    /// An S/MIME certificate whose chain validated against `[keys] smime_trust`.
    pub chain_validated: bool,
}

/// The policy in force, replaced whole by a reload.
pub struct Live(ArcSwap<Policy>);

impl Live {
    pub fn new(policy: Policy) -> Live {
        Live(ArcSwap::from_pointee(policy))
    }

    /// The policy now; a transaction keeps this one to its end.
    pub fn current(&self) -> Arc<Policy> {
        self.0.load_full()
    }

    pub fn replace(&self, policy: Policy) {
        self.0.store(Arc::new(policy));
    }
}

#[cfg(test)]
mod tests;
