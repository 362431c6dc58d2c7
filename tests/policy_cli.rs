//! Policy rule files as admins meet them through the real `sealgate` binary: `check` on
//! the broken folders of `testdata/policies-bad/` (every problem as `path:line:`, errors
//! on stderr with exit 1, warnings on stdout with exit 0), `serve` refusing a broken
//! `policy_dir`, and `policy explain` on the shipped `policies/`, before and after a
//! key for the recipient is imported.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::cli::{BIN, Serve, Setup, path_str, run_with_timeout, text};
use support::keys::pgp_key;

/// The repository: the shipped `policies/` and `testdata/` are in it.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A folder of `testdata/policies-bad/`, as an absolute path.
fn bad(name: &str) -> PathBuf {
    repo().join("testdata/policies-bad").join(name)
}

/// The shipped policy, as an absolute path (not the built-in copy).
fn shipped() -> PathBuf {
    repo().join("policies")
}

/// A temp dir with a config whose `policy_dir` is `policy_dir` (written as given), both
/// listeners on ephemeral ports, `internal_domains = ["example.com"]` and the data in
/// the temp dir.
fn setup(policy_dir: &str) -> Setup {
    Setup::new(
        |dir| {
            let next_hop = format!("dir:{}", dir.join("out").display());
            // A TOML literal string: the path is taken as it is.
            format!(
                "policy_dir = '{policy_dir}'\n{}",
                support::config_text(&dir.join("data"), &next_hop, "")
            )
        },
        Duration::from_secs(20),
    )
}

/// Runs `sealgate ARGS --config F` in `cwd` to completion (20 s at most).
fn sealgate(setup: &Setup, cwd: &Path, args: &[&str]) -> Output {
    run_with_timeout(
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&setup.config)
            .current_dir(cwd),
        Duration::from_secs(20),
    )
}

/// `sealgate check` on `policy_dir`, run in `cwd`.
fn check_in(policy_dir: &str, cwd: &Path) -> Output {
    let setup = setup(policy_dir);
    sealgate(&setup, cwd, &["check"])
}

fn check(policy_dir: &Path) -> Output {
    let setup = setup(path_str(policy_dir));
    sealgate(&setup, setup.dir.path(), &["check"])
}

/// A problem `check` must print: the file in policy_dir, its line, and words its
/// message must contain.
type Expected<'a> = (&'a str, usize, &'a [&'a str]);

/// The lines of `stream` that are problems in `policy_dir` (they start with
/// `POLICY_DIR/`), compared with `expected` whatever their order: each expected problem
/// must be there exactly once as `POLICY_DIR/FILE:LINE: ` (then `warning: ` for a
/// warning) with its words, and there must be no other.
fn assert_problems(stream: &str, policy_dir: &str, warning: bool, expected: &[Expected]) {
    let kind = if warning { "warning: " } else { "" };
    let found: Vec<&str> = stream
        .lines()
        .filter(|l| l.starts_with(&format!("{policy_dir}/")))
        .collect();
    let mut prefixes: Vec<String> = found
        .iter()
        .map(|l| {
            let (path, rest) = l.split_once(": ").unwrap_or((l, ""));
            let kind = if rest.starts_with("warning: ") {
                "warning: "
            } else {
                ""
            };
            format!("{path}: {kind}")
        })
        .collect();
    let mut wanted: Vec<String> = expected
        .iter()
        .map(|(file, line, _)| format!("{policy_dir}/{file}:{line}: {kind}"))
        .collect();
    prefixes.sort();
    wanted.sort();
    assert_eq!(prefixes, wanted, "problems printed:\n{stream}");
    for (file, line, words) in expected {
        let prefix = format!("{policy_dir}/{file}:{line}: {kind}");
        let line = found
            .iter()
            .find(|l| l.starts_with(&prefix))
            .expect("compared above");
        for word in *words {
            assert!(line.contains(word), "no {word:?} in {line:?}");
        }
    }
}

/// `check` exits 1, prints exactly `errors` on stderr and nothing else there, and
/// neither a warning nor an OK for the policy on stdout.
fn assert_errors(out: &Output, policy_dir: &str, errors: &[Expected]) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_problems(&stderr, policy_dir, false, errors);
    let other: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with(&format!("{policy_dir}/")))
        .collect();
    assert!(
        other.is_empty(),
        "more on stderr than the errors:\n{stderr}"
    );
    assert!(!stdout.contains("warning:"), "{stdout}");
    assert!(!stdout.contains(&format!("{policy_dir}: OK")), "{stdout}");
}

/// `check` on `testdata/policies-bad/FOLDER` (absolute) must exit 1 with `errors`.
fn assert_check_fails(folder: &str, errors: &[Expected]) {
    let dir = bad(folder);
    let out = check(&dir);
    assert_errors(&out, path_str(&dir), errors);
}

#[test]
fn check_accepts_the_shipped_policy_without_warnings() {
    let dir = shipped();
    let out = check(&dir);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stderr, "", "{stdout}");
    assert!(!stdout.contains("warning"), "{stdout}");
    assert!(
        stdout.contains(&format!("{}: OK (", dir.display())),
        "{stdout}"
    );
}

#[test]
fn check_reports_a_toml_syntax_error_on_its_line() {
    assert_check_fails(
        "syntax",
        &[("10-broken.toml", 7, &["invalid basic string"])],
    );
}

#[test]
fn check_reports_every_unknown_field_on_its_line() {
    assert_check_fails(
        "unknown-field",
        &[
            ("10-typo.toml", 8, &["actoin", "unknown field"]),
            ("10-typo.toml", 14, &["recipients", "unknown field"]),
        ],
    );
}

#[test]
fn check_reports_every_bad_value_on_the_line_of_its_field() {
    assert_check_fails(
        "bad-values",
        &[
            ("10-values.toml", 9, &["subject", "not a valid regex"]),
            (
                "10-values.toml",
                16,
                &["attachment_name", "*.[pdf", "not a glob"],
            ),
            (
                "10-values.toml",
                26,
                &["reply", "4.7.1", "does not match the reply code 550"],
            ),
            (
                "10-values.toml",
                32,
                &["action", "quarantine", "not one of"],
            ),
            (
                "10-values.toml",
                38,
                &["size_over", "ten megabytes", "not a size"],
            ),
            (
                "10-values.toml",
                46,
                &["key_source", "wkd", "not a key source"],
            ),
            (
                "10-values.toml",
                53,
                &["header", "X Class", "header field name"],
            ),
            (
                "10-values.toml",
                61,
                &["reply is only for action = \"reject\""],
            ),
        ],
    );
}

#[test]
fn check_reports_a_rule_without_chain_on_its_header_line() {
    assert_check_fails(
        "no-chain",
        &[("10-no-chain.toml", 11, &["no chain", "chain = \"inbound\""])],
    );
}

#[test]
fn check_reports_a_misspelt_rule_table() {
    assert_check_fails(
        "wrong-table",
        &[("10-rules.toml", 4, &["rules", "unknown field"])],
    );
}

/// Two errors in two rules of the second file: both are reported, with that file's
/// name, and the good first file is not named at all.
#[test]
fn check_reports_both_errors_of_a_file_and_not_the_good_file() {
    assert_check_fails(
        "mixed",
        &[
            ("20-bad.toml", 9, &["recipient_is", "partner", "not one of"]),
            ("20-bad.toml", 16, &["format", "zip", "not one of"]),
        ],
    );
    let out = check(&bad("mixed"));
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(!all.contains("10-good.toml"), "{all}");
}

/// A relative policy_dir is taken from the working directory, and the problems name
/// the files under it as written in the config.
#[test]
fn check_names_files_under_a_relative_policy_dir_as_given() {
    let out = check_in("testdata/policies-bad/mixed", repo());
    assert_errors(
        &out,
        "testdata/policies-bad/mixed",
        &[
            ("20-bad.toml", 9, &["recipient_is"]),
            ("20-bad.toml", 16, &["format"]),
        ],
    );
}

#[test]
fn check_prints_warnings_on_stdout_and_exits_0() {
    let dir = bad("warnings-only");
    let dir_str = path_str(&dir);
    let out = check(&dir);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stderr, "", "{stdout}");
    assert_problems(
        &stdout,
        dir_str,
        true,
        &[
            (
                "10-outbound.toml",
                12,
                &["decided after DATA, not at RCPT", "10-outbound.toml:4"],
            ),
            (
                "10-outbound.toml",
                26,
                &["can never match", "10-outbound.toml:21"],
            ),
            (
                "20-inbound.toml",
                3,
                &["can never match", "inbound recipients are always internal"],
            ),
            ("30-empty.toml", 1, &["no [[rule]] in this file"]),
        ],
    );
    assert!(
        stdout.contains(&format!("{dir_str}: OK (2 inbound and 4 outbound rules)")),
        "{stdout}"
    );
}

/// `serve` loads the policy before it listens: a broken policy_dir stops it with exit
/// 1, naming every error as file:line.
#[test]
fn serve_refuses_a_broken_policy_dir() {
    let dir = bad("mixed");
    let dir_str = path_str(&dir);
    let setup = setup(dir_str);
    let out = sealgate(&setup, setup.dir.path(), &["serve"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for line in [9, 16] {
        assert!(
            stderr.contains(&format!("{dir_str}/20-bad.toml:{line}: ")),
            "{stderr}"
        );
    }
    assert!(stderr.contains("policy"), "{stderr}");
    assert!(!stderr.contains("sealgate is serving"), "{stderr}");
    assert!(
        !setup.data_dir.join(sealgate::keys::admin::SOCKET).exists(),
        "an admin socket was made"
    );
}

/// Warnings do not stop `serve`: it starts and logs each of them as file:line.
#[test]
fn serve_starts_with_warnings_and_logs_them() {
    let dir = bad("warnings-only");
    let dir_str = path_str(&dir);
    let setup = setup(dir_str);
    let mut serve = Serve::start(&setup);
    let log = serve.log();
    for (file, line) in [
        ("10-outbound.toml", 12),
        ("10-outbound.toml", 26),
        ("20-inbound.toml", 3),
        ("30-empty.toml", 1),
    ] {
        assert!(
            log.contains(&format!("{dir_str}/{file}:{line}: warning: ")),
            "{file}:{line}: {log}"
        );
    }
    assert_eq!(serve.sigterm(), Some(0), "{}", serve.log());
}

/// `policy explain` with a broken policy_dir explains nothing: exit 1 with the errors.
#[test]
fn explain_refuses_a_broken_policy_dir() {
    let dir = bad("no-chain");
    let dir_str = path_str(&dir);
    let setup = setup(dir_str);
    let message = setup.file("m.eml", "Subject: hi\n\nhello\n");
    let out = sealgate(
        &setup,
        setup.dir.path(),
        &[
            "policy",
            "explain",
            "--direction",
            "inbound",
            "--from",
            "a@partner.example",
            "--to",
            "user@example.com",
            path_str(&message),
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{dir_str}/10-no-chain.toml:11: ")),
        "{stderr}"
    );
    assert_eq!(text(&out.stdout), "");
}

const EXTERNAL: &str = "bob@partner.example";
const INTERNAL: &str = "carol@example.com";

/// `file:line` of the rule named `name` in the shipped `policies/FILE`: the line of the
/// `[[rule]]` header above its `name = "..."`.
fn shipped_rule_at(file: &str, name: &str) -> String {
    let path = shipped().join(file);
    let source = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = source.lines().collect();
    let named = lines
        .iter()
        .position(|l| l.trim() == format!("name = \"{name}\""))
        .unwrap_or_else(|| panic!("no rule {name} in {}", path.display()));
    let header = lines[..named]
        .iter()
        .rposition(|l| l.trim() == "[[rule]]")
        .expect("a [[rule]] above the name");
    format!("{file}:{}", header + 1)
}

/// `sealgate policy explain --direction outbound` of a "[secure] offer" from
/// alice@example.com to the external and the internal recipient; `--json` when asked.
fn explain(setup: &Setup, json: bool) -> Output {
    // LF line ends, as a mail client saves a message.
    let message = setup.file(
        "offer.eml",
        "From: alice@example.com\nTo: bob@partner.example, carol@example.com\n\
         Subject: [secure] offer\n\nOur offer is attached.\n",
    );
    let mut args = vec![
        "policy",
        "explain",
        "--direction",
        "outbound",
        "--from",
        "alice@example.com",
        "--to",
        EXTERNAL,
        "--to",
        INTERNAL,
    ];
    if json {
        args.push("--json");
    }
    args.push(path_str(&message));
    let out = sealgate(setup, setup.dir.path(), &args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// The text explanation of `recipient`: its block, from its first line to the blank
/// line after it.
fn block(stdout: &str, recipient: &str) -> String {
    let blocks: Vec<&str> = stdout
        .split("\n\n")
        .filter(|b| b.starts_with(&format!("{recipient}  (")))
        .collect();
    assert_eq!(blocks.len(), 1, "{recipient}:\n{stdout}");
    blocks[0].to_string()
}

/// The JSON explanation of `recipient`, with the fields every explanation has.
fn explanation<'a>(all: &'a Value, recipient: &str) -> &'a Value {
    let all = all.as_array().expect("explain --json prints an array");
    assert_eq!(all.len(), 2, "{all:#?}");
    let found: Vec<&Value> = all.iter().filter(|e| e["recipient"] == recipient).collect();
    assert_eq!(found.len(), 1, "{recipient}: {all:#?}");
    let e = found[0];
    for field in ["recipient", "rules", "action", "result", "reply"] {
        assert!(e.get(field).is_some(), "no {field}: {e:#}");
    }
    let rules = e["rules"].as_array().expect("rules is an array");
    for rule in rules {
        assert!(rule["at"].is_string(), "{rule:#}");
    }
    e
}

fn explain_json(setup: &Setup) -> Value {
    let out = explain(setup, true);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("explain --json: {e}: {}", text(&out.stdout)))
}

/// The "at" of the rules of a JSON explanation.
fn rules_at(e: &Value) -> Vec<&str> {
    e["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["at"].as_str().unwrap())
        .collect()
}

/// The shipped policy: a "[secure]" subject to an external recipient is encrypted to
/// their key, and refused with 550 5.7.1 without one; an internal recipient gets the
/// message in clear, decided at RCPT time.
#[test]
fn explain_the_secure_subject_without_and_with_a_key() {
    let setup = setup(path_str(&shipped()));
    let secure_at = shipped_rule_at("10-outbound-secure.toml", "secure-subject");
    assert_eq!(secure_at, "10-outbound-secure.toml:14");
    let internal_at = shipped_rule_at("20-outbound.toml", "internal-clear");

    // No key for bob: refused.
    let stdout = text(&explain(&setup, false).stdout);
    let bob = block(&stdout, EXTERNAL);
    assert!(bob.contains("external"), "{bob}");
    assert!(bob.contains("keys: none"), "{bob}");
    assert!(
        bob.contains(&format!("rule secure-subject at {secure_at}")),
        "{bob}"
    );
    assert!(bob.contains("rejected with 550 5.7.1"), "{bob}");
    let carol = block(&stdout, INTERNAL);
    assert!(
        carol.contains(&format!("rule internal-clear at {internal_at}")),
        "{carol}"
    );
    assert!(carol.contains("passed"), "{carol}");
    assert!(carol.contains("at RCPT: accepted"), "{carol}");
    assert!(!carol.contains("secure-subject"), "{carol}");

    let json = explain_json(&setup);
    let bob = explanation(&json, EXTERNAL);
    assert_eq!(rules_at(bob), [secure_at.as_str()], "{bob:#}");
    assert_eq!(bob["rules"][0]["name"], "secure-subject", "{bob:#}");
    assert_eq!(bob["action"], "encrypt", "{bob:#}");
    assert_eq!(bob["result"], "rejected", "{bob:#}");
    let reply = bob["reply"]
        .as_str()
        .expect("a refused recipient has a reply");
    assert!(reply.starts_with("550 5.7.1 "), "{bob:#}");
    let carol = explanation(&json, INTERNAL);
    assert_eq!(rules_at(carol), [internal_at.as_str()], "{carol:#}");
    assert_eq!(carol["action"], "pass", "{carol:#}");
    assert_eq!(carol["result"], "passed", "{carol:#}");
    assert_eq!(carol["reply"], Value::Null, "{carol:#}");
    assert_eq!(carol["at_rcpt"], "accepted", "{carol:#}");

    // An admin imports bob's OpenPGP key: now his copy is encrypted to it.
    let key = pgp_key("Bob <bob@partner.example>");
    let file = setup.file("bob.asc", &key.armored);
    setup.keys_expect(&["import", path_str(&file)], 0);

    let stdout = text(&explain(&setup, false).stdout);
    let bob = block(&stdout, EXTERNAL);
    assert!(
        bob.contains(&format!("key: pgp {} from admin", key.fingerprint)),
        "{bob}"
    );
    assert!(
        bob.contains(&format!("rule secure-subject at {secure_at}")),
        "{bob}"
    );
    assert!(
        bob.contains(&format!("encrypted pgp (key {})", key.fingerprint)),
        "{bob}"
    );
    assert!(!bob.contains("rejected"), "{bob}");
    let carol = block(&stdout, INTERNAL);
    assert!(carol.contains("at RCPT: accepted"), "{carol}");

    let json = explain_json(&setup);
    let bob = explanation(&json, EXTERNAL);
    assert_eq!(rules_at(bob), [secure_at.as_str()], "{bob:#}");
    assert_eq!(bob["action"], "encrypt", "{bob:#}");
    assert_eq!(bob["result"], "encrypted pgp", "{bob:#}");
    assert_eq!(bob["key"], serde_json::json!([key.fingerprint]), "{bob:#}");
    assert_eq!(bob["reply"], Value::Null, "{bob:#}");
}

/// Guards the bug where `policy explain` and the running gateway disagreed on the bare
/// `postmaster` (RFC 5321 §4.5.1): the gateway counted it as internal, explain did not.
/// Both now ask the one rule in `mail::internal`.
#[tokio::test]
async fn explain_and_the_gateway_agree_that_the_bare_postmaster_is_internal() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("10-internal.toml"),
        r#"
[[rule]]
name = "internal-refused"
chain = "outbound"
recipient_is = "internal"
action = "reject"
reply = "550 5.7.1 internal mail refused here"
"#,
    )
    .unwrap();
    let setup = setup(path_str(rules.path()));
    let message = setup.file("m.eml", "From: alice@example.com\nSubject: hi\n\nhi\n");
    let out = sealgate(
        &setup,
        setup.dir.path(),
        &[
            "policy",
            "explain",
            "--direction",
            "outbound",
            "--from",
            "alice@example.com",
            "--to",
            "postmaster",
            "--json",
            path_str(&message),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let postmaster = &json[0];
    assert_eq!(postmaster["internal"], true, "{postmaster:#}");
    assert_eq!(postmaster["result"], "rejected", "{postmaster:#}");
    assert_eq!(
        postmaster["reply"], "550 5.7.1 internal mail refused here",
        "{postmaster:#}"
    );

    // The gateway, on the same rules, refuses the same recipient at RCPT.
    let config = format!(
        "policy_dir = '{}'\n{}",
        path_str(rules.path()),
        support::config_text(&setup.dir.path().join("gw"), "dir:out", "")
    );
    let gw = support::start(&config).await;
    let mut client = support::Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO mta.example.com", 250).await;
    client
        .cmd_expect("MAIL FROM:<alice@example.com>", 250)
        .await;
    let reply = client.cmd_expect("RCPT TO:<postmaster>", 550).await;
    assert_eq!(reply.text, "5.7.1 internal mail refused here");
    client.quit().await;
}

/// Guards the bug where `policy explain` said "decrypted" for a message to an SCKM user
/// whatever the message was: a plain one is not decrypted, and an encrypted one is
/// decrypted only if a key opens it, which explain does not try.
#[test]
fn explain_says_decrypted_only_of_nothing_it_has_not_decrypted() {
    let setup = setup(path_str(&shipped()));
    let user = support::keys::GpgHome::new();
    let (_, subkey) = user.make_key("User <user@example.com>", "ed25519", "cv25519", "encr");
    let export = setup.file("sckm.asc", user.sckm_export(&subkey));
    setup.keys_expect(&["import-sckm", path_str(&export)], 0);
    let plain = setup.file("plain.eml", "From: x@example.org\nSubject: hi\n\nhello\n");
    let armored = user.encrypt_to(
        "user@example.com",
        b"Content-Type: text/plain\r\n\r\nhi\r\n",
    );
    let encrypted = setup.file(
        "encrypted.eml",
        support::keys::pgp_mime(
            "x@example.org",
            "user@example.com",
            "e@example.org",
            &armored,
        ),
    );
    for (message, expected) in [
        (&plain, "passed (not encrypted: nothing to decrypt)"),
        (
            &encrypted,
            "decrypt pgp if one of the keys opens it (passed as it is otherwise)",
        ),
    ] {
        let out = sealgate(
            &setup,
            setup.dir.path(),
            &[
                "policy",
                "explain",
                "--direction",
                "inbound",
                "--from",
                "x@example.org",
                "--to",
                "user@example.com",
                "--json",
                path_str(message),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        let user = &json[0];
        assert_eq!(user["action"], "decrypt", "{user:#}");
        assert_eq!(user["result"], expected, "{user:#}");
    }
}
