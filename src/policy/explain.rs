//! `sealgate policy explain`: what the policy would do with a message, recipient by
//! recipient, without sending anything. It runs the same steps a transaction does (the
//! chain at RCPT time, then after DATA, then the verdict), recording what it tested.

use serde::Serialize;
use time::OffsetDateTime;

use super::eval::Tested;
use super::rule::AuthenticatedEncryption;
use super::verdict::{Circumstances, Treatment, Verdict};
use super::{Content, Evaluation, Facts, Policy};
use crate::keys::{Allowed, KeyEntry};
use crate::mail::Direction;

/// One recipient to explain.
pub struct Recipient {
    pub address: String,
    pub internal: bool,
    /// The recipient's key cache entries.
    pub entries: Vec<KeyEntry>,
}

/// What would happen to one recipient.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub recipient: String,
    pub chain: Direction,
    pub internal: bool,
    pub keys: Vec<KeySeen>,
    /// "refused", "accepted" or "decided after DATA".
    pub at_rcpt: String,
    /// The rules that matched, in order; the last one decided unless all continue.
    pub rules: Vec<RuleSeen>,
    /// The action the rules ask for.
    pub action: String,
    /// What is done: "passed", "encrypted pgp", "rejected", ...
    pub result: String,
    /// The key the copy is encrypted to, or the SCKM keys tried for decryption.
    pub key: Vec<String>,
    /// The SMTP reply, for a refused recipient.
    pub reply: Option<String>,
    pub note: Option<String>,
    pub harvest: bool,
    pub add_headers: Vec<String>,
    pub subject_prefix: Option<String>,
    pub subject_remove: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct KeySeen {
    pub kind: String,
    pub source: String,
    pub fingerprint: String,
    /// Usable for encryption now (mailflow keys counted).
    pub usable: bool,
}

#[derive(Debug, Serialize)]
pub struct RuleSeen {
    pub name: Option<String>,
    /// file:line.
    pub at: String,
    #[serde(rename = "continue")]
    pub continues: bool,
    pub conditions: Vec<Tested>,
}

/// The settings explain runs under, from the config, and the time.
pub struct Settings {
    /// What `[keys]` allows of harvested keys.
    pub allowed: Allowed,
    /// `[crypto] smime_authenticated_encryption`.
    pub authenticated_encryption: AuthenticatedEncryption,
    /// `[lookup] keys`: a recipient whose key a running gateway would look up in DNS
    /// is decided after DATA; explain itself reads the key cache only.
    pub lookup_keys: bool,
    pub now: OffsetDateTime,
}

/// Explains the policy's treatment of each recipient of a message.
pub fn explain(
    policy: &Policy,
    direction: Direction,
    sender: &str,
    recipients: &[Recipient],
    content: &Content,
    settings: &Settings,
) -> Vec<Explanation> {
    let Settings {
        allowed,
        authenticated_encryption,
        lookup_keys,
        now,
    } = *settings;
    let chain = policy.chain(direction);
    recipients
        .iter()
        .map(|r| {
            let facts = Facts::from_entries(sender, &r.address, r.internal, &r.entries, now);
            let context = |already_encrypted| Circumstances {
                recipient: &r.address,
                entries: &r.entries,
                now,
                allowed,
                authenticated_encryption,
                already_encrypted,
                // explain reads the cache only; it does not look keys up.
                lookup: Default::default(),
            };
            let at_rcpt = chain.evaluate(&facts, None);
            let has_key = r
                .entries
                .iter()
                .any(|e| e.usable_for_encryption(now, allowed));
            let looked_up = lookup_keys && chain.wants_lookup(&at_rcpt, r.internal, has_key);
            let at_rcpt = match at_rcpt {
                _ if looked_up => "decided after DATA (the key is looked up in DNS first; explain reads the key cache only)".to_string(),
                Evaluation::NeedsContent => {
                    "decided after DATA (a rule that may decide tests the message)".to_string()
                }
                Evaluation::Decided(d) => match Verdict::new(chain, &d, &context(None)).treatment {
                    Treatment::Refuse(reply) => format!("refused: {reply}"),
                    _ => "accepted".to_string(),
                },
            };
            let mut rules = Vec::new();
            let evaluation = chain.explain(&facts, Some(content), &mut |i, conditions| {
                let rule = &chain.rules[i];
                rules.push(RuleSeen {
                    name: rule.name.clone(),
                    at: rule.origin.to_string(),
                    continues: rule.continues,
                    conditions,
                });
            });
            let Evaluation::Decided(decision) = evaluation else {
                unreachable!("every condition is known with the message");
            };
            let verdict = Verdict::new(
                chain,
                &decision,
                &context(Some(content.encrypted.is_some())),
            );
            let (key, reply) = match &verdict.treatment {
                Treatment::Encrypt(key) => (vec![key.fingerprint.clone()], None),
                Treatment::Decrypt(keys) => {
                    (keys.iter().map(|k| k.fingerprint.clone()).collect(), None)
                }
                Treatment::Refuse(reply) => (Vec::new(), Some(reply.to_string())),
                Treatment::Pass => (Vec::new(), None),
            };
            // A refused recipient gets no copy, so no tags either.
            let refused = matches!(verdict.treatment, Treatment::Refuse(_));
            let tags = if refused {
                &Default::default()
            } else {
                &verdict.tags
            };
            Explanation {
                recipient: r.address.clone(),
                chain: direction,
                internal: r.internal,
                keys: r
                    .entries
                    .iter()
                    .map(|e| KeySeen {
                        kind: e.kind.as_str().into(),
                        source: e.source.as_str().into(),
                        fingerprint: e.fingerprint.clone(),
                        usable: e.usable_for_encryption(now, Allowed::EVERY_SOURCE),
                    })
                    .collect(),
                at_rcpt,
                rules,
                action: decision.action().as_str().into(),
                result: result(&verdict, content),
                key,
                reply,
                note: verdict.note.map(str::to_string),
                harvest: verdict.harvest,
                add_headers: tags
                    .add_headers
                    .iter()
                    .map(|(n, v)| format!("{n}: {v}"))
                    .collect(),
                subject_prefix: tags.subject_prefix.clone(),
                subject_remove: tags.subject_remove.clone(),
            }
        })
        .collect()
}

/// What would be done. explain decrypts nothing, so it never says "decrypted": a
/// message to decrypt is decrypted only if it is encrypted and one of the keys opens
/// it.
fn result(verdict: &Verdict, content: &Content) -> String {
    match (&verdict.treatment, content.encrypted) {
        (Treatment::Decrypt(_), None) => "passed (not encrypted: nothing to decrypt)".into(),
        (Treatment::Decrypt(_), Some(kind)) => format!(
            "decrypt {} if one of the keys opens it (passed as it is otherwise)",
            kind.as_str()
        ),
        _ => verdict.action_text(),
    }
}

/// The explanations as text for a terminal.
pub fn render(explanations: &[Explanation]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for e in explanations {
        let locality = if e.internal { "internal" } else { "external" };
        let _ = writeln!(out, "{}  ({} chain, {locality})", e.recipient, e.chain);
        if e.keys.is_empty() {
            let _ = writeln!(out, "  keys: none");
        }
        for k in &e.keys {
            let usable = if k.usable { "" } else { " (not usable)" };
            let _ = writeln!(
                out,
                "  key: {} {} from {}{usable}",
                k.kind, k.fingerprint, k.source
            );
        }
        if e.rules.is_empty() {
            let _ = writeln!(out, "  no rule matched: the message passes");
        }
        for rule in &e.rules {
            let name = rule
                .name
                .as_deref()
                .map_or(String::new(), |n| format!("{n} "));
            let cont = if rule.continues { " (continue)" } else { "" };
            let _ = writeln!(out, "  rule {name}at {}{cont}", rule.at);
            if rule.conditions.is_empty() {
                let _ = writeln!(out, "    (no conditions: matches everything)");
            }
            for c in &rule.conditions {
                let result = match c.matched {
                    Some(true) => "matched",
                    Some(false) => "did not match",
                    None => "unknown",
                };
                let _ = writeln!(out, "    {} {}: {result}", c.condition, c.wanted);
            }
        }
        let _ = write!(out, "  => action {}: {}", e.action, e.result);
        if !e.key.is_empty() {
            let _ = write!(out, " (key {})", e.key.join(", "));
        }
        if let Some(reply) = &e.reply {
            let _ = write!(out, " with {reply}");
        }
        let _ = writeln!(out);
        if let Some(note) = &e.note {
            let _ = writeln!(out, "     {note}");
        }
        for header in &e.add_headers {
            let _ = writeln!(out, "     adds {header}");
        }
        if let Some(prefix) = &e.subject_prefix {
            let _ = writeln!(out, "     subject prefix {prefix:?}");
        }
        for tag in &e.subject_remove {
            let _ = writeln!(out, "     removes {tag:?} from the subject");
        }
        if e.chain == Direction::Inbound {
            let _ = writeln!(
                out,
                "     harvest: {}",
                if e.harvest { "yes" } else { "no" }
            );
        }
        let _ = writeln!(out, "  at RCPT: {}", e.at_rcpt);
        let _ = writeln!(out);
    }
    out
}
