//! The relay: what the next hop receives, and what the client hears back.

mod support;

use std::time::Duration;

use support::{Client, Sink, gateway_to, split_received, testdata};

#[tokio::test]
async fn passes_samples_byte_for_byte_with_one_received_header() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    for (i, name) in ["plain.eml", "dots.eml", "utf8.eml", "multipart.eml"]
        .iter()
        .enumerate()
    {
        let original = testdata(name);
        let mut client = Client::connect(gw.outbound).await;
        let reply = client
            .send_mail("alice@example.com", &["bob@example.org"], &original)
            .await;
        assert_eq!(reply.code, 250, "{name}: {reply:?}");
        client.quit().await;
        let got = sink.wait_for(i + 1, Duration::from_secs(10)).await;
        let (received, rest) = split_received(&got[i].data);
        assert_eq!(rest, original, "{name} changed on the way");
        assert!(received.contains("sealgate, outbound"), "{received}");
        assert!(received.contains("gw.test"), "{received}");
    }
}

#[tokio::test]
async fn keeps_the_envelope_and_mail_parameters() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    client
        .cmd_expect(
            "MAIL FROM:<alice@example.com> SIZE=341 BODY=8BITMIME SMTPUTF8",
            250,
        )
        .await;
    for rcpt in ["zed@example.org", "amy@example.net", "bob@example.org"] {
        client.cmd_expect(&format!("RCPT TO:<{rcpt}>"), 250).await;
    }
    client.cmd_expect("DATA", 354).await;
    client.send(support::dot_stuff(&testdata("utf8.eml"))).await;
    assert_eq!(client.reply().await.code, 250);
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].mail_from, "alice@example.com");
    assert_eq!(
        got[0].recipients,
        ["zed@example.org", "amy@example.net", "bob@example.org"]
    );
    let mail = &got[0].mail_line;
    assert!(mail.contains(" BODY=8BITMIME"), "{mail}");
    assert!(mail.contains(" SMTPUTF8"), "{mail}");
    // SIZE is passed on, and is the size of what is actually sent (Received added).
    let size: usize = mail
        .split("SIZE=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(size, got[0].data.len());
}

#[tokio::test]
async fn next_hop_refusal_at_rcpt_is_passed_back() {
    let sink = Sink::start().await;
    sink.set(|b| {
        b.rcpt_reply = std::sync::Arc::new(|rcpt: &str| {
            if rcpt.starts_with("gone") {
                "550 5.1.1 no such user".into()
            } else {
                "451 4.3.2 try later".into()
            }
        })
    });
    let (_dir, gw) = gateway_to(&sink, "").await;

    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "a@example.com",
            &["gone@example.org"],
            &testdata("plain.eml"),
        )
        .await;
    assert_eq!((reply.code, reply.status()), (550, "5.1.1"), "{reply:?}");
    let reply = client
        .send_mail(
            "a@example.com",
            &["busy@example.org"],
            &testdata("plain.eml"),
        )
        .await;
    assert_eq!((reply.code, reply.status()), (451, "4.3.2"), "{reply:?}");
    // Both refused in one transaction: the temporary failure wins, so the client retries.
    let reply = client
        .send_mail(
            "a@example.com",
            &["gone@example.org", "busy@example.org"],
            &testdata("plain.eml"),
        )
        .await;
    assert_eq!(reply.code, 451, "{reply:?}");
    client.quit().await;
    assert!(sink.received().is_empty());
    assert!(gw.spool.is_empty());
}

#[tokio::test]
async fn next_hop_refusal_at_data_is_passed_back() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    for (reply, code, status) in [
        ("554 5.6.0 content rejected", 554, "5.6.0"),
        ("452 4.3.1 insufficient storage", 452, "4.3.1"),
    ] {
        sink.set(|b| b.data_reply = reply.into());
        let mut client = Client::connect(gw.inbound).await;
        let got = client
            .send_mail(
                "a@example.org",
                &["user@example.com"],
                &testdata("plain.eml"),
            )
            .await;
        assert_eq!((got.code, got.status()), (code, status), "{got:?}");
        client.quit().await;
    }
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn unreachable_next_hop_gives_4xx_and_delivers_nothing() {
    // A port that nobody listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let text = support::config_text(&dir.path().join("data"), &format!("127.0.0.1:{port}"), "");
    let gw = support::start(&text).await;
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail("a@example.com", &["b@example.org"], &testdata("plain.eml"))
        .await;
    assert_eq!((reply.code, reply.status()), (451, "4.4.1"), "{reply:?}");
    client.quit().await;
    assert!(gw.spool.is_empty(), "a refused message must not be spooled");
}

#[tokio::test]
async fn next_hop_that_hangs_up_after_data_gives_4xx() {
    let sink = Sink::start().await;
    sink.set(|b| b.hang_up_after_data = true);
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail("a@example.com", &["b@example.org"], &testdata("plain.eml"))
        .await;
    assert_eq!((reply.code, reply.status()), (451, "4.4.1"), "{reply:?}");
    client.quit().await;
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn next_hop_that_times_out_gives_4xx() {
    let sink = Sink::start().await;
    sink.set(|b| b.data_delay = Duration::from_secs(5));
    let (_dir, gw) = gateway_to(&sink, "[relay]\ndata_timeout = \"500ms\"\n").await;
    let mut client = Client::connect(gw.outbound).await;
    let started = std::time::Instant::now();
    let reply = client
        .send_mail("a@example.com", &["b@example.org"], &testdata("plain.eml"))
        .await;
    assert_eq!((reply.code, reply.status()), (451, "4.4.1"), "{reply:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn next_hop_without_pipelining_gets_lock_step_commands() {
    let sink = Sink::start().await;
    sink.set(|b| {
        b.pipelining = false;
        b.rcpt_reply = std::sync::Arc::new(|rcpt: &str| {
            if rcpt.starts_with("gone") {
                "550 5.1.1 no such user".into()
            } else {
                "250 2.1.5 OK".into()
            }
        });
    });
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    // One recipient refused, one taken: the message goes to the one, the other gets a DSN.
    let reply = client
        .send_mail(
            "a@example.com",
            &["gone@example.org", "b@example.org"],
            &testdata("plain.eml"),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[0].recipients, ["b@example.org"]);
    assert_eq!(got[1].mail_from, "", "the DSN has the null sender");
    assert_eq!(got[1].recipients, ["a@example.com"]);
    let dsn = String::from_utf8_lossy(&got[1].data);
    assert!(
        dsn.contains("Final-Recipient: rfc822; gone@example.org"),
        "{dsn}"
    );
    assert!(dsn.contains("Status: 5.1.1"), "{dsn}");
}

#[tokio::test]
async fn two_hundred_parallel_sessions_each_delivered_exactly_once() {
    let sink = Sink::start().await;
    // One client address here; the per-client limit is not what this test is about.
    let (_dir, gw) = gateway_to(&sink, "[limits]\nmax_connections_per_client = 1000\n").await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let addr = gw.outbound;
        tasks.push(tokio::spawn(async move {
            let message = format!(
                "From: a@example.com\r\nTo: b@example.org\r\nSubject: parallel {i}\r\nMessage-ID: <p{i}@example.com>\r\n\r\nbody {i}\r\n"
            );
            let mut client = Client::connect(addr).await;
            let reply = client.send_mail("a@example.com", &[&format!("r{i}@example.org")], message.as_bytes()).await;
            assert_eq!(reply.code, 250, "{reply:?}");
            client.quit().await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let got = sink.wait_for(200, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 200);
    let mut seen: Vec<usize> = got
        .iter()
        .map(|r| {
            let rcpt = &r.recipients[0];
            let i: usize = rcpt[1..rcpt.find('@').unwrap()].parse().unwrap();
            let body = String::from_utf8_lossy(&r.data);
            assert!(
                body.contains(&format!("Subject: parallel {i}\r\n")),
                "recipient and message mixed up"
            );
            i
        })
        .collect();
    seen.sort();
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
}

#[tokio::test]
async fn next_hop_connections_are_reused() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    for i in 0..3 {
        let mut client = Client::connect(gw.outbound).await;
        let reply = client
            .send_mail("a@example.com", &["b@example.org"], &testdata("plain.eml"))
            .await;
        assert_eq!(reply.code, 250, "message {i}: {reply:?}");
        client.quit().await;
    }
    assert_eq!(sink.wait_for(3, Duration::from_secs(10)).await.len(), 3);
    assert_eq!(sink.connections(), 1, "one connection for three messages");
}

#[tokio::test]
async fn a_next_hop_that_closes_idle_connections_still_gets_every_message() {
    let sink = Sink::start().await;
    sink.set(|b| b.close_after_reply = true);
    let (_dir, gw) = gateway_to(&sink, "").await;
    for i in 0..3 {
        let mut client = Client::connect(gw.outbound).await;
        let reply = client
            .send_mail("a@example.com", &["b@example.org"], &testdata("plain.eml"))
            .await;
        assert_eq!(reply.code, 250, "message {i}: {reply:?}");
        client.quit().await;
    }
    assert_eq!(sink.wait_for(3, Duration::from_secs(10)).await.len(), 3);
    assert_eq!(sink.connections(), 3);
}
