//! Warnings about rules that load but will not do what their author expects: rules
//! that can never match, actions that have no effect, and rejects that cannot be
//! decided at RCPT time because an earlier rule needs the message.

use super::rule::{Action, Locality, NoKey, Origin, Rule};
use super::{Chain, Policy};
use crate::mail::Direction;

/// Every warning, with the rule it is about.
pub fn warnings(policy: &Policy) -> Vec<(Origin, String)> {
    let mut out = Vec::new();
    for chain in [&policy.inbound, &policy.outbound] {
        chain_warnings(chain, &mut out);
    }
    out
}

fn chain_warnings(chain: &Chain, out: &mut Vec<(Origin, String)>) {
    let mut catch_all: Option<&Rule> = None;
    let mut content_rule: Option<&Rule> = None;
    for rule in &chain.rules {
        let mut warn = |message: String| out.push((rule.origin.clone(), message));
        let when = &rule.when;
        if let Some(first) = catch_all {
            warn(format!(
                "can never match: the rule at {} has no conditions and always decides first",
                first.origin
            ));
        }
        if let (Some(over), Some(under)) = (when.size_over, when.size_under)
            && over.saturating_add(1) >= under
        {
            warn("can never match: no size is over size_over and under size_under".into());
        }
        if chain.direction == Direction::Inbound && when.recipient_is == Some(Locality::External) {
            warn("can never match: inbound recipients are always internal".into());
        }
        let action = rule.then.action;
        if chain.direction == Direction::Outbound && action == Some(Action::Decrypt) {
            warn("action = \"decrypt\" does nothing on the outbound chain: only inbound mail is decrypted".into());
        }
        if chain.direction == Direction::Outbound && rule.then.harvest.is_some() {
            warn("harvest does nothing on the outbound chain: keys are harvested from inbound mail only".into());
        }
        let then = &rule.then;
        let encrypt_only = then.format.is_some()
            || then.no_key.is_some()
            || then.no_key_text.is_some()
            || then.lookup_offline.is_some()
            || then.encrypt_again.is_some()
            || then.use_mailflow_keys.is_some()
            || then.smime_authenticated_encryption.is_some();
        if !rule.continues && encrypt_only && action.is_some_and(|a| a != Action::Encrypt) {
            warn(format!(
                "format, no_key, no_key_text, lookup_offline, encrypt_again, use_mailflow_keys and smime_authenticated_encryption have no effect with action = \"{}\"",
                action.map_or("pass", Action::as_str)
            ));
        }
        if !rule.continues && then.no_key_text.is_some() && then.no_key == Some(NoKey::SendClear) {
            warn(
                "no_key_text has no effect with no_key = \"send_clear\": nothing is refused".into(),
            );
        }
        if !rule.continues && *then == Default::default() {
            warn("sets no action: matching recipients get the message as it is (write action = \"pass\" to say so)".into());
        }
        if action == Some(Action::Reject)
            && !when.needs_content()
            && let Some(earlier) = content_rule
        {
            warn(format!(
                "this reject depends on the envelope only, but is decided after DATA, not at RCPT: the rule at {} before it tests the message",
                earlier.origin
            ));
        }
        if when.needs_content() && content_rule.is_none() {
            content_rule = Some(rule);
        }
        if when.is_empty() && !rule.continues && catch_all.is_none() {
            catch_all = Some(rule);
        }
    }
}
