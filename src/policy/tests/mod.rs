//! The evaluator, the verdicts and the loader, without I/O: rule text in, decisions
//! out.

mod loading;
mod verdicts;

use std::path::PathBuf;

use super::content::{Attachment, Content};
use super::load::{Loaded, load_texts};
use super::rule::*;
use super::*;
use crate::keys::{KeyKind, Source};
use crate::mail::mime::Encrypted;

pub(super) fn load(text: &str) -> Loaded {
    load_texts(&[(PathBuf::from("policies/50-test.toml"), text.to_string())])
}

pub(super) fn policy(text: &str) -> Policy {
    let loaded = load(text);
    let errors: Vec<String> = loaded.errors().map(|p| p.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    loaded.policy.unwrap()
}

pub(super) fn facts(recipient: &str, internal: bool, keys: &[(KeyKind, Source)]) -> Facts {
    let keys = keys
        .iter()
        .map(|&(kind, source)| KeyFact {
            kind,
            source,
            chain_validated: false,
        })
        .collect();
    Facts::new("Sender@Example.com", recipient, internal, keys)
}

/// The labels of the rules that matched, or "needs content".
pub(super) fn outcome(chain: &Chain, facts: &Facts, content: Option<&Content>) -> String {
    match chain.evaluate(facts, content) {
        Evaluation::NeedsContent => "needs content".into(),
        Evaluation::Decided(d) => d
            .matched
            .iter()
            .map(|&i| chain.rules[i].label())
            .collect::<Vec<_>>()
            .join(","),
    }
}

pub(super) fn decided(chain: &Chain, facts: &Facts, content: Option<&Content>) -> Decision {
    match chain.evaluate(facts, content) {
        Evaluation::Decided(d) => d,
        Evaluation::NeedsContent => panic!("not decided"),
    }
}

pub(super) fn content(subject: &str) -> Content {
    Content {
        size: 1000,
        subject: subject.into(),
        ..Content::default()
    }
}

#[test]
fn first_match_decides_and_continue_adds() {
    let p = policy(
        r#"
[[rule]]
name = "tag"
chain = "outbound"
add_header = "X-Seen: yes"
continue = true

[[rule]]
name = "partner"
chain = "outbound"
recipient = "partner.example"
action = "encrypt"

[[rule]]
name = "rest"
chain = "outbound"
action = "pass"

[[rule]]
name = "never"
chain = "outbound"
action = "reject"
"#,
    );
    let chain = &p.outbound;
    assert_eq!(
        outcome(chain, &facts("a@partner.example", false, &[]), None),
        "tag,partner"
    );
    assert_eq!(
        outcome(chain, &facts("a@other.example", false, &[]), None),
        "tag,rest"
    );
    let d = decided(chain, &facts("A@Partner.Example", false, &[]), None);
    assert_eq!(d.action(), Action::Encrypt);
    assert_eq!(
        d.actions.tags.add_headers,
        vec![("X-Seen".into(), "yes".into())]
    );
    assert!(p.inbound.rules.is_empty());
    assert_eq!(
        outcome(&p.inbound, &facts("a@example.com", true, &[]), None),
        ""
    );
}

#[test]
fn later_fields_replace_earlier_ones() {
    let p = policy(
        r#"
[[rule]]
chain = "outbound"
format = "smime"
no_key = "defer"
subject_prefix = "[a] "
subject_remove = "[x]"
continue = true

[[rule]]
chain = "outbound"
action = "encrypt"
no_key = "send_clear"
subject_remove = "[y]"
"#,
    );
    let d = decided(&p.outbound, &facts("b@x.example", false, &[]), None);
    assert_eq!(d.actions.format, Some(Format::Smime));
    assert_eq!(d.actions.no_key, Some(NoKey::SendClear));
    assert_eq!(d.actions.tags.subject_prefix.as_deref(), Some("[a] "));
    assert_eq!(d.actions.tags.subject_remove, vec!["[x]", "[y]"]);
}

#[test]
fn envelope_conditions() {
    let p = policy(
        r#"
[[rule]]
name = "from-boss"
chain = "outbound"
sender = ["ceo@example.com", "*@board.example.com"]
action = "pass"

[[rule]]
name = "internal"
chain = "outbound"
recipient_is = "internal"
action = "pass"

[[rule]]
name = "pgp-admin"
chain = "outbound"
key = "pgp"
key_source = ["admin", "lookup"]
action = "encrypt"

[[rule]]
name = "any-key"
chain = "outbound"
key = "any"
action = "encrypt"

[[rule]]
name = "mailflow-only"
chain = "outbound"
key_source = "mailflow"
action = "encrypt"

[[rule]]
name = "no-key"
chain = "outbound"
key = "none"
action = "reject"
"#,
    );
    let chain = &p.outbound;
    let boss = Facts::new("CEO@example.com", "x@y.example", false, vec![]);
    assert_eq!(outcome(chain, &boss, None), "from-boss");
    let board = Facts::new("m@board.example.com", "x@y.example", false, vec![]);
    assert_eq!(outcome(chain, &board, None), "from-boss");
    assert_eq!(
        outcome(chain, &facts("u@example.com", true, &[]), None),
        "internal"
    );
    use KeyKind::*;
    use Source::*;
    assert_eq!(
        outcome(chain, &facts("r@x.example", false, &[(Pgp, Admin)]), None),
        "pgp-admin"
    );
    assert_eq!(
        outcome(chain, &facts("r@x.example", false, &[(Pgp, Lookup)]), None),
        "pgp-admin"
    );
    assert_eq!(
        outcome(chain, &facts("r@x.example", false, &[(Smime, Admin)]), None),
        "any-key"
    );
    assert_eq!(
        outcome(
            chain,
            &facts("r@x.example", false, &[(Pgp, Mailflow)]),
            None
        ),
        "any-key"
    );
    assert_eq!(
        outcome(chain, &facts("r@x.example", false, &[]), None),
        "no-key"
    );
}

#[test]
fn content_conditions_wait_for_data() {
    let p = policy(
        r#"
[[rule]]
name = "secure"
chain = "outbound"
subject = '(?i)\[secure\]'
action = "encrypt"

[[rule]]
name = "classified"
chain = "outbound"
header = [{ name = "X-Class", matches = "(?i)^secret$" }]
action = "reject"
reply = "550 5.7.1 classified mail stays inside"

[[rule]]
name = "big"
chain = "outbound"
size_over = "1MiB"
action = "reject"

[[rule]]
name = "small-pgp"
chain = "outbound"
size_under = "2KiB"
encrypted = "pgp"
action = "pass"

[[rule]]
name = "signed"
chain = "outbound"
signed = true
action = "pass"

[[rule]]
name = "pdf"
chain = "outbound"
attachment_name = "*.pdf"
attachment_type = "application/*"
action = "encrypt"

[[rule]]
name = "rest"
chain = "outbound"
action = "pass"
"#,
    );
    let chain = &p.outbound;
    let f = facts("r@x.example", false, &[]);
    assert_eq!(outcome(chain, &f, None), "needs content");
    assert_eq!(
        outcome(chain, &f, Some(&content("Re: [SECURE] offer"))),
        "secure"
    );
    let mut c = content("hello");
    c.headers.push(("x-class".into(), "Secret".into()));
    assert_eq!(outcome(chain, &f, Some(&c)), "classified");
    let d = decided(chain, &f, Some(&c));
    assert_eq!(
        d.actions.reply.unwrap().to_string(),
        "550 5.7.1 classified mail stays inside"
    );
    let mut c = content("hello");
    c.size = 2 << 20;
    assert_eq!(outcome(chain, &f, Some(&c)), "big");
    c.size = 1000;
    c.encrypted = Some(Encrypted::InlinePgp);
    assert_eq!(outcome(chain, &f, Some(&c)), "small-pgp");
    c.encrypted = Some(Encrypted::Smime);
    assert_eq!(outcome(chain, &f, Some(&c)), "rest");
    c.signed = true;
    assert_eq!(outcome(chain, &f, Some(&c)), "signed");
    let mut c = content("hello");
    c.attachments.push(Attachment {
        name: "Offer.PDF".into(),
        mime: "application/pdf".into(),
    });
    assert_eq!(outcome(chain, &f, Some(&c)), "pdf");
    c.attachments[0].mime = "text/plain".into();
    assert_eq!(outcome(chain, &f, Some(&c)), "rest");
}

#[test]
fn rcpt_time_decisions() {
    let p = policy(
        r#"
[[rule]]
name = "competitor"
chain = "outbound"
recipient = "competitor.example"
action = "reject"

[[rule]]
name = "tagged"
chain = "outbound"
subject = "x"
add_header = "X-A: b"
continue = true

[[rule]]
name = "rest"
chain = "outbound"
action = "pass"
"#,
    );
    let chain = &p.outbound;
    // The envelope alone decides: a reject before any content rule is known at RCPT.
    assert_eq!(
        outcome(chain, &facts("a@competitor.example", false, &[]), None),
        "competitor"
    );
    // A content rule with continue may add actions: not known until DATA.
    assert_eq!(
        outcome(chain, &facts("a@x.example", false, &[]), None),
        "needs content"
    );
    assert_eq!(
        outcome(
            chain,
            &facts("a@x.example", false, &[]),
            Some(&content("y"))
        ),
        "rest"
    );
}

#[test]
fn chain_validated_counts_only_certificates_that_chained_to_the_trust_store() {
    let p = policy(
        r#"
[[rule]]
name = "validated"
chain = "outbound"
key = "smime"
chain_validated = true
action = "encrypt"

[[rule]]
name = "unvalidated-only"
chain = "outbound"
key = "smime"
key_source = "mailflow"
chain_validated = false
action = "pass"
"#,
    );
    let chain = &p.outbound;
    let fact = |validated| {
        Facts::new(
            "a@example.com",
            "r@x.example",
            false,
            vec![KeyFact {
                kind: KeyKind::Smime,
                source: Source::Mailflow,
                chain_validated: validated,
            }],
        )
    };
    assert_eq!(outcome(chain, &fact(true), None), "validated");
    assert_eq!(outcome(chain, &fact(false), None), "unvalidated-only");
    assert!(chain.tests_keys);
}
