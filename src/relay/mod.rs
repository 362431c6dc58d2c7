//! The client side towards the next hop. It hands one next-hop transaction on and
//! reports, per recipient, whether the next hop took it. It decides nothing.
//!
//! `smtp.rs` speaks SMTP to a server (over `stream.rs`, TCP or TLS, with `dot.rs`
//! encoding DATA), `dir.rs` writes `.eml` files, `mx.rs` delivers by
//! MX lookup (a transaction per recipient domain, its MX hosts in turn, STARTTLS when
//! offered), and `breaker.rs` leaves an SMTP next hop (or an MX host's address) that
//! failed alone for a while. The outcome keeps temporary apart from permanent, because
//! that decides whether anyone should retry.

pub mod admin;
pub mod breaker;
mod client;
mod dir;
mod dot;
mod mx;
mod smtp;
mod stream;

use std::sync::Arc;

use self::breaker::{Breakers, Resting};
use crate::config::{NextHop, RelayConfig};
use crate::dns::DnsResolver;
use crate::mail::envelope::MailParams;
use crate::mail::message::Message;
use crate::smtp::reply::{self, Reply};

/// One next-hop transaction: an envelope and the message that goes with it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Reverse path; empty for the null sender.
    pub mail_from: String,
    /// MAIL parameters the client gave, passed on where the next hop supports them.
    pub params: MailParams,
    pub recipients: Vec<String>,
    pub message: Message,
    /// For file names and logs.
    pub id: String,
}

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The next hop accepted the message for this recipient.
    Completed,
    /// A 4xx, a dropped connection or a timeout: trying again later may succeed.
    Temporary(Reply),
    /// A 5xx: trying again will not help.
    Permanent(Reply),
}

impl Outcome {
    /// Classifies a reply from a server.
    pub fn from_reply(reply: Reply) -> Outcome {
        match reply.code {
            200..=299 => Outcome::Completed,
            500..=599 => Outcome::Permanent(reply),
            _ => Outcome::Temporary(reply),
        }
    }

    /// The reply behind a failure.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Outcome::Completed => None,
            Outcome::Temporary(r) | Outcome::Permanent(r) => Some(r),
        }
    }
}

/// The result of one next-hop transaction: an outcome per recipient, in order, and the
/// final reply for the log.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub outcomes: Vec<Outcome>,
    /// The reply to the end of DATA, or the reply that ended the attempt.
    pub reply: Reply,
    /// The transaction went over TLS (with MX delivery: to every domain's host).
    pub tls: bool,
}

impl Delivery {
    /// Every recipient gets the same outcome.
    pub fn all(count: usize, reply: Reply) -> Delivery {
        let outcome = Outcome::from_reply(reply.clone());
        Delivery {
            outcomes: vec![outcome; count],
            reply,
            tls: false,
        }
    }
}

/// A next hop of one direction, ready to take transactions.
#[derive(Debug, Clone)]
pub struct Relay {
    hop: NextHop,
    /// Idle connections to an SMTP next hop.
    pool: Arc<smtp::Pool>,
    config: Arc<RelayConfig>,
    /// Our name in EHLO.
    hostname: Arc<str>,
    /// The circuit breakers of SMTP next hops, by "host:port": a next hop that failed
    /// is left alone for a while rather than sent a connection per transaction. A
    /// `dir:` next hop has none; a disk error is not helped by waiting. MX delivery
    /// keeps one per MX host address, by "ip:port".
    breakers: Arc<Breakers>,
    /// The resolver and TLS client of MX delivery; set by [`Relays::with_resolver`].
    mx: Option<Arc<mx::Mx>>,
}

impl Relay {
    pub fn new(hop: NextHop, config: RelayConfig, hostname: &str) -> Relay {
        let breakers = Arc::new(Breakers::new(&config));
        Relay::with_breakers(hop, config, hostname, breakers)
    }

    /// A relay that shares its circuit breakers with others, so that a next hop both
    /// directions use is marked for both when it fails.
    fn with_breakers(
        hop: NextHop,
        config: RelayConfig,
        hostname: &str,
        breakers: Arc<Breakers>,
    ) -> Relay {
        Relay {
            hop,
            pool: Arc::default(),
            breakers,
            config: Arc::new(config),
            hostname: hostname.into(),
            mx: None,
        }
    }

    pub fn next_hop(&self) -> &NextHop {
        &self.hop
    }

    /// Hands `tx` to the next hop and reports what happened to each recipient, once the
    /// next hop has answered. While the next hop rests after a failure (with MX
    /// delivery: every host of every recipient domain), every recipient gets `451 4.4.1`
    /// at once and no connection is made.
    pub async fn deliver(&self, tx: &Outgoing) -> Delivery {
        match self.try_deliver(tx).await {
            Ok(delivery) => delivery,
            Err(resting) => {
                let minutes_left = resting.minutes();
                tracing::info!(
                    id = %tx.id,
                    next_hop = %self.hop,
                    minutes_left,
                    "next hop unavailable: transaction deferred without a connection"
                );
                Delivery::all(tx.recipients.len(), reply::next_hop_resting(minutes_left))
            }
        }
    }

    /// Like [`Relay::deliver`], but a resting next hop is reported to the caller rather
    /// than answered for each recipient: the spool's retrier then leaves its entry be.
    pub async fn try_deliver(&self, tx: &Outgoing) -> Result<Delivery, Resting> {
        let delivery = self.try_deliver_to_hop(tx).await?;
        crate::telemetry::next_hop_reply(&delivery.reply);
        Ok(delivery)
    }

    async fn try_deliver_to_hop(&self, tx: &Outgoing) -> Result<Delivery, Resting> {
        match &self.hop {
            NextHop::Smtp(addr) => {
                let breaker = self.breakers.get(addr);
                let pass = breaker.admit()?;
                let (delivery, reach) =
                    smtp::deliver(addr, &self.hostname, &self.config, &self.pool, tx).await;
                match reach {
                    smtp::Reach::Answered => pass.succeeded(),
                    smtp::Reach::Unavailable => pass.failed(&delivery.reply.to_string()),
                }
                Ok(delivery)
            }
            NextHop::Dir(path) => Ok(dir::deliver(path, tx).await),
            NextHop::Mx => match &self.mx {
                Some(mx) => {
                    let cx = mx::RelayParts {
                        config: &self.config,
                        hostname: &self.hostname,
                        breakers: &self.breakers,
                    };
                    mx.deliver(&cx, tx).await
                }
                // A relay built without `with_resolver`: a bug, not the admin's doing.
                None => Ok(Delivery::all(
                    tx.recipients.len(),
                    reply::local_error("MX delivery has no DNS resolver"),
                )),
            },
        }
    }

    /// Why this relay's next hop may not be tried now, if it may not. It takes no
    /// probe: a cheap look before work that would be wasted (reading a spooled message).
    /// With MX delivery the hosts are only known after DNS, so this is always `None`;
    /// [`Relay::try_deliver`] still reports a transaction whose hosts all rest.
    pub fn resting(&self) -> Option<Resting> {
        match &self.hop {
            NextHop::Smtp(addr) => self.breakers.get(addr).resting(),
            NextHop::Dir(_) | NextHop::Mx => None,
        }
    }
}

/// The next hops of both directions.
#[derive(Debug, Clone)]
pub struct Relays {
    pub inbound: Relay,
    pub outbound: Relay,
}

impl Relays {
    /// The relays of both directions. They share their circuit breakers: when both
    /// directions hand mail to the same "host:port", it is one next hop, and a failure
    /// seen by one direction spares the other a connection attempt.
    pub fn new(
        inbound: NextHop,
        outbound: NextHop,
        config: &RelayConfig,
        hostname: &str,
    ) -> Relays {
        let breakers = Arc::new(Breakers::new(config));
        Relays {
            inbound: Relay::with_breakers(inbound, config.clone(), hostname, breakers.clone()),
            outbound: Relay::with_breakers(outbound, config.clone(), hostname, breakers),
        }
    }

    /// Gives both relays the resolver that MX delivery (`next_hop = "mx"`) asks for
    /// each recipient domain's MX hosts.
    pub fn with_resolver(mut self, resolver: DnsResolver) -> Relays {
        let mx = Arc::new(mx::Mx::new(resolver));
        self.inbound.mx = Some(mx.clone());
        self.outbound.mx = Some(mx);
        self
    }

    /// The circuit breakers both directions share.
    pub fn breakers(&self) -> &Breakers {
        &self.inbound.breakers
    }

    pub fn get(&self, direction: crate::mail::Direction) -> &Relay {
        match direction {
            crate::mail::Direction::Inbound => &self.inbound,
            crate::mail::Direction::Outbound => &self.outbound,
        }
    }
}
