//! The circuit breaker in front of an SMTP next hop, over real sockets: a next hop that
//! fails is left alone for a while, new transactions get `451 4.4.1` at once without a
//! connection, one probe at a time finds out whether it is back, and the spool's
//! retrier waits for it too.
//!
//! The next hop here is a loopback listener the test controls (see [`NextHop`]): it
//! counts the connections the gateway makes, which is what proves that a resting next
//! hop gets none. A test that waits for a rest to end runs the gateway on its own
//! runtime (`support::start_here`) and jumps over the rest on tokio's clock
//! (`support::jump`): the rests are the default minutes, so no transaction can race
//! the end of one, and no test sleeps through one. The breaker's timing to the minute
//! is unit-tested in `src/relay/breaker.rs`.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{
    Client, Gateway, LocalGateway, Reply, Sink, config_text, jump, retry_passes, spool_drained,
    start, start_here, testdata,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the next hop does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Passes it on to the sink: the next hop works.
    Up,
    /// Closes it at once, as a crashed server behind a load balancer would.
    HangUp,
    /// Says `421` and closes it.
    Busy,
    /// Holds it without a word until the mode changes, then does what that says.
    Stall,
}

/// A next hop in front of a [`Sink`] that can be told to fail. Leaving `Up` also
/// closes the connections it passes on, so that the gateway's pooled ones fail too.
struct NextHop {
    addr: SocketAddr,
    /// Connections the gateway made.
    accepted: watch::Sender<usize>,
    mode: watch::Sender<Mode>,
}

impl NextHop {
    async fn start(sink: &Sink, mode: Mode) -> NextHop {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hop = NextHop {
            addr: listener.local_addr().unwrap(),
            accepted: watch::Sender::default(),
            mode: watch::channel(mode).0,
        };
        let (accepted, modes, sink) = (hop.accepted.clone(), hop.mode.clone(), sink.addr);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.send_modify(|n| *n += 1);
                tokio::spawn(serve(stream, modes.subscribe(), sink));
            }
        });
        hop
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    fn accepted(&self) -> usize {
        *self.accepted.borrow()
    }

    /// Waits until the gateway has made `count` connections, or panics after 10 s.
    async fn wait_for_connections(&self, count: usize) {
        let mut accepted = self.accepted.subscribe();
        let made = accepted.wait_for(|n| *n >= count);
        if tokio::time::timeout(Duration::from_secs(10), made)
            .await
            .is_err()
        {
            panic!("expected {count} connections, got {}", self.accepted());
        }
    }
}

async fn serve(mut stream: TcpStream, mut modes: watch::Receiver<Mode>, sink: SocketAddr) {
    let mut mode = *modes.borrow_and_update();
    if mode == Mode::Stall {
        mode = match modes.wait_for(|m| *m != Mode::Stall).await {
            Ok(m) => *m,
            Err(_) => return,
        };
    }
    match mode {
        Mode::Up => {
            let Ok(mut upstream) = TcpStream::connect(sink).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream) => {}
                _ = modes.wait_for(|m| *m != Mode::Up) => {}
            }
        }
        Mode::Busy => {
            use tokio::io::AsyncWriteExt;
            let _ = stream
                .write_all(b"421 4.3.2 hop.test busy, closing\r\n")
                .await;
        }
        Mode::HangUp | Mode::Stall => {}
    }
}

/// The rest after a first failure, `[relay] first_probe`: the default, 1 minute.
const FIRST_PROBE: Duration = Duration::from_secs(60);

/// A gateway relaying both directions to `hop`, with `extra` config.
async fn gateway_via(hop: &NextHop, extra: &str) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&dir.path().join("data"), &hop.addr.to_string(), extra);
    let gateway = start(&text).await;
    (dir, gateway)
}

/// As [`gateway_via`], on the test's runtime, so that [`jump`] moves its clock too.
async fn gateway_here(hop: &NextHop, extra: &str) -> (tempfile::TempDir, LocalGateway) {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&dir.path().join("data"), &hop.addr.to_string(), extra);
    let gateway = start_here(&text).await;
    (dir, gateway)
}

/// One outbound transaction to the gateway listening on `outbound`, on a connection
/// of its own; returns the reply to DATA.
async fn send(outbound: SocketAddr) -> Reply {
    let mut client = Client::connect(outbound).await;
    let reply = client
        .send_mail("a@example.com", &["b@example.org"], &testdata("plain.eml"))
        .await;
    client.quit().await;
    reply
}

/// Asserts that `reply` is the breaker's `451 4.4.1`, naming `minutes`.
fn assert_resting(reply: &Reply, minutes: &str) {
    assert_eq!((reply.code, reply.status()), (451, "4.4.1"), "{reply:?}");
    let expected = format!("4.4.1 next hop unavailable; try again in {minutes}");
    assert_eq!(reply.text, expected);
}

/// Asserts that `reply` is the `451 4.4.1` of a failed attempt (not of a rest).
fn assert_failed(reply: &Reply) {
    assert_eq!((reply.code, reply.status()), (451, "4.4.1"), "{reply:?}");
    assert!(
        reply.text.starts_with("4.4.1 next hop unavailable: "),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_next_hop_that_fails_is_left_alone_and_transactions_get_451_at_once() {
    let sink = Sink::start().await;
    let hop = NextHop::start(&sink, Mode::HangUp).await;
    // The defaults: a first probe after 1 minute.
    let (_dir, gw) = gateway_via(&hop, "").await;

    assert_failed(&send(gw.outbound).await);
    assert_eq!(hop.accepted(), 1);
    for _ in 0..3 {
        assert_resting(&send(gw.outbound).await, "1 minute");
    }
    assert_eq!(hop.accepted(), 1, "no connection to a resting next hop");
    assert!(gw.spool.is_empty(), "a refused message must not be spooled");
}

#[tokio::test]
async fn a_next_hop_that_comes_back_is_used_again_after_a_successful_probe() {
    let sink = Sink::start().await;
    let hop = NextHop::start(&sink, Mode::Busy).await;
    let (_dir, gw) = gateway_here(&hop, "").await;

    let reply = send(gw.outbound).await;
    assert_eq!(
        (reply.code, reply.status()),
        (421, "4.3.2"),
        "the next hop's own reply: {reply:?}"
    );
    assert_resting(&send(gw.outbound).await, "1 minute");
    assert_eq!(hop.accepted(), 1);

    hop.set(Mode::Up);
    jump(FIRST_PROBE).await;
    assert_eq!(send(gw.outbound).await.code, 250, "the probe goes through");
    assert_eq!(hop.accepted(), 2);
    assert_eq!(send(gw.outbound).await.code, 250, "the mark is cleared");
    assert_eq!(sink.wait_for(2, Duration::from_secs(5)).await.len(), 2);
}

#[tokio::test]
async fn a_failed_probe_leaves_the_next_hop_alone_for_retry_after() {
    let sink = Sink::start().await;
    let hop = NextHop::start(&sink, Mode::HangUp).await;
    let (_dir, gw) = gateway_here(&hop, "[relay]\nretry_after = \"2m\"\n").await;

    assert_failed(&send(gw.outbound).await);
    jump(FIRST_PROBE).await;
    assert_failed(&send(gw.outbound).await);
    assert_eq!(hop.accepted(), 2, "the probe tried");
    assert_resting(&send(gw.outbound).await, "2 minutes");
    assert_eq!(hop.accepted(), 2);
}

#[tokio::test]
async fn while_one_transaction_probes_the_others_get_451_at_once() {
    let sink = Sink::start().await;
    let hop = NextHop::start(&sink, Mode::HangUp).await;
    let (_dir, gw) = gateway_here(&hop, "").await;

    assert_failed(&send(gw.outbound).await);
    hop.set(Mode::Stall);
    jump(FIRST_PROBE).await;
    let addr = gw.outbound;
    let probe = tokio::spawn(async move {
        let mut client = Client::connect(addr).await;
        let reply = client
            .send_mail("a@example.com", &["b@example.org"], &testdata("plain.eml"))
            .await;
        client.quit().await;
        reply
    });
    hop.wait_for_connections(2).await;

    // The probe is in flight: everyone else is told to come back, and nothing more
    // reaches the next hop.
    for _ in 0..3 {
        assert_resting(&send(addr).await, "1 minute");
    }
    assert_eq!(hop.accepted(), 2);

    hop.set(Mode::Up);
    let reply = probe.await.unwrap();
    assert_eq!(reply.code, 250, "the probe's result decides: {reply:?}");
    assert_eq!(send(addr).await.code, 250);
    assert_eq!(sink.wait_for(2, Duration::from_secs(5)).await.len(), 2);
}

#[tokio::test]
async fn the_spool_retrier_leaves_a_resting_next_hop_alone() {
    let sink = Sink::start().await;
    let refusing = Arc::new(AtomicBool::new(true));
    let flag = refusing.clone();
    sink.set(move |b| {
        b.rcpt_reply = Arc::new(move |rcpt: &str| {
            if rcpt == "refused@example.org" && flag.load(Ordering::SeqCst) {
                "451 4.2.0 mailbox busy".into()
            } else {
                "250 2.1.5 OK".into()
            }
        })
    });
    let hop = NextHop::start(&sink, Mode::Up).await;
    let dir = tempfile::tempdir().unwrap();
    // Passes every 50 ms and retries every 100 ms at most: many passes fall into the
    // rest (of the default minute).
    let text = support::split_config_text(dir.path(), &hop.addr.to_string(), "")
        .replace("first_retry = \"200ms\"", "first_retry = \"50ms\"")
        .replace("max_retry = \"1s\"", "max_retry = \"100ms\"");
    let gw = start_here(&text).await;

    // A refused recipient is the next hop answering, not failing: the copy is spooled.
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
    assert_eq!(gw.spool.len(), 1);

    // The next hop goes down; the retrier's next attempt marks it.
    hop.set(Mode::HangUp);
    let deadline = Instant::now() + Duration::from_secs(10);
    let entry = loop {
        let entry = gw.spool.entries().pop().expect("the entry is held").1;
        if entry
            .last_reply
            .as_deref()
            .is_some_and(|r| r.contains("next hop unavailable:"))
        {
            break entry;
        }
        assert!(
            Instant::now() < deadline,
            "the retrier never failed: {entry:?}"
        );
        retry_passes(&gw.spool, 1).await;
    };
    let connections = hop.accepted();

    // While it rests, the due entry is skipped: no connection, no attempt counted. It
    // falls due on the wall clock (the spool's, which tokio cannot move) within 100 ms;
    // then a whole pass must have left it alone.
    while sealgate::spool::now_ms() < entry.next_attempt_ms {
        retry_passes(&gw.spool, 1).await;
    }
    retry_passes(&gw.spool, 2).await;
    let (_, waiting) = gw.spool.entries().pop().expect("still held");
    assert!(
        waiting.next_attempt_ms <= sealgate::spool::now_ms(),
        "the entry was due during the rest"
    );
    assert_eq!(waiting.attempts, entry.attempts, "no attempt counted");
    assert_eq!(waiting.last_reply, entry.last_reply);
    assert_eq!(hop.accepted(), connections, "no connection while resting");

    // After the rest, one probe delivers it.
    refusing.store(false, Ordering::SeqCst);
    hop.set(Mode::Up);
    jump(FIRST_PROBE).await;
    let got = sink.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].recipients, ["refused@example.org"]);
    assert_eq!(
        hop.accepted(),
        connections + 1,
        "one connection for the probe"
    );
    spool_drained(&gw.spool).await;
}

#[tokio::test]
async fn both_directions_share_the_breaker_of_one_next_hop() {
    use sealgate::config::{NextHop as Hop, RelayConfig};
    use sealgate::mail::Direction;
    use sealgate::relay::{Outgoing, Relays};

    let sink = Sink::start().await;
    let hop = NextHop::start(&sink, Mode::HangUp).await;
    let next_hop = Hop::Smtp(hop.addr.to_string());
    let relays = Relays::new(
        next_hop.clone(),
        next_hop,
        &RelayConfig::default(),
        "gw.test",
    );
    let tx = Outgoing {
        mail_from: "a@example.com".into(),
        params: Default::default(),
        recipients: vec!["b@example.org".into()],
        message: sealgate::mail::message::Message::new(testdata("plain.eml")),
        id: "shared".into(),
    };

    let failed = relays.get(Direction::Outbound).deliver(&tx).await;
    assert_eq!(failed.reply.code, 451, "{}", failed.reply);
    let resting = relays.get(Direction::Inbound).deliver(&tx).await;
    assert_eq!(
        resting.reply.to_string(),
        "451 4.4.1 next hop unavailable; try again in 1 minute"
    );
    assert_eq!(hop.accepted(), 1, "the other direction made no connection");
    assert!(relays.get(Direction::Inbound).resting().is_some());
}
