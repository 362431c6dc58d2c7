//! Running it day to day: the admin's verbs on a real spooled copy and a real resting
//! next hop, run as the `sealgate` binary against a running gateway (through its admin
//! socket) and against the database of a stopped one.

mod support;

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::cli::{Setup, text};
use support::{Client, Sink, split_config_text, start, testdata};

/// A gateway (split policy: one next-hop transaction per recipient) relaying to `sink`,
/// whose spool waits an hour before retrying by itself, so that only the admin's verbs
/// move it; and a `Setup` whose config is the gateway's, for running the binary.
async fn gateway_with_cli(sink: &Sink, extra: &str) -> (Setup, support::Gateway) {
    let next_hop = sink.addr.to_string();
    let setup = Setup::new(
        |dir| {
            split_config_text(dir, &next_hop, extra)
                .replace("first_retry = \"200ms\"", "first_retry = \"1h\"")
                .replace("max_retry = \"1s\"", "max_retry = \"2h\"")
        },
        Duration::from_secs(60),
    );
    let config = std::fs::read_to_string(&setup.config).unwrap();
    let gateway = start(&config).await;
    (setup, gateway)
}

/// Runs `sealgate VERB ARGS` off the test's runtime (the sink runs on it, and the
/// gateway may deliver to the sink while the command waits).
async fn sealgate(setup: &Setup, verb: &'static str, args: &[&str], code: i32) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (config, dir) = (setup.config.clone(), setup.dir.path().to_path_buf());
    let out = tokio::task::spawn_blocking(move || {
        support::cli::run_with_timeout(
            std::process::Command::new(support::cli::BIN)
                .arg(verb)
                .args(&args)
                .arg("--config")
                .arg(&config)
                .current_dir(&dir),
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "sealgate {verb}\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

async fn spool_json(setup: &Setup) -> Vec<Value> {
    let out = sealgate(setup, "spool", &["list", "--json"], 0).await;
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(entries)) => entries,
        other => panic!("spool list --json: {other:?}: {}", text(&out.stdout)),
    }
}

/// Sends one message to ok@ and refused@; the sink takes the first, and refuses the
/// second with 451 while `refusing` is set, so that its copy is spooled.
async fn spool_one(gw: &support::Gateway) {
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "a@example.com",
            &["ok@example.org", "refused@example.org"],
            &testdata("plain.eml"),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
}

fn rfc3339(value: &Value) -> time::OffsetDateTime {
    let text = value.as_str().expect("a string");
    assert!(text.ends_with('Z'), "UTC: {text}");
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[tokio::test]
async fn spool_list_show_and_retry_act_on_a_real_spooled_copy() {
    let sink = Sink::start().await;
    let refusing = sink.refuse_for_now("refused@example.org", Duration::ZERO);
    let (setup, gw) = gateway_with_cli(&sink, "").await;
    spool_one(&gw).await;
    sink.wait_for(1, Duration::from_secs(10)).await;

    let listed = spool_json(&setup).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let entry = &listed[0];
    let id = entry["id"].as_str().unwrap().to_string();
    assert_eq!(entry["direction"], "outbound");
    assert_eq!(entry["from"], "a@example.com");
    assert_eq!(
        entry["recipients"],
        serde_json::json!(["refused@example.org"])
    );
    assert_eq!(entry["next_hop"], sink.addr.to_string());
    assert_eq!(entry["attempts"], 0);
    assert!(
        entry["last_reply"].as_str().unwrap().contains("451 4.2.0"),
        "{entry}"
    );
    let queue_id = entry["queue_id"].as_str().unwrap();
    assert!(!queue_id.is_empty());
    let created = rfc3339(&entry["created"]);
    let next = rfc3339(&entry["next_attempt"]);
    let now = time::OffsetDateTime::now_utc();
    assert!(created <= now && created > now - time::Duration::minutes(5));
    assert!(
        next > now + time::Duration::minutes(50),
        "first_retry is 1h: {next}"
    );

    let table = text(&sealgate(&setup, "spool", &["list"], 0).await.stdout);
    assert!(
        table.contains(&id) && table.contains("<refused@example.org>"),
        "{table}"
    );
    assert!(table.contains("1 copy held"), "{table}");

    let shown = text(&sealgate(&setup, "spool", &["show", &id], 0).await.stdout);
    assert!(
        shown.contains(&format!("queue id:     {queue_id}")),
        "{shown}"
    );
    assert!(
        shown.contains("to:           <refused@example.org>"),
        "{shown}"
    );
    let subject = String::from_utf8_lossy(&testdata("plain.eml"))
        .lines()
        .find(|l| l.starts_with("Subject:"))
        .unwrap()
        .to_string();
    assert!(shown.contains(&subject), "the message's header: {shown}");
    let out = sealgate(&setup, "spool", &["show", "L999999"], 1).await;
    assert!(text(&out.stderr).contains("no spooled copy L999999"));
    sealgate(&setup, "spool", &["show", "nonsense"], 1).await;

    // Retried now, an hour early; the next hop still refuses.
    let out = sealgate(&setup, "spool", &["retry", &id], 0).await;
    assert!(
        text(&out.stdout).contains(&format!("{id}: still waiting")),
        "{}",
        text(&out.stdout)
    );
    let after = spool_json(&setup).await;
    assert_eq!(after[0]["attempts"], 1, "{after:?}");
    assert_eq!(sink.received().len(), 1);

    // The next hop takes it now.
    refusing.store(false, std::sync::atomic::Ordering::SeqCst);
    let out = sealgate(&setup, "spool", &["retry", "--all"], 0).await;
    assert!(
        text(&out.stdout).contains(&format!("{id}: done")),
        "{}",
        text(&out.stdout)
    );
    let got = sink.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].recipients, ["refused@example.org"]);
    assert!(spool_json(&setup).await.is_empty());
    let table = text(&sealgate(&setup, "spool", &["list"], 0).await.stdout);
    assert!(table.contains("the retry spool is empty"), "{table}");
    gw.stop().await;
}

#[tokio::test]
async fn spool_delete_tells_the_sender_unless_silent() {
    let sink = Sink::start().await;
    let _refusing = sink.refuse_for_now("refused@example.org", Duration::ZERO);
    let (setup, gw) = gateway_with_cli(&sink, "").await;
    spool_one(&gw).await;
    spool_one(&gw).await;
    sink.wait_for(2, Duration::from_secs(10)).await;
    let listed = spool_json(&setup).await;
    assert_eq!(listed.len(), 2);
    let (first, second) = (
        listed[0]["id"].as_str().unwrap().to_string(),
        listed[1]["id"].as_str().unwrap().to_string(),
    );

    let out = sealgate(&setup, "spool", &["delete", &first], 0).await;
    assert!(
        text(&out.stdout).contains("a DSN goes to <a@example.com>"),
        "{}",
        text(&out.stdout)
    );
    // The DSN is itself spooled and sent at once, to the sender, through the sink.
    let got = sink.wait_for(3, Duration::from_secs(10)).await;
    let dsn = &got[2];
    assert_eq!(dsn.mail_from, "");
    assert_eq!(dsn.recipients, ["a@example.com"]);
    let body = String::from_utf8_lossy(&dsn.data);
    assert!(body.contains("multipart/report"), "{body}");
    assert!(
        body.contains("Final-Recipient: rfc822; refused@example.org"),
        "{body}"
    );
    assert!(
        body.contains("Diagnostic-Code: smtp; 550 5.0.0 deleted from the retry spool by the mail administrator"),
        "{body}"
    );
    let left = spool_json(&setup).await;
    assert_eq!(left.len(), 1, "only the second copy is left: {left:?}");
    assert_eq!(left[0]["id"], second.as_str());

    let out = sealgate(&setup, "spool", &["delete", &second, "--silent"], 0).await;
    assert!(text(&out.stdout).contains("no DSN (--silent)"));
    assert!(spool_json(&setup).await.is_empty());
    // Twice: the copy is gone.
    sealgate(&setup, "spool", &["delete", &second], 1).await;
    support::retry_passes(&gw.spool, 2).await;
    assert_eq!(sink.received().len(), 3, "no DSN for the silent delete");
    gw.stop().await;
}

#[tokio::test]
async fn spool_verbs_work_on_the_database_of_a_stopped_gateway() {
    let sink = Sink::start().await;
    let _refusing = sink.refuse_for_now("refused@example.org", Duration::ZERO);
    let (setup, gw) = gateway_with_cli(&sink, "").await;
    spool_one(&gw).await;
    sink.wait_for(1, Duration::from_secs(10)).await;
    gw.stop().await;

    let listed = spool_json(&setup).await;
    assert_eq!(listed.len(), 1);
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let out = sealgate(&setup, "spool", &["retry", &id], 0).await;
    assert!(
        text(&out.stdout).contains("made due now; sealgate attempts it when it runs"),
        "{}",
        text(&out.stdout)
    );
    let next = rfc3339(&spool_json(&setup).await[0]["next_attempt"]);
    assert!(next <= time::OffsetDateTime::now_utc());

    // relay verbs have nothing to show without the gateway, and say why.
    let out = sealgate(&setup, "relay", &["status"], 0).await;
    assert!(text(&out.stdout).contains("sealgate is not running here"));
    sealgate(&setup, "relay", &["reset"], 0).await;
}

#[tokio::test]
async fn relay_reset_lets_the_next_message_through_at_once() {
    // A next hop that is down: a port nothing listens on, for now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let setup = Setup::new(
        |dir| support::config_text(&dir.join("data"), &port.to_string(), ""),
        Duration::from_secs(60),
    );
    let gw = start(&std::fs::read_to_string(&setup.config).unwrap()).await;
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail("a@example.com", &["x@example.org"], &testdata("plain.eml"))
        .await;
    assert_eq!(reply.code, 451, "{reply:?}");

    let status = text(&sealgate(&setup, "relay", &["status"], 0).await.stdout);
    assert!(
        status.contains(&format!(
            "{port} (inbound next hop, outbound next hop): resting, 0m"
        )),
        "{status}"
    );
    // While it rests, mail gets 451 at once, with wording that sends the client back.
    let reply = client
        .send_mail("a@example.com", &["x@example.org"], &testdata("plain.eml"))
        .await;
    assert_eq!(reply.code, 451);
    assert!(
        reply
            .text
            .contains("next hop unavailable; try again in 1 minute"),
        "{reply:?}"
    );

    // The next hop is fixed: it listens again.
    let sink = Sink::start_on(&port.to_string()).await;
    sealgate(&setup, "relay", &["reset", "192.0.2.1:25"], 1).await;
    let out = sealgate(&setup, "relay", &["reset", &port.to_string()], 0).await;
    assert!(
        text(&out.stdout).contains(&format!("available again: {port}")),
        "{}",
        text(&out.stdout)
    );
    let reply = client
        .send_mail("a@example.com", &["x@example.org"], &testdata("plain.eml"))
        .await;
    assert_eq!(reply.code, 250, "no rest left: {reply:?}");
    assert_eq!(sink.wait_for(1, Duration::from_secs(10)).await.len(), 1);

    let status = text(&sealgate(&setup, "relay", &["status"], 0).await.stdout);
    assert!(status.contains("nothing rests"), "{status}");
    let out = sealgate(&setup, "relay", &["reset"], 0).await;
    assert!(text(&out.stdout).contains("nothing was resting"));
    client.quit().await;
    gw.stop().await;
}
