//! Fan-out: one client transaction as several next-hop transactions, the durable retry
//! spool that holds the copies the next hop did not take, and the DSNs it sends.
//!
//! These tests run the gateway on a policy that gives every recipient a copy of its own
//! (`support::split_policy`), so each recipient is a next-hop transaction of its own.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{
    Client, Sink, gateway_split, retry_passes, split_config_text, spool_drained, start, testdata,
    without_split_field,
};

/// A sink that refuses `refused@example.org` with `reply` while `refusing` is set.
fn refuse_while(sink: &Sink, refusing: Arc<AtomicBool>, reply: &'static str) {
    sink.set(move |b| {
        b.rcpt_reply = Arc::new(move |rcpt: &str| {
            if rcpt == "refused@example.org" && refusing.load(Ordering::SeqCst) {
                reply.into()
            } else {
                "250 2.1.5 OK".into()
            }
        })
    });
}

#[tokio::test]
async fn every_group_accepted_is_one_250_and_one_transaction_each() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_split(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "a@example.com",
            &["x@example.org", "y@example.net"],
            &testdata("plain.eml"),
        )
        .await;
    assert_eq!(reply.code, 250);
    let got = sink.wait_for(2, Duration::from_secs(10)).await;
    let mut rcpts: Vec<_> = got.iter().map(|r| r.recipients.clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, [vec!["x@example.org"], vec!["y@example.net"]]);
    assert!(gw.spool.is_empty());
}

#[tokio::test]
async fn temporary_refusal_of_one_group_is_spooled_then_delivered_once() {
    let sink = Sink::start().await;
    let refusing = Arc::new(AtomicBool::new(true));
    refuse_while(&sink, refusing.clone(), "451 4.2.0 mailbox busy");
    let (_dir, gw) = gateway_split(&sink, "").await;

    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "a@example.com",
            &["ok@example.org", "refused@example.org"],
            &testdata("plain.eml"),
        )
        .await;
    assert_eq!(
        reply.code, 250,
        "one group went through, the other is spooled: {reply:?}"
    );
    client.quit().await;
    assert_eq!(gw.spool.len(), 1, "the refused copy is held");
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].recipients, ["ok@example.org"]);

    // The retrier keeps trying while the next hop refuses...
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.spool.entries().first().expect("still held").1.attempts == 0 {
        assert!(Instant::now() < deadline, "not retried within 10 s");
        retry_passes(&gw.spool, 1).await;
    }
    assert_eq!(sink.received().len(), 1);
    assert_eq!(gw.spool.len(), 1);
    assert!(
        gw.spool.entries()[0].1.attempts >= 1,
        "retried with backoff"
    );

    // ...and delivers once it recovers.
    refusing.store(false, Ordering::SeqCst);
    let got = sink.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].recipients, ["refused@example.org"]);
    assert_eq!(
        without_split_field(&got[1].data),
        without_split_field(&got[0].data),
        "the spooled copy is the same message"
    );
    spool_drained(&gw.spool).await;
    // Two more passes: a whole one after the entry was gone.
    retry_passes(&gw.spool, 2).await;
    assert_eq!(sink.received().len(), 2, "delivered exactly once");
}

#[tokio::test]
async fn spooled_copy_survives_a_crash_and_arrives_exactly_once() {
    let sink = Sink::start().await;
    let refusing = Arc::new(AtomicBool::new(true));
    refuse_while(&sink, refusing.clone(), "421 4.3.0 go away");
    let dir = tempfile::tempdir().unwrap();
    // The restarts retry every 200 ms; the first gateway has a long first retry, so
    // that nothing is retried before the crash.
    let text = split_config_text(dir.path(), &sink.addr.to_string(), "");
    let gw = start(&text.replace("first_retry = \"200ms\"", "first_retry = \"2s\"")).await;

    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "a@example.com",
            &["ok@example.org", "refused@example.org"],
            &testdata("dots.eml"),
        )
        .await;
    assert_eq!(reply.code, 250);
    // The 250 came after the spool write was flushed: killing the gateway now must not
    // lose the copy.
    gw.crash().await;
    refusing.store(false, Ordering::SeqCst);

    let gw = start(&text).await;
    assert_eq!(
        gw.spool.len(),
        1,
        "the copy is still in the spool after the crash"
    );
    let got = sink.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(got[1].recipients, ["refused@example.org"]);
    let (_, body) = support::split_received(&without_split_field(&got[1].data));
    assert_eq!(body, testdata("dots.eml"));
    spool_drained(&gw.spool).await;

    // A second restart must not deliver it again: its first pass over the spool has
    // seen whatever was left on disk.
    gw.stop().await;
    let gw = start(&text).await;
    retry_passes(&gw.spool, 1).await;
    assert_eq!(sink.received().len(), 2, "exactly once");
    assert!(gw.spool.is_empty());
}

#[tokio::test]
async fn permanent_refusal_of_one_group_sends_a_dsn_to_the_sender() {
    let sink = Sink::start().await;
    refuse_while(
        &sink,
        Arc::new(AtomicBool::new(true)),
        "550 5.1.1 no such user here",
    );
    let (_dir, gw) = gateway_split(&sink, "").await;

    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "sender@example.com",
            &["ok@example.org", "refused@example.org"],
            &testdata("plain.eml"),
        )
        .await;
    assert_eq!(reply.code, 250);
    let got = sink.wait_for(2, Duration::from_secs(10)).await;
    let dsn = got
        .iter()
        .find(|r| r.mail_from.is_empty())
        .expect("a DSN with the null sender");
    assert_eq!(dsn.recipients, ["sender@example.com"]);
    let text = String::from_utf8_lossy(&dsn.data);
    // Issue 17: the DSN's own Message-ID is in the configured hostname, not the
    // machine's name.
    let headers = text.split("\r\n\r\n").next().unwrap();
    let message_id = headers
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .unwrap_or_else(|| panic!("the DSN has a Message-ID: {text}"));
    assert!(message_id.ends_with("@gw.test>"), "{message_id}");
    assert!(text.contains("multipart/report"), "{text}");
    assert!(
        text.contains("report-type=delivery-status")
            || text.contains("report-type=\"delivery-status\""),
        "{text}"
    );
    assert!(
        text.contains("Content-Type: message/delivery-status"),
        "{text}"
    );
    assert!(
        text.contains("Final-Recipient: rfc822; refused@example.org"),
        "{text}"
    );
    assert!(text.contains("Action: failed"), "{text}");
    assert!(text.contains("Status: 5.1.1"), "{text}");
    assert!(
        text.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user here"),
        "{text}"
    );
    assert!(
        text.contains("Message-ID: <plain-1@example.com>"),
        "the original headers come back: {text}"
    );
    assert!(
        !text.contains("ok@example.org>: "),
        "only the failed recipient is reported"
    );
    spool_drained(&gw.spool).await;
    // Two more passes: a whole one after the DSN was gone.
    retry_passes(&gw.spool, 2).await;
    assert_eq!(sink.received().len(), 2, "one copy, one DSN, nothing more");
}

#[tokio::test]
async fn copy_that_outlives_the_spool_lifetime_becomes_a_dsn() {
    let sink = Sink::start().await;
    refuse_while(
        &sink,
        Arc::new(AtomicBool::new(true)),
        "451 4.2.0 mailbox busy",
    );
    let (_dir, gw) = gateway_split(&sink, "").await;
    drop(gw);
    let dir = tempfile::tempdir().unwrap();
    let text = split_config_text(dir.path(), &sink.addr.to_string(), "").replace(
        "max_retry = \"1s\"",
        "max_retry = \"300ms\"\nlifetime = \"1s\"",
    );
    let gw = start(&text).await;

    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "sender@example.com",
            &["ok@example.org", "refused@example.org"],
            &testdata("plain.eml"),
        )
        .await;
    assert_eq!(reply.code, 250);
    let got = sink.wait_for(2, Duration::from_secs(15)).await;
    let dsn = String::from_utf8_lossy(&got[1].data);
    assert_eq!(got[1].mail_from, "");
    assert!(
        dsn.contains("Final-Recipient: rfc822; refused@example.org"),
        "{dsn}"
    );
    assert!(dsn.contains("Status: 5.4.7"), "{dsn}");
    assert!(
        dsn.contains("4.2.0 mailbox busy"),
        "the last reply is quoted: {dsn}"
    );
    spool_drained(&gw.spool).await;
}

#[tokio::test]
async fn every_group_refused_gives_the_client_the_failure_and_spools_nothing() {
    let sink = Sink::start().await;
    sink.set(|b| {
        b.rcpt_reply = Arc::new(|rcpt: &str| {
            if rcpt.starts_with("perm") {
                "550 5.1.1 unknown".into()
            } else {
                "450 4.2.1 later".into()
            }
        })
    });
    let (_dir, gw) = gateway_split(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "a@example.com",
            &["perm@example.org", "temp@example.org"],
            &testdata("plain.eml"),
        )
        .await;
    assert_eq!(
        (reply.code, reply.status()),
        (450, "4.2.1"),
        "temporary wins: {reply:?}"
    );
    let reply = client
        .send_mail(
            "a@example.com",
            &["perm@example.org", "perm2@example.org"],
            &testdata("plain.eml"),
        )
        .await;
    assert_eq!((reply.code, reply.status()), (550, "5.1.1"), "{reply:?}");
    assert!(gw.spool.is_empty());
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn a_dsn_for_the_null_sender_is_never_sent() {
    let sink = Sink::start().await;
    refuse_while(&sink, Arc::new(AtomicBool::new(true)), "550 5.1.1 unknown");
    let (_dir, gw) = gateway_split(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "",
            &["ok@example.org", "refused@example.org"],
            &testdata("plain.eml"),
        )
        .await;
    assert_eq!(reply.code, 250);
    sink.wait_for(1, Duration::from_secs(10)).await;
    // A DSN would have been spooled before the 250, and nothing is; two more passes
    // would still send one that got there some other way.
    assert!(gw.spool.is_empty());
    retry_passes(&gw.spool, 2).await;
    assert_eq!(sink.received().len(), 1, "no bounce of a bounce");
    assert!(gw.spool.is_empty());
}
