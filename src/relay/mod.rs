//! The client side towards the next hop. It hands one next-hop transaction on and
//! reports, per recipient, whether the next hop took it. It decides nothing.
//!
//! `smtp.rs` speaks SMTP to a server, `dir.rs` writes `.eml` files. The outcome keeps
//! temporary apart from permanent, because that decides whether anyone should retry.

mod dir;
mod smtp;

use std::sync::Arc;

use crate::config::{NextHop, RelayConfig};
use crate::envelope::MailParams;
use crate::message::Message;
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
}

impl Delivery {
    /// Every recipient gets the same outcome.
    pub fn all(count: usize, reply: Reply) -> Delivery {
        let outcome = Outcome::from_reply(reply.clone());
        Delivery {
            outcomes: vec![outcome; count],
            reply,
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
}

impl Relay {
    pub fn new(hop: NextHop, config: RelayConfig, hostname: &str) -> Relay {
        Relay {
            hop,
            pool: Arc::default(),
            config: Arc::new(config),
            hostname: hostname.into(),
        }
    }

    pub fn next_hop(&self) -> &NextHop {
        &self.hop
    }

    /// Hands `tx` to the next hop and reports what happened to each recipient.
    pub async fn deliver(&self, tx: &Outgoing) -> Delivery {
        match &self.hop {
            NextHop::Smtp(addr) => {
                smtp::deliver(addr, &self.hostname, &self.config, &self.pool, tx).await
            }
            NextHop::Dir(path) => dir::deliver(path, tx).await,
            // Refused when the config loads; kept so that the DNS issue has its place.
            NextHop::Mx => Delivery::all(
                tx.recipients.len(),
                reply::local_error("MX delivery is not available in this build"),
            ),
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
    pub fn get(&self, direction: crate::config::Direction) -> &Relay {
        match direction {
            crate::config::Direction::Inbound => &self.inbound,
            crate::config::Direction::Outbound => &self.outbound,
        }
    }
}
