//! One connection to an SMTP server, as our client side sees it: the greeting and
//! EHLO, commands and replies (on smtp-proto's reply parser), STARTTLS, the message
//! sent dot-stuffed from its chunks, and a quiet goodbye. What to say when is
//! [`super::smtp`]'s business.

use std::time::Duration;

use rustls::pki_types::ServerName;
use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use super::dot::DotStuffer;
use super::stream::Stream;
use crate::smtp::reply::Reply;

/// Why a conversation with the next hop ended early. Always worth a retry.
#[derive(Debug, thiserror::Error)]
pub(super) enum Broken {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the next hop")]
    Closed,
    #[error("unparseable reply from the next hop")]
    Garbled,
    /// STARTTLS was agreed and the handshake failed; the connection is lost.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

/// Why no transaction could start on a connection.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unopened {
    /// The server answered the greeting, EHLO or HELO with a refusal: it is there, and
    /// said no. Its reply is passed on.
    #[error("{0}")]
    Refused(Reply),
    /// The connection broke or timed out first.
    #[error(transparent)]
    Broken(#[from] Broken),
}

/// What the next hop can do, from its EHLO reply.
#[derive(Debug, Default)]
pub(super) struct Extensions {
    pub(super) pipelining: bool,
    pub(super) size: bool,
    pub(super) eight_bit: bool,
    pub(super) smtputf8: bool,
    pub(super) starttls: bool,
}

impl Extensions {
    fn from_ehlo(text: &str) -> Extensions {
        let mut ext = Extensions::default();
        for line in text.lines().skip(1) {
            let keyword = line
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => ext.size = true,
                "8BITMIME" => ext.eight_bit = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "STARTTLS" => ext.starttls = true,
                _ => {}
            }
        }
        ext
    }
}

/// One open connection to an SMTP server, and what it has said so far.
pub(super) struct Client {
    pub(super) stream: BufReader<Stream>,
    replies: ResponseReceiver,
    command_timeout: Duration,
    /// What the server offered in its EHLO reply.
    pub(super) ext: Extensions,
    /// Set once the server has answered anything in the current transaction. A pooled
    /// connection that breaks before that was simply stale, and the transaction can be
    /// tried again on a fresh one without any risk of a duplicate.
    pub(super) answered: bool,
    /// Set once the final dot of the current transaction is being sent. A connection
    /// lost after that may have delivered the message, so MX delivery does not offer
    /// it to another host.
    pub(super) committed: bool,
    /// The session runs over TLS (after STARTTLS).
    pub(super) tls: bool,
}

/// What STARTTLS towards one server needs.
pub struct StartTls {
    /// The rustls client; for MX hosts, the opportunistic one of
    /// [`crate::tls::opportunistic_client_config`].
    pub connector: TlsConnector,
    /// Sent as SNI.
    pub server_name: ServerName<'static>,
}

impl Client {
    pub(super) fn new(stream: Stream, command_timeout: Duration) -> Client {
        let tls = matches!(stream, Stream::Tls(_));
        Client {
            stream: BufReader::with_capacity(4096, stream),
            replies: ResponseReceiver::default(),
            command_timeout,
            ext: Extensions::default(),
            answered: false,
            committed: false,
            tls,
        }
    }

    /// EHLO, or HELO if EHLO is refused; learns the server's extensions.
    pub(super) async fn hello(&mut self, hostname: &str) -> Result<(), Unopened> {
        self.send(format!("EHLO {hostname}\r\n").as_bytes()).await?;
        let ehlo = self.read_reply("EHLO").await?;
        if ehlo.is_positive() {
            self.ext = Extensions::from_ehlo(&ehlo.text);
            return Ok(());
        }
        self.ext = Extensions::default();
        self.send(format!("HELO {hostname}\r\n").as_bytes()).await?;
        let helo = self.read_reply("HELO").await?;
        if !helo.is_positive() {
            // Polite, and not worth waiting for: the connection is given up.
            let _ = self.send(b"QUIT\r\n").await;
            return Err(Unopened::Refused(helo));
        }
        Ok(())
    }

    /// The TLS handshake after the server's 220 to STARTTLS. The session that follows
    /// starts afresh (RFC 3207 §4.2): nothing the server said before TLS is kept.
    pub(super) async fn start_tls(self, starttls: &StartTls) -> Result<Client, Broken> {
        if !self.stream.buffer().is_empty() {
            // Bytes that came with the 220 were sent before TLS: taken as TLS they
            // would be an injection (CVE-2011-0411 on the client side).
            return Err(Broken::Tls(
                "the server sent more than its 220 before the handshake".into(),
            ));
        }
        let Stream::Plain(tcp) = self.stream.into_inner() else {
            return Err(Broken::Tls("TLS is already active".into()));
        };
        let handshake = starttls
            .connector
            .connect(starttls.server_name.clone(), tcp);
        let tls = timeout(self.command_timeout, handshake)
            .await
            .map_err(|_| Broken::Tls("timed out".into()))?
            .map_err(|e| Broken::Tls(e.to_string()))?;
        Ok(Client::new(
            Stream::Tls(Box::new(tls)),
            self.command_timeout,
        ))
    }

    /// Writes and flushes: TLS holds written bytes back until flushed.
    pub(super) async fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        let stream = self.stream.get_mut();
        let write = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        timeout(self.command_timeout, write)
            .await
            .map_err(|_| Broken::Timeout("sending a command"))??;
        Ok(())
    }

    pub(super) async fn read_reply(&mut self, stage: &'static str) -> Result<Reply, Broken> {
        self.read_reply_within(stage, self.command_timeout).await
    }

    pub(super) async fn read_reply_within(
        &mut self,
        stage: &'static str,
        limit: Duration,
    ) -> Result<Reply, Broken> {
        timeout(limit, self.next_reply())
            .await
            .map_err(|_| Broken::Timeout(stage))?
    }

    pub(super) async fn next_reply(&mut self) -> Result<Reply, Broken> {
        loop {
            let buf = self.stream.fill_buf().await?;
            if buf.is_empty() {
                return Err(Broken::Closed);
            }
            let mut iter = buf.iter();
            let parsed = self.replies.parse(&mut iter);
            let consumed = buf.len() - iter.len();
            self.stream.consume(consumed);
            match parsed {
                Ok(response) => {
                    self.replies.reset();
                    self.answered = true;
                    // We promise our clients ENHANCEDSTATUSCODES: a next hop that gives
                    // none gets the generic one of its reply's class (RFC 3463).
                    let esc = if response.esc == [0, 0, 0] {
                        [(response.code / 100).min(9) as u8, 0, 0]
                    } else {
                        response.esc
                    };
                    return Ok(Reply::new(response.code, Some(esc), response.message));
                }
                Err(smtp_proto::Error::NeedsMoreData { .. }) => continue,
                Err(_) => return Err(Broken::Garbled),
            }
        }
    }

    /// Sends the message dot-stuffed, with every line ending made CRLF, then the final
    /// dot; the armor of an encrypted copy, which needs neither, is written straight
    /// from its binary. The message is read a piece at a time; nothing is copied whole.
    pub(super) async fn send_message(&mut self, tx: &crate::relay::Outgoing) -> Result<(), Broken> {
        const FLUSH_AT: usize = 64 * 1024;
        let mut out = Vec::with_capacity(FLUSH_AT + 4096);
        let mut stuffer = DotStuffer::default();
        for part in tx.message.parts() {
            for piece in part.split(FLUSH_AT) {
                stuffer.push_part(piece, &mut out);
                if out.len() >= FLUSH_AT {
                    self.stream.get_mut().write_all(&out).await?;
                    out.clear();
                }
            }
        }
        stuffer.finish(&mut out);
        self.committed = true;
        let stream = self.stream.get_mut();
        stream.write_all(&out).await?;
        stream.flush().await?;
        Ok(())
    }

    /// Whether an idle connection is still open and has said nothing unasked (a server
    /// that timed us out sends 421 and closes). A TLS connection cannot be looked at
    /// that way and never counts as quiet; only smart-host connections, which have no
    /// TLS, are pooled.
    pub(super) fn is_quiet(&self) -> bool {
        if !self.stream.buffer().is_empty() {
            return false;
        }
        let Stream::Plain(tcp) = self.stream.get_ref() else {
            return false;
        };
        let mut probe = [0u8; 1];
        matches!(
            tcp.try_read(&mut probe),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    /// Says goodbye in the background: the transaction's outcome is already known, and
    /// the client should not wait one more round trip for it.
    pub(super) fn quit(mut self) {
        tokio::spawn(async move {
            if self.send(b"QUIT\r\n").await.is_ok() {
                let _ = timeout(Duration::from_secs(5), self.next_reply()).await;
                // TLS's close_notify; a FIN for plain TCP.
                let _ = timeout(Duration::from_secs(5), self.stream.get_mut().shutdown()).await;
            }
        });
    }
}
