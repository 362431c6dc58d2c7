//! Policy rule files: the input is up to four files, separated by NUL bytes, as
//! `policy_dir` would hold them in name order.
//!
//! They are loaded (TOML, every field with its line, regexes, globs, replies) and
//! linted. A policy that loads is then asked about fixed recipients and messages: what
//! `policy explain` says, and each verdict's marks put on the message (subject tags,
//! added header fields, the X-Sealgate field).
//!
//! Besides not panicking: a policy loads exactly when there is no error; every problem
//! is one line and names a file and a line that exist; and the marks add header fields
//! and nothing else: a rule cannot smuggle a field into a message inside a value.

#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sealgate::gateway::marks;
use sealgate::keys::{Allowed, KeyEntry, KeyKind, Source};
use sealgate::mail::Direction;
use sealgate::mail::message::Message;
use sealgate::mail::mime::{Cut, field_name};
use sealgate::policy::explain::{self, Recipient, Settings};
use sealgate::policy::rule::AuthenticatedEncryption;
use sealgate::policy::verdict::Circumstances;
use sealgate::policy::{Content, Evaluation, Facts, Needs, Policy, Verdict, load};
use sealgate_fuzz::NOW;

const MESSAGES: [&[u8]; 4] = [
    include_bytes!("../../testdata/plain.eml"),
    include_bytes!("../../testdata/multipart.eml"),
    include_bytes!("../../testdata/corpus/openpgp/example-draft.eml"),
    include_bytes!("../../testdata/corpus/smime/thunderbird-nss-smime/alice.env.eml"),
];

/// The messages, and what content conditions read of them.
static SAMPLES: LazyLock<Vec<(Message, Content)>> = LazyLock::new(|| {
    let all = Needs {
        headers: true,
        structure: true,
    };
    MESSAGES
        .iter()
        .map(|raw| {
            let message = Message::new(sealgate::mail::mime::crlf(raw).into_owned());
            let content = Content::read(&message, all);
            (message, content)
        })
        .collect()
});

fn entry(address: &str, kind: KeyKind, source: Source) -> KeyEntry {
    KeyEntry {
        address: address.into(),
        kind,
        fingerprint: format!("{}-{}", kind.as_str(), source.as_str()).to_uppercase(),
        source,
        added: NOW,
        last_seen: None,
        expires: None,
        message_id: None,
        sender: None,
        can_encrypt: true,
        can_decrypt: source == Source::Sckm,
        key_created: NOW,
        key_expires: None,
        legacy: false,
        retired: false,
        seen: 0,
        pending: false,
        chain_validated: false,
        revoked: false,
        decrypt_subkeys: Vec::new(),
        reads_aes_gcm: false,
        details: None,
    }
}

/// An internal user with SCKM keys, external ones with a looked-up key, a mailflow key
/// (one an S/MIME certificate whose chain was validated and whose owner reads AES-GCM)
/// and none, and the domain-less postmaster.
static RECIPIENTS: LazyLock<Vec<Recipient>> = LazyLock::new(|| {
    let recipient = |address: &str, internal: bool, entries: Vec<KeyEntry>| Recipient {
        address: address.into(),
        internal,
        entries,
    };
    vec![
        recipient(
            "bob@example.com",
            true,
            vec![
                entry("bob@example.com", KeyKind::Pgp, Source::Sckm),
                entry("bob@example.com", KeyKind::Smime, Source::Sckm),
            ],
        ),
        recipient(
            "carol@example.org",
            false,
            vec![entry("carol@example.org", KeyKind::Pgp, Source::Lookup)],
        ),
        recipient(
            "dave@example.net",
            false,
            vec![entry("dave@example.net", KeyKind::Smime, Source::Mailflow)],
        ),
        recipient(
            "frank@example.net",
            false,
            vec![KeyEntry {
                chain_validated: true,
                reads_aes_gcm: true,
                ..entry("frank@example.net", KeyKind::Smime, Source::Mailflow)
            }],
        ),
        recipient("erin@example.net", false, Vec::new()),
        recipient("postmaster", true, Vec::new()),
    ]
});

const SENDER: &str = "alice@example.org";

/// What `[keys]` allows by default: no mailflow keys, S/MIME certificates whether or
/// not their chain validated.
const ALLOWED: Allowed = Allowed {
    mailflow: false,
    unvalidated_smime: true,
};

/// The header fields of a message, by name.
fn field_names(message: &Message) -> Vec<String> {
    let raw = message.to_vec();
    Cut::new(&raw).map_or_else(Vec::new, |cut| {
        cut.fields.iter().map(|f| field_name(f)).collect()
    })
}

/// Puts `verdict`'s marks on `message` and checks that exactly the fields they add
/// (and a Subject for a prefix, when there was none) were added.
fn check_marks(message: &Message, verdict: &Verdict) {
    let status = "passed; rule=fuzz";
    let before = field_names(message);
    let after = field_names(&marks::apply(message, &verdict.tags, Some(status)));
    let ours_before = before.iter().filter(|n| *n == "x-sealgate").count();
    let mut expected = before.len() - ours_before + 1 + verdict.tags.add_headers.len();
    if verdict.tags.subject_prefix.is_some() && !before.iter().any(|n| n == "subject") {
        expected += 1;
    }
    assert_eq!(
        after.len(),
        expected,
        "marks {:?} made fields {before:?} into {after:?}",
        verdict.tags
    );
}

fn ask(policy: &Policy) {
    for direction in [Direction::Inbound, Direction::Outbound] {
        let chain = policy.chain(direction);
        for (message, content) in SAMPLES.iter() {
            let explanations = explain::explain(
                policy,
                direction,
                SENDER,
                &RECIPIENTS,
                content,
                &Settings {
                    allowed: ALLOWED,
                    authenticated_encryption: AuthenticatedEncryption::WhenCapable,
                    lookup_keys: true,
                    now: NOW,
                },
            );
            let _ = explain::render(&explanations);
            for r in RECIPIENTS.iter() {
                let facts = Facts::from_entries(SENDER, &r.address, r.internal, &r.entries, NOW);
                let Evaluation::Decided(decision) = chain.evaluate(&facts, Some(content)) else {
                    panic!("undecided with the message in hand");
                };
                let verdict = Verdict::new(
                    chain,
                    &decision,
                    &Circumstances {
                        recipient: &r.address,
                        entries: &r.entries,
                        now: NOW,
                        allowed: ALLOWED,
                        authenticated_encryption: AuthenticatedEncryption::WhenCapable,
                        already_encrypted: Some(content.encrypted.is_some()),
                        lookup: sealgate::policy::verdict::Lookup::Answered,
                    },
                );
                check_marks(message, &verdict);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let files: Vec<(PathBuf, String)> = data
        .split(|&b| b == 0)
        .take(4)
        .enumerate()
        .map(|(i, text)| {
            let path = PathBuf::from(format!("policies/{i}0-fuzz.toml"));
            (path, String::from_utf8_lossy(text).into_owned())
        })
        .collect();
    let loaded = load::load_texts(&files);
    assert_eq!(loaded.policy.is_some(), loaded.errors().next().is_none());
    for problem in &loaded.problems {
        let Some((_, text)) = files.iter().find(|(path, _)| *path == problem.path) else {
            panic!("{problem} names no file");
        };
        let lines = text.matches('\n').count() + 1;
        assert!(
            (1..=lines).contains(&problem.line),
            "{problem}: past the end"
        );
        assert!(!problem.to_string().contains(['\r', '\n']), "{problem:?}");
    }
    if let Some(policy) = &loaded.policy {
        ask(policy);
    }
});
