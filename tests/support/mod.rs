//! Shared helpers for the end-to-end tests: a gateway on ephemeral loopback ports, an
//! SMTP next hop (see `sink.rs`), and a raw SMTP client that asserts replies.
#![allow(dead_code)]

pub mod cli;
pub mod dns;
pub mod keys;
pub mod log;
pub mod postgres;
pub mod sink;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sealgate::config::Config;
use sealgate::mail::Direction;
use sealgate::server::{Server, StartError};
use sealgate::store::DbError;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(unused_imports)]
pub use sink::{Behaviour, Received, Sink};

/// A sample message from `testdata/`.
pub fn testdata(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A running gateway. It runs on a thread and tokio runtime of its own, so that
/// [`Gateway::crash`] can kill it the way a process dies: every task dropped where it
/// stands. Dropping the value crashes it too.
pub struct Gateway {
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    /// The data_dir (inside a temp dir that lives as long as the test keeps it).
    pub data_dir: PathBuf,
    pub spool: sealgate::spool::Spool,
    graceful: Option<oneshot::Sender<()>>,
    crash: Option<oneshot::Sender<()>>,
    finished: Option<oneshot::Receiver<()>>,
}

impl Gateway {
    pub fn addr(&self, direction: Direction) -> SocketAddr {
        match direction {
            Direction::Inbound => self.inbound,
            Direction::Outbound => self.outbound,
        }
    }

    /// Graceful shutdown, as on SIGTERM; returns when the server has finished.
    pub async fn stop(mut self) {
        self.begin_stop().await.expect("server finished");
    }

    /// Asks for a graceful shutdown and returns at once; the handle completes when the
    /// server has finished.
    pub fn begin_stop(&mut self) -> JoinHandle<()> {
        if let Some(tx) = self.graceful.take() {
            let _ = tx.send(());
        }
        let finished = self.finished.take().expect("server still running");
        tokio::spawn(async move {
            let _ = finished.await;
        })
    }

    /// Kills the server: its runtime is dropped with every task in it, nothing is
    /// flushed on the way out. Returns once the runtime is gone.
    pub async fn crash(mut self) {
        if let Some(tx) = self.crash.take() {
            let _ = tx.send(());
        }
        if let Some(finished) = self.finished.take() {
            let _ = finished.await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.crash.take() {
            let _ = tx.send(());
        }
    }
}

/// Config text for a gateway whose both directions relay to `next_hop`, listening on
/// ephemeral ports, with its data in `data_dir`. `extra` is appended (more sections).
pub fn config_text(data_dir: &Path, next_hop: &str, extra: &str) -> String {
    format!(
        r#"
data_dir = "{data}"
internal_domains = ["example.com"]
hostname = "gw.test"

[inbound]
listen = "127.0.0.1:0"
next_hop = "{next_hop}"

[outbound]
listen = "127.0.0.1:0"
next_hop = "{next_hop}"
allowed_clients = ["127.0.0.0/8"]

[spool]
first_retry = "200ms"
max_retry = "1s"

{lookup}
{extra}
"#,
        data = data_dir.display(),
        // No DNS key lookups unless the test sets [lookup] itself: a test must not
        // depend on the machine's resolver.
        lookup = if extra.contains("[lookup]") {
            ""
        } else {
            "[lookup]\nkeys = false\n"
        },
    )
}

/// Starts a gateway from config text.
pub async fn start(config: &str) -> Gateway {
    log::install();
    let config = Config::parse(config, Path::new("test.toml")).expect("test config");
    let data_dir = config.data_dir.clone();
    let (graceful_tx, graceful_rx) = oneshot::channel::<()>();
    let (crash_tx, crash_rx) = oneshot::channel::<()>();
    let (finished_tx, finished_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("gateway runtime");
        runtime.block_on(async move {
            // A crashed gateway's runtime drops its tasks (and with them the database
            // lock) in the background; a killed process would have let go at once.
            let mut attempts = 0;
            let server = loop {
                match Server::bind(config.clone()).await {
                    Err(StartError::Store(DbError::InUse(_))) if attempts < 100 => {
                        attempts += 1;
                        // Polled: nothing tells when the old runtime has let go.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    result => break result.expect("gateway bind"),
                }
            };
            let _ = ready_tx.send((
                server.local_addr(Direction::Inbound),
                server.local_addr(Direction::Outbound),
                server.spool().clone(),
            ));
            tokio::select! {
                _ = server.run(async { let _ = graceful_rx.await; }) => {}
                _ = crash_rx => {}
            }
        });
        // Drops every task still running, as a killed process would.
        runtime.shutdown_background();
        let _ = finished_tx.send(());
    });
    let (inbound, outbound, spool) = ready_rx.await.expect("gateway started");
    Gateway {
        inbound,
        outbound,
        data_dir,
        spool,
        graceful: Some(graceful_tx),
        crash: Some(crash_tx),
        finished: Some(finished_rx),
    }
}

/// A gateway that runs on the test's own runtime: see [`start_here`].
pub struct LocalGateway {
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub spool: sealgate::spool::Spool,
    /// Dropped with the value, which starts a graceful shutdown; whatever is left
    /// ends with the test's runtime.
    _stop: oneshot::Sender<()>,
}

/// Starts a gateway from config text on the test's own runtime (a current-thread
/// one), not on a thread of its own as [`start`] does. It then shares the test's
/// clock, so that the test can jump over a rest or a backoff measured on tokio's clock
/// with [`jump`] instead of sleeping through it. It cannot [`Gateway::crash`].
pub async fn start_here(config: &str) -> LocalGateway {
    log::install();
    let config = Config::parse(config, Path::new("test.toml")).expect("test config");
    let server = Server::bind(config).await.expect("gateway bind");
    let (stop, stopped) = oneshot::channel::<()>();
    let gateway = LocalGateway {
        inbound: server.local_addr(Direction::Inbound),
        outbound: server.local_addr(Direction::Outbound),
        spool: server.spool().clone(),
        _stop: stop,
    };
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    gateway
}

/// Moves tokio's clock on by `by` at once: timers of the test's runtime (and of a
/// gateway from [`start_here`]) that would have fired by then fire now, and
/// `tokio::time::Instant::now()` is `by` later than it would be. The clock is paused
/// only for the jump, so real sockets keep working around it. A current-thread
/// runtime only (`#[tokio::test]`'s default).
pub async fn jump(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// Waits until the spool's retrier has completed `count` more passes than it had when
/// called, or panics after 30 s. Two passes mean that a whole pass began and ended in
/// between: every entry due at the call has had its chance.
pub async fn retry_passes(spool: &sealgate::spool::Spool, count: u64) {
    let mut passes = spool.passes();
    let target = *passes.borrow_and_update() + count;
    let done = passes.wait_for(|done| *done >= target);
    let done = tokio::time::timeout(Duration::from_secs(30), async { done.await.is_ok() });
    assert!(
        matches!(done.await, Ok(true)),
        "the spool's retrier did not complete {count} passes within 30 s"
    );
}

/// Waits until the spool holds nothing, or panics after 30 s. Only a pass of the
/// retrier removes entries, so it looks once more after each pass.
pub async fn spool_drained(spool: &sealgate::spool::Spool) {
    let mut passes = spool.passes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !spool.is_empty() {
        let next = tokio::time::timeout_at(deadline, passes.changed()).await;
        assert!(
            matches!(next, Ok(Ok(()))),
            "the spool still holds {} entries after 30 s",
            spool.len()
        );
    }
}

/// A temp dir plus a gateway relaying both directions to `sink`, with the built-in
/// treatment.
pub async fn gateway_to(sink: &Sink, extra: &str) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&dir.path().join("data"), &sink.addr.to_string(), extra);
    let gateway = start(&text).await;
    (dir, gateway)
}

/// The recipients the fan-out tests use; [`split_policy`] gives each a copy of its own.
pub const SPLIT_RECIPIENTS: &[&str] = &[
    "x@example.org",
    "y@example.net",
    "ok@example.org",
    "refused@example.org",
    "perm@example.org",
    "perm2@example.org",
    "temp@example.org",
];

/// The header field [`split_policy`] adds.
pub const SPLIT_FIELD: &str = "X-Test-Copy";

/// Writes a policy folder into `dir` in which each outbound recipient of
/// [`SPLIT_RECIPIENTS`] gets a copy of its own: one rule per address adds
/// `X-Test-Copy: ADDRESS`, so the copies differ and one client transaction leaves as
/// one next-hop transaction per recipient, as it does whenever recipients are treated
/// differently. Returns the `policy_dir` line for the top of a config.
pub fn split_policy(dir: &Path) -> String {
    let policy_dir = dir.join("split-policy");
    std::fs::create_dir_all(&policy_dir).unwrap();
    let rules: String = SPLIT_RECIPIENTS
        .iter()
        .map(|rcpt| {
            format!(
                "[[rule]]\nchain = \"outbound\"\nrecipient = \"{rcpt}\"\naction = \"pass\"\n\
                 add_header = \"{SPLIT_FIELD}: {rcpt}\"\n\n"
            )
        })
        .collect();
    std::fs::write(policy_dir.join("10-split.toml"), rules).unwrap();
    format!("policy_dir = '{}'\n", policy_dir.display())
}

/// Config text as [`config_text`], with [`split_policy`]'s rules.
pub fn split_config_text(dir: &Path, next_hop: &str, extra: &str) -> String {
    split_policy(dir) + &config_text(&dir.join("data"), next_hop, extra)
}

/// A temp dir plus a gateway relaying both directions to `sink`, in which each
/// recipient gets a next-hop transaction of its own ([`split_policy`]).
pub async fn gateway_split(sink: &Sink, extra: &str) -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let text = split_config_text(dir.path(), &sink.addr.to_string(), extra);
    let gateway = start(&text).await;
    (dir, gateway)
}

/// The message without the field [`split_policy`] added.
pub fn without_split_field(data: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(data);
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        if !line.starts_with(&format!("{SPLIT_FIELD}: ")) {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

/// One SMTP reply: its code and its full text (lines joined with '\n', codes removed).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    /// The enhanced status code at the start of the text, if any ("5.1.1").
    pub fn status(&self) -> &str {
        self.text.split_whitespace().next().unwrap_or("")
    }
}

/// A raw SMTP client for tests: writes bytes, reads and checks replies.
pub struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    /// Connects and reads the greeting, which must be 220.
    pub async fn connect(addr: SocketAddr) -> Client {
        let mut client = Client::connect_raw(addr).await;
        client.expect(220).await;
        client
    }

    /// Connects from the loopback address `from` (any of 127.0.0.0/8), as a client of
    /// its own would, and reads the greeting, which must be 220.
    pub async fn connect_from(from: std::net::Ipv4Addr, addr: SocketAddr) -> Client {
        let (mut client, greeting) = Client::connect_from_raw(from, addr).await;
        assert_eq!(greeting.code, 220, "{greeting:?}");
        client.stream.get_mut().set_nodelay(true).unwrap();
        client
    }

    /// Connects from `from` and returns the first reply, whatever it is.
    pub async fn connect_from_raw(from: std::net::Ipv4Addr, addr: SocketAddr) -> (Client, Reply) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((from, 0).into()).unwrap();
        let stream = socket.connect(addr).await.expect("connect to gateway");
        let mut client = Client {
            stream: BufReader::new(stream),
        };
        let reply = client.reply().await;
        (client, reply)
    }

    /// Connects without reading anything.
    pub async fn connect_raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect to gateway");
        Client {
            stream: BufReader::new(stream),
        }
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream
            .get_mut()
            .write_all(bytes.as_ref())
            .await
            .expect("write");
    }

    /// Sends one command line (CRLF added).
    pub async fn cmd(&mut self, line: &str) {
        self.send(format!("{line}\r\n")).await;
    }

    /// Reads one (possibly multi-line) reply; panics on EOF or after 20 s.
    pub async fn reply(&mut self) -> Reply {
        tokio::time::timeout(Duration::from_secs(20), self.try_reply())
            .await
            .expect("reply within 20 s")
            .expect("a reply, not EOF")
    }

    /// Reads one reply; `None` on EOF.
    pub async fn try_reply(&mut self) -> Option<Reply> {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            let line = line.trim_end();
            assert!(line.len() >= 3, "short reply line {line:?}");
            let code: u16 = line[..3]
                .parse()
                .unwrap_or_else(|_| panic!("bad reply {line:?}"));
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some(Reply {
                    code,
                    text: text.join("\n"),
                });
            }
        }
    }

    /// Reads a reply and asserts its code.
    pub async fn expect(&mut self, code: u16) -> Reply {
        let reply = self.reply().await;
        assert_eq!(reply.code, code, "expected {code}, got {reply:?}");
        reply
    }

    /// Sends a command and asserts the reply's code.
    pub async fn cmd_expect(&mut self, line: &str, code: u16) -> Reply {
        self.cmd(line).await;
        self.expect(code).await
    }

    /// Whether the server has closed the connection (reads to EOF, 10 s at most).
    pub async fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.stream.read_to_end(&mut rest)).await,
            Ok(Ok(_)) | Ok(Err(_))
        )
    }

    /// EHLO, MAIL, RCPT for each, DATA with `message` (dot-stuffed here), and returns
    /// the reply to the final dot.
    pub async fn send_mail(&mut self, from: &str, to: &[&str], message: &[u8]) -> Reply {
        self.cmd_expect("EHLO client.test", 250).await;
        self.cmd_expect(&format!("MAIL FROM:<{from}>"), 250).await;
        for rcpt in to {
            self.cmd_expect(&format!("RCPT TO:<{rcpt}>"), 250).await;
        }
        self.cmd_expect("DATA", 354).await;
        self.send(dot_stuff(message)).await;
        self.reply().await
    }

    pub async fn quit(mut self) {
        self.cmd("QUIT").await;
        let _ = self.try_reply().await;
    }
}

/// Sends `line` and asserts the reply's code and enhanced status code.
pub async fn check(client: &mut Client, line: &str, code: u16, status: &str) -> Reply {
    client.cmd(line).await;
    expect_status(client, code, status).await
}

/// Reads one reply and asserts its code and enhanced status code.
pub async fn expect_status(client: &mut Client, code: u16, status: &str) -> Reply {
    let reply = client.reply().await;
    assert_eq!(
        (reply.code, reply.status()),
        (code, status),
        "unexpected reply {reply:?}"
    );
    reply
}

/// DATA (asserting the 354), then `message` dot-stuffed, and asserts that the final
/// dot gets 250 2.0.0.
pub async fn data_accepted(client: &mut Client, message: &[u8]) -> Reply {
    client.cmd_expect("DATA", 354).await;
    client.send(dot_stuff(message)).await;
    expect_status(client, 250, "2.0.0").await
}

/// Dot-stuffs a CRLF message and appends the final dot.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Splits off the first header field if it is sealgate's `Received:` (with its folded
/// continuation lines), and the `X-Sealgate:` field below it if there is one, and
/// returns (those fields, the rest).
pub fn split_received(data: &[u8]) -> (String, Vec<u8>) {
    assert!(
        data.starts_with(b"Received: "),
        "no Received first: {:?}",
        String::from_utf8_lossy(&data[..data.len().min(200)])
    );
    let mut end = 0;
    loop {
        let nl = data[end..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("header end")
            + end
            + 1;
        end = nl;
        if matches!(data.get(end), Some(b' ' | b'\t')) {
            continue;
        }
        // The X-Sealgate field the policy adds (inbound, by default) sits right
        // below our Received field: also ours, not the sender's.
        if !data[end..].starts_with(b"X-Sealgate: ") {
            break;
        }
    }
    (
        String::from_utf8_lossy(&data[..end]).into_owned(),
        data[end..].to_vec(),
    )
}

/// Imports files into a running gateway's key cache through its admin socket.
pub fn import(
    gw: &Gateway,
    sckm: bool,
    files: &[&Path],
    passphrase: Option<&str>,
) -> sealgate::keys::admin::Response {
    let files = files
        .iter()
        .map(|p| sealgate::keys::admin::File::read(p).unwrap())
        .collect();
    let request = if sckm {
        sealgate::keys::admin::Request::ImportSckm {
            files,
            passphrase: passphrase.map(str::to_string),
        }
    } else {
        sealgate::keys::admin::Request::Import { files }
    };
    let response = admin_request(&gw.data_dir, request).unwrap();
    assert!(!response.failed, "import refused: {:?}", response.messages);
    response
}

/// Bob's GnuPG home: a key for `Bob <bob@example.org>` (a `primary_algo` primary and an
/// encryption subkey of `sub_algo`) whose public cert `gw` has imported as an admin key.
pub fn bob_with_key_imported(gw: &Gateway, primary_algo: &str, sub_algo: &str) -> keys::GpgHome {
    let bob = keys::GpgHome::new();
    bob.make_key("Bob <bob@example.org>", primary_algo, sub_algo, "encr");
    let public = bob.run(&["--armor", "--export", "bob@example.org"], None);
    import(gw, false, &[&bob.file("bob.asc", &public)], None);
    bob
}

/// The armored OpenPGP message in a PGP/MIME message, for `gpg --decrypt`.
pub fn armored(message: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(message);
    let start = text.find("-----BEGIN PGP MESSAGE-----").expect("armor");
    let end = text.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
    text.as_bytes()[start..end].to_vec()
}

/// An admin request to the gateway whose data_dir is `data_dir`: through its admin
/// socket while it runs, else on its database (with the built-in defaults as config).
pub fn admin_request(
    data_dir: &Path,
    request: sealgate::keys::admin::Request,
) -> Result<sealgate::keys::admin::Response, sealgate::keys::admin::ClientError> {
    let mut config = Config::defaults();
    config.data_dir = data_dir.to_path_buf();
    sealgate::keys::admin::request(&config, request)
}

/// One HTTP/1.1 request (to the `[metrics] listen` listener): the status code and the
/// body. Written out by hand: the tests need no HTTP client crate for two paths.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}
