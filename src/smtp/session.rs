//! One SMTP session (RFC 5321) on one listener: the command state machine.
//!
//! Commands are parsed by smtp-proto. The session knows the envelope rules (sequence,
//! limits, relay control by direction) and nothing about keys, policy or next hops:
//! a complete transaction is handed to [`Gateway::handle`], whose reply it sends.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use smtp_proto::{MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, MailFrom, RcptTo, Request};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, Data, Line};
use super::reply::{self, Reply};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::gateway::plan::Plan;
use crate::mail::Direction;
use crate::mail::envelope::{Body, Envelope, MailParams, quote_local_part};
use crate::mail::message::{self, Message};

/// What a session shares with every other session.
pub struct Shared {
    pub config: Arc<Config>,
    pub gateway: Arc<Gateway>,
    /// Present when `[tls]` is set: STARTTLS is offered.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Cancelled on SIGTERM/SIGINT: idle sessions say 421 and close.
    pub shutdown: CancellationToken,
}

/// How a session ended.
pub enum End<S> {
    /// QUIT, a closed connection, or a 421 we sent.
    Closed,
    /// The client asked for STARTTLS and got 220; the stream is ready for the handshake.
    StartTls(S),
}

/// What the session does after a command.
enum Flow {
    Continue,
    Close,
    StartTls,
}

/// The transaction being built: MAIL, then RCPTs.
struct Transaction {
    mail_from: String,
    params: MailParams,
    recipients: Vec<String>,
    /// The policy this transaction runs on, with what it learnt at each RCPT.
    plan: Plan,
}

pub struct Session<'a, S> {
    conn: Conn<S>,
    shared: &'a Shared,
    direction: Direction,
    peer: SocketAddr,
    /// The TLS version and cipher once TLS is up; STARTTLS is then neither offered nor
    /// accepted.
    tls: Option<String>,
    /// The EHLO/HELO name and whether it was EHLO.
    helo: Option<(String, bool)>,
    transaction: Option<Transaction>,
    /// Replies that were the client's fault; too many end the session.
    errors: usize,
    /// The command being answered, as much of it as a log line needs.
    command: String,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Session<'a, S> {
    pub fn new(
        stream: S,
        shared: &'a Shared,
        direction: Direction,
        peer: SocketAddr,
        tls: Option<String>,
    ) -> Self {
        Session {
            conn: Conn::new(stream, shared.config.idle_timeout()),
            shared,
            direction,
            peer,
            tls,
            helo: None,
            transaction: None,
            errors: 0,
            command: String::new(),
        }
    }

    fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Queues the 220 greeting (not sent again after STARTTLS).
    pub fn greet(&mut self) {
        let greeting = reply::greeting(&self.config().hostname);
        self.conn.queue(&greeting);
    }

    /// Runs the session until it ends. I/O errors simply end it: the peer is gone, and
    /// nothing it had not been told `250` for was acknowledged.
    pub async fn run(mut self) -> End<S> {
        loop {
            match self.step().await {
                Ok(Flow::Continue) => continue,
                Ok(Flow::Close) => return End::Closed,
                Ok(Flow::StartTls) => return End::StartTls(self.conn.into_inner()),
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "session ended by I/O error");
                    return End::Closed;
                }
            }
        }
    }

    /// Reads and answers one command.
    async fn step(&mut self) -> std::io::Result<Flow> {
        let max_line = self.config().limits.max_line_length.0;
        let idle = self.config().idle_timeout();
        let shutdown = self.shared.shutdown.clone();
        let read = tokio::select! {
            // A transaction in flight is never cut; only a session waiting for its next
            // command is told to go away.
            _ = shutdown.cancelled(), if !self.conn.has_pending_input() => {
                return self.close_with(&reply::SHUTTING_DOWN).await;
            }
            read = timeout(idle, self.conn.read_line(max_line)) => read,
        };
        let line = match read {
            Err(_) => return self.close_with(&reply::IDLE_TIMEOUT).await,
            Ok(Ok(None)) => return Ok(Flow::Close),
            Ok(Ok(Some(line))) => line,
            Ok(Err(e)) => return Err(e),
        };
        let line = match line {
            Line::TooLong => {
                self.command.clear();
                self.command.push_str("(a line too long)");
                return self.refuse(&reply::LINE_TOO_LONG).await;
            }
            Line::Command(line) => line,
        };
        loggable(&line, &mut self.command);
        if line.contains(&0) {
            return self.refuse(&reply::NUL_IN_COMMAND).await;
        }
        let mut framed = line;
        framed.extend_from_slice(b"\r\n");
        match Request::parse(&mut framed.iter()) {
            // smtp-proto reads <Postmaster> like <>, but RFC 5321 §4.5.1 requires
            // accepting the domain-less postmaster.
            Ok(Request::Rcpt { mut to }) if to.address.is_empty() && names_postmaster(&framed) => {
                to.address = Cow::Borrowed("postmaster");
                self.rcpt(to).await
            }
            Ok(request) => self.dispatch(request).await,
            Err(error) => self.refuse(&parse_error_reply(&error)).await,
        }
    }

    async fn dispatch(&mut self, request: Request<Cow<'_, str>>) -> std::io::Result<Flow> {
        match request {
            Request::Ehlo { host } => self.hello(&host, true),
            Request::Helo { host } => self.hello(&host, false),
            Request::Mail { from } => return self.mail(from).await,
            Request::Rcpt { to } => return self.rcpt(to).await,
            Request::Data => return self.data().await,
            Request::Rset => {
                self.transaction = None;
                self.conn.queue(&reply::RESET_OK);
            }
            Request::Noop { .. } => self.conn.queue(&reply::NOOP_OK),
            Request::Vrfy { .. } => self.conn.queue(&reply::VRFY_CANNOT),
            Request::Help { .. } => self.conn.queue(&reply::HELP),
            Request::Quit => return self.close_with(&reply::BYE).await,
            Request::StartTls => return self.start_tls().await,
            Request::Lhlo { .. }
            | Request::Bdat { .. }
            | Request::Auth { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => return self.refuse(&reply::NOT_IMPLEMENTED).await,
        }
        Ok(Flow::Continue)
    }

    fn hello(&mut self, host: &str, esmtp: bool) {
        // EHLO/HELO also resets any transaction (RFC 5321 §4.1.4).
        self.transaction = None;
        self.helo = Some((host.to_string(), esmtp));
        let config = self.config();
        let reply = if esmtp {
            let mut extensions = vec![
                "PIPELINING".to_string(),
                format!("SIZE {}", config.limits.max_message_size.0),
                "8BITMIME".into(),
                "ENHANCEDSTATUSCODES".into(),
                "SMTPUTF8".into(),
            ];
            if self.shared.tls.is_some() && self.tls.is_none() {
                extensions.push("STARTTLS".into());
            }
            reply::ehlo(&config.hostname, host, &extensions)
        } else {
            reply::helo(&config.hostname)
        };
        self.conn.queue(&reply);
    }

    async fn mail(&mut self, from: MailFrom<Cow<'_, str>>) -> std::io::Result<Flow> {
        if self.helo.is_none() {
            return self.refuse(&reply::NEED_EHLO).await;
        }
        if self.transaction.is_some() {
            return self.refuse(&reply::NESTED_MAIL).await;
        }
        if let Some(param) = unsupported_mail_parameter(&from) {
            return self.refuse(&reply::unsupported_parameter(param)).await;
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            return self.refuse(&reply::UTF8_NOT_DECLARED).await;
        }
        let max = self.config().limits.max_message_size.0;
        if from.size as u64 > max {
            return self.refuse(&reply::TOO_BIG).await;
        }
        let body = if from.flags & MAIL_BODY_8BITMIME != 0 {
            Some(Body::EightBitMime)
        } else if from.flags & MAIL_BODY_7BIT != 0 {
            Some(Body::SevenBit)
        } else {
            None
        };
        let mail_from = quote_local_part(&from.address);
        let plan = self
            .shared
            .gateway
            .planner
            .begin(self.direction, &mail_from);
        self.transaction = Some(Transaction {
            mail_from,
            plan,
            params: MailParams {
                size: (from.size > 0).then_some(from.size as u64),
                body,
                smtputf8,
            },
            recipients: Vec::new(),
        });
        self.conn.queue(&reply::SENDER_OK);
        Ok(Flow::Continue)
    }

    async fn rcpt(&mut self, to: RcptTo<Cow<'_, str>>) -> std::io::Result<Flow> {
        let max_recipients = self.config().limits.max_recipients.get();
        let inbound = self.direction == Direction::Inbound;
        let internal = self.config().internal_domains.is_internal(&to.address);
        let allow_routing = self.config().inbound.allow_untrusted_routing;
        let Some(transaction) = &mut self.transaction else {
            return self.refuse(&reply::NEED_MAIL).await;
        };
        if to.flags != 0 || to.orcpt.is_some() {
            // NOTIFY= and ORCPT= belong to the DSN extension, which we do not offer.
            return self
                .refuse(&reply::unsupported_parameter("NOTIFY/ORCPT"))
                .await;
        }
        if to.address.is_empty() {
            return self.refuse(&reply::BAD_RECIPIENT).await;
        }
        if !transaction.params.smtputf8 && !to.address.is_ascii() {
            return self.refuse(&reply::UTF8_NOT_DECLARED).await;
        }
        if inbound && !internal {
            // The inbound side is not an open relay.
            return self.refuse(&reply::RELAY_DENIED).await;
        }
        if inbound && !allow_routing && routes_elsewhere(&to.address) {
            // Ours by its domain, but a route onwards that the internal MTA may follow.
            return self.refuse(&reply::ROUTING_DENIED).await;
        }
        if transaction.recipients.len() >= max_recipients {
            // Not counted as an error: the client is expected to send the rest later.
            self.log_refusal(&reply::TOO_MANY_RECIPIENTS);
            self.conn.queue(&reply::TOO_MANY_RECIPIENTS);
            return Ok(Flow::Continue);
        }
        let address = quote_local_part(&to.address);
        if !transaction
            .recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&address))
        {
            // The policy may refuse on the envelope alone. Not the client's fault, so
            // not counted as an error.
            let planner = &self.shared.gateway.planner;
            if let Err(refusal) = planner.screen(&mut transaction.plan, &address).await {
                self.log_refusal(&refusal);
                self.conn.queue(&refusal);
                return Ok(Flow::Continue);
            }
            transaction.recipients.push(address);
        }
        self.conn.queue(&reply::RECIPIENT_OK);
        Ok(Flow::Continue)
    }

    async fn data(&mut self) -> std::io::Result<Flow> {
        match &self.transaction {
            None => return self.refuse(&reply::NEED_MAIL).await,
            Some(t) if t.recipients.is_empty() => {
                return self.refuse(&reply::NO_VALID_RECIPIENTS).await;
            }
            Some(_) => {}
        }
        self.conn.queue(&reply::START_DATA);
        let limits = &self.config().limits;
        let (max, data_timeout) = (limits.max_message_size.0 as usize, limits.data_timeout.0);
        let data = match timeout(data_timeout, self.conn.read_data(max)).await {
            Err(_) => return self.close_with(&reply::DATA_TIMEOUT).await,
            Ok(Ok(Some(data))) => data,
            // The client vanished before the final dot: nothing was acknowledged, so
            // nothing is handed on.
            Ok(Ok(None)) => return Ok(Flow::Close),
            Ok(Err(e)) => return Err(e),
        };
        let mut transaction = self.transaction.take().expect("checked above");
        let (chunks, bare_line_ends) = match data {
            Data::TooBig => return self.refuse(&reply::TOO_BIG).await,
            Data::Message {
                chunks,
                bare_line_ends,
            } => (chunks, bare_line_ends),
        };
        // The transaction's id (given at MAIL), in every log line about the message.
        let id = transaction.plan.id().to_string();
        if bare_line_ends > 0 {
            // RFC 5322 allows neither; they were made CRLF so that no next hop reads the
            // message differently from us (SMTP smuggling).
            tracing::info!(%id, peer = %self.peer, bare_line_ends, "bare CR or LF in DATA normalised to CRLF");
        }

        let (helo, esmtp) = self.helo.clone().unwrap_or_default();
        let envelope = Envelope {
            direction: self.direction,
            client_ip: self.peer.ip(),
            helo,
            tls: self.tls.clone(),
            esmtp,
            mail_from: transaction.mail_from,
            params: transaction.params,
            recipients: transaction.recipients,
        };
        let mut message = Message::from_chunks(chunks);
        let now = time::OffsetDateTime::now_utc();
        message.prepend(message::received_header(
            &envelope,
            &self.config().hostname,
            &id,
            now,
        ));
        let reply = self
            .shared
            .gateway
            .handle(&envelope, message, &id, &mut transaction.plan)
            .await;
        self.conn.queue(&reply);
        Ok(Flow::Continue)
    }

    async fn start_tls(&mut self) -> std::io::Result<Flow> {
        if self.shared.tls.is_none() {
            return self.refuse(&reply::NOT_IMPLEMENTED).await;
        }
        if self.tls.is_some() {
            return self.refuse(&reply::TLS_ACTIVE).await;
        }
        self.conn.queue(&reply::START_TLS);
        self.conn.flush().await?;
        Ok(Flow::StartTls)
    }

    /// Sends a refusal that was the client's fault, and ends the session once there
    /// have been too many.
    async fn refuse(&mut self, reply: &Reply) -> std::io::Result<Flow> {
        self.log_refusal(reply);
        self.errors += 1;
        self.conn.queue(reply);
        if self.errors >= self.config().limits.max_errors.get() {
            tracing::info!(peer = %self.peer, errors = self.errors, "dropping session after too many errors");
            return self.close_with(&reply::TOO_MANY_ERRORS).await;
        }
        Ok(Flow::Continue)
    }

    /// One line for a command refused before the message was handed on: what the
    /// transaction line is for an answered DATA. The id is the transaction's, when one
    /// was begun.
    fn log_refusal(&self, reply: &Reply) {
        let id = self.transaction.as_ref().map_or("-", |t| t.plan.id());
        tracing::info!(
            %id,
            direction = %self.direction,
            client = %self.peer.ip(),
            command = %self.command,
            reply = %reply,
            "refused"
        );
        crate::telemetry::refused(self.direction, reply);
    }

    /// Sends a last reply and ends the session.
    async fn close_with(&mut self, reply: &Reply) -> std::io::Result<Flow> {
        self.conn.queue(reply);
        // A client that does not read must not hold its slot: the flush is bounded.
        self.conn.flush().await?;
        Ok(Flow::Close)
    }
}

/// The first 120 characters of a command line into `out`, for the log: whatever the
/// client sent, no control character reaches the log (a CR or an escape sequence could
/// forge a line or drive the terminal of whoever reads it). Every command passes here,
/// so `out`'s buffer is reused rather than a string made per command.
fn loggable(line: &[u8], out: &mut String) {
    out.clear();
    out.extend(
        String::from_utf8_lossy(&line[..line.len().min(120)])
            .chars()
            .map(|c| if c.is_control() { '?' } else { c }),
    );
}

/// The MAIL parameter we do not offer, if the client used one. Accepted are SIZE=,
/// BODY=7BIT|8BITMIME and SMTPUTF8: exactly what EHLO advertises.
fn unsupported_mail_parameter(from: &MailFrom<Cow<'_, str>>) -> Option<&'static str> {
    let allowed = MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_SMTPUTF8;
    if from.flags & !allowed != 0 {
        Some("BODY/RET/REQUIRETLS")
    } else if from.env_id.is_some() {
        Some("ENVID")
    } else if from.auth.is_some() {
        Some("AUTH")
    } else if from.trans_id.is_some() || from.mtrk.is_some() || from.solicit.is_some() {
        Some("MTRK/SOLICIT")
    } else if from.by != 0 || from.hold_for != 0 || from.hold_until != 0 || from.mt_priority != 0 {
        Some("BY/HOLDFOR/HOLDUNTIL/MT-PRIORITY")
    } else {
        None
    }
}

/// Whether an address's local part routes onwards: the `%` hack
/// (`user%other.org@example.com`) or a UUCP bang path (`other.org!user@example.com`).
fn routes_elsewhere(address: &str) -> bool {
    let local = address.rsplit_once('@').map_or(address, |(local, _)| local);
    local.contains(['%', '!'])
}

/// Whether a RCPT line's path is `<Postmaster>`, in any case.
fn names_postmaster(line: &[u8]) -> bool {
    let line = String::from_utf8_lossy(line);
    line.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .is_some_and(|(path, _)| path.trim().eq_ignore_ascii_case("postmaster"))
}

/// The reply for a command smtp-proto could not parse.
fn parse_error_reply(error: &smtp_proto::Error) -> Reply {
    use smtp_proto::Error;
    match error {
        Error::UnknownCommand => reply::UNRECOGNIZED,
        Error::InvalidSenderAddress => reply::BAD_SENDER,
        Error::InvalidRecipientAddress => reply::BAD_RECIPIENT,
        Error::UnsupportedParameter { param } => reply::unsupported_parameter(param),
        Error::ResponseTooLong => reply::LINE_TOO_LONG,
        Error::SyntaxError { .. }
        | Error::InvalidParameter { .. }
        | Error::NeedsMoreData { .. }
        | Error::InvalidResponse { .. } => reply::SYNTAX,
    }
}
