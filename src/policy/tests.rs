//! The evaluator and the loader, without I/O: rule text in, decisions out.

use std::path::PathBuf;

use time::OffsetDateTime;

use super::content::{Attachment, Content};
use super::load::{Loaded, load_texts};
use super::rule::*;
use super::verdict::{Context, Treatment, Verdict};
use super::*;
use crate::keys::{KeyEntry, KeyKind, Source};
use crate::mime::Encrypted;

fn load(text: &str) -> Loaded {
    load_texts(&[(PathBuf::from("policies/50-test.toml"), text.to_string())])
}

fn policy(text: &str) -> Policy {
    let loaded = load(text);
    let errors: Vec<String> = loaded.errors().map(|p| p.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    loaded.policy.unwrap()
}

fn facts(recipient: &str, internal: bool, keys: &[(KeyKind, Source)]) -> Facts {
    let keys = keys
        .iter()
        .map(|&(kind, source)| KeyFact { kind, source })
        .collect();
    Facts::new("Sender@Example.com", recipient, internal, keys)
}

/// The labels of the rules that matched, or "needs content".
fn outcome(chain: &Chain, facts: &Facts, content: Option<&Content>) -> String {
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

fn decided(chain: &Chain, facts: &Facts, content: Option<&Content>) -> Decision {
    match chain.evaluate(facts, content) {
        Evaluation::Decided(d) => d,
        Evaluation::NeedsContent => panic!("not decided"),
    }
}

fn content(subject: &str) -> Content {
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

fn entry(kind: KeyKind, source: Source, fingerprint: &str) -> KeyEntry {
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
    }
}

fn verdict(text: &str, entries: &[KeyEntry], mailflow: bool, encrypted: Option<bool>) -> Verdict {
    let p = policy(text);
    let d = decided(&p.outbound, &facts("r@x.example", false, &[]), None);
    Verdict::new(
        &p.outbound,
        &d,
        &Context {
            recipient: "r@x.example",
            entries,
            now: OffsetDateTime::now_utc(),
            mailflow_default: mailflow,
            already_encrypted: encrypted,
        },
    )
}

#[test]
fn no_key_outcomes() {
    let rule = |no_key: &str| {
        format!("[[rule]]\nname = \"e\"\nchain = \"outbound\"\naction = \"encrypt\"\n{no_key}\n")
    };
    let v = verdict(&rule(""), &[], false, None);
    let Treatment::Refuse(reply) = &v.treatment else {
        panic!("{v:?}")
    };
    assert_eq!((reply.code, reply.status()), (550, "5.7.1".to_string()));
    assert!(reply.text.contains("r@x.example"), "{reply}");

    let v = verdict(&rule("no_key = \"defer\""), &[], false, None);
    let Treatment::Refuse(reply) = &v.treatment else {
        panic!("{v:?}")
    };
    assert_eq!((reply.code, reply.status()), (451, "4.7.1".to_string()));

    let v = verdict(&rule("no_key = \"send_clear\""), &[], false, None);
    assert_eq!(v.treatment, Treatment::Pass);
    assert_eq!(v.note, Some("no usable key: sent in clear"));
    assert_eq!(v.rule.as_deref(), Some("e"));
}

#[test]
fn key_choice_format_and_mailflow() {
    use KeyKind::*;
    let keys = [
        entry(Smime, Source::Admin, "S1"),
        entry(Pgp, Source::Mailflow, "P1"),
    ];
    let encrypt = "[[rule]]\nchain = \"outbound\"\naction = \"encrypt\"\n";
    let chosen = |v: Verdict| match v.treatment {
        Treatment::Encrypt(key) => key.fingerprint,
        other => format!("{other:?}"),
    };
    // Mailflow keys count only when allowed; auto prefers PGP when both may be used.
    assert_eq!(chosen(verdict(encrypt, &keys, false, None)), "S1");
    assert_eq!(chosen(verdict(encrypt, &keys, true, None)), "P1");
    let with = |extra: &str| format!("{encrypt}{extra}\n");
    assert_eq!(
        chosen(verdict(
            &with("use_mailflow_keys = true"),
            &keys,
            false,
            None
        )),
        "P1"
    );
    assert_eq!(
        chosen(verdict(
            &with("use_mailflow_keys = false"),
            &keys,
            true,
            None
        )),
        "S1"
    );
    assert_eq!(
        chosen(verdict(&with("format = \"smime\""), &keys, true, None)),
        "S1"
    );
    let v = verdict(&with("format = \"pgp\""), &keys, false, None);
    assert!(matches!(v.treatment, Treatment::Refuse(_)), "{v:?}");
    // Already encrypted: passed as it is, unless the rule says to encrypt again.
    let v = verdict(encrypt, &keys, false, Some(true));
    assert_eq!(v.treatment, Treatment::Pass);
    assert_eq!(
        chosen(verdict(
            &with("encrypt_again = true"),
            &keys,
            false,
            Some(true)
        )),
        "S1"
    );
}

#[test]
fn decrypt_and_reject_verdicts() {
    let mut retired = entry(KeyKind::Pgp, Source::Sckm, "OLD");
    retired.retired = true;
    let keys = [
        retired,
        entry(KeyKind::Pgp, Source::Sckm, "NEW"),
        entry(KeyKind::Pgp, Source::Admin, "PUB"),
    ];
    let v = verdict(
        "[[rule]]\nchain = \"outbound\"\naction = \"decrypt\"\n",
        &keys,
        false,
        None,
    );
    let Treatment::Decrypt(with) = v.treatment else {
        panic!()
    };
    let order: Vec<&str> = with.iter().map(|e| e.fingerprint.as_str()).collect();
    assert_eq!(order, ["NEW", "OLD"]);
    let v = verdict(
        "[[rule]]\nchain = \"outbound\"\naction = \"decrypt\"\n",
        &[],
        false,
        None,
    );
    assert_eq!(v.treatment, Treatment::Pass);

    let v = verdict(
        "[[rule]]\nchain = \"outbound\"\naction = \"reject\"\n",
        &[],
        false,
        None,
    );
    assert_eq!(
        v.treatment,
        Treatment::Refuse(crate::smtp::reply::REJECTED_BY_POLICY)
    );
    let v = verdict(
        "[[rule]]\nchain = \"outbound\"\nharvest = false\n",
        &[],
        false,
        None,
    );
    assert!(!v.harvest && v.rule.is_some());
}

#[test]
fn errors_name_file_and_line() {
    let loaded = load(
        "[[rule]]\nchain = \"outbound\"\naction = \"explode\"\n\n[[rule]]\nchain = \"sideways\"\nsubject = \"(unclosed\"\n\n[[rule]]\naction = \"pass\"\n",
    );
    assert!(loaded.policy.is_none());
    let errors: Vec<String> = loaded.errors().map(|p| p.to_string()).collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors[0].starts_with("policies/50-test.toml:3: action:"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("policies/50-test.toml:6: chain:"),
        "{errors:?}"
    );
    assert!(
        errors[2].starts_with("policies/50-test.toml:7: subject: not a valid regex"),
        "{errors:?}"
    );
    assert!(
        errors[3].starts_with("policies/50-test.toml:9: this rule has no chain"),
        "{errors:?}"
    );

    let syntax = load("[[rule]]\nchain = \"outbound\"\naction = pass\n");
    let errors: Vec<String> = syntax.errors().map(|p| p.to_string()).collect();
    assert!(
        errors[0].starts_with("policies/50-test.toml:3: "),
        "{errors:?}"
    );
}

#[test]
fn warnings_for_rules_that_cannot_work() {
    let loaded = load(
        r#"[[rule]]
chain = "inbound"
recipient_is = "external"
action = "pass"

[[rule]]
chain = "outbound"
subject = "x"
action = "encrypt"

[[rule]]
chain = "outbound"
recipient = "competitor.example"
action = "reject"

[[rule]]
chain = "outbound"
action = "pass"
no_key = "defer"

[[rule]]
chain = "outbound"
size_over = "2MiB"
size_under = "1MiB"
action = "pass"
"#,
    );
    assert!(loaded.policy.is_some());
    let warnings: Vec<String> = loaded.warnings().map(|p| p.to_string()).collect();
    let at = |line: usize, text: &str| {
        warnings.iter().any(|w| {
            w.starts_with(&format!("policies/50-test.toml:{line}: warning: ")) && w.contains(text)
        })
    };
    assert!(
        at(1, "inbound recipients are always internal"),
        "{warnings:?}"
    );
    assert!(at(11, "decided after DATA, not at RCPT"), "{warnings:?}");
    assert!(at(16, "no_key"), "{warnings:?}");
    assert!(
        at(21, "can never match: the rule at 50-test.toml:16"),
        "{warnings:?}"
    );
    assert!(at(21, "size_over"), "{warnings:?}");
}

#[test]
fn the_shipped_policy_loads_clean() {
    let loaded = load::load_dir(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies"
    )));
    let problems: Vec<String> = loaded.problems.iter().map(|p| p.to_string()).collect();
    assert!(problems.is_empty(), "{problems:?}");
    let built_in = load::load_dir(std::path::Path::new("/nonexistent/policies"));
    assert!(built_in.policy.is_some());
    assert_eq!(built_in.warnings().count(), 1);
}
