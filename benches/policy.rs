//! Policy benchmark: what deciding one recipient costs with 1,000 rules in the outbound
//! chain, and what compiling those rules costs at load (start and reload).
//!
//! The rules are made here as TOML text, in four files, and loaded with
//! `policy::load::load_texts` as `policy_dir` would be: exact addresses, domains and
//! globs on the recipient, sender conditions, key conditions, content conditions
//! (subject and header regexes, size, attachment names), `continue = true` tagging rules,
//! and a catch-all at the end. Each case is one recipient kind, evaluated at RCPT time
//! (no message yet) and after DATA (with the message's content); every run checks that
//! each case is decided by the rule it is meant to be, so the figures cannot silently be
//! those of some other path through the chain.
//!
//! The main figure is `Chain::evaluate` per recipient (target: under 20 µs); the table
//! also gives it with `Verdict::new` after it, as the planner calls both, and the two
//! address index lookups alone (sender and recipient), which are most of it. The
//! recipient cases differ in how long the address is and in its last domain label, as
//! the index's cost depends on both. Reading the message's content happens once per
//! message, whatever the number of recipients, and is reported on its own.
//!
//! `cargo bench --bench policy` gets the full run. Without `--bench` (as under
//! `cargo test --all-targets`) a small smoke run checks the same cases.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sealgate::keys::{KeyEntry, KeyKind, Source};
use sealgate::mail::message::Message;
use sealgate::policy::content::Attachment;
use sealgate::policy::index::Index;
use sealgate::policy::load::load_texts;
use sealgate::policy::rule::{Patterns, Rule};
use sealgate::policy::verdict::{Circumstances, Verdict};
use sealgate::policy::{Chain, Content, Evaluation, Facts, KeyFact, Policy};
use time::OffsetDateTime;

/// Rules in the outbound chain.
const RULES: usize = 1000;
/// Files they are spread over, as an admin might split them.
const FILES: usize = 4;
/// The per-recipient target.
const TARGET: Duration = Duration::from_micros(20);

/// Rule indexes with a fixed role; the others follow the mix in [`rule`].
const TAG_ALL: usize = 0;
const INTERNAL: usize = 1;
const TAG_EXTERNAL: usize = 500;
const CATCH_ALL: usize = RULES - 1;

/// How much work one run does.
struct Scale {
    /// Times the rules are loaded; the best counts.
    loads: usize,
    /// Timed evaluations per case (after a tenth as many untimed).
    evaluations: usize,
    /// Times the message's content is read.
    reads: usize,
}

const BENCH: Scale = Scale {
    loads: 5,
    evaluations: 20_000,
    reads: 2_000,
};

const SMOKE: Scale = Scale {
    loads: 1,
    evaluations: 5,
    reads: 2,
};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { &BENCH } else { &SMOKE };
    println!(
        "sealgate policy benchmark ({})",
        if full {
            "full run"
        } else {
            "smoke run: no --bench argument, tiny scale; use `cargo bench --bench policy`"
        }
    );

    // 1. Loading.
    let files = rule_files();
    let bytes: usize = files.iter().map(|(_, text)| text.len()).sum();
    let mut best = Duration::MAX;
    let mut policy = None;
    for _ in 0..scale.loads {
        let started = Instant::now();
        let loaded = load_texts(&files);
        best = best.min(started.elapsed());
        let errors: Vec<String> = loaded.errors().map(|p| p.to_string()).collect();
        assert!(
            errors.is_empty(),
            "the generated rules have errors: {errors:?}"
        );
        let warnings: Vec<String> = loaded.warnings().map(|p| p.to_string()).collect();
        assert!(
            warnings.is_empty(),
            "the generated rules should be clean: {warnings:?}"
        );
        policy = loaded.policy;
    }
    let policy: Policy = policy.expect("a policy");
    let chain = &policy.outbound;
    assert_eq!(chain.rules.len(), RULES);
    assert!(
        chain.needs.headers && chain.needs.structure,
        "the rules test headers and attachments: {:?}",
        chain.needs
    );
    println!(
        "\n1. load: {RULES} outbound rules in {FILES} files ({bytes} bytes of TOML), parsed, \
         compiled (regexes, glob sets, the chain's address index) and linted: {:.1} ms{}",
        best.as_secs_f64() * 1e3,
        if scale.loads > 1 {
            format!(" (best of {})", scale.loads)
        } else {
            String::new()
        }
    );

    // The message's content, as the planner reads it after DATA.
    let message = message();
    let content = Content::read(&message, chain.needs);
    assert_eq!(content.subject, "Re: [Confidential] Q3 numbers");
    assert_eq!(
        content.attachments,
        [Attachment {
            name: "q3-numbers.pdf".into(),
            mime: "application/pdf".into(),
        }]
    );
    assert!(
        content
            .headers
            .iter()
            .any(|(name, value)| name == "x-classification" && value == "internal"),
        "{:?}",
        content.headers
    );

    // 2. Evaluation per recipient.
    let now = OffsetDateTime::now_utc();
    let cases = cases(now);
    let (senders, recipients) = indexes(chain);
    println!(
        "\n2. evaluation per recipient, outbound chain of {RULES} rules, {} timed evaluations \
         per case, one thread",
        scale.evaluations
    );
    println!(
        "   patterns: {}; +verdict: p50 of evaluate and Verdict::new; index: p50 of the two \
         address index lookups alone (sender and recipient, indexes built as the chain's)",
        pattern_counts(chain)
    );
    println!(
        "   {:<46} {:<5} {:>7} {:>7} {:>7}  {:>9}  {:>9}",
        "case (decided by)", "time", "p50 µs", "p99 µs", "mean µs", "+verdict", "index p50"
    );
    let (mut worst_p50, mut worst_p99) = (Duration::ZERO, Duration::ZERO);
    for case in &cases {
        let index = measure(scale.evaluations, || {
            black_box(senders.hits(black_box(&case.facts.sender)));
            black_box(recipients.hits(black_box(&case.facts.recipient)));
        });
        for data in [false, true] {
            let content = data.then_some(&content);
            let context = Circumstances {
                recipient: &case.facts.recipient,
                entries: &case.entries,
                now,
                allowed: sealgate::keys::Allowed::NO_MAILFLOW,
                authenticated_encryption: Default::default(),
                already_encrypted: data.then_some(false),
                lookup: Default::default(),
            };
            let expected = if data { case.at_data } else { case.at_rcpt };
            let decision = check(chain, case, content, expected);
            if let (Some(decision), Some(expected)) = (&decision, expected) {
                let verdict = Verdict::new(chain, decision, &context);
                assert_eq!(verdict.rule.as_deref(), expected.last().copied());
            }
            let evaluation = measure(scale.evaluations, || {
                black_box(chain.evaluate(black_box(&case.facts), black_box(content)));
            });
            let with_verdict = decision.as_ref().map(|_| {
                measure(scale.evaluations, || {
                    if let Evaluation::Decided(d) =
                        chain.evaluate(black_box(&case.facts), black_box(content))
                    {
                        black_box(Verdict::new(chain, &d, &context));
                    }
                })
            });
            worst_p50 = worst_p50.max(evaluation.p50);
            worst_p99 = worst_p99.max(evaluation.p99);
            println!(
                "   {:<46} {:<5} {:>7.2} {:>7.2} {:>7.2}  {:>9}  {:>9.2}",
                case.name,
                if data { "DATA" } else { "RCPT" },
                micros(evaluation.p50),
                micros(evaluation.p99),
                micros(evaluation.mean),
                with_verdict.map_or("(undecid.)".into(), |s| format!("{:.2}", micros(s.p50))),
                micros(index.p50),
            );
        }
    }
    let judge = |worst: Duration| if worst < TARGET { "met" } else { "MISSED" };
    if full {
        println!(
            "   target: under {} µs per recipient in every case: at p50 {} (slowest {:.2} µs), \
             at p99 {} (slowest {:.2} µs)",
            TARGET.as_micros(),
            judge(worst_p50),
            micros(worst_p50),
            judge(worst_p99),
            micros(worst_p99),
        );
    } else {
        println!("   target: not judged in a smoke run (unoptimised build)");
    }

    // 3. The message's content, read once per message for all its recipients.
    let reading = measure(scale.reads, || {
        black_box(Content::read(black_box(&message), chain.needs));
    });
    println!(
        "\n3. reading the content once per message (the chain needs headers and structure: \
         full MIME parse), {} bytes with a PDF attachment, {} reads: p50 {:.1} µs, p99 {:.1} µs",
        message.len(),
        scale.reads,
        micros(reading.p50),
        micros(reading.p99)
    );
}

/// One recipient kind.
struct Case {
    name: &'static str,
    facts: Facts,
    /// The recipient's key cache entries, for the verdict.
    entries: Vec<KeyEntry>,
    /// The names of the rules that match, in order; `None`: needs the content.
    at_rcpt: Option<&'static [&'static str]>,
    at_data: Option<&'static [&'static str]>,
}

fn cases(now: OffsetDateTime) -> Vec<Case> {
    let key = |address: &str, kind, source| KeyEntry {
        address: address.into(),
        kind,
        fingerprint: "0123456789ABCDEF0123456789ABCDEF01234567".into(),
        source,
        added: now,
        last_seen: None,
        expires: None,
        message_id: None,
        sender: None,
        can_encrypt: true,
        can_decrypt: false,
        key_created: now,
        key_expires: None,
        legacy: false,
        retired: false,
        seen: 0,
        pending: false,
        chain_validated: false,
        revoked: false,
        decrypt_subkeys: Vec::new(),
        details: None,
        reads_aes_gcm: false,
    };
    let case = |name, sender, recipient: &str, entries: Vec<KeyEntry>, at_rcpt, at_data| {
        let keys = entries
            .iter()
            .map(|e| KeyFact {
                kind: e.kind,
                source: e.source,
                chain_validated: e.chain_validated,
            })
            .collect();
        Case {
            name,
            facts: Facts::new(sender, recipient, false, keys),
            entries,
            at_rcpt,
            at_data,
        }
    };
    let late = "Buyer@Keyed993.Example";
    vec![
        case(
            "early: address list, rule 2",
            "Alice@Corp.Example",
            "user2@customer2.example",
            vec![],
            Some(&["tag-all", "address-2"]),
            Some(&["tag-all", "address-2"]),
        ),
        case(
            "late: domain and key condition, rule 993",
            "Alice@Corp.Example",
            late,
            vec![
                key(late, KeyKind::Smime, Source::Mailflow),
                key(late, KeyKind::Pgp, Source::Admin),
            ],
            Some(&["tag-all", "tag-external", "key-993"]),
            Some(&["tag-all", "tag-external", "key-993"]),
        ),
        case(
            "no match: catch-all, rule 999",
            "Alice@Corp.Example",
            "bob@unknown.example",
            vec![],
            Some(&["tag-all", "tag-external", "catch-all"]),
            Some(&["tag-all", "tag-external", "catch-all"]),
        ),
        case(
            "no match, long address: catch-all, rule 999",
            "Alice@Corp.Example",
            "Jonathan.Richardson@mail.subsidiary.example",
            vec![],
            Some(&["tag-all", "tag-external", "catch-all"]),
            Some(&["tag-all", "tag-external", "catch-all"]),
        ),
        case(
            "no match, other TLD: catch-all, rule 999",
            "Alice@Corp.Example",
            "Jonathan.Richardson@mail.subsidiary.com",
            vec![],
            Some(&["tag-all", "tag-external", "catch-all"]),
            Some(&["tag-all", "tag-external", "catch-all"]),
        ),
        case(
            "content: sender and subject, rule 995",
            "counsel@legal995.corp.example",
            "ir@bank.example",
            vec![],
            None,
            Some(&["tag-all", "subject-995"]),
        ),
    ]
}

/// Evaluates once and checks the outcome; the decision, when there is one.
fn check(
    chain: &Chain,
    case: &Case,
    content: Option<&Content>,
    expected: Option<&[&str]>,
) -> Option<sealgate::policy::Decision> {
    let when = if content.is_some() { "DATA" } else { "RCPT" };
    match (chain.evaluate(&case.facts, content), expected) {
        (Evaluation::NeedsContent, None) => None,
        (Evaluation::Decided(decision), Some(expected)) => {
            let names: Vec<String> = decision
                .matched
                .iter()
                .map(|&i| chain.rules[i].label())
                .collect();
            assert_eq!(names, expected, "{} at {when}", case.name);
            Some(decision)
        }
        (outcome, expected) => panic!(
            "{} at {when}: expected {expected:?}, got {outcome:?}",
            case.name
        ),
    }
}

/// Address indexes over the chain's sender and recipient patterns, built as
/// `Chain::new` builds the chain's own (which are private), to time the lookups alone.
fn indexes(chain: &Chain) -> (Index, Index) {
    let of = |patterns: fn(&Rule) -> Option<&Patterns>| {
        Index::new(chain.rules.iter().map(|r| patterns(r).map(|p| &p.0[..])))
    };
    (
        of(|r| r.when.sender.as_ref()),
        of(|r| r.when.recipient.as_ref()),
    )
}

/// How many sender and recipient patterns the chain has, and how many of them are
/// globs that are more than `*@domain`: those are the ones globset cannot answer by a
/// hash or suffix lookup.
fn pattern_counts(chain: &Chain) -> String {
    let count = |patterns: fn(&Rule) -> Option<&Patterns>| {
        let all: Vec<&String> = chain
            .rules
            .iter()
            .filter_map(patterns)
            .flat_map(|p| &p.0)
            .collect();
        let globs = all
            .iter()
            .filter(|p| p.trim_start_matches("*@").contains(['*', '?', '[', '{']))
            .count();
        (all.len(), globs)
    };
    let (senders, sender_globs) = count(|r| r.when.sender.as_ref());
    let (recipients, recipient_globs) = count(|r| r.when.recipient.as_ref());
    format!(
        "{senders} sender ({sender_globs} globs beyond *@domain), \
         {recipients} recipient ({recipient_globs} globs beyond *@domain)"
    )
}

/// Percentiles and mean of many timed runs of `work`.
struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn measure(runs: usize, mut work: impl FnMut()) -> Stats {
    for _ in 0..runs.div_ceil(10) {
        work();
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        work();
        times.push(started.elapsed());
    }
    times.sort();
    let at = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        mean: times.iter().sum::<Duration>() / runs as u32,
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The rules as `FILES` rule files of consecutive rules, in name order.
fn rule_files() -> Vec<(PathBuf, String)> {
    let per_file = RULES.div_ceil(FILES);
    (0..FILES)
        .map(|f| {
            let mut text = format!("# generated by benches/policy.rs, part {}\n", f + 1);
            for i in f * per_file..((f + 1) * per_file).min(RULES) {
                text.push('\n');
                text.push_str(&rule(i));
            }
            (
                PathBuf::from(format!("policies/{}0-bench.toml", f + 1)),
                text,
            )
        })
        .collect()
}

/// Rule `i` as TOML. Apart from the fixed ones, the kind of rule goes round in twenties:
/// 30% exact addresses, 15% domains, 10% globs, 10% sender conditions, 10% key
/// conditions, 20% content conditions (subject, header, size, attachment), each scoped
/// by the envelope as a real policy's would be, and 5% tagging rules that continue.
/// Every rule has its own addresses and domains, so each matches its own recipients.
fn rule(i: usize) -> String {
    let (name, body) = match i {
        TAG_ALL => (
            "tag-all".to_string(),
            "add_header = \"X-Sealgate-Policy: bench\"\ncontinue = true".to_string(),
        ),
        INTERNAL => (
            "internal-clear".into(),
            "recipient_is = \"internal\"\naction = \"pass\"".into(),
        ),
        TAG_EXTERNAL => (
            "tag-external".into(),
            "sender = \"*@corp.example\"\nrecipient_is = \"external\"\n\
             add_header = [\"X-Sealgate-External: yes\", \"X-Sealgate-Zone: corp\"]\n\
             continue = true"
                .into(),
        ),
        CATCH_ALL => (
            "catch-all".into(),
            "action = \"encrypt\"\nformat = \"auto\"\nno_key = \"send_clear\"".into(),
        ),
        _ => {
            let format = ["pgp", "smime", "auto"][i % 3];
            let customer = i % 97;
            match i % 20 {
                k @ 0..=5 if k % 2 == 0 => (
                    format!("address-{i}"),
                    format!(
                        "recipient = [\"user{i}@customer{customer}.example\", \
                         \"user{i}.alt@customer{customer}.example\"]\n\
                         action = \"encrypt\"\nformat = \"{format}\"\nno_key = \"reject\""
                    ),
                ),
                0..=5 => (
                    format!("address-{i}"),
                    format!(
                        "recipient = \"User{i}@Customer{customer}.example\"\n\
                         action = \"encrypt\"\nformat = \"{format}\"\nno_key = \"reject\""
                    ),
                ),
                6..=8 => (
                    format!("domain-{i}"),
                    format!(
                        "recipient = [\"partner{i}.example\", \"@mail.partner{i}.example\"]\n\
                         action = \"encrypt\"\nformat = \"auto\"\nno_key = \"defer\""
                    ),
                ),
                9 => (
                    format!("glob-{i}"),
                    format!("recipient = \"*@*.dept{i}.example\"\naction = \"pass\""),
                ),
                10 => (
                    format!("glob-{i}"),
                    format!(
                        "recipient = \"board+*@corp{i}.example\"\naction = \"encrypt\"\n\
                         no_key = \"reject\""
                    ),
                ),
                11 => (
                    format!("sender-{i}"),
                    format!(
                        "sender = \"team{i}@corp.example\"\nrecipient_is = \"external\"\n\
                         action = \"encrypt\"\nno_key = \"send_clear\""
                    ),
                ),
                12 => (
                    format!("sender-{i}"),
                    format!(
                        "sender = \"*@unit{i}.corp.example\"\nrecipient = \"supplier{i}.example\"\n\
                         action = \"encrypt\"\nformat = \"smime\"\nno_key = \"reject\""
                    ),
                ),
                13 => (
                    format!("key-{i}"),
                    format!(
                        "recipient = \"@keyed{i}.example\"\nkey = \"pgp\"\n\
                         key_source = [\"admin\", \"lookup\"]\n\
                         action = \"encrypt\"\nformat = \"pgp\"\nno_key = \"reject\""
                    ),
                ),
                14 => (
                    format!("key-{i}"),
                    format!(
                        "recipient = \"*@*.keyed{i}.example\"\nkey = \"smime\"\n\
                         key_source = \"admin\"\n\
                         action = \"encrypt\"\nformat = \"smime\"\nno_key = \"reject\""
                    ),
                ),
                15 => (
                    format!("subject-{i}"),
                    format!(
                        "sender = \"*@legal{i}.corp.example\"\n\
                         subject = '(?i)\\[(confidential|secure-{i})\\]'\n\
                         action = \"encrypt\"\nno_key = \"reject\"\n\
                         subject_remove = [\"[confidential]\", \"[secure-{i}]\"]"
                    ),
                ),
                16 => (
                    format!("header-{i}"),
                    format!(
                        "recipient = \"vendor{i}.example\"\n\
                         header = {{ name = \"X-Classification\", matches = '(?i)^(secret|restricted)(-{i})?$' }}\n\
                         action = \"encrypt\"\nno_key = \"defer\""
                    ),
                ),
                17 => (
                    format!("size-{i}"),
                    format!(
                        "recipient = \"*@*.archive{i}.example\"\nsize_over = \"20MiB\"\n\
                         action = \"reject\"\nreply = \"552 5.3.4 too large for archive{i}\""
                    ),
                ),
                18 => (
                    format!("tag-{i}"),
                    format!(
                        "recipient = \"*@*.partner{i}.example\"\n\
                         add_header = \"X-Route: r{i}\"\nsubject_prefix = \"[p{i}] \"\n\
                         continue = true"
                    ),
                ),
                _ => (
                    format!("attachment-{i}"),
                    format!(
                        "sender = \"*@hr{i}.corp.example\"\n\
                         attachment_name = [\"*.xlsx\", \"*.csv\"]\n\
                         action = \"encrypt\"\nno_key = \"reject\""
                    ),
                ),
            }
        }
    };
    format!("[[rule]]\nname = \"{name}\"\nchain = \"outbound\"\n{body}\n")
}

/// A message of some 20 KB as a mail client sends it: the usual header fields, a text
/// part and a PDF attachment.
fn message() -> Message {
    let mut raw = String::from(
        "Return-Path: <alice@corp.example>\r\n\
         From: Alice Example <alice@corp.example>\r\n\
         To: Bob <bob@unknown.example>, Buyer <buyer@keyed993.example>\r\n\
         Cc: user2@customer2.example\r\n\
         Subject: Re: [Confidential] Q3 numbers\r\n\
         Date: Tue, 14 Oct 2025 09:12:44 +0200\r\n\
         Message-ID: <20251014091244.4711@corp.example>\r\n\
         In-Reply-To: <20251013170102.0815@unknown.example>\r\n\
         References: <20251013170102.0815@unknown.example>\r\n\
         MIME-Version: 1.0\r\n\
         User-Agent: Mozilla Thunderbird\r\n\
         X-Classification: internal\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Hello Bob,\r\n\r\nthe numbers are attached.\r\n\r\nAlice\r\n\
         --b1\r\n\
         Content-Type: application/pdf; name=\"q3-numbers.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"q3-numbers.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n",
    );
    for line in 0..260 {
        raw.extend((0..76).map(|i| (b'A' + ((line * 7 + i) % 26) as u8) as char));
        raw.push_str("\r\n");
    }
    raw.push_str("--b1--\r\n");
    Message::new(raw.into_bytes())
}
