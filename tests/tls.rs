//! STARTTLS (RFC 3207) over real sockets: the offer, the upgrade, the reset of the
//! session, the command-injection defence, and `[tls]` config errors.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use sealgate::config::Config;
use support::{Reply, Sink, dot_stuff, gateway_to, split_received};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const MESSAGE: &[u8] =
    b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nHello.\r\n";

/// A self-signed certificate for "localhost", written as PEM files into a temp dir.
struct Cert {
    dir: tempfile::TempDir,
    der: CertificateDer<'static>,
}

impl Cert {
    fn new() -> Cert {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            certified.key_pair.serialize_pem(),
        )
        .unwrap();
        Cert {
            der: certified.cert.der().clone(),
            dir,
        }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// The `[tls]` section that uses this certificate.
    fn toml(&self) -> String {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            self.cert_path().display(),
            self.key_path().display()
        )
    }

    /// A TLS client that trusts exactly this certificate.
    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

/// A raw SMTP client over any stream, plain or TLS.
struct Smtp<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Smtp<S> {
    fn new(stream: S) -> Smtp<S> {
        Smtp {
            stream: BufReader::new(stream),
        }
    }

    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let stream = self.stream.get_mut();
        stream.write_all(bytes.as_ref()).await.expect("write");
        stream.flush().await.expect("flush");
    }

    /// One (possibly multi-line) reply; panics on EOF or after 10 s.
    async fn reply(&mut self) -> Reply {
        tokio::time::timeout(Duration::from_secs(10), async {
            let mut text = Vec::new();
            loop {
                let mut line = String::new();
                let n = self.stream.read_line(&mut line).await.expect("read");
                assert_ne!(n, 0, "connection closed while waiting for a reply");
                let line = line.trim_end();
                let code: u16 = line[..3].parse().expect("reply code");
                text.push(line.get(4..).unwrap_or("").to_string());
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Reply {
                        code,
                        text: text.join("\n"),
                    };
                }
            }
        })
        .await
        .expect("reply within 10 s")
    }

    async fn expect(&mut self, code: u16) -> Reply {
        let reply = self.reply().await;
        assert_eq!(reply.code, code, "{reply:?}");
        reply
    }

    /// Sends a command and asserts the reply's code and enhanced status code.
    async fn check(&mut self, line: &str, code: u16, status: &str) -> Reply {
        self.send(format!("{line}\r\n")).await;
        let reply = self.reply().await;
        assert_eq!(
            (reply.code, reply.status()),
            (code, status),
            "{line}: {reply:?}"
        );
        reply
    }

    /// EHLO; returns the extension keywords.
    async fn ehlo(&mut self) -> Vec<String> {
        self.send("EHLO client.test\r\n").await;
        let reply = self.expect(250).await;
        reply.text.lines().skip(1).map(str::to_string).collect()
    }

    /// The stream underneath, for the handshake. Nothing may be left unread: after 220
    /// the server says nothing more in clear.
    fn into_inner(self) -> S {
        assert!(self.stream.buffer().is_empty(), "bytes after the 220");
        self.stream.into_inner()
    }
}

/// Connects, reads 220, says EHLO, and returns the client and the extensions.
async fn plain(addr: std::net::SocketAddr) -> (Smtp<TcpStream>, Vec<String>) {
    let mut client = Smtp::new(TcpStream::connect(addr).await.unwrap());
    client.expect(220).await;
    let ext = client.ehlo().await;
    (client, ext)
}

/// Upgrades a plain session that has just had its 220 to STARTTLS.
async fn handshake(
    client: Smtp<TcpStream>,
    cert: &Cert,
) -> Smtp<tokio_rustls::client::TlsStream<TcpStream>> {
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        cert.connector().connect(
            ServerName::try_from("localhost").unwrap(),
            client.into_inner(),
        ),
    )
    .await
    .expect("handshake within 10 s")
    .expect("TLS handshake");
    Smtp::new(tls)
}

#[tokio::test]
async fn starttls_upgrades_resets_the_session_and_delivers() {
    let cert = Cert::new();
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, &cert.toml()).await;
    for (i, (addr, rcpt)) in [
        (gw.outbound, "bob@example.org"),
        (gw.inbound, "bob@example.com"),
    ]
    .into_iter()
    .enumerate()
    {
        let (mut client, ext) = plain(addr).await;
        assert!(ext.iter().any(|e| e == "STARTTLS"), "{ext:?}");
        // A transaction begun in clear does not survive the upgrade.
        client
            .check("MAIL FROM:<alice@example.com>", 250, "2.1.0")
            .await;
        client.check("STARTTLS", 220, "2.0.0").await;
        let mut tls = handshake(client, &cert).await;

        // RFC 3207 §4.2: everything from before TLS is forgotten, EHLO included.
        tls.check("MAIL FROM:<alice@example.com>", 503, "5.5.1")
            .await;
        let ext = tls.ehlo().await;
        assert!(!ext.iter().any(|e| e == "STARTTLS"), "{ext:?}");
        for wanted in ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"] {
            assert!(ext.iter().any(|e| e == wanted), "{wanted}: {ext:?}");
        }
        tls.check(&format!("RCPT TO:<{rcpt}>"), 503, "5.5.1").await;
        tls.check("STARTTLS", 503, "5.5.1").await;

        tls.check("MAIL FROM:<alice@example.com>", 250, "2.1.0")
            .await;
        tls.check(&format!("RCPT TO:<{rcpt}>"), 250, "2.1.5").await;
        tls.send("DATA\r\n").await;
        tls.expect(354).await;
        tls.send(dot_stuff(MESSAGE)).await;
        let reply = tls.reply().await;
        assert_eq!((reply.code, reply.status()), (250, "2.0.0"), "{reply:?}");
        tls.check("QUIT", 221, "2.0.0").await;

        let got = sink.wait_for(i + 1, Duration::from_secs(10)).await;
        assert_eq!(got[i].recipients, [rcpt]);
        let (received, rest) = split_received(&got[i].data);
        assert!(received.contains(" with ESMTPS id "), "{received}");
        assert_eq!(rest, MESSAGE);
    }
}

/// RFC 3207 §4.2 / CVE-2011-0411: commands pipelined after STARTTLS in clear must be
/// thrown away, not run as if they had come over TLS.
#[tokio::test]
async fn commands_injected_after_starttls_are_discarded() {
    let cert = Cert::new();
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, &cert.toml()).await;
    let (mut client, _) = plain(gw.outbound).await;
    client
        .send("STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\nRCPT TO:<victim@example.org>\r\n")
        .await;
    let reply = client.expect(220).await;
    assert_eq!(reply.status(), "2.0.0");
    let mut tls = handshake(client, &cert).await;

    // Had the injected commands run, their replies would come first.
    tls.check("NOOP", 250, "2.0.0").await;
    tls.ehlo().await;
    tls.check("RCPT TO:<bob@example.org>", 503, "5.5.1").await;
    tls.check("DATA", 503, "5.5.1").await;
    tls.check("QUIT", 221, "2.0.0").await;
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn failed_handshake_does_not_hurt_the_server() {
    let cert = Cert::new();
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, &cert.toml()).await;

    // Not TLS at all after the 220.
    let (mut client, _) = plain(gw.outbound).await;
    client.check("STARTTLS", 220, "2.0.0").await;
    let mut stream = client.into_inner();
    let _ = stream
        .write_all(b"EHLO this is not a ClientHello\r\n\r\n")
        .await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server keeps a broken handshake open");

    // A client that trusts another certificate gives up in the middle.
    let (mut client, _) = plain(gw.outbound).await;
    client.check("STARTTLS", 220, "2.0.0").await;
    let other = Cert::new();
    let result = other.connector().connect(
        ServerName::try_from("localhost").unwrap(),
        client.into_inner(),
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(10), result)
            .await
            .expect("handshake ends within 10 s")
            .is_err(),
        "a certificate we do not trust was accepted"
    );

    // A client that hangs up right after the 220.
    let (mut client, _) = plain(gw.outbound).await;
    client.check("STARTTLS", 220, "2.0.0").await;
    drop(client);

    // The server still works, in TLS and in clear.
    let (mut client, _) = plain(gw.outbound).await;
    client.check("STARTTLS", 220, "2.0.0").await;
    let mut tls = handshake(client, &cert).await;
    tls.ehlo().await;
    tls.check("QUIT", 221, "2.0.0").await;
    let (mut client, _) = plain(gw.inbound).await;
    client.check("NOOP", 250, "2.0.0").await;
}

/// The config, or the one error it has.
fn parse(text: &str) -> Result<Config, sealgate::config::ConfigError> {
    Config::parse(text, Path::new("/etc/sealgate/sealgate.toml")).map_err(|mut refused| {
        assert_eq!(refused.errors.len(), 1, "{refused}");
        refused.errors.remove(0)
    })
}

#[test]
fn tls_config_errors_name_the_line() {
    let cert = Cert::new();
    let cert_path = cert.cert_path();
    let key_path = cert.key_path();

    let err = parse(&format!(
        "hostname = \"gw.test\"\n\n[tls]\ncert = \"{}\"\n",
        cert_path.display()
    ))
    .unwrap_err();
    assert_eq!(err.line, 4, "{err}");
    assert!(
        err.to_string()
            .starts_with("/etc/sealgate/sealgate.toml:4: "),
        "{err}"
    );
    assert!(err.message.contains("key"), "{err}");

    let err = parse(&format!("[tls]\nkey = \"{}\"\n", key_path.display())).unwrap_err();
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.contains("cert"), "{err}");

    // Files that do not exist, or do not fit together.
    let missing = cert.dir.path().join("missing.pem");
    let err = parse(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        missing.display(),
        key_path.display()
    ))
    .unwrap_err();
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.contains("missing.pem"), "{err}");

    let other = Cert::new();
    let err = parse(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert_path.display(),
        other.key_path().display()
    ))
    .unwrap_err();
    assert!(err.to_string().contains(":2: "), "{err}");

    // Both set and valid; both empty means no TLS.
    let config = parse(&cert.toml()).unwrap();
    assert!(config.tls.is_some());
    let config = parse("[tls]\ncert = \"\"\nkey = \"\"\n").unwrap();
    assert!(config.tls.is_none());
}

#[tokio::test]
async fn stalled_handshake_is_dropped_at_the_idle_timeout() {
    let cert = Cert::new();
    let sink = Sink::start().await;
    let extra = format!(
        "{}\n[limits]\nidle_timeout = \"1s\"\nmax_connections = 1\n",
        cert.toml()
    );
    let (_dir, gw) = gateway_to(&sink, &extra).await;
    let (mut client, _) = plain(gw.outbound).await;
    client.check("STARTTLS", 220, "2.0.0").await;
    let mut stream = client.into_inner();
    // No ClientHello: the server gives up on its own.
    let mut rest = Vec::new();
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a stalled handshake was kept open");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // And its connection slot is free again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut next = Smtp::new(TcpStream::connect(gw.outbound).await.unwrap());
        let reply = next.reply().await;
        if reply.code == 220 {
            break;
        }
        assert_eq!((reply.code, reply.status()), (421, "4.3.2"), "{reply:?}");
        assert!(std::time::Instant::now() < deadline, "slot not freed");
        // Polled: a freed slot shows only to the next connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
