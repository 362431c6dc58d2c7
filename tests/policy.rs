//! Policy rule files over real sockets: each shipped rule, refusals at RCPT and after
//! DATA (with the DSN for a partial one), tags and the X-Sealgate field, and reloading
//! (a file change, a broken file that must not replace the rules in force, and a
//! transaction that keeps the policy it started with).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{
    Client, Gateway, Sink, armored, bob_with_key_imported, check, config_text, data_accepted,
    split_received, start,
};

/// A gateway relaying to `sink`, with its own policy_dir holding `files`.
async fn gateway_with_policy(
    sink: &Sink,
    files: &[(&str, &str)],
    extra: &str,
) -> (tempfile::TempDir, Gateway, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for (name, text) in files {
        std::fs::write(policies.join(name), text).unwrap();
    }
    let text = format!(
        "policy_dir = \"{}\"\n{}",
        policies.display(),
        config_text(&dir.path().join("data"), &sink.addr.to_string(), extra)
    );
    let gateway = start(&text).await;
    (dir, gateway, policies)
}

/// A gateway with the shipped `policies/` (the tests run in the repository root).
async fn gateway_shipped(sink: &Sink) -> (tempfile::TempDir, Gateway) {
    support::gateway_to(sink, "").await
}

fn mail(subject: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: {subject}\r\nMessage-ID: <p1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe offer stands.\r\n"
    )
    .into_bytes()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that the sink got exactly `count` transactions, once nothing more can come:
/// the gateway answers the client only after each copy went to the next hop or into
/// the spool, so after the client's reply, once the spool is drained (a DSN sent),
/// the sink has all it will ever get from this transaction.
async fn settles_at(gw: &Gateway, sink: &Sink, count: usize) -> Vec<support::sink::Received> {
    support::spool_drained(&gw.spool).await;
    let got = sink.received();
    assert_eq!(
        got.len(),
        count,
        "{:?}",
        got.iter().map(|r| &r.recipients).collect::<Vec<_>>()
    );
    got
}

#[tokio::test]
async fn secure_subject_without_a_key_is_refused_and_nothing_is_delivered() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_shipped(&sink).await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    // The subject is not known at RCPT: the recipient is accepted there.
    check(&mut client, "RCPT TO:<nokey@example.net>", 250, "2.1.5").await;
    client.cmd_expect("DATA", 354).await;
    client
        .send(support::dot_stuff(&mail("[secure] offer")))
        .await;
    let reply = support::expect_status(&mut client, 550, "5.7.1").await;
    assert!(reply.text.contains("nokey@example.net"), "{reply:?}");
    settles_at(&gw, &sink, 0).await;
}

#[tokio::test]
async fn secure_subject_is_encrypted_with_the_tag_removed_and_a_keyless_copy_becomes_a_dsn() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_shipped(&sink).await;
    let bob = bob_with_key_imported(&gw, "ed25519", "cv25519");
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "alice@example.com",
            &["bob@example.org", "nokey@example.net"],
            &mail("Re: [SECURE] offer"),
        )
        .await;
    // One recipient went out encrypted, the other is refused by the rule after DATA:
    // the client hears 250 and the refused one becomes a DSN, as a next hop's refusal.
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(2, Duration::from_secs(20)).await;
    let encrypted = got
        .iter()
        .find(|r| r.recipients == ["bob@example.org"])
        .expect("bob's copy");
    let outer = text(&encrypted.data);
    assert!(outer.contains("multipart/encrypted"), "{outer}");
    assert!(
        !outer.contains("X-Sealgate"),
        "off for outbound by default: {outer}"
    );
    let plain = text(&bob.run(&["--decrypt"], Some(&armored(&encrypted.data))));
    assert!(
        plain.contains("Subject: Re: offer\r\n"),
        "tag removed inside: {plain}"
    );
    assert!(plain.contains("The offer stands."), "{plain}");

    let dsn = got
        .iter()
        .find(|r| r.mail_from.is_empty())
        .expect("a DSN with the null sender");
    assert_eq!(dsn.recipients, ["alice@example.com"]);
    let report = text(&dsn.data);
    assert!(
        report.contains("Final-Recipient: rfc822; nokey@example.net"),
        "{report}"
    );
    assert!(report.contains("Status: 5.7.1"), "{report}");
    // The gateway refused it, not the next hop.
    assert!(!report.contains("Remote-MTA"), "{report}");
    assert!(
        report.contains("Diagnostic-Code: smtp; 550 5.7.1 encryption required"),
        "{report}"
    );
    assert!(!report.contains("bob@example.org\r\nAction"), "{report}");
    settles_at(&gw, &sink, 2).await;
}

#[tokio::test]
async fn shipped_outbound_rules_split_recipients_into_one_transaction_per_treatment() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_shipped(&sink).await;
    let bob = bob_with_key_imported(&gw, "ed25519", "cv25519");
    let message = mail("quarterly numbers");
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "alice@example.com",
            &["bob@example.org", "carol@example.net", "dan@example.com"],
            &message,
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = settles_at(&gw, &sink, 2).await;
    // encrypt-when-possible: bob has a key.
    let encrypted = got
        .iter()
        .find(|r| r.recipients == ["bob@example.org"])
        .unwrap();
    let plain = text(&bob.run(&["--decrypt"], Some(&armored(&encrypted.data))));
    assert!(plain.contains("Subject: quarterly numbers"), "{plain}");
    // internal-clear (dan) and encrypt-when-possible with no_key = send_clear (carol):
    // the same message, so one transaction.
    let clear = got
        .iter()
        .find(|r| r.recipients.len() == 2)
        .expect("clear copy");
    assert_eq!(clear.recipients, ["carol@example.net", "dan@example.com"]);
    assert_eq!(split_received(&clear.data).1, message);
}

#[tokio::test]
async fn inbound_mail_says_what_was_done_and_a_forged_status_is_replaced() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_shipped(&sink).await;
    let forged = b"From: x@example.net\r\nX-Sealgate: decrypted pgp; rule=trust-me\r\nSubject: hi\r\n\r\nhello\r\n";
    let mut client = Client::connect(gw.inbound).await;
    let reply = client
        .send_mail("x@example.net", &["user@example.com"], forged)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    let delivered = text(&got[0].data);
    assert_eq!(delivered.matches("X-Sealgate:").count(), 1, "{delivered}");
    assert!(
        delivered.contains(
            "\r\nX-Sealgate: passed; rule=decrypt-sckm\r\nFrom: x@example.net\r\nSubject: hi\r\n"
        ),
        "{delivered}"
    );
}

const ENVELOPE_RULES: &str = r#"
[[rule]]
name = "no-competitors"
chain = "outbound"
recipient = ["competitor.example", "*@*.competitor.example"]
action = "reject"
reply = "550 5.7.1 mail to competitors is not allowed"

[[rule]]
name = "partners-encrypted"
chain = "outbound"
recipient = "partner.example"
action = "encrypt"
no_key = "defer"

[[rule]]
name = "rest"
chain = "outbound"
action = "pass"
"#;

#[tokio::test]
async fn envelope_rules_refuse_at_rcpt_and_the_rest_is_delivered() {
    let sink = Sink::start().await;
    let (_dir, gw, _) =
        gateway_with_policy(&sink, &[("10-envelope.toml", ENVELOPE_RULES)], "").await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    let reply = check(
        &mut client,
        "RCPT TO:<ceo@Competitor.Example>",
        550,
        "5.7.1",
    )
    .await;
    assert!(
        reply.text.contains("competitors is not allowed"),
        "{reply:?}"
    );
    check(
        &mut client,
        "RCPT TO:<x@mail.competitor.example>",
        550,
        "5.7.1",
    )
    .await;
    let reply = check(&mut client, "RCPT TO:<buyer@partner.example>", 451, "4.7.1").await;
    assert!(reply.text.contains("buyer@partner.example"), "{reply:?}");
    check(&mut client, "RCPT TO:<friend@example.net>", 250, "2.1.5").await;
    // Refusals by policy are not the client's errors: the session goes on as usual.
    data_accepted(&mut client, &mail("hello")).await;
    let got = settles_at(&gw, &sink, 1).await;
    assert_eq!(got[0].recipients, ["friend@example.net"]);
}

/// Issue 17: the no-key refusal said "no usable key" to a sender whose recipient has
/// an OpenPGP key when the rule wants S/MIME; and a rule could not say what to do.
#[tokio::test]
async fn the_no_key_refusal_names_what_is_missing_or_says_what_the_rule_says() {
    let rules = r#"
[[rule]]
name = "org-smime"
chain = "outbound"
recipient = "example.org"
action = "encrypt"
format = "smime"

[[rule]]
name = "partners"
chain = "outbound"
recipient = "partner.example"
action = "encrypt"
no_key = "defer"
no_key_text = "partners get encrypted mail only; ask it@example.com to add their key"

[[rule]]
name = "rest"
chain = "outbound"
action = "pass"
"#;
    let sink = Sink::start().await;
    let (_dir, gw, _) = gateway_with_policy(&sink, &[("10-no-key.toml", rules)], "").await;
    let _bob = bob_with_key_imported(&gw, "ed25519", "cv25519");
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    // Bob has an OpenPGP key, and the rule wants S/MIME.
    let reply = check(&mut client, "RCPT TO:<bob@example.org>", 550, "5.7.1").await;
    assert_eq!(
        reply.text,
        "5.7.1 encryption required, but there is no usable S/MIME certificate for bob@example.org"
    );
    // The rule's own words, with the code no_key = "defer" gives.
    let reply = check(&mut client, "RCPT TO:<buyer@partner.example>", 451, "4.7.1").await;
    assert_eq!(
        reply.text,
        "4.7.1 partners get encrypted mail only; ask it@example.com to add their key"
    );
    check(&mut client, "RCPT TO:<friend@example.net>", 250, "2.1.5").await;
    data_accepted(&mut client, &mail("hello")).await;
    let got = settles_at(&gw, &sink, 1).await;
    assert_eq!(got[0].recipients, ["friend@example.net"]);
}

#[tokio::test]
async fn content_rules_reject_the_whole_message_when_every_recipient_is_refused() {
    let rules = r#"
[[rule]]
name = "no-executables"
chain = "outbound"
attachment_name = ["*.exe", "*.scr"]
action = "reject"
reply = "554 5.7.1 executables are not sent out"

[[rule]]
name = "classified"
chain = "outbound"
header = { name = "X-Classification", matches = "(?i)^secret$" }
action = "reject"
"#;
    let sink = Sink::start().await;
    let (_dir, gw, _) = gateway_with_policy(&sink, &[("10-content.toml", rules)], "").await;
    let exe = b"From: a@example.com\r\nSubject: tool\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"Setup.EXE\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n";
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    for (message, code, words) in [
        (&exe[..], 554, "executables"),
        (
            b"From: a@example.com\r\nX-Classification: Secret\r\nSubject: s\r\n\r\nx\r\n",
            550,
            "rejected by policy",
        ),
    ] {
        check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
        check(&mut client, "RCPT TO:<one@example.net>", 250, "2.1.5").await;
        check(&mut client, "RCPT TO:<two@example.org>", 250, "2.1.5").await;
        client.cmd_expect("DATA", 354).await;
        client.send(support::dot_stuff(message)).await;
        let reply = support::expect_status(&mut client, code, "5.7.1").await;
        assert!(reply.text.contains(words), "{reply:?}");
    }
    // Anything else passes.
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    check(&mut client, "RCPT TO:<one@example.net>", 250, "2.1.5").await;
    data_accepted(&mut client, &mail("plain")).await;
    settles_at(&gw, &sink, 1).await;
}

#[tokio::test]
async fn tags_add_fields_and_a_subject_prefix_and_the_status_field_names_the_rule() {
    let rules = r#"
[[rule]]
name = "stamp"
chain = "outbound"
add_header = ["X-Disclaimer: sent through the gateway"]
continue = true

[[rule]]
name = "external-prefix"
chain = "outbound"
recipient_is = "external"
subject_prefix = "[EXTERNAL] "
action = "pass"
"#;
    let sink = Sink::start().await;
    let (_dir, gw, _) = gateway_with_policy(
        &sink,
        &[("10-tags.toml", rules)],
        "[policy]\nheader_outbound = true\n",
    )
    .await;
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "alice@example.com",
            &["x@example.net", "y@example.com"],
            &mail("numbers"),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = settles_at(&gw, &sink, 2).await;
    let external = text(
        &got.iter()
            .find(|r| r.recipients == ["x@example.net"])
            .unwrap()
            .data,
    );
    assert!(
        external.contains("\r\nSubject: [EXTERNAL] numbers\r\n"),
        "{external}"
    );
    assert!(
        external.contains("\r\nX-Disclaimer: sent through the gateway\r\n"),
        "{external}"
    );
    assert!(
        external.contains("\r\nX-Sealgate: passed; rule=external-prefix\r\n"),
        "{external}"
    );
    let internal = text(
        &got.iter()
            .find(|r| r.recipients == ["y@example.com"])
            .unwrap()
            .data,
    );
    assert!(internal.contains("\r\nSubject: numbers\r\n"), "{internal}");
    assert!(
        internal.contains("X-Disclaimer: sent through the gateway"),
        "{internal}"
    );
    assert!(
        internal.contains("\r\nX-Sealgate: passed; rule=stamp\r\n"),
        "{internal}"
    );
}

/// The reply to RCPT for `rcpt`, in a transaction of its own.
async fn rcpt_reply(gw: &Gateway, rcpt: &str) -> support::Reply {
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    client
        .cmd_expect("MAIL FROM:<alice@example.com>", 250)
        .await;
    client.cmd(&format!("RCPT TO:<{rcpt}>")).await;
    let reply = client.reply().await;
    client.quit().await;
    reply
}

/// Polls (a fresh transaction each time) until RCPT for `rcpt` gets `code`.
async fn rcpt_becomes(gw: &Gateway, rcpt: &str, code: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = rcpt_reply(gw, rcpt).await;
        if reply.code == code {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "RCPT {rcpt} still gets {reply:?}"
        );
        // Polled: the policy in force shows only to a transaction.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const PASS_ALL: &str = "[[rule]]\nname = \"all\"\nchain = \"outbound\"\naction = \"pass\"\n";
const BLOCK: &str = "[[rule]]\nname = \"block\"\nchain = \"outbound\"\nrecipient = \"competitor.example\"\naction = \"reject\"\n";

#[tokio::test]
async fn a_changed_file_is_loaded_and_a_broken_one_never_replaces_the_rules_in_force() {
    let sink = Sink::start().await;
    let (_dir, gw, policies) = gateway_with_policy(&sink, &[("50-all.toml", PASS_ALL)], "").await;
    rcpt_becomes(&gw, "a@competitor.example", 250).await;

    std::fs::write(policies.join("10-block.toml"), BLOCK).unwrap();
    rcpt_becomes(&gw, "a@competitor.example", 550).await;

    // One change breaks a file and removes the block: loading it would accept the
    // competitor again. It has an error, so the rules in force stay. The change is one
    // rename, so that every reload from now on sees the whole of it, and the log line
    // of a refused reload proves that the gateway has looked.
    let broken = policies.with_file_name("broken.toml");
    std::fs::write(
        &broken,
        "[[rule]]\nchain = \"outbound\"\naction = \"explode\"\n",
    )
    .unwrap();
    std::fs::rename(&broken, policies.join("10-block.toml")).unwrap();
    let refused = format!("dir={}", policies.display());
    support::log::wait_for(
        |line| line.contains("policy NOT reloaded") && line.contains(&refused),
        Duration::from_secs(15),
    )
    .await;
    let reply = rcpt_reply(&gw, "a@competitor.example").await;
    assert_eq!(reply.code, 550, "the rules in force stay: {reply:?}");

    // Fixed: the folder as it now is (no block) is loaded.
    std::fs::remove_file(policies.join("10-block.toml")).unwrap();
    rcpt_becomes(&gw, "a@competitor.example", 250).await;
}

#[tokio::test]
async fn a_transaction_finishes_on_the_policy_it_started_with() {
    let stamp = |word: &str| {
        format!(
            "[[rule]]\nname = \"{word}\"\nchain = \"outbound\"\nadd_header = \"X-Policy: {word}\"\naction = \"pass\"\n"
        )
    };
    let sink = Sink::start().await;
    let (_dir, gw, policies) =
        gateway_with_policy(&sink, &[("10-stamp.toml", &stamp("old"))], "").await;
    let mut early = Client::connect(gw.outbound).await;
    early.cmd_expect("EHLO client.test", 250).await;
    early.cmd_expect("MAIL FROM:<alice@example.com>", 250).await;
    early.cmd_expect("RCPT TO:<x@example.net>", 250).await;

    std::fs::write(policies.join("10-stamp.toml"), stamp("new")).unwrap();
    std::fs::write(policies.join("05-block.toml"), BLOCK).unwrap();
    rcpt_becomes(&gw, "a@competitor.example", 550).await;

    data_accepted(&mut early, &mail("in flight")).await;
    let mut late = Client::connect(gw.outbound).await;
    let reply = late
        .send_mail("alice@example.com", &["y@example.net"], &mail("later"))
        .await;
    assert_eq!(reply.code, 250);
    let got = settles_at(&gw, &sink, 2).await;
    let by = |rcpt: &str| text(&got.iter().find(|r| r.recipients == [rcpt]).unwrap().data);
    assert!(
        by("x@example.net").contains("X-Policy: old\r\n"),
        "{}",
        by("x@example.net")
    );
    assert!(
        by("y@example.net").contains("X-Policy: new\r\n"),
        "{}",
        by("y@example.net")
    );
}

/// `sealgate serve` as a process: SIGHUP reloads; a broken file is logged as
/// `path:line: message` and the rules in force stay.
#[tokio::test]
async fn sighup_reloads_and_logs_each_error_of_a_broken_policy() {
    use support::cli::{Serve, Setup, signal};
    let sink = Sink::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let setup = Setup::new(
        |dir| {
            std::fs::create_dir(dir.join("policies")).unwrap();
            std::fs::write(dir.join("policies/10-block.toml"), BLOCK).unwrap();
            format!(
                "data_dir = \"{data}\"\npolicy_dir = \"{policies}\"\n\
                 [inbound]\nlisten = \"127.0.0.1:0\"\nnext_hop = \"{hop}\"\n\
                 [outbound]\nlisten = \"127.0.0.1:{port}\"\nnext_hop = \"{hop}\"\n",
                data = dir.join("data").display(),
                policies = dir.join("policies").display(),
                hop = sink.addr,
            )
        },
        Duration::from_secs(20),
    );
    let policies: &Path = &setup.dir.path().join("policies");
    let mut serve = Serve::start(&setup);
    let outbound = format!("127.0.0.1:{port}").parse().unwrap();
    let probe = || async move {
        let mut client = Client::connect(outbound).await;
        client.cmd_expect("EHLO client.test", 250).await;
        client
            .cmd_expect("MAIL FROM:<alice@example.com>", 250)
            .await;
        client.cmd("RCPT TO:<a@competitor.example>").await;
        let reply = client.reply().await;
        client.quit().await;
        reply.code
    };
    assert_eq!(probe().await, 550);

    std::fs::write(
        policies.join("10-block.toml"),
        "[[rule]]\nchain = \"outbound\"\n\nsubject = \"(\"\n",
    )
    .unwrap();
    signal(serve.pid(), "-HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !serve.log().contains("policy NOT reloaded") {
        assert!(Instant::now() < deadline, "{}", serve.log());
        // Polled: the child process logs to a file.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = serve.log();
    let at = format!(
        "{}:4: subject: not a valid regex",
        policies.join("10-block.toml").display()
    );
    assert!(log.contains(&at), "{log}");
    assert_eq!(probe().await, 550, "the rules in force stay");

    std::fs::write(policies.join("10-block.toml"), PASS_ALL).unwrap();
    signal(serve.pid(), "-HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    while probe().await != 250 {
        assert!(Instant::now() < deadline, "{}", serve.log());
        // Polled: the policy in force shows only to a transaction.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(serve.log().contains("policy reloaded"), "{}", serve.log());
    assert_eq!(serve.sigterm(), Some(0), "{}", serve.log());
}
