//! The `[limits]` a client runs into: message size, recipients, line length, errors,
//! idle and DATA timeouts, and the connection limit, each over real sockets.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{Client, Reply, Sink, check, data_accepted, dot_stuff, expect_status, gateway_to};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const MESSAGE: &[u8] =
    b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nHello.\r\n";

/// Upper bound for anything the sink should have received by now.
const SINK_WAIT: Duration = Duration::from_secs(10);

/// MAIL, one RCPT and DATA up to the 354, on a session that has said EHLO.
async fn start_data(client: &mut Client) {
    check(client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    check(client, "RCPT TO:<bob@example.org>", 250, "2.1.5").await;
    client.cmd_expect("DATA", 354).await;
}

/// A CRLF message of exactly `size` bytes.
fn message_of(size: usize) -> Vec<u8> {
    let mut message = b"Subject: sized\r\n\r\n".to_vec();
    while message.len() < size {
        let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvw\r\n";
        let room = size - message.len();
        if room >= line.len() + 2 || room == line.len() {
            message.extend_from_slice(line);
        } else {
            message.extend(std::iter::repeat_n(b'x', room.saturating_sub(2)));
            message.extend_from_slice(b"\r\n");
        }
    }
    assert_eq!(message.len(), size);
    message
}

#[tokio::test]
async fn ehlo_announces_the_configured_size() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "[limits]\nmax_message_size = \"10KiB\"\n").await;
    let mut client = Client::connect(gw.outbound).await;
    let ehlo = client.cmd_expect("EHLO client.test", 250).await;
    assert!(ehlo.text.lines().any(|l| l == "SIZE 10240"), "{ehlo:?}");
    client.quit().await;
}

#[tokio::test]
async fn oversized_message_gets_552_and_the_session_goes_on() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "[limits]\nmax_message_size = \"10KiB\"\n").await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    start_data(&mut client).await;
    // Lines that would be commands if the rest of the message were not drained.
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    while big.len() < 64 * 1024 {
        big.extend_from_slice(b"XYZZY\r\nRSET\r\nMAIL FROM:<smuggled@example.net>\r\n");
    }
    client.send(dot_stuff(&big)).await;
    expect_status(&mut client, 552, "5.3.4").await;
    // The next reply is NOOP's: nothing of the message was taken as a command.
    check(&mut client, "NOOP", 250, "2.0.0").await;
    // The refused transaction is gone; a new one goes through.
    check(&mut client, "RCPT TO:<bob@example.org>", 503, "5.5.1").await;
    start_data(&mut client).await;
    client.send(dot_stuff(MESSAGE)).await;
    expect_status(&mut client, 250, "2.0.0").await;
    client.quit().await;

    let got = sink.wait_for(1, SINK_WAIT).await;
    assert_eq!(got.len(), 1, "only the small message is handed on");
    assert!(got[0].data.ends_with(MESSAGE));
}

#[tokio::test]
async fn message_of_exactly_the_limit_is_accepted_one_more_byte_is_not() {
    const LIMIT: usize = 4096;
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, &format!("[limits]\nmax_message_size = {LIMIT}\n")).await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;

    start_data(&mut client).await;
    client.send(dot_stuff(&message_of(LIMIT + 1))).await;
    expect_status(&mut client, 552, "5.3.4").await;

    start_data(&mut client).await;
    let exact = message_of(LIMIT);
    client.send(dot_stuff(&exact)).await;
    expect_status(&mut client, 250, "2.0.0").await;
    client.quit().await;

    let got = sink.wait_for(1, SINK_WAIT).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].data.ends_with(&exact));
}

/// The same exact-size message, with the final `.<CR>` and `<LF>` in separate TCP
/// segments: where the packets fall must not change the verdict.
#[tokio::test]
async fn message_of_exactly_the_limit_is_accepted_whatever_the_segments() {
    const LIMIT: usize = 4096;
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, &format!("[limits]\nmax_message_size = {LIMIT}\n")).await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    start_data(&mut client).await;
    let exact = message_of(LIMIT);
    let mut wire = dot_stuff(&exact);
    assert!(wire.ends_with(b"\r\n.\r\n"));
    wire.pop();
    client.send(&wire).await;
    // Not an assertion: it only lets the server read `.<CR>` on its own before the LF.
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.send(b"\n").await;
    expect_status(&mut client, 250, "2.0.0").await;
    client.quit().await;
    let got = sink.wait_for(1, SINK_WAIT).await;
    assert!(got[0].data.ends_with(&exact));
}

/// Far larger than the read buffer and the storage chunks: nothing is lost, doubled or
/// unstuffed wrongly where the pieces meet.
#[tokio::test]
async fn large_message_arrives_byte_for_byte() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut message = b"Subject: large\r\n\r\n".to_vec();
    let mut n: usize = 0;
    while message.len() < 1024 * 1024 {
        n += 1;
        // Lines of many lengths, some starting with a dot, some of dots only.
        match n % 7 {
            0 => message.extend_from_slice(b".\r\n"),
            1 => message.extend_from_slice(b"..\r\n"),
            2 => message.extend_from_slice(format!(".line {n}\r\n").as_bytes()),
            _ => {
                let len = (n * 37) % 900;
                message.extend(std::iter::repeat_n(b'a' + (n % 26) as u8, len));
                message.extend_from_slice(b"\r\n");
            }
        }
    }
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail("alice@example.com", &["bob@example.org"], &message)
        .await;
    assert_eq!((reply.code, reply.status()), (250, "2.0.0"), "{reply:?}");
    client.quit().await;
    let got = sink.wait_for(1, SINK_WAIT).await;
    let (_, rest) = support::split_received(&got[0].data);
    assert_eq!(rest.len(), message.len());
    assert!(rest == message, "the message changed on the way");
}

#[tokio::test]
async fn mail_size_over_the_limit_gets_552() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "[limits]\nmax_message_size = \"10KiB\"\n").await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(
        &mut client,
        "MAIL FROM:<alice@example.com> SIZE=10241",
        552,
        "5.3.4",
    )
    .await;
    check(
        &mut client,
        "MAIL FROM:<alice@example.com> SIZE=999999999999",
        552,
        "5.3.4",
    )
    .await;
    // No transaction was started by either.
    check(&mut client, "RCPT TO:<bob@example.org>", 503, "5.5.1").await;
    check(
        &mut client,
        "MAIL FROM:<alice@example.com> SIZE=10240",
        250,
        "2.1.0",
    )
    .await;
    check(&mut client, "RCPT TO:<bob@example.org>", 250, "2.1.5").await;
    data_accepted(&mut client, MESSAGE).await;
    client.quit().await;
    sink.wait_for(1, SINK_WAIT).await;
}

#[tokio::test]
async fn too_many_recipients_get_452_and_are_not_errors() {
    let sink = Sink::start().await;
    // max_errors = 2: were 452 counted as an error, this session would be dropped.
    let (_dir, gw) = gateway_to(&sink, "[limits]\nmax_recipients = 3\nmax_errors = 2\n").await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    for i in 1..=3 {
        check(
            &mut client,
            &format!("RCPT TO:<r{i}@example.org>"),
            250,
            "2.1.5",
        )
        .await;
    }
    for i in 4..=7 {
        check(
            &mut client,
            &format!("RCPT TO:<r{i}@example.org>"),
            452,
            "4.5.3",
        )
        .await;
    }
    data_accepted(&mut client, MESSAGE).await;

    // The client sends the rest in a second transaction, as RFC 5321 §4.5.3.1.10 expects.
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    for i in 4..=6 {
        check(
            &mut client,
            &format!("RCPT TO:<r{i}@example.org>"),
            250,
            "2.1.5",
        )
        .await;
    }
    check(&mut client, "RCPT TO:<r7@example.org>", 452, "4.5.3").await;
    data_accepted(&mut client, MESSAGE).await;
    client.quit().await;

    let got = sink.wait_for(2, SINK_WAIT).await;
    let mut batches: Vec<Vec<String>> = got.iter().map(|r| r.recipients.clone()).collect();
    batches.sort();
    assert_eq!(
        batches,
        [
            ["r1@example.org", "r2@example.org", "r3@example.org"],
            ["r4@example.org", "r5@example.org", "r6@example.org"],
        ]
    );
}

#[tokio::test]
async fn long_command_line_gets_500_and_the_session_goes_on() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "[limits]\nmax_line_length = 512\n").await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;

    // 512 bytes with the CRLF is allowed, 513 is not.
    let at_limit = format!("NOOP {}", "x".repeat(512 - 7));
    check(&mut client, &at_limit, 250, "2.0.0").await;
    let over = format!("NOOP {}", "x".repeat(512 - 6));
    check(&mut client, &over, 500, "5.5.2").await;

    // Far longer than any read buffer, and looking like a command at its end.
    let huge = format!("MAIL FROM:<{}@example.com>", "a".repeat(100_000));
    check(&mut client, &huge, 500, "5.5.2").await;
    // The skipped line left nothing behind: no transaction, and the session works.
    check(&mut client, "RCPT TO:<bob@example.org>", 503, "5.5.1").await;
    start_data(&mut client).await;
    client.send(dot_stuff(MESSAGE)).await;
    expect_status(&mut client, 250, "2.0.0").await;
    client.quit().await;
    sink.wait_for(1, SINK_WAIT).await;
}

#[tokio::test]
async fn too_many_errors_get_421_and_close() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "[limits]\nmax_errors = 3\n").await;
    let mut client = Client::connect(gw.outbound).await;
    check(&mut client, "XYZZY", 500, "5.5.1").await;
    check(&mut client, "NOOP", 250, "2.0.0").await;
    check(&mut client, "MAIL FROM:<alice@example.com>", 503, "5.5.1").await;
    check(&mut client, "PLUGH", 500, "5.5.1").await;
    let reply = client.reply().await;
    assert_eq!((reply.code, reply.status()), (421, "4.7.0"), "{reply:?}");
    assert!(client.is_closed().await);

    // A fresh connection starts counting from zero.
    let mut client = Client::connect(gw.outbound).await;
    check(&mut client, "XYZZY", 500, "5.5.1").await;
    check(&mut client, "XYZZY", 500, "5.5.1").await;
    let reply = client
        .send_mail("alice@example.com", &["bob@example.org"], MESSAGE)
        .await;
    assert_eq!((reply.code, reply.status()), (250, "2.0.0"), "{reply:?}");
    client.quit().await;
}

#[tokio::test]
async fn idle_client_gets_421_and_is_closed() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "[limits]\nidle_timeout = \"1s\"\n").await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    let silent_since = Instant::now();
    let reply = client.reply().await;
    let waited = silent_since.elapsed();
    assert_eq!((reply.code, reply.status()), (421, "4.4.2"), "{reply:?}");
    assert!(
        waited >= Duration::from_millis(900),
        "too early: {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "too late: {waited:?}");
    assert!(client.is_closed().await);

    // Also in the middle of a transaction, and before any command at all.
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    expect_status(&mut client, 421, "4.4.2").await;
    assert!(client.is_closed().await);
    let mut client = Client::connect(gw.inbound).await;
    expect_status(&mut client, 421, "4.4.2").await;
    assert!(client.is_closed().await);
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn data_timeout_gets_421_and_nothing_is_delivered() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(
        &sink,
        "[limits]\ndata_timeout = \"1s\"\nidle_timeout = \"30s\"\n",
    )
    .await;
    let stream = TcpStream::connect(gw.outbound).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write
        .write_all(b"EHLO client.test\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        .await
        .unwrap();
    let mut line = String::new();
    while !line.starts_with("354 ") {
        line.clear();
        let n = tokio::time::timeout(Duration::from_secs(10), read.read_line(&mut line))
            .await
            .expect("354 within 10 s")
            .unwrap();
        assert_ne!(n, 0, "closed before 354");
    }
    let started = Instant::now();
    // A client that keeps trickling still runs out: the limit is on the whole DATA
    // phase, not on each read.
    let trickle = tokio::spawn(async move {
        let mut n = 0;
        while write
            .write_all(format!("line {n}\r\n").as_bytes())
            .await
            .is_ok()
            && n < 100
        {
            n += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    line.clear();
    tokio::time::timeout(Duration::from_secs(10), read.read_line(&mut line))
        .await
        .expect("a reply within 10 s")
        .unwrap();
    let waited = started.elapsed();
    assert!(line.starts_with("421 4.4.2 "), "{line:?}");
    assert!(
        waited < Duration::from_secs(5),
        "DATA was cut by something else: {waited:?}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "not closed: {rest:?}"
    );
    trickle.abort();
    assert!(sink.received().is_empty());
}

/// Connects and reads the first reply, whatever it is.
async fn first_reply(addr: SocketAddr) -> (Client, Reply) {
    let mut client = Client::connect_raw(addr).await;
    let reply = client.reply().await;
    (client, reply)
}

#[tokio::test]
async fn connections_over_max_connections_get_421_at_once() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "[limits]\nmax_connections = 2\n").await;
    // The limit is per listener.
    let first = Client::connect(gw.outbound).await;
    let mut second = Client::connect(gw.outbound).await;
    let (mut third, reply) = first_reply(gw.outbound).await;
    assert_eq!((reply.code, reply.status()), (421, "4.3.2"), "{reply:?}");
    assert!(third.is_closed().await);
    // The two admitted sessions are unaffected, and the other listener has its own.
    check(&mut second, "NOOP", 250, "2.0.0").await;
    let inbound = Client::connect(gw.inbound).await;
    inbound.quit().await;

    // A slot comes free when a session ends.
    first.quit().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        let (client, reply) = first_reply(gw.outbound).await;
        if reply.code == 220 {
            break client;
        }
        assert_eq!((reply.code, reply.status()), (421, "4.3.2"), "{reply:?}");
        assert!(Instant::now() < deadline, "no slot freed within 10 s");
        // Polled: a freed slot shows only to the next connection.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reply = client
        .send_mail("alice@example.com", &["bob@example.org"], MESSAGE)
        .await;
    assert_eq!((reply.code, reply.status()), (250, "2.0.0"), "{reply:?}");
    client.quit().await;
    second.quit().await;
    sink.wait_for(1, SINK_WAIT).await;
}

/// A client that sends commands but never reads the replies must not keep its
/// connection slot past the idle timeout.
#[tokio::test]
async fn client_that_never_reads_loses_its_slot_at_the_idle_timeout() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(
        &sink,
        "[limits]\nmax_connections = 1\nidle_timeout = \"1s\"\n",
    )
    .await;
    // A small receive window, so that the replies back up quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stalled = socket.connect(gw.outbound).await.unwrap();
    let (_unread, mut write) = stalled.into_split();
    let flood = tokio::spawn(async move {
        let batch = b"NOOP\r\n".repeat(10_000);
        // Ends when the server stops reading (write blocks) or hangs up (write fails).
        while write.write_all(&batch).await.is_ok() {}
    });

    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    loop {
        let (client, reply) = first_reply(gw.outbound).await;
        if reply.code == 220 {
            client.quit().await;
            break;
        }
        assert_eq!((reply.code, reply.status()), (421, "4.3.2"), "{reply:?}");
        assert!(
            Instant::now() < deadline,
            "the slot is still held {:?} after a 1 s idle timeout",
            started.elapsed()
        );
        // Polled: a freed slot shows only to the next connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    flood.abort();
}
