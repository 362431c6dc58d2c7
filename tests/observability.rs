//! Seeing what a running gateway does, as an admin and a mail-flow test do: the one log
//! line per transaction (and per refusal before DATA), the JSON log format, the
//! Prometheus metrics scraped over HTTP after real traffic, `/healthz`, and the
//! `X-Sealgate-Trace` field in what arrives. Each test runs `sealgate serve` as a process.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cli::{Mailroom, Serve, path_str, send};
use support::keys::GpgHome;
use support::{Client, http};

/// An outbound message from an internal user.
fn outgoing(to: &str, message_id: &str, extra_header: &str) -> Vec<u8> {
    format!(
        "From: User <user@example.com>\r\nTo: {to}\r\nSubject: Numbers\r\nMessage-ID: <{message_id}>\r\n{extra_header}\r\nThe numbers are 4 8 15 16 23 42.\r\n"
    )
    .into_bytes()
}

/// The value of the sample of `name` whose labels include `labels`; `None` when there
/// is none.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse().unwrap())
}

/// Waits until the log has a line for which `wanted` is true (10 s at most).
fn log_line(serve: &Serve, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = serve.log().lines().find(|l| wanted(l)) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no such line: {}", serve.log());
        // Polled: the line is written by another process.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The header block of a message.
fn head(message: &str) -> &str {
    message.split("\r\n\r\n").next().unwrap()
}

#[tokio::test]
async fn metrics_logs_and_the_trace_field_tell_what_happened() {
    let setup = Mailroom::with(
        "[lookup]\nkeys = false\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[trace]\nheader = true\n",
    );
    let bob = GpgHome::new();
    let (bob_fpr, _) = bob.make_key("Bob <bob@example.org>", "ed25519", "cv25519", "encr");
    let bob_key = setup.file("bob.asc", bob.run(&["--armor", "--export"], None));
    setup.keys_expect(&["import", path_str(&bob_key)], 0);
    let serve = Serve::start(&setup);
    let metrics = serve.addr("metrics");
    let (outbound, inbound) = (serve.addr("outbound"), serve.addr("inbound"));

    // Before any mail: up, and every counter at nothing.
    assert_eq!(http(metrics, "GET", "/healthz").await, (200, "ok\n".into()));
    let (status, _) = http(metrics, "GET", "/nothing").await;
    assert_eq!(status, 404);
    let (status, _) = http(metrics, "POST", "/metrics").await;
    assert_eq!(status, 405);

    // One outbound transaction: bob's copy encrypted, carol's and dave's in clear. The
    // sender forged a trace field; it does not survive.
    send(
        outbound,
        "user@example.com",
        &["bob@example.org", "carol@example.org", "dave@example.org"],
        &outgoing(
            "bob@example.org, carol@example.org, dave@example.org",
            "m1@example.com",
            "X-Sealgate-Trace: id=forged; direction=outbound\r\n",
        ),
    )
    .await;
    // One inbound transaction, and an inbound recipient that is not ours.
    let mut client = Client::connect(inbound).await;
    client.cmd_expect("EHLO outside.example", 250).await;
    client
        .cmd_expect("MAIL FROM:<x@outside.example>", 250)
        .await;
    let refused = client
        .cmd_expect("RCPT TO:<victim@elsewhere.example>", 550)
        .await;
    assert_eq!(refused.status(), "5.7.1");
    client.cmd_expect("RSET", 250).await;
    client.quit().await;
    send(
        inbound,
        "x@outside.example",
        &["user@example.com"],
        b"From: x@outside.example\r\nTo: user@example.com\r\nSubject: hi\r\nMessage-ID: <in1@outside.example>\r\n\r\nHello.\r\n",
    )
    .await;

    // What arrived: each copy with one trace field that names its own recipients only.
    let copies: Vec<String> = setup
        .delivered("out")
        .into_iter()
        .map(|m| String::from_utf8_lossy(&m).into_owned())
        .collect();
    assert_eq!(copies.len(), 2, "an encrypted copy and a clear one");
    let (encrypted, clear): (Vec<&String>, Vec<&String>) = copies
        .iter()
        .partition(|m| m.contains("multipart/encrypted"));
    let (encrypted, clear) = (encrypted[0].clone(), clear[0].clone());
    assert!(clear.contains("4 8 15 16 23 42"));
    assert!(!encrypted.contains("4 8 15 16 23 42"));
    for (copy, named, not_named) in [
        (
            &encrypted,
            &["bob@example.org"][..],
            &["carol@example.org"][..],
        ),
        (
            &clear,
            &["carol@example.org", "dave@example.org"][..],
            &["bob@example.org"][..],
        ),
    ] {
        let head = head(copy);
        let fields: Vec<&str> = head
            .split("\r\n")
            .filter(|l| l.to_ascii_lowercase().starts_with("x-sealgate-trace:"))
            .collect();
        assert_eq!(
            fields.len(),
            1,
            "one trace field, the forged one gone:\n{head}"
        );
        assert!(!head.contains("id=forged"), "{head}");
        for rcpt in named {
            assert!(head.contains(&format!("rcpt=<{rcpt}>")), "{rcpt}:\n{head}");
        }
        for rcpt in not_named {
            assert!(!head.contains(&format!("rcpt=<{rcpt}>")), "{rcpt}:\n{head}");
        }
        assert!(head.contains("direction=outbound"), "{head}");
    }
    assert!(
        head(&encrypted).contains(&format!(
            "rcpt=<bob@example.org> action=\"encrypted pgp\" rule=\"encrypt-when-possible\" key={bob_fpr}"
        )),
        "{}",
        head(&encrypted)
    );
    assert!(
        head(&clear)
            .contains("rcpt=<carol@example.org> action=\"passed\" rule=\"encrypt-when-possible\""),
        "{}",
        head(&clear)
    );

    // The log: one line for the transaction, with every recipient's fate.
    let line = log_line(&serve, |l| {
        l.contains(" transaction ") && l.contains("direction=outbound")
    });
    let id = line
        .split(" id=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the line has the id");
    assert!(
        head(&clear).contains(&format!("X-Sealgate-Trace: id={id};")),
        "the trace and the log name the same id:\n{line}\n{}",
        head(&clear)
    );
    for wanted in [
        "client=127.0.0.1".to_string(),
        "tls=none".into(),
        "from=<user@example.com>".into(),
        format!(
            "<bob@example.org> encrypted pgp key={bob_fpr} rule=encrypt-when-possible: 250 2.0.0"
        ),
        "<carol@example.org> passed (no usable key: sent in clear) rule=encrypt-when-possible: 250 2.0.0".into(),
        "reply=250 2.0.0".into(),
        "size=".into(),
        "ms=".into(),
    ] {
        assert!(line.contains(&wanted), "{wanted:?} in {line}");
    }
    assert_eq!(
        serve
            .log()
            .lines()
            .filter(|l| l.contains(&format!("id={id}")) && l.contains(" transaction "))
            .count(),
        1,
        "one line per transaction"
    );
    // The refusal before DATA has its line too.
    let refusal = log_line(&serve, |l| {
        l.contains(" refused ") && l.contains("elsewhere")
    });
    for wanted in [
        "direction=inbound",
        "client=127.0.0.1",
        "command=RCPT TO:<victim@elsewhere.example>",
        "reply=550 5.7.1",
    ] {
        assert!(refusal.contains(wanted), "{wanted:?} in {refusal}");
    }

    // The metrics, scraped.
    let (status, text) = http(metrics, "GET", "/metrics").await;
    assert_eq!(status, 200);
    let count = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
    let messages = "sealgate_messages_total";
    assert_eq!(
        count(
            messages,
            &[("direction", "outbound"), ("outcome", "accepted")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        count(
            messages,
            &[("direction", "inbound"), ("outcome", "accepted")]
        ),
        Some(1.0)
    );
    let recipients = "sealgate_recipients_total";
    assert_eq!(
        count(
            recipients,
            &[("direction", "outbound"), ("action", "encrypted_pgp")]
        ),
        Some(1.0)
    );
    assert_eq!(
        count(
            recipients,
            &[("direction", "outbound"), ("action", "passed")]
        ),
        Some(2.0)
    );
    assert_eq!(
        count(
            recipients,
            &[("direction", "inbound"), ("action", "passed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        count(
            "sealgate_encryptions_total",
            &[("format", "pgp"), ("result", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        count(
            "sealgate_refused_commands_total",
            &[("direction", "inbound"), ("status", "5.7.1")]
        ),
        Some(1.0)
    );
    assert_eq!(
        count(
            "sealgate_data_reply_seconds_count",
            &[("direction", "outbound")]
        ),
        Some(1.0)
    );
    assert!(
        count(
            "sealgate_data_reply_seconds_bucket",
            &[("direction", "outbound"), ("le", "+Inf")]
        ) == Some(1.0),
        "{text}"
    );
    assert_eq!(count("sealgate_spool_copies", &[]), Some(0.0));
    assert_eq!(count("sealgate_spool_oldest_age_seconds", &[]), Some(0.0));
    assert!(
        text.contains("# TYPE sealgate_messages_total counter"),
        "{text}"
    );
    assert!(text.contains("# HELP sealgate_messages_total "), "{text}");
}

#[tokio::test]
async fn json_log_lines_are_one_object_each_with_stable_keys() {
    let setup = Mailroom::with("[lookup]\nkeys = false\n\n[log]\nformat = \"json\"\n");
    let serve = Serve::start(&setup);
    // The serving line, as JSON, says where the listeners are.
    let serving: Value = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = serve
                .log()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .find(|v| v["message"] == "sealgate is serving");
            if let Some(found) = found {
                break found;
            }
            assert!(Instant::now() < deadline, "{}", serve.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let outbound: SocketAddr = serving["outbound"].as_str().unwrap().parse().unwrap();
    send(
        outbound,
        "user@example.com",
        &["carol@example.org"],
        &outgoing("carol@example.org", "j1@example.com", ""),
    )
    .await;
    let line = log_line(&serve, |l| l.contains("\"transaction\""));
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["direction"], "outbound");
    assert_eq!(event["from"], "<user@example.com>");
    assert!(event["timestamp"].is_string());
    assert!(event["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(
        event["recipients"]
            .as_str()
            .unwrap()
            .starts_with("<carol@example.org> passed"),
        "{event}"
    );
    for line in serve.log().lines() {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value.is_object() && value["message"].is_string(), "{line}");
    }
}
