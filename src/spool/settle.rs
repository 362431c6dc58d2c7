//! The one mapping from a next hop's outcome to another try or a DSN, for the
//! gateway's first attempt and for the spool's retries alike.

use super::dsn::Failure;
use crate::relay::Outcome;
use crate::smtp::reply::{self, Reply};

/// How a copy that did not reach everyone came to fail: what decides between one more
/// try and a DSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The next hop was asked, and the copy may be tried again.
    Relayed,
    /// The next hop was asked, and the copy has outlived `[spool] lifetime`.
    Expired,
    /// sealgate refused the copy before relaying it (a policy refusal, or encryption
    /// failed): there is no message fit to send later, because the spool retries the
    /// relay, not the policy or the encryption.
    Refused,
}

/// The recipients of one next-hop transaction, sorted by what becomes of them.
#[derive(Debug, Default)]
pub struct Settled {
    /// Temporary failures to try again.
    pub waiting: Vec<String>,
    /// Failures for good, which the sender hears of in a DSN.
    pub failures: Vec<Failure>,
}

/// The one mapping from a next-hop outcome to a retry or a DSN, for the gateway's
/// first attempt and for the spool's retries alike. A permanent refusal is a failure;
/// a temporary one waits for another try unless the copy was refused by us or has
/// expired, which makes it a failure too.
pub fn settle(recipients: &[String], outcomes: &[Outcome], how: Attempt) -> Settled {
    let mut settled = Settled::default();
    let remote = how != Attempt::Refused;
    for (recipient, outcome) in recipients.iter().zip(outcomes) {
        let failed = |reply: Reply| Failure {
            recipient: recipient.clone(),
            reply,
            remote,
        };
        match (outcome, how) {
            (Outcome::Completed, _) => {}
            (Outcome::Permanent(reply), _) => settled.failures.push(failed(reply.clone())),
            (Outcome::Temporary(reply), Attempt::Refused) => {
                settled.failures.push(failed(reply.clone()))
            }
            (Outcome::Temporary(reply), Attempt::Expired) => settled
                .failures
                .push(failed(reply::delivery_expired(reply))),
            (Outcome::Temporary(_), Attempt::Relayed) => settled.waiting.push(recipient.clone()),
        }
    }
    settled
}
