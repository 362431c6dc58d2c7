//! Loading rule files: errors with their lines, warnings, the shipped policy.

use super::load;
use crate::policy::load as loader;

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
    let loaded = loader::load_dir(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies"
    )));
    let problems: Vec<String> = loaded.problems.iter().map(|p| p.to_string()).collect();
    assert!(problems.is_empty(), "{problems:?}");
    let built_in = loader::load_dir(std::path::Path::new("/nonexistent/policies"));
    assert!(built_in.policy.is_some());
    assert_eq!(built_in.warnings().count(), 1);
}

#[test]
fn no_key_text_must_be_one_short_line_of_printable_ascii() {
    let rule = |text: &str| {
        format!("[[rule]]\nchain = \"outbound\"\naction = \"encrypt\"\nno_key_text = {text}\n")
    };
    let loaded = load(&rule("\"  ask IT for the recipient's certificate  \""));
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let policy = loaded.policy.unwrap();
    assert_eq!(
        policy.outbound.rules[0].then.no_key_text.as_deref(),
        Some("ask IT for the recipient's certificate")
    );
    for (text, words) in [
        (r#""line one\r\n250 OK""#, "printable ASCII"),
        (r#""bell\u0007""#, "printable ASCII"),
        (r#""tab\there""#, "printable ASCII"),
        (
            r#""Zertifikat fehlt: bitte an die IT wenden, Grüße""#,
            "printable ASCII",
        ),
        (r#""   ""#, "empty"),
        (&format!("\"{}\"", "x".repeat(201)), "at most 200"),
        ("true", "expected a string"),
    ] {
        let loaded = load(&rule(text));
        assert!(loaded.policy.is_none(), "{text} was accepted");
        let errors: Vec<String> = loaded.errors().map(|p| p.to_string()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("policies/50-test.toml:4: no_key_text: "),
            "{errors:?}"
        );
        assert!(errors[0].contains(words), "{text}: {errors:?}");
    }
    assert!(
        load(&rule(&format!("\"{}\"", "x".repeat(200))))
            .policy
            .is_some()
    );
}

#[test]
fn no_key_text_without_a_refusal_to_word_is_a_warning() {
    let loaded = load(
        "[[rule]]\nchain = \"outbound\"\nrecipient = \"partner.example\"\naction = \"encrypt\"\nno_key = \"send_clear\"\nno_key_text = \"never said\"\n\n\
         [[rule]]\nchain = \"outbound\"\naction = \"pass\"\nno_key_text = \"never said\"\n",
    );
    assert!(loaded.policy.is_some());
    let warnings: Vec<String> = loaded.warnings().map(|p| p.to_string()).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("policies/50-test.toml:1: warning: no_key_text has no effect with no_key = \"send_clear\""),
        "{warnings:?}"
    );
    assert!(
        warnings[1].starts_with("policies/50-test.toml:8: warning: ")
            && warnings[1].contains("no_key_text"),
        "{warnings:?}"
    );
}
