//! Evaluating a chain for one recipient: rules in order, the first whose conditions all
//! match decides, and `continue = true` rules add their actions on the way.
//!
//! Pure: the facts come in, a decision goes out. At RCPT time there is no message yet,
//! so a condition on the content is "unknown", and a chain that reaches such a rule
//! cannot be decided until DATA.

use super::content::Content;
use super::rule::*;
use super::{Chain, Facts};
use crate::keys::KeyKind;

/// The outcome of evaluating a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    Decided(Decision),
    /// A rule that might decide depends on the message: ask again at DATA.
    NeedsContent,
}

/// The actions that apply to one recipient, and the rules that gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub actions: Actions,
    /// Indexes of the rules that matched, in order; the last one decided, unless the
    /// chain ran out (then every one of them had `continue = true`).
    pub matched: Vec<usize>,
}

impl Decision {
    pub fn action(&self) -> Action {
        self.actions.action.unwrap_or(Action::Pass)
    }
}

/// One tested condition, for `policy explain`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tested {
    pub condition: &'static str,
    /// What the rule asked for, as written.
    pub wanted: String,
    /// `Some(result)`, or `None` when it cannot be known yet.
    pub matched: Option<bool>,
}

/// Whether a rule matches: yes, no, or cannot be known without the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    Yes,
    No,
    Unknown,
}

impl Chain {
    /// Evaluates the chain for one recipient. With `content` `None`, conditions on the
    /// message are unknown (RCPT time).
    pub fn evaluate(&self, facts: &Facts, content: Option<&Content>) -> Evaluation {
        self.run(facts, content, None)
    }

    /// Like [`Chain::evaluate`], and reports each matching rule's tested conditions.
    pub fn explain(
        &self,
        facts: &Facts,
        content: Option<&Content>,
        seen: &mut dyn FnMut(usize, Vec<Tested>),
    ) -> Evaluation {
        self.run(facts, content, Some(seen))
    }

    fn run(
        &self,
        facts: &Facts,
        content: Option<&Content>,
        mut seen: Option<&mut dyn FnMut(usize, Vec<Tested>)>,
    ) -> Evaluation {
        let senders = self.senders.hits(&facts.sender);
        let recipients = self.recipients.hits(&facts.recipient);
        let mut actions = Actions::default();
        let mut matched = Vec::new();
        // A continue rule that could not be decided: the outcome is not known either.
        let mut unknown = false;
        for (i, rule) in self.rules.iter().enumerate() {
            let when = &rule.when;
            let envelope = (when.sender.is_none() || senders.get(i))
                && (when.recipient.is_none() || recipients.get(i))
                && when
                    .recipient_is
                    .is_none_or(|want| (want == Locality::Internal) == facts.internal)
                && keys_match(when, facts);
            let test = if !envelope {
                Test::No
            } else {
                match content {
                    None if when.needs_content() => Test::Unknown,
                    None => Test::Yes,
                    Some(content) => content_test(when, content),
                }
            };
            match test {
                Test::No => continue,
                Test::Unknown if rule.continues => unknown = true,
                Test::Unknown => return Evaluation::NeedsContent,
                Test::Yes => {
                    // Only explain needs the record of what was tested.
                    if let Some(seen) = seen.as_mut() {
                        seen(i, self.tested(i, facts, content, &senders, &recipients));
                    }
                    actions.merge(&rule.then);
                    matched.push(i);
                    if !rule.continues {
                        break;
                    }
                }
            }
        }
        if unknown {
            return Evaluation::NeedsContent;
        }
        Evaluation::Decided(Decision { actions, matched })
    }

    /// The conditions rule `i` has, each with its result.
    fn tested(
        &self,
        i: usize,
        facts: &Facts,
        content: Option<&Content>,
        senders: &super::index::Hits,
        recipients: &super::index::Hits,
    ) -> Vec<Tested> {
        let when = &self.rules[i].when;
        let mut out = Vec::new();
        let mut add = |condition, wanted: String, matched| {
            out.push(Tested {
                condition,
                wanted,
                matched,
            })
        };
        if let Some(p) = &when.sender {
            add("sender", p.0.join(", "), Some(senders.get(i)));
        }
        if let Some(p) = &when.recipient {
            add("recipient", p.0.join(", "), Some(recipients.get(i)));
        }
        if let Some(want) = when.recipient_is {
            let wanted = match want {
                Locality::Internal => "internal",
                Locality::External => "external",
            };
            add(
                "recipient_is",
                wanted.into(),
                Some((want == Locality::Internal) == facts.internal),
            );
        }
        if when.key.is_some() || when.key_source.is_some() || when.chain_validated.is_some() {
            let wanted = format!(
                "{}{}{}",
                when.key.map_or("any", |k| match k {
                    KeyWant::Any => "any",
                    KeyWant::Kind(kind) => kind.as_str(),
                    KeyWant::None => "none",
                }),
                when.key_source.as_ref().map_or(String::new(), |s| {
                    format!(
                        " from {}",
                        s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("|")
                    )
                }),
                match when.chain_validated {
                    Some(true) => " (chain validated)",
                    Some(false) => " (chain not validated)",
                    None => "",
                }
            );
            add("key", wanted, Some(keys_match(when, facts)));
        }
        let known = |f: &dyn Fn(&Content) -> bool| content.map(f);
        if let Some(re) = &when.subject {
            add(
                "subject",
                re.as_str().into(),
                known(&|c| re.is_match(&c.subject)),
            );
        }
        for h in &when.headers {
            add(
                "header",
                format!("{}: {}", h.name, h.regex.as_str()),
                known(&|c| header_matches(h, c)),
            );
        }
        if let Some(n) = when.size_over {
            add("size_over", n.to_string(), known(&|c| c.size > n));
        }
        if let Some(n) = when.size_under {
            add("size_under", n.to_string(), known(&|c| c.size < n));
        }
        if let Some(e) = when.encrypted {
            add(
                "encrypted",
                format!("{e:?}").to_lowercase(),
                known(&|c| encrypted_matches(e, c)),
            );
        }
        if let Some(s) = when.signed {
            add("signed", s.to_string(), known(&|c| c.signed == s));
        }
        if let Some(g) = &when.attachment_name {
            add(
                "attachment_name",
                g.text.join(", "),
                known(&|c| c.attachments.iter().any(|a| g.set.is_match(&a.name))),
            );
        }
        if let Some(g) = &when.attachment_type {
            add(
                "attachment_type",
                g.text.join(", "),
                known(&|c| c.attachments.iter().any(|a| g.set.is_match(&a.mime))),
            );
        }
        out
    }
}

/// The key conditions: `key` (which kind, or none) among the keys from `key_source`,
/// and with or without a validated chain (`chain_validated`).
fn keys_match(when: &Conditions, facts: &Facts) -> bool {
    if when.key.is_none() && when.key_source.is_none() && when.chain_validated.is_none() {
        return true;
    }
    let counted = |k: &super::KeyFact| {
        when.key_source
            .as_ref()
            .is_none_or(|s| s.contains(&k.source))
            && when.chain_validated.is_none_or(|v| k.chain_validated == v)
    };
    let has = |kind: Option<KeyKind>| {
        facts
            .keys
            .iter()
            .any(|k| counted(k) && kind.is_none_or(|kind| k.kind == kind))
    };
    match when.key.unwrap_or(KeyWant::Any) {
        KeyWant::Any => has(None),
        KeyWant::Kind(kind) => has(Some(kind)),
        KeyWant::None => !has(None),
    }
}

/// The content conditions, cheapest first.
fn content_test(when: &Conditions, c: &Content) -> Test {
    let ok = when.size_over.is_none_or(|n| c.size > n)
        && when.size_under.is_none_or(|n| c.size < n)
        && when.encrypted.is_none_or(|e| encrypted_matches(e, c))
        && when.signed.is_none_or(|s| c.signed == s)
        && when
            .subject
            .as_ref()
            .is_none_or(|re| re.is_match(&c.subject))
        && when.headers.iter().all(|h| header_matches(h, c))
        && when
            .attachment_name
            .as_ref()
            .is_none_or(|g| c.attachments.iter().any(|a| g.set.is_match(&a.name)))
        && when
            .attachment_type
            .as_ref()
            .is_none_or(|g| c.attachments.iter().any(|a| g.set.is_match(&a.mime)));
    if ok { Test::Yes } else { Test::No }
}

fn encrypted_matches(want: EncryptedWant, c: &Content) -> bool {
    use crate::mail::mime::Encrypted;
    match want {
        EncryptedWant::Yes => c.encrypted.is_some(),
        EncryptedWant::No => c.encrypted.is_none(),
        EncryptedWant::Pgp => {
            matches!(c.encrypted, Some(Encrypted::PgpMime | Encrypted::InlinePgp))
        }
        EncryptedWant::Smime => c.encrypted == Some(Encrypted::Smime),
    }
}

/// Any field of that name whose value matches.
fn header_matches(test: &HeaderTest, c: &Content) -> bool {
    c.headers
        .iter()
        .any(|(name, value)| *name == test.name && test.regex.is_match(value))
}
