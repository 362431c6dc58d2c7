//! A small SMTP client for the next hop, on smtp-proto's reply parser.
//!
//! Why not lettre: its `send_raw` gives up at the first refused RCPT, its lower-level
//! connection has no PIPELINING, flattens multi-line replies, and copies the whole
//! message to dot-stuff it. A proxy must report each recipient's own reply, pass the
//! next hop's codes back verbatim, and stream a 25 MiB message without a second copy.
//!
//! Two ways in. [`deliver`] serves a smart host: plain SMTP, connections kept in a
//! small pool and reused for later transactions. [`attempt`] serves MX delivery: one
//! transaction on a fresh connection to one server among several, with STARTTLS when
//! the server offers it, and whether that server decided anything or the
//! next one should be tried.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;

pub use super::client::StartTls;
use super::client::{Broken, Client, Unopened};
use super::stream::Stream;
use super::{Delivery, Outcome, Outgoing};
use crate::config::RelayConfig;
use crate::mail::envelope::Body;
use crate::smtp::reply::{self, Reply};

/// The end of a conversation that did not finish, and how far it had come.
#[derive(Debug)]
struct Lost {
    broken: Broken,
    /// The server had answered something in this transaction.
    answered: bool,
    /// The final dot was on its way: the server may have taken the message.
    committed: bool,
}

/// Idle connections to one next hop, reused for later transactions (RFC 5321 allows a
/// new MAIL after a completed one). Reuse saves the connect, greeting, EHLO and QUIT
/// round trips that otherwise cost more than the transaction itself on a fast link.
#[derive(Default)]
pub struct Pool {
    idle: std::sync::Mutex<Vec<(Client, std::time::Instant)>>,
}

/// Most idle connections kept per next hop.
const MAX_IDLE: usize = 32;
/// An idle connection older than this is closed rather than reused: servers drop idle
/// clients (Postfix after 300 s), and a reused connection should not meet that.
const IDLE_FOR: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().map_or(0, |idle| idle.len());
        f.debug_struct("Pool").field("idle", &idle).finish()
    }
}

impl Pool {
    /// A connection that is still open and quiet, if there is one.
    fn take(&self) -> Option<Client> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((client, since)) = idle.pop() {
            if since.elapsed() < IDLE_FOR && client.is_quiet() {
                return Some(client);
            }
        }
        None
    }

    fn put(&self, client: Client) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push((client, std::time::Instant::now()));
            return;
        }
        client.quit();
    }
}

/// Whether the next hop as a whole was there for a transaction: what its circuit
/// breaker learns from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// It answered, whatever it said about the message or its recipients.
    Answered,
    /// It could not be reached, timed out, dropped the connection or said 421 (RFC 5321
    /// §3.8: the service is not available and the channel is closing).
    Unavailable,
}

pub async fn deliver(
    addr: &str,
    hostname: &str,
    config: &RelayConfig,
    pool: &Pool,
    tx: &Outgoing,
) -> (Delivery, Reach) {
    let mut outcomes = vec![None; tx.recipients.len()];
    if let Some(client) = pool.take() {
        match transact(client, config, Some(pool), tx, &mut outcomes).await {
            // A stale pooled connection: nothing was said about this transaction yet,
            // so it is simply tried again on a fresh one.
            Err(Lost {
                answered: false, ..
            }) => outcomes.iter_mut().for_each(|o| *o = None),
            result => return delivery(result.map_err(|lost| lost.broken), outcomes),
        }
    }
    let result = match open(addr, hostname, config, None).await {
        Ok(client) => transact(client, config, Some(pool), tx, &mut outcomes)
            .await
            .map_err(|lost| lost.broken),
        Err(Unopened::Refused(refusal)) => Ok(refusal),
        Err(Unopened::Broken(broken)) => Err(broken),
    };
    delivery(result, outcomes)
}

/// One conversation with one server among several (an MX host's address), on a
/// connection of its own that is closed afterwards.
#[derive(Debug)]
pub struct Attempt {
    pub outcome: HostOutcome,
    /// Whether the server as a whole was there, for its circuit breaker.
    pub reach: Reach,
    /// The transaction went over TLS.
    pub tls: bool,
    /// STARTTLS was agreed and the handshake failed. The caller may try the server
    /// once more without TLS.
    pub tls_failed: bool,
}

/// Whether a server decided the transaction.
#[derive(Debug)]
pub enum HostOutcome {
    /// The server took part in the transaction (it answered MAIL, RCPT or DATA, or
    /// the connection was lost once the message may have been taken): its outcomes
    /// stand, and no other server is to be asked.
    Decided(Delivery),
    /// Nothing was decided here: the connection failed, the greeting or EHLO was a
    /// refusal, the server said 421, or the connection was lost before the final dot.
    /// Another server may be asked.
    Undecided {
        /// Why, for the log and for the reply if no server decides.
        reason: String,
        /// Per recipient: `Some` for one this server refused for good at RCPT (5xx);
        /// that refusal stands.
        refused: Vec<Option<Outcome>>,
    },
}

/// Runs `tx` on a fresh connection to `addr`, with STARTTLS first when the server
/// offers it and `starttls` is given. The connection is closed afterwards, never
/// pooled: the pool's check that an idle connection is still open reads the socket
/// itself, which TLS does not allow.
pub async fn attempt(
    addr: &str,
    hostname: &str,
    config: &RelayConfig,
    tx: &Outgoing,
    starttls: Option<&StartTls>,
) -> Attempt {
    let mut outcomes = vec![None; tx.recipients.len()];
    let client = match open(addr, hostname, config, starttls).await {
        Ok(client) => client,
        Err(Unopened::Refused(refusal)) => {
            let reach = if refusal.code == 421 {
                Reach::Unavailable
            } else {
                Reach::Answered
            };
            return Attempt {
                outcome: HostOutcome::Undecided {
                    reason: refusal.to_string(),
                    refused: outcomes,
                },
                reach,
                tls: false,
                tls_failed: false,
            };
        }
        Err(Unopened::Broken(broken)) => {
            // A failed handshake is a server that answered: the breaker is left alone,
            // and the retry without TLS says whether the server is there.
            let tls_failed = matches!(broken, Broken::Tls(_));
            return Attempt {
                outcome: HostOutcome::Undecided {
                    reason: broken.to_string(),
                    refused: outcomes,
                },
                reach: if tls_failed {
                    Reach::Answered
                } else {
                    Reach::Unavailable
                },
                tls: false,
                tls_failed,
            };
        }
    };
    let tls = client.tls;
    let result = transact(client, config, None, tx, &mut outcomes).await;
    let undecided = match &result {
        Ok(reply) if reply.code == 421 => Some(reply.to_string()),
        Ok(_) => None,
        Err(lost) if !lost.committed => Some(lost.broken.to_string()),
        Err(_) => None,
    };
    let (delivery, reach) = delivery(result.map_err(|lost| lost.broken), outcomes);
    let outcome = match undecided {
        None => HostOutcome::Decided(Delivery { tls, ..delivery }),
        Some(reason) => HostOutcome::Undecided {
            reason,
            refused: delivery
                .outcomes
                .into_iter()
                .map(|o| matches!(o, Outcome::Permanent(_)).then_some(o))
                .collect(),
        },
    };
    Attempt {
        outcome,
        reach,
        tls,
        tls_failed: false,
    }
}

/// Turns the end of a conversation into an outcome per recipient, and says whether
/// the next hop was there.
fn delivery(result: Result<Reply, Broken>, outcomes: Vec<Option<Outcome>>) -> (Delivery, Reach) {
    match result {
        Ok(reply) => {
            let reach = if reply.code == 421 {
                Reach::Unavailable
            } else {
                Reach::Answered
            };
            let delivery = Delivery {
                outcomes: outcomes
                    .into_iter()
                    .map(|o| o.unwrap_or_else(|| Outcome::from_reply(reply.clone())))
                    .collect(),
                reply,
                tls: false,
            };
            (delivery, reach)
        }
        Err(broken) => {
            let reply = reply::next_hop_unavailable(&broken.to_string());
            // Recipients the next hop already refused keep their own reply; everyone
            // else is a temporary failure.
            let delivery = Delivery {
                outcomes: outcomes
                    .into_iter()
                    .map(|o| match o {
                        Some(refused @ Outcome::Permanent(_)) => refused,
                        _ => Outcome::Temporary(reply.clone()),
                    })
                    .collect(),
                reply,
                tls: false,
            };
            (delivery, Reach::Unavailable)
        }
    }
}

/// Connects, reads the greeting and says EHLO (HELO if EHLO is refused). With
/// `starttls`, and when the server offers STARTTLS, it then upgrades to TLS and says
/// EHLO again (RFC 3207).
async fn open(
    addr: &str,
    hostname: &str,
    config: &RelayConfig,
    starttls: Option<&StartTls>,
) -> Result<Client, Unopened> {
    let stream = timeout(config.connect_timeout.0, TcpStream::connect(addr))
        .await
        .map_err(|_| Broken::Timeout("connect"))?
        .map_err(|e| Broken::Connect(addr.to_string(), e))?;
    stream.set_nodelay(true).map_err(Broken::from)?;
    let mut client = Client::new(Stream::Plain(stream), config.command_timeout.0);

    let greeting = client.read_reply("greeting").await?;
    if !greeting.is_positive() {
        return Err(Unopened::Refused(greeting));
    }
    client.hello(hostname).await?;
    let Some(starttls) = starttls.filter(|_| client.ext.starttls) else {
        return Ok(client);
    };
    client.send(b"STARTTLS\r\n").await?;
    let reply = client.read_reply("STARTTLS").await?;
    if reply.code != 220 {
        // Opportunistic TLS: a server that offers STARTTLS and then declines it still
        // takes mail in the clear on this session.
        tracing::info!(next_hop = addr, reply = %reply, "STARTTLS declined; going on without TLS");
        return Ok(client);
    }
    let mut client = client.start_tls(starttls).await?;
    client.hello(hostname).await?;
    Ok(client)
}

/// Runs one transaction on an open connection. Recipients refused at RCPT get their
/// outcome in `outcomes`; the returned reply (to DATA's end, or the one that stopped
/// the transaction) applies to the rest. A connection left in a clean state goes back
/// to the pool, if there is one; otherwise it is closed. On failure, [`Lost`] says how
/// far the transaction had come.
async fn transact(
    mut client: Client,
    config: &RelayConfig,
    pool: Option<&Pool>,
    tx: &Outgoing,
    outcomes: &mut [Option<Outcome>],
) -> Result<Reply, Lost> {
    client.answered = false;
    client.committed = false;
    let result = converse(&mut client, config, tx, outcomes).await;
    match result {
        Ok((reply, clean)) => {
            match pool {
                Some(pool) if clean => pool.put(client),
                _ => client.quit(),
            }
            Ok(reply)
        }
        Err(broken) => Err(Lost {
            broken,
            answered: client.answered,
            committed: client.committed,
        }),
    }
}

/// The transaction proper; also says whether the connection is back in its initial
/// state (after the reply to the final dot) and may be reused.
async fn converse(
    client: &mut Client,
    config: &RelayConfig,
    tx: &Outgoing,
    outcomes: &mut [Option<Outcome>],
) -> Result<(Reply, bool), Broken> {
    let ext = &client.ext;
    if tx.params.smtputf8 && !ext.smtputf8 {
        // RFC 6531 §3.4: a message that needs SMTPUTF8 must not go to a server that
        // cannot take it; the sender has to know.
        return Ok((reply::NEXT_HOP_NO_SMTPUTF8, false));
    }

    let mut mail = format!("MAIL FROM:<{}>", tx.mail_from);
    if ext.size {
        mail.push_str(&format!(" SIZE={}", tx.message.len()));
    }
    if ext.eight_bit {
        match tx.params.body {
            Some(Body::EightBitMime) => mail.push_str(" BODY=8BITMIME"),
            Some(Body::SevenBit) => mail.push_str(" BODY=7BIT"),
            None => {}
        }
    }
    if ext.smtputf8 && tx.params.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    mail.push_str("\r\n");
    let pipelining = ext.pipelining;

    // With PIPELINING, MAIL, every RCPT and DATA go out in one write (RFC 2920).
    let mut commands = vec![mail];
    commands.extend(tx.recipients.iter().map(|r| format!("RCPT TO:<{r}>\r\n")));
    commands.push("DATA\r\n".into());
    let mut replies = Vec::with_capacity(commands.len());
    if pipelining {
        client.send(commands.concat().as_bytes()).await?;
        for _ in 0..commands.len() {
            replies.push(client.read_reply("MAIL/RCPT/DATA").await?);
        }
    } else {
        // Lock-step: stop after a refused MAIL, and send DATA only if someone was taken.
        let (data, envelope) = commands.split_last().ok_or(Broken::Garbled)?;
        for (i, command) in envelope.iter().enumerate() {
            client.send(command.as_bytes()).await?;
            let reply = client.read_reply("MAIL/RCPT").await?;
            let refused_mail = i == 0 && !reply.is_positive();
            replies.push(reply);
            if refused_mail {
                break;
            }
        }
        if replies.len() == envelope.len() && replies[1..].iter().any(Reply::is_positive) {
            client.send(data.as_bytes()).await?;
            replies.push(client.read_reply("DATA").await?);
        }
    }

    let mut replies = replies.into_iter();
    let mail_reply = replies.next().ok_or(Broken::Garbled)?;
    if !mail_reply.is_positive() {
        return Ok((mail_reply, false));
    }
    let mut accepted = 0;
    for outcome in outcomes.iter_mut() {
        let reply = replies.next().ok_or(Broken::Garbled)?;
        if reply.is_positive() {
            accepted += 1;
        } else {
            *outcome = Some(Outcome::from_reply(reply));
        }
    }
    let data_reply = replies.next();
    if accepted == 0 {
        // Nobody accepted: the recipients' own replies say everything.
        let first_refusal = outcomes.iter().flatten().find_map(Outcome::reply).cloned();
        return first_refusal.map(|r| (r, false)).ok_or(Broken::Garbled);
    }
    let data_reply = data_reply.ok_or(Broken::Garbled)?;
    if data_reply.code != 354 {
        return Ok((data_reply, false));
    }

    let data_timeout = config.data_timeout.0;
    timeout(data_timeout, client.send_message(tx))
        .await
        .map_err(|_| Broken::Timeout("sending the message"))??;
    let final_reply = client
        .read_reply_within("end of DATA", data_timeout)
        .await?;
    // A 421 means the server is closing; anything else leaves it ready for MAIL.
    let clean = final_reply.code != 421;
    Ok((final_reply, clean))
}
