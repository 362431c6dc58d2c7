//! The SMTP dialogue over real sockets: greeting, EHLO, sequence and syntax errors,
//! MAIL parameters, pipelining, relay control by listener, and hostile input.

mod support;

use std::time::Duration;

use support::{
    Client, Reply, Sink, check, data_accepted, dot_stuff, expect_status, gateway_to, split_received,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const MESSAGE: &[u8] =
    b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nHello.\r\n";

/// Upper bound for anything the sink should have received by now.
const SINK_WAIT: Duration = Duration::from_secs(10);

/// The EHLO keywords, one per extension line (the first line is the greeting).
fn extensions(ehlo: &Reply) -> Vec<String> {
    ehlo.text.lines().skip(1).map(str::to_string).collect()
}

/// A full, successful transaction on a fresh connection: proof the server still works.
async fn still_serves(addr: std::net::SocketAddr, sink: &Sink) {
    let before = sink.received().len();
    let mut client = Client::connect(addr).await;
    let reply = client
        .send_mail("alice@example.com", &["bob@example.com"], MESSAGE)
        .await;
    assert_eq!((reply.code, reply.status()), (250, "2.0.0"), "{reply:?}");
    client.quit().await;
    sink.wait_for(before + 1, SINK_WAIT).await;
}

/// Reads everything the server sends until it closes the connection (10 s at most).
/// A reset counts as closed: a server that hangs up on unread junk causes one.
async fn read_to_close(reader: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut all = Vec::new();
    let mut buf = [0; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            all.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("server closes within 10 s");
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test]
async fn greeting_is_220_with_hostname() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    for addr in [gw.inbound, gw.outbound] {
        let mut client = Client::connect_raw(addr).await;
        let greeting = client.expect(220).await;
        assert!(greeting.text.starts_with("gw.test "), "{greeting:?}");
        assert!(greeting.text.contains("ESMTP"), "{greeting:?}");
        client.quit().await;
    }
}

#[tokio::test]
async fn ehlo_lists_extensions_and_no_starttls_without_tls() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    for addr in [gw.inbound, gw.outbound] {
        let mut client = Client::connect(addr).await;
        let ehlo = client.cmd_expect("EHLO client.test", 250).await;
        assert!(ehlo.text.starts_with("gw.test"), "{ehlo:?}");
        let ext = extensions(&ehlo);
        for wanted in [
            "PIPELINING",
            "SIZE 52428800",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "SMTPUTF8",
        ] {
            assert!(ext.iter().any(|e| e == wanted), "{wanted} missing: {ext:?}");
        }
        assert!(
            !ext.iter().any(|e| e.eq_ignore_ascii_case("STARTTLS")),
            "STARTTLS offered without [tls]: {ext:?}"
        );
        client.quit().await;
    }
}

#[tokio::test]
async fn helo_works_and_is_recorded_as_smtp() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    let helo = client.cmd_expect("HELO client.test", 250).await;
    assert_eq!(helo.text, "gw.test", "HELO answers with one line");
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    check(&mut client, "RCPT TO:<bob@example.org>", 250, "2.1.5").await;
    data_accepted(&mut client, MESSAGE).await;
    client.quit().await;

    let got = sink.wait_for(1, SINK_WAIT).await;
    let (received, rest) = split_received(&got[0].data);
    assert!(received.contains("from client.test"), "{received}");
    assert!(received.contains(" with SMTP id "), "{received}");
    assert_eq!(rest, MESSAGE);
}

#[tokio::test]
async fn noop_rset_vrfy_help_quit() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    // Before EHLO as well as after: none of these need a greeting.
    check(&mut client, "NOOP", 250, "2.0.0").await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(&mut client, "NOOP hello", 250, "2.0.0").await;
    check(&mut client, "RSET", 250, "2.0.0").await;
    check(&mut client, "VRFY bob", 252, "2.5.2").await;
    let help = check(&mut client, "HELP", 214, "2.0.0").await;
    assert!(help.text.contains("MAIL"), "{help:?}");
    check(&mut client, "HELP DATA", 214, "2.0.0").await;
    check(&mut client, "QUIT", 221, "2.0.0").await;
    assert!(client.is_closed().await, "QUIT closes the connection");
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn commands_out_of_sequence_get_503() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    check(&mut client, "MAIL FROM:<alice@example.com>", 503, "5.5.1").await;
    check(&mut client, "RCPT TO:<bob@example.org>", 503, "5.5.1").await;
    check(&mut client, "DATA", 503, "5.5.1").await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(&mut client, "RCPT TO:<bob@example.org>", 503, "5.5.1").await;
    check(&mut client, "DATA", 503, "5.5.1").await;
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    check(&mut client, "MAIL FROM:<other@example.com>", 503, "5.5.1").await;
    check(&mut client, "DATA", 554, "5.5.1").await;
    check(&mut client, "RCPT TO:<bob@example.org>", 250, "2.1.5").await;
    // RSET forgets the transaction.
    check(&mut client, "RSET", 250, "2.0.0").await;
    check(&mut client, "DATA", 503, "5.5.1").await;
    client.quit().await;

    // EHLO forgets it too (RFC 5321 §4.1.4).
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(&mut client, "RCPT TO:<bob@example.org>", 503, "5.5.1").await;
    // And after all that the session is fine.
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    check(&mut client, "RCPT TO:<bob@example.org>", 250, "2.1.5").await;
    data_accepted(&mut client, MESSAGE).await;
    client.quit().await;
    let got = sink.wait_for(1, SINK_WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].recipients, ["bob@example.org"]);
}

#[tokio::test]
async fn syntax_errors_get_501() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    check(&mut client, "HELO", 501, "5.5.4").await;
    check(&mut client, "EHLO", 501, "5.5.4").await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(&mut client, "MAIL FROM:garbage", 501, "5.5.4").await;
    check(&mut client, "MAIL", 501, "5.5.4").await;
    check(
        &mut client,
        "MAIL FROM:<alice@example.com> SIZE=lots",
        501,
        "5.5.4",
    )
    .await;
    check(&mut client, "MAIL FROM:<a b@example.com>", 501, "5.1.7").await;
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    check(&mut client, "RCPT TO:garbage", 501, "5.5.4").await;
    check(&mut client, "RCPT TO:<>", 501, "5.1.3").await;
    client.quit().await;
}

#[tokio::test]
async fn unknown_and_unimplemented_commands() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    check(&mut client, "XYZZY", 500, "5.5.1").await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(&mut client, "FROB the widget", 500, "5.5.1").await;
    check(&mut client, "EXPN staff", 502, "5.5.1").await;
    check(&mut client, "AUTH PLAIN", 502, "5.5.1").await;
    check(&mut client, "LHLO client.test", 502, "5.5.1").await;
    // Not offered without [tls].
    check(&mut client, "STARTTLS", 502, "5.5.1").await;
    check(&mut client, "NOOP", 250, "2.0.0").await;
    client.quit().await;
}

#[tokio::test]
async fn unsupported_mail_and_rcpt_parameters_get_555() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    for params in [
        "RET=FULL",
        "FOO=BAR",
        "BODY=BINARYMIME",
        "ENVID=abc123",
        "AUTH=<>",
    ] {
        check(
            &mut client,
            &format!("MAIL FROM:<alice@example.com> {params}"),
            555,
            "5.5.4",
        )
        .await;
    }
    // None of them started a transaction.
    check(&mut client, "RCPT TO:<bob@example.org>", 503, "5.5.1").await;
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    check(
        &mut client,
        "RCPT TO:<bob@example.org> NOTIFY=NEVER",
        555,
        "5.5.4",
    )
    .await;
    check(
        &mut client,
        "RCPT TO:<bob@example.org> ORCPT=rfc822;bob@example.org",
        555,
        "5.5.4",
    )
    .await;
    check(&mut client, "DATA", 554, "5.5.1").await;
    client.quit().await;
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn non_ascii_address_without_smtputf8_gets_553() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(&mut client, "MAIL FROM:<jöe@example.com>", 553, "5.6.7").await;
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    check(&mut client, "RCPT TO:<bjørn@example.org>", 553, "5.6.7").await;
    check(&mut client, "RCPT TO:<bob@example.org>", 250, "2.1.5").await;
    data_accepted(&mut client, MESSAGE).await;
    client.quit().await;
    let got = sink.wait_for(1, SINK_WAIT).await;
    assert_eq!(got[0].recipients, ["bob@example.org"]);
    assert!(
        !got[0].mail_line.contains("SMTPUTF8"),
        "{}",
        got[0].mail_line
    );
}

#[tokio::test]
async fn smtputf8_addresses_are_accepted_and_delivered() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(
        &mut client,
        "MAIL FROM:<jöe@example.com> SMTPUTF8",
        250,
        "2.1.0",
    )
    .await;
    check(&mut client, "RCPT TO:<bjørn@example.org>", 250, "2.1.5").await;
    check(&mut client, "RCPT TO:<用户@例子.测试>", 250, "2.1.5").await;
    client.cmd_expect("DATA", 354).await;
    let message = "From: jöe@example.com\r\nSubject: Grüße\r\n\r\nHej då.\r\n";
    client.send(dot_stuff(message.as_bytes())).await;
    expect_status(&mut client, 250, "2.0.0").await;
    client.quit().await;

    let got = sink.wait_for(1, SINK_WAIT).await;
    assert_eq!(got[0].mail_from, "jöe@example.com");
    assert_eq!(got[0].recipients, ["bjørn@example.org", "用户@例子.测试"]);
    assert!(
        got[0].mail_line.contains(" SMTPUTF8"),
        "{}",
        got[0].mail_line
    );
    let (received, rest) = split_received(&got[0].data);
    assert!(received.contains(" with UTF8SMTP id "), "{received}");
    assert_eq!(rest, message.as_bytes());
}

#[tokio::test]
async fn pipelined_transaction_gets_replies_in_order() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    client
        .send(
            "EHLO client.test\r\n\
             MAIL FROM:<alice@example.com>\r\n\
             RCPT TO:<bob@example.org>\r\n\
             RCPT TO:<carol@example.net>\r\n\
             DATA\r\n",
        )
        .await;
    let ehlo = client.expect(250).await;
    assert!(extensions(&ehlo).contains(&"PIPELINING".to_string()));
    expect_status(&mut client, 250, "2.1.0").await;
    expect_status(&mut client, 250, "2.1.5").await;
    expect_status(&mut client, 250, "2.1.5").await;
    client.expect(354).await;
    // The message, the next transaction and QUIT in one write as well.
    let mut rest = dot_stuff(MESSAGE);
    rest.extend_from_slice(b"MAIL FROM:<>\r\nRCPT TO:<dave@example.org>\r\nDATA\r\n");
    client.send(rest).await;
    expect_status(&mut client, 250, "2.0.0").await;
    expect_status(&mut client, 250, "2.1.0").await;
    expect_status(&mut client, 250, "2.1.5").await;
    client.expect(354).await;
    let mut rest = dot_stuff(MESSAGE);
    rest.extend_from_slice(b"QUIT\r\n");
    client.send(rest).await;
    expect_status(&mut client, 250, "2.0.0").await;
    expect_status(&mut client, 221, "2.0.0").await;
    assert!(client.is_closed().await);

    let got = sink.wait_for(2, SINK_WAIT).await;
    assert_eq!(got.len(), 2);
    let first = got
        .iter()
        .find(|r| r.mail_from == "alice@example.com")
        .expect("first transaction");
    assert_eq!(first.recipients, ["bob@example.org", "carol@example.net"]);
    assert_eq!(split_received(&first.data).1, MESSAGE);
    let second = got
        .iter()
        .find(|r| r.mail_from.is_empty())
        .expect("second transaction");
    assert_eq!(second.recipients, ["dave@example.org"]);
}

#[tokio::test]
async fn pipelined_batch_with_a_refused_recipient_on_inbound() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.inbound).await;
    client.cmd_expect("EHLO mx.example.net", 250).await;
    client
        .send(
            "MAIL FROM:<stranger@example.net>\r\n\
             RCPT TO:<victim@elsewhere.example>\r\n\
             RCPT TO:<bob@example.com>\r\n\
             DATA\r\n",
        )
        .await;
    expect_status(&mut client, 250, "2.1.0").await;
    expect_status(&mut client, 550, "5.7.1").await;
    expect_status(&mut client, 250, "2.1.5").await;
    client.expect(354).await;
    client.send(dot_stuff(MESSAGE)).await;
    expect_status(&mut client, 250, "2.0.0").await;
    client.quit().await;
    let got = sink.wait_for(1, SINK_WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].recipients, ["bob@example.com"]);
}

/// Replies keep coming while the client is still writing a long pipelined batch, so
/// neither side stalls and every command is answered once, in order.
#[tokio::test]
async fn thousands_of_pipelined_commands_are_all_answered() {
    const COUNT: usize = 5000;
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let stream = TcpStream::connect(gw.outbound).await.unwrap();
    let (read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(&b"NOOP\r\n".repeat(COUNT)).await.unwrap();
        write.write_all(b"QUIT\r\n").await.unwrap();
        write
    });
    let mut read = BufReader::new(read);
    let mut line = String::new();
    read.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("220 "), "{line:?}");
    let mut answered = 0;
    let all = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            line.clear();
            if read.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            if line.starts_with("221 ") {
                break;
            }
            assert_eq!(line, "250 2.0.0 OK\r\n", "reply {answered}");
            answered += 1;
        }
    })
    .await;
    assert!(all.is_ok(), "stalled after {answered} replies");
    assert_eq!(answered, COUNT);
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn mail_parameters_reach_the_next_hop() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let cases = [
        (
            "MAIL FROM:<alice@example.com> SIZE=1000 BODY=8BITMIME SMTPUTF8",
            vec![" BODY=8BITMIME", " SMTPUTF8"],
            vec![],
        ),
        (
            "MAIL FROM:<alice@example.com> BODY=7BIT",
            vec![" BODY=7BIT"],
            vec!["SMTPUTF8", "8BITMIME"],
        ),
        (
            "MAIL FROM:<alice@example.com>",
            vec![],
            vec!["BODY=", "SMTPUTF8"],
        ),
    ];
    for (i, (mail, present, absent)) in cases.iter().enumerate() {
        let mut client = Client::connect(gw.outbound).await;
        client.cmd_expect("EHLO client.test", 250).await;
        check(&mut client, mail, 250, "2.1.0").await;
        check(&mut client, "RCPT TO:<bob@example.org>", 250, "2.1.5").await;
        data_accepted(&mut client, MESSAGE).await;
        client.quit().await;

        let got = sink.wait_for(i + 1, SINK_WAIT).await;
        let line = &got[i].mail_line;
        assert!(line.starts_with("MAIL FROM:<alice@example.com>"), "{line}");
        // SIZE= is the real size of what is handed on, Received header included.
        let size = format!(" SIZE={}", got[i].data.len());
        assert!(line.contains(&size), "{line} lacks{size}");
        for p in present {
            assert!(line.contains(p), "{line} lacks {p}");
        }
        for a in absent {
            assert!(!line.contains(a), "{line} has {a}");
        }
    }
}

#[tokio::test]
async fn envelope_is_kept_in_order_and_duplicates_go_once() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "Alice@Example.com",
            &[
                "carol@example.net",
                "alice@example.org",
                "bob@example.org",
                "CAROL@example.net",
            ],
            MESSAGE,
        )
        .await;
    assert_eq!((reply.code, reply.status()), (250, "2.0.0"), "{reply:?}");
    client.quit().await;
    let got = sink.wait_for(1, SINK_WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "Alice@Example.com");
    assert_eq!(
        got[0].recipients,
        ["carol@example.net", "alice@example.org", "bob@example.org"]
    );
    let (received, rest) = split_received(&got[0].data);
    assert!(received.contains(" with ESMTP id "), "{received}");
    assert_eq!(rest, MESSAGE);
}

#[tokio::test]
async fn empty_message_and_leading_dots_are_framed_right() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let cases: [&[u8]; 3] = [
        b"",
        b".first line starts with a dot\r\n..two\r\n\r\nbody\r\n.\r\n",
        b"Subject: x\r\n\r\n.\r\n.\r\n",
    ];
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    for (i, message) in cases.iter().enumerate() {
        check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
        check(&mut client, "RCPT TO:<bob@example.org>", 250, "2.1.5").await;
        data_accepted(&mut client, message).await;
        let got = sink.wait_for(i + 1, SINK_WAIT).await;
        let (_, rest) = split_received(&got[i].data);
        assert_eq!(
            String::from_utf8_lossy(&rest),
            String::from_utf8_lossy(message),
            "case {i}"
        );
    }
    client.quit().await;
}

#[tokio::test]
async fn null_sender_is_relayed() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.inbound).await;
    client.cmd_expect("EHLO mx.example.net", 250).await;
    check(&mut client, "MAIL FROM:<>", 250, "2.1.0").await;
    check(&mut client, "RCPT TO:<bob@example.com>", 250, "2.1.5").await;
    data_accepted(&mut client, MESSAGE).await;
    client.quit().await;
    let got = sink.wait_for(1, SINK_WAIT).await;
    assert_eq!(got[0].mail_from, "");
    assert!(got[0].mail_line.starts_with("MAIL FROM:<>"), "{got:?}");
    assert_eq!(got[0].recipients, ["bob@example.com"]);
}

#[tokio::test]
async fn inbound_accepts_internal_domains_only() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.inbound).await;
    client.cmd_expect("EHLO mx.example.net", 250).await;
    check(
        &mut client,
        "MAIL FROM:<stranger@example.net>",
        250,
        "2.1.0",
    )
    .await;
    check(&mut client, "RCPT TO:<victim@example.org>", 550, "5.7.1").await;
    check(&mut client, "RCPT TO:<user@sub.example.com>", 550, "5.7.1").await;
    check(
        &mut client,
        "RCPT TO:<user@example.com.evil.test>",
        550,
        "5.7.1",
    )
    .await;
    check(&mut client, "RCPT TO:<user@example.com>", 250, "2.1.5").await;
    check(&mut client, "RCPT TO:<OTHER@EXAMPLE.COM>", 250, "2.1.5").await;
    data_accepted(&mut client, MESSAGE).await;

    // A transaction with only foreign recipients never reaches DATA.
    check(
        &mut client,
        "MAIL FROM:<stranger@example.net>",
        250,
        "2.1.0",
    )
    .await;
    check(&mut client, "RCPT TO:<victim@example.org>", 550, "5.7.1").await;
    check(&mut client, "DATA", 554, "5.5.1").await;
    client.quit().await;

    let got = sink.wait_for(1, SINK_WAIT).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].recipients, ["user@example.com", "OTHER@EXAMPLE.COM"]);
    let (received, _) = split_received(&got[0].data);
    assert!(received.contains("sealgate, inbound"), "{received}");

    // The outbound listener relays anywhere: that is its job.
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail("user@example.com", &["victim@example.org"], MESSAGE)
        .await;
    assert_eq!((reply.code, reply.status()), (250, "2.0.0"));
    client.quit().await;
    sink.wait_for(2, SINK_WAIT).await;
}

/// RFC 5321 §4.5.1: "Postmaster" without a domain must be accepted.
#[tokio::test]
async fn postmaster_without_domain_is_accepted() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.inbound).await;
    client.cmd_expect("EHLO mx.example.net", 250).await;
    check(
        &mut client,
        "MAIL FROM:<stranger@example.net>",
        250,
        "2.1.0",
    )
    .await;
    check(&mut client, "RCPT TO:<Postmaster>", 250, "2.1.5").await;
    data_accepted(&mut client, MESSAGE).await;
    client.quit().await;
    let got = sink.wait_for(1, SINK_WAIT).await;
    assert!(
        got[0].recipients[0].eq_ignore_ascii_case("postmaster"),
        "{got:?}"
    );
}

/// A quoted local part is part of the address: the next hop must get it as sent. Losing
/// the quotes makes a different address, or one the next hop cannot parse; on the inbound
/// side `"bob@evil.example"@example.com` reaches the internal MTA as
/// `bob@evil.example@example.com`, which some MTAs route to evil.example.
#[tokio::test]
async fn quoted_local_part_reaches_next_hop_with_its_quotes() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let cases = [
        (gw.outbound, r#""john smith"@example.org"#),
        (gw.outbound, r#""a>b"@example.org"#),
        (gw.inbound, r#""bob@evil.example"@example.com"#),
    ];
    for (i, (addr, rcpt)) in cases.into_iter().enumerate() {
        let mut client = Client::connect(addr).await;
        client.cmd_expect("EHLO client.test", 250).await;
        check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
        check(&mut client, &format!("RCPT TO:<{rcpt}>"), 250, "2.1.5").await;
        data_accepted(&mut client, MESSAGE).await;
        client.quit().await;
        let got = sink.wait_for(i + 1, SINK_WAIT).await;
        assert_eq!(got[i].recipients, [rcpt]);
    }
}

#[tokio::test]
async fn outbound_refuses_clients_outside_allowed_clients() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
data_dir = "{data}"
internal_domains = ["example.com"]
hostname = "gw.test"

[inbound]
listen = "127.0.0.1:0"
next_hop = "{hop}"

[outbound]
listen = "127.0.0.1:0"
next_hop = "{hop}"
allowed_clients = ["10.0.0.0/8", "::1/128"]
"#,
        data = dir.path().join("data").display(),
        hop = sink.addr,
    );
    let gw = support::start(&config).await;
    let mut client = Client::connect_raw(gw.outbound).await;
    let reply = client.reply().await;
    assert_eq!((reply.code, reply.status()), (554, "5.7.1"), "{reply:?}");
    assert!(client.is_closed().await, "a refused client is disconnected");

    // The inbound listener has no such list.
    let mut client = Client::connect(gw.inbound).await;
    let reply = client
        .send_mail("stranger@example.net", &["bob@example.com"], MESSAGE)
        .await;
    assert_eq!((reply.code, reply.status()), (250, "2.0.0"));
    client.quit().await;
    let got = sink.wait_for(1, SINK_WAIT).await;
    assert_eq!(got.len(), 1);
}

#[tokio::test]
async fn binary_junk_and_nul_bytes_are_refused_not_fatal() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;

    // NUL inside a command.
    let mut client = Client::connect(gw.outbound).await;
    client.send(b"NO\0OP\r\n").await;
    expect_status(&mut client, 501, "5.5.4").await;
    client.send(b"EHLO client\0.test\r\n").await;
    expect_status(&mut client, 501, "5.5.4").await;
    check(&mut client, "NOOP", 250, "2.0.0").await;
    client.quit().await;

    // Bytes that are not text at all, ending in CRLF.
    let mut client = Client::connect(gw.outbound).await;
    client.send(b"\xff\xfe\xfd\x80\x81\r\n").await;
    expect_status(&mut client, 500, "5.5.1").await;
    check(&mut client, "NOOP", 250, "2.0.0").await;
    client.quit().await;

    // A stream of pseudo-random bytes, then the client vanishes.
    let mut junk = Vec::with_capacity(64 * 1024);
    let mut x: u32 = 0x1234_5678;
    for _ in 0..64 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        junk.push(x as u8);
    }
    let mut client = Client::connect(gw.outbound).await;
    client.send(&junk).await;
    drop(client);

    // And the same junk read to its end: the server answers or hangs up, nothing worse.
    let mut stream = TcpStream::connect(gw.outbound).await.unwrap();
    let _ = stream.write_all(&junk).await;
    let _ = stream.shutdown().await;
    read_to_close(&mut stream).await;

    still_serves(gw.outbound, &sink).await;
    still_serves(gw.inbound, &sink).await;
}

#[tokio::test]
async fn bare_lf_commands_are_answered() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    client.send(b"EHLO client.test\nNOOP\n").await;
    let ehlo = client.reply().await;
    let noop = client.reply().await;
    // Either answer is defensible for a bare LF; hanging or crashing is not.
    for reply in [&ehlo, &noop] {
        assert!(
            reply.code == 250 || (500..600).contains(&reply.code),
            "{reply:?}"
        );
    }
    check(&mut client, "NOOP", 250, "2.0.0").await;
    client.quit().await;
    still_serves(gw.outbound, &sink).await;
}

/// SMTP smuggling: `<LF>.<LF>` or `<LF>.<CRLF>` inside DATA is not the end of the
/// message, at the gateway or at the next hop.
#[tokio::test]
async fn bare_lf_dot_in_data_does_not_end_the_message() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    check(&mut client, "RCPT TO:<bob@example.org>", 250, "2.1.5").await;
    client.cmd_expect("DATA", 354).await;
    client
        .send(
            b"Subject: innocent\r\n\r\nhello\n.\r\n\
              MAIL FROM:<smuggled@evil.example>\r\n\
              RCPT TO:<victim@example.org>\r\n\
              DATA\r\n\
              Subject: smuggled\r\n\r\nbad\r\n.\n\
              QUIT\r\n\
              \r\n.\r\n",
        )
        .await;
    expect_status(&mut client, 250, "2.0.0").await;
    // Exactly one reply for that one message: the next one answers NOOP.
    check(&mut client, "NOOP", 250, "2.0.0").await;
    client.quit().await;

    let got = sink.wait_for(1, SINK_WAIT).await;
    assert_eq!(got[0].mail_from, "alice@example.com");
    assert_eq!(got[0].recipients, ["bob@example.org"]);
    let data = String::from_utf8_lossy(&got[0].data);
    assert!(
        data.contains("MAIL FROM:<smuggled@evil.example>") && data.contains("Subject: smuggled"),
        "the next hop ended the message early: {data:?}"
    );
    assert!(
        !sink
            .received()
            .iter()
            .any(|r| r.mail_from.contains("smuggled")),
        "a smuggled transaction reached the next hop"
    );
}

#[tokio::test]
async fn half_closed_socket_gets_its_replies_and_is_closed() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;

    // Commands, then the client shuts its write side: every command is answered.
    let mut stream = TcpStream::connect(gw.outbound).await.unwrap();
    stream
        .write_all(
            b"EHLO client.test\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\n",
        )
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let all = read_to_close(&mut stream).await;
    assert!(all.starts_with("220 "), "{all:?}");
    assert!(all.contains("\r\n250 2.1.0 "), "{all:?}");
    let last = all.trim_end().lines().last().unwrap_or("");
    assert!(last.starts_with("250 2.1.5 "), "{all:?}");

    // Half-close in the middle of DATA: nothing was acknowledged, nothing is handed on.
    let mut stream = TcpStream::connect(gw.outbound).await.unwrap();
    stream
        .write_all(
            b"EHLO client.test\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n",
        )
        .await
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !line.starts_with("354") {
        line.clear();
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
            .await
            .expect("354 within 10 s")
            .unwrap();
        assert_ne!(n, 0, "closed before 354");
    }
    let mut stream = reader.into_inner();
    stream
        .write_all(b"Subject: cut off\r\n\r\nhalf a mess")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let rest = read_to_close(&mut stream).await;
    assert_eq!(rest, "", "no reply to an unfinished message");

    still_serves(gw.outbound, &sink).await;
    let got = sink.received();
    assert_eq!(got.len(), 1, "only still_serves' message: {got:?}");
    assert!(got[0].data.ends_with(MESSAGE));
}

#[tokio::test]
async fn shutdown_lets_transactions_finish_and_tells_idle_clients_421() {
    let sink = Sink::start().await;
    let (_dir, mut gw) = gateway_to(&sink, "").await;
    let mut idle = Client::connect(gw.outbound).await;
    idle.cmd_expect("EHLO client.test", 250).await;
    let mut busy = Client::connect(gw.outbound).await;
    busy.cmd_expect("EHLO client.test", 250).await;
    busy.cmd_expect("MAIL FROM:<alice@example.com>", 250).await;
    busy.cmd_expect("RCPT TO:<bob@example.org>", 250).await;
    busy.cmd_expect("DATA", 354).await;
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n").await;

    let server = gw.begin_stop();
    expect_status(&mut idle, 421, "4.3.0").await;
    assert!(idle.is_closed().await);

    // The message in flight is finished and handed on; then that client is sent away.
    busy.send(b"second half\r\n.\r\n").await;
    expect_status(&mut busy, 250, "2.0.0").await;
    expect_status(&mut busy, 421, "4.3.0").await;
    assert!(busy.is_closed().await);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops within 10 s")
        .unwrap();
    let got = sink.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].data.ends_with(b"first half\r\nsecond half\r\n"));
    // No new connections after shutdown.
    assert!(TcpStream::connect(gw.outbound).await.is_err());
}
