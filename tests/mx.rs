//! Outbound delivery by MX lookup (`next_hop = "mx"`) over real sockets: a loopback DNS
//! server holds the recipient domains, and every MX host listens on `[relay] mx_port`
//! of its own loopback address (127.0.0.1 takes mail, 127.0.0.2 and 127.0.0.3 are
//! down or missing).

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use support::dns::{DnsServer, Fault, Zone};
use support::{Client, Gateway, Sink, expect_status};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const MESSAGE: &[u8] =
    b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nHello.\r\n";

const UP: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Nothing listens here unless a test puts a host that is down there.
const DOWN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const DOWN_TOO: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// A gateway whose outbound next hop is "mx", asking `dns`, with MX hosts on `mx_port`.
struct MxGateway {
    gw: Gateway,
    _dir: tempfile::TempDir,
    _dns: DnsServer,
}

async fn mx_gateway(dns: DnsServer, mx_port: u16) -> MxGateway {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&dir.path().join("data"), dns.addr, mx_port);
    MxGateway {
        gw: support::start(&text).await,
        _dir: dir,
        _dns: dns,
    }
}

fn config_text(data_dir: &Path, nameserver: SocketAddr, mx_port: u16) -> String {
    format!(
        r#"
data_dir = "{data}"
internal_domains = ["example.com"]
hostname = "gw.test"

[inbound]
listen = "127.0.0.1:0"
next_hop = "dir:{data}/delivered/inbound"

[outbound]
listen = "127.0.0.1:0"
next_hop = "mx"
allowed_clients = ["127.0.0.0/8"]

[lookup]
nameservers = ["{nameserver}"]
timeout = "2s"

[relay]
mx_port = {mx_port}
connect_timeout = "2s"
command_timeout = "5s"

[spool]
first_retry = "200ms"
max_retry = "1s"
"#,
        data = data_dir.display()
    )
}

/// Sends MESSAGE from alice@example.com to `to` and returns the reply to the final dot.
async fn send(gw: &Gateway, to: &[&str]) -> support::Reply {
    let mut client = Client::connect(gw.outbound).await;
    let reply = client.send_mail("alice@example.com", to, MESSAGE).await;
    client.quit().await;
    reply
}

/// `domain` with MX hosts `mx<i>.<domain>` at these preferences and addresses.
fn zone_with_mx(domain: &str, hosts: &[(u16, Ipv4Addr)]) -> Zone {
    let mut zone = Zone::new(domain);
    for (i, (preference, address)) in hosts.iter().enumerate() {
        let host = format!("mx{}.{domain}", i + 1);
        zone = zone.mx(domain, *preference, &host).a(&host, *address);
    }
    zone
}

#[tokio::test]
async fn mx_delivery_follows_preference_order_when_the_first_host_is_down() {
    let sink = Sink::start().await;
    let zone = zone_with_mx("pref.example", &[(10, DOWN), (20, UP)]);
    let dns = DnsServer::start(vec![zone]).await;
    let mx = mx_gateway(dns, sink.addr.port()).await;

    let reply = send(&mx.gw, &["bob@pref.example"]).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    // The reply waited for the MX: the sink had the message before the client heard.
    let got = sink.received();
    assert_eq!(got.len(), 1, "delivered before the 250");
    assert_eq!(got[0].recipients, ["bob@pref.example"]);
    assert_eq!(got[0].mail_from, "alice@example.com");
    // Nothing was held for a later try, so no other copy can follow: after the 250,
    // only the spool's retrier could still send one.
    assert!(mx.gw.spool.is_empty(), "nothing spooled");
    assert_eq!(sink.received().len(), 1, "exactly one copy");
}

#[tokio::test]
async fn implicit_mx_delivers_to_the_domain_address() {
    let sink = Sink::start().await;
    let zone = Zone::new("implicit.example").a("implicit.example", UP);
    let dns = DnsServer::start(vec![zone]).await;
    let mx = mx_gateway(dns, sink.addr.port()).await;

    let reply = send(&mx.gw, &["bob@implicit.example"]).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(sink.received()[0].recipients, ["bob@implicit.example"]);
}

#[tokio::test]
async fn null_mx_is_refused_with_5_1_10_at_data() {
    let sink = Sink::start().await;
    let zone = Zone::new("nullmx.example").mx("nullmx.example", 0, ".");
    let dns = DnsServer::start(vec![zone]).await;
    let mx = mx_gateway(dns, sink.addr.port()).await;

    let mut client = Client::connect(mx.gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    client
        .cmd_expect("MAIL FROM:<alice@example.com>", 250)
        .await;
    client.cmd_expect("RCPT TO:<bob@nullmx.example>", 250).await;
    client.cmd_expect("DATA", 354).await;
    client.send(support::dot_stuff(MESSAGE)).await;
    let reply = expect_status(&mut client, 550, "5.1.10").await;
    assert!(reply.text.contains("null MX"), "{reply:?}");
    assert_eq!(sink.connections(), 0);
}

#[tokio::test]
async fn a_domain_that_does_not_exist_is_refused_with_5_1_2() {
    let sink = Sink::start().await;
    let zone = Zone::new("real.example").a("real.example", UP);
    let dns = DnsServer::start(vec![zone]).await;
    let mx = mx_gateway(dns, sink.addr.port()).await;

    let reply = send(&mx.gw, &["bob@nowhere.real.example"]).await;
    assert_eq!((reply.code, reply.status()), (550, "5.1.2"), "{reply:?}");
    assert!(reply.text.contains("does not exist"), "{reply:?}");
}

#[tokio::test]
async fn servfail_defers_with_4_4_3() {
    let sink = Sink::start().await;
    let zone = zone_with_mx("broken.example", &[(10, UP)]);
    let dns = DnsServer::start(vec![zone]).await;
    dns.fault("broken.example", Fault::ServFail);
    let mx = mx_gateway(dns, sink.addr.port()).await;

    let reply = send(&mx.gw, &["bob@broken.example"]).await;
    assert_eq!((reply.code, reply.status()), (451, "4.4.3"), "{reply:?}");
    assert!(reply.text.contains("broken.example"), "{reply:?}");
    assert_eq!(sink.connections(), 0);
}

#[tokio::test]
async fn recipients_in_two_domains_make_two_transactions() {
    let sink = Sink::start().await;
    let one = zone_with_mx("one.example", &[(10, UP)]);
    let two = zone_with_mx("two.example", &[(10, UP)]);
    let dns = DnsServer::start(vec![one, two]).await;
    let mx = mx_gateway(dns, sink.addr.port()).await;

    let to = ["a@one.example", "b@two.example", "c@One.Example"];
    let reply = send(&mx.gw, &to).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let mut transactions: Vec<Vec<String>> =
        sink.received().into_iter().map(|r| r.recipients).collect();
    transactions.sort();
    assert_eq!(
        transactions,
        [
            vec!["a@one.example", "c@One.Example"],
            vec!["b@two.example"]
        ]
    );
}

/// A host that is down in the way that marks its circuit breaker: it takes each
/// connection and drops it at once. It counts the connections.
struct DownHost {
    connections: Arc<AtomicUsize>,
}

impl DownHost {
    async fn start(addr: SocketAddr) -> DownHost {
        let listener = TcpListener::bind(addr).await.expect("bind the down host");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        DownHost { connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_down_mx_host_is_skipped_without_a_connection_while_it_rests() {
    let sink = Sink::start().await;
    let down = DownHost::start(SocketAddr::new(DOWN.into(), sink.addr.port())).await;
    let zone = zone_with_mx("rest.example", &[(10, DOWN), (20, UP)]);
    let dns = DnsServer::start(vec![zone]).await;
    let mx = mx_gateway(dns, sink.addr.port()).await;

    let reply = send(&mx.gw, &["bob@rest.example"]).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(down.connections(), 1);

    let reply = send(&mx.gw, &["carol@rest.example"]).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(down.connections(), 1, "the resting host got no connection");
    assert_eq!(sink.received().len(), 2);
}

#[tokio::test]
async fn when_every_mx_host_rests_the_reply_says_when_it_will_be_retried() {
    // MX hosts share one port, mx_port. Held on 127.0.0.1 for the whole test, so that
    // no other test's sink, and so no other test's MX host, can have it.
    let reserved = TcpListener::bind((UP, 0)).await.unwrap();
    let port = reserved.local_addr().unwrap().port();
    let first = DownHost::start(SocketAddr::new(DOWN.into(), port)).await;
    let second = DownHost::start(SocketAddr::new(DOWN_TOO.into(), port)).await;
    let zone = zone_with_mx("dead.example", &[(10, DOWN), (20, DOWN_TOO)]);
    let dns = DnsServer::start(vec![zone]).await;
    let mx = mx_gateway(dns, port).await;

    let reply = send(&mx.gw, &["bob@dead.example"]).await;
    assert_eq!((reply.code, reply.status()), (451, "4.4.1"), "{reply:?}");
    assert!(reply.text.contains("mx2.dead.example"), "{reply:?}");
    assert_eq!((first.connections(), second.connections()), (1, 1));

    let reply = send(&mx.gw, &["bob@dead.example"]).await;
    assert_eq!(
        reply.text, "4.4.1 next hop unavailable; try again in 1 minute",
        "{reply:?}"
    );
    assert_eq!(reply.code, 451);
    assert_eq!(
        (first.connections(), second.connections()),
        (1, 1),
        "no connection while every host rests"
    );
}

/// One transaction a [`TlsSink`] took.
#[derive(Debug, Clone)]
struct Taken {
    recipients: Vec<String>,
    /// It came after STARTTLS.
    tls: bool,
}

/// An MX host that offers STARTTLS, with a self-signed certificate for a name that is
/// not its own (as many real MX hosts have). With `break_handshake`, it answers the
/// client's TLS hello with bytes that are not TLS, and hangs up.
struct TlsSink {
    addr: SocketAddr,
    taken: Arc<Mutex<Vec<Taken>>>,
    connections: Arc<AtomicUsize>,
}

/// How a plaintext part of a session ended.
enum Ended {
    StartTls,
    Closed,
}

impl TlsSink {
    async fn start(break_handshake: bool) -> TlsSink {
        let certified =
            rcgen::generate_simple_self_signed(vec!["some-other-name.test".into()]).unwrap();
        let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![certified.cert.der().clone()],
            PrivateKeyDer::Pkcs8(key),
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((UP, 0)).await.unwrap();
        let sink = TlsSink {
            addr: listener.local_addr().unwrap(),
            taken: Arc::default(),
            connections: Arc::default(),
        };
        let (taken, connections) = (sink.taken.clone(), sink.connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, taken) = (acceptor.clone(), taken.clone());
                tokio::spawn(async move {
                    let _ = session(stream, acceptor, break_handshake, taken).await;
                });
            }
        });
        sink
    }

    fn taken(&self) -> Vec<Taken> {
        self.taken.lock().unwrap().clone()
    }
}

async fn session(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    break_handshake: bool,
    taken: Arc<Mutex<Vec<Taken>>>,
) -> std::io::Result<()> {
    let mut plain = BufReader::new(stream);
    plain
        .get_mut()
        .write_all(b"220 tls-sink.test ESMTP\r\n")
        .await?;
    if let Ended::Closed = converse(&mut plain, false, &taken).await? {
        return Ok(());
    }
    let mut stream = plain.into_inner();
    if break_handshake {
        let mut hello = [0u8; 1];
        stream.read_exact(&mut hello).await?;
        stream.write_all(b"this is not TLS\r\n").await?;
        return Ok(());
    }
    let mut tls = BufReader::new(acceptor.accept(stream).await?);
    converse(&mut tls, true, &taken).await?;
    Ok(())
}

/// SMTP in lock-step (no PIPELINING), STARTTLS offered until TLS is on.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    tls: bool,
    taken: &Mutex<Vec<Taken>>,
) -> std::io::Result<Ended> {
    let mut recipients = Vec::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(Ended::Closed);
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") {
            let starttls = if tls { "" } else { "\r\n250-STARTTLS" };
            format!("250-tls-sink.test{starttls}\r\n250 8BITMIME")
        } else if upper == "STARTTLS" && !tls {
            stream
                .write_all(b"220 2.0.0 ready to start TLS\r\n")
                .await?;
            stream.flush().await?;
            return Ok(Ended::StartTls);
        } else if upper.starts_with("MAIL FROM:") {
            recipients.clear();
            "250 2.1.0 OK".into()
        } else if upper.starts_with("RCPT TO:") {
            let start = command.find('<').map_or(0, |i| i + 1);
            let end = command.rfind('>').unwrap_or(command.len());
            recipients.push(command[start..end].to_string());
            "250 2.1.5 OK".into()
        } else if upper == "DATA" {
            stream.write_all(b"354 go ahead\r\n").await?;
            stream.flush().await?;
            loop {
                line.clear();
                if stream.read_line(&mut line).await? == 0 {
                    return Ok(Ended::Closed);
                }
                if line == ".\r\n" {
                    break;
                }
            }
            taken.lock().unwrap().push(Taken {
                recipients: std::mem::take(&mut recipients),
                tls,
            });
            "250 2.0.0 queued".into()
        } else if upper == "QUIT" {
            stream.write_all(b"221 2.0.0 bye\r\n").await?;
            stream.flush().await?;
            return Ok(Ended::Closed);
        } else {
            "250 2.0.0 OK".into()
        };
        stream.write_all(format!("{reply}\r\n").as_bytes()).await?;
        stream.flush().await?;
    }
}

#[tokio::test]
async fn starttls_is_used_when_the_mx_offers_it() {
    let sink = TlsSink::start(false).await;
    let zone = zone_with_mx("tls.example", &[(10, UP)]);
    let dns = DnsServer::start(vec![zone]).await;
    let mx = mx_gateway(dns, sink.addr.port()).await;

    let reply = send(&mx.gw, &["bob@tls.example"]).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let taken = sink.taken();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].recipients, ["bob@tls.example"]);
    assert!(taken[0].tls, "the transaction went over TLS");
}

#[tokio::test]
async fn a_failed_tls_handshake_is_retried_once_without_tls() {
    let sink = TlsSink::start(true).await;
    let zone = zone_with_mx("badtls.example", &[(10, UP)]);
    let dns = DnsServer::start(vec![zone]).await;
    let mx = mx_gateway(dns, sink.addr.port()).await;

    let reply = send(&mx.gw, &["bob@badtls.example"]).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let taken = sink.taken();
    assert_eq!(taken.len(), 1);
    assert!(!taken[0].tls, "the retry went in the clear");
    assert_eq!(sink.connections.load(Ordering::SeqCst), 2);
}
