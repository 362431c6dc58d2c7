//! What happens to one accepted client transaction: the policy's verdict for each
//! recipient, the recipients grouped by what they get, each group handed to the next
//! hop, and the one reply the client gets.
//!
//! The rules for that reply (the SMTP promises of INTERFACE.md):
//! - every recipient accepted: `250`;
//! - nobody accepted: the failure itself; a temporary one wins, so the client retries;
//! - some accepted: the rest go into the durable spool (temporary failures) or become a
//!   DSN in the spool (permanent ones), flushed to disk, and only then `250`.

mod cost;
pub mod marks;
pub mod plan;
pub mod prepared;
pub mod report;
pub mod transform;

use std::sync::Arc;
use std::time::Instant;

use self::plan::{Plan, Planner};
use self::transform::{Carried, Transform};

use crate::config::InboundDsn;
use crate::keys::harvest::Harvester;
use crate::mail::Direction;
use crate::mail::authentication::Authentication;
use crate::mail::envelope::Envelope;
use crate::mail::envelope::domain_of;
use crate::mail::message::Message;
use crate::policy::{Treatment, Verdict};
use crate::relay::{Delivery, Outcome, Outgoing, Relays};
use crate::smtp::reply::{self, Reply};
use crate::spool::{Attempt, Spool, SpoolError, settle};

/// The part of the gateway that acts on messages; shared by every session.
pub struct Gateway {
    /// The policy in force and what it decides, at RCPT and after DATA.
    pub planner: Planner,
    /// Carries out each recipient's verdict and groups the recipients by the message
    /// they get.
    pub transform: Arc<Transform>,
    /// Where each direction's mail goes.
    pub relays: Relays,
    /// Holds copies that could not be handed on at once.
    pub spool: Spool,
    /// Our name, for DSNs.
    pub hostname: String,
    /// Takes accepted inbound messages for key harvesting, off this path.
    pub harvester: Harvester,
    /// Notes internal users' mail, for the org key's renewal job.
    pub activity: crate::org::activity::Activity,
    /// `[org] autocrypt_outbound`.
    pub autocrypt: crate::org::autocrypt::Autocrypt,
}

/// One group's next-hop transaction and what became of it.
struct Handed {
    /// The group's recipients, as indexes into the envelope's.
    indices: Vec<usize>,
    tx: Outgoing,
    delivery: Delivery,
    /// sealgate refused the group itself (policy, failed encryption); the next hop
    /// never saw it.
    refused: bool,
}

impl Gateway {
    /// Hands the message on and returns the reply for the client's DATA. `plan` is
    /// the transaction's policy, with the recipients it accepted at RCPT, in the order
    /// of `envelope.recipients`.
    pub async fn handle(
        &self,
        envelope: &Envelope,
        message: Message,
        id: &str,
        plan: &mut Plan,
    ) -> Reply {
        let started = Instant::now();
        let relay = self.relays.get(envelope.direction);
        // No sender may say what sealgate did: fields of ours go before anything reads.
        let message = marks::strip_ours(&message, id);
        // Before the policy reads it: a copy that is encrypted carries the field outside.
        let message = match envelope.direction {
            Direction::Outbound => self.autocrypt.add(&message, &envelope.mail_from),
            Direction::Inbound => None,
        }
        .unwrap_or(message);
        let verdicts = self.planner.verdicts(plan, &message, id).await;
        let carried = match self.transform(envelope, &message, &verdicts, id).await {
            Ok(carried) => carried,
            Err(e) => {
                tracing::error!(%id, error = %e, "the transform task failed");
                log_verdicts(id, envelope, &verdicts, &[]);
                let reply = reply::local_error("internal error");
                let done = report::done(&verdicts, &[], &[]);
                let outcomes = vec![format!("sealgate {}", brief(&reply)); done.len()];
                report::Report {
                    id,
                    envelope,
                    size: message.len(),
                    done: &done,
                    outcomes: &outcomes,
                    tls_out: &[],
                    reply: &reply,
                    elapsed: started.elapsed(),
                }
                .record();
                return reply;
            }
        };
        // Logged once the transform knows what was done, not only what was asked.
        log_verdicts(id, envelope, &verdicts, &carried.done);
        let mut decrypted_with = vec![None; envelope.recipients.len()];
        for group in &carried.groups {
            if let Some(key) = group.label.strip_prefix("decrypted-") {
                for &i in &group.recipients {
                    decrypted_with[i] = Some(key.to_string());
                }
            }
        }
        let done = report::done(&verdicts, &carried.done, &decrypted_with);
        let mut groups = carried.groups;
        if self.planner.config.trace.header {
            for group in groups.iter_mut().filter(|g| g.refusal.is_none()) {
                let field = report::trace_field(id, envelope, &group.recipients, &done);
                group.message.prepend(field);
            }
        }

        let handed = futures::future::join_all(groups.into_iter().map(|group| {
            let tx = Outgoing {
                mail_from: envelope.mail_from.clone(),
                params: envelope.params.clone(),
                recipients: group
                    .recipients
                    .iter()
                    .map(|&i| envelope.recipients[i].clone())
                    .collect(),
                message: group.message,
                id: id.to_string(),
            };
            let indices = group.recipients;
            async move {
                match group.refusal {
                    Some(reply) => Handed {
                        indices,
                        delivery: Delivery::all(tx.recipients.len(), reply),
                        tx,
                        refused: true,
                    },
                    None => Handed {
                        indices,
                        delivery: relay.deliver(&tx).await,
                        tx,
                        refused: false,
                    },
                }
            }
        }))
        .await;

        let outcomes = || handed.iter().flat_map(|h| h.delivery.outcomes.iter());
        let accepted = outcomes().filter(|o| **o == Outcome::Completed).count();
        let total = outcomes().count();

        let reply = if accepted == total {
            reply::queued(id)
        } else if accepted == 0 {
            // A temporary failure wins, so that the client tries again.
            let failures = || {
                handed.iter().flat_map(|h| {
                    h.delivery
                        .outcomes
                        .iter()
                        .filter_map(|o| o.reply())
                        .map(move |r| (r, h.refused))
                })
            };
            let (reply, ours) = failures()
                .find(|(r, _)| r.is_temporary())
                .or_else(|| failures().next())
                .map(|(r, ours)| (r.clone(), ours))
                .unwrap_or_else(|| (reply::local_error("no outcome"), true));
            // The internal server's words (and ours about reaching it) stay inside.
            if envelope.direction == Direction::Inbound && !ours {
                reply::for_outsiders(&reply)
            } else {
                reply
            }
        } else {
            match self.hold_the_rest(envelope, &handed, &message, id).await {
                Ok(()) => reply::queued(id),
                Err(e) => {
                    // Some copies went out and the rest could not be held: the client
                    // must retry, and those who already got it will get it twice. That
                    // is the lesser harm; losing mail is not an option.
                    tracing::error!(%id, error = %e, "cannot hold undelivered copies");
                    reply::local_error("cannot queue the message")
                }
            }
        };

        if envelope.direction == Direction::Inbound
            && reply.is_positive()
            && verdicts.iter().any(|v| v.harvest)
        {
            self.harvester.submit(id, &message);
        }
        if reply.is_positive() {
            let now = time::OffsetDateTime::now_utc();
            match envelope.direction {
                Direction::Inbound => self
                    .activity
                    .record(envelope.recipients.iter().map(String::as_str), now),
                Direction::Outbound => self.activity.record([envelope.mail_from.as_str()], now),
            }
        }

        // Per recipient, what it came to: the next hop's word, or ours; and for a
        // failure among acceptances, whether it waits in the spool or became a DSN.
        let mut outcomes = vec![String::new(); envelope.recipients.len()];
        let mut tls_out = vec![false; envelope.recipients.len()];
        let partial = reply.is_positive() && accepted < total;
        for h in &handed {
            for (&i, outcome) in h.indices.iter().zip(&h.delivery.outcomes) {
                let by = if h.refused { "sealgate " } else { "" };
                outcomes[i] = match outcome {
                    Outcome::Completed => brief(&h.delivery.reply),
                    Outcome::Temporary(r) if partial => format!("{by}{} spooled", brief(r)),
                    Outcome::Permanent(r) if partial => format!("{by}{} DSN", brief(r)),
                    Outcome::Temporary(r) | Outcome::Permanent(r) => format!("{by}{}", brief(r)),
                };
                tls_out[i] = h.delivery.tls && !h.refused;
            }
        }
        report::Report {
            id,
            envelope,
            size: message.len(),
            done: &done,
            outcomes: &outcomes,
            tls_out: &tls_out,
            reply: &reply,
            elapsed: started.elapsed(),
        }
        .record();
        reply
    }

    /// Runs the transform. Decrypting, encrypting a large message or to many keys, and
    /// encrypting with the shared store's key material must not stall the runtime's
    /// threads, so then it runs on the blocking pool; the rest inline, where the
    /// hand-off would cost more than the work ([`Transform::is_heavy`]).
    async fn transform(
        &self,
        envelope: &Envelope,
        message: &Message,
        verdicts: &[Verdict],
        id: &str,
    ) -> Result<Carried, tokio::task::JoinError> {
        if !self.transform.is_heavy(verdicts, message.len()) {
            return Ok(self.transform.carry_out(envelope, message, verdicts, id));
        }
        let (transform, envelope, message, verdicts, id) = (
            self.transform.clone(),
            envelope.clone(),
            message.clone(),
            verdicts.to_vec(),
            id.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            transform.carry_out(&envelope, &message, &verdicts, &id)
        })
        .await
    }

    /// Puts every copy that was not accepted into the spool, in one flushed batch.
    async fn hold_the_rest(
        &self,
        envelope: &Envelope,
        handed: &[Handed],
        original: &Message,
        id: &str,
    ) -> Result<(), SpoolError> {
        let relay = self.relays.get(envelope.direction);
        let notify = self.may_notify(envelope, original);
        let mut held = Vec::new();
        let mut failures = Vec::new();
        for Handed {
            tx,
            delivery,
            refused,
            ..
        } in handed
        {
            let how = if *refused {
                Attempt::Refused
            } else {
                Attempt::Relayed
            };
            let settled = settle(&tx.recipients, &delivery.outcomes, how);
            failures.extend(settled.failures);
            // The reply the waiting recipients got, for the spool's log and its DSN.
            let last_reply = delivery.outcomes.iter().rev().find_map(|o| match o {
                Outcome::Temporary(reply) => Some(reply),
                _ => None,
            });
            if !settled.waiting.is_empty() {
                let mut entry = self.spool.entry(
                    id,
                    envelope.direction,
                    &envelope.mail_from,
                    &envelope.params,
                    settled.waiting,
                    last_reply,
                );
                entry.notify = notify;
                held.push((entry, tx.message.clone()));
            }
        }
        let mut origin = self.spool.entry(
            id,
            envelope.direction,
            &envelope.mail_from,
            &envelope.params,
            Vec::new(),
            None,
        );
        origin.notify = notify;
        if let Some(notice) = self.spool.notice(
            &origin,
            &failures,
            original,
            relay.next_hop().to_string(),
            &self.hostname,
        ) {
            held.push(notice);
        }
        tracing::info!(%id, held = held.len(), failed = failures.len(), "holding copies in the spool");
        self.spool.hold(held).await
    }
}

impl Gateway {
    /// Whether the sender of this message may get a DSN: always for outbound mail,
    /// whose senders are ours; for inbound mail, as `[spool] inbound_dsn` says. With
    /// "verified", only when the trusted MTA in front vouches for the envelope sender's
    /// domain (SPF, or DKIM or DMARC): a DSN to a forged sender is backscatter.
    fn may_notify(&self, envelope: &Envelope, message: &Message) -> bool {
        let config = &self.planner.config;
        if envelope.direction == Direction::Outbound {
            return true;
        }
        match config.spool.inbound_dsn {
            InboundDsn::Always => true,
            InboundDsn::Never => false,
            InboundDsn::Verified => {
                let head = message.header_block(256 * 1024);
                let Some(parsed) = crate::mail::parser::parser().parse_headers(&head) else {
                    return false;
                };
                let values = parsed
                    .headers()
                    .iter()
                    .filter(|h| {
                        h.name
                            .as_str()
                            .eq_ignore_ascii_case("Authentication-Results")
                    })
                    .filter_map(|h| head.get(h.offset_start as usize..h.offset_end as usize))
                    .filter_map(|v| std::str::from_utf8(v).ok());
                Authentication::read(values, &config.inbound.trusted_authserv_ids)
                    .vouches_for_sender(domain_of(&envelope.mail_from))
            }
        }
    }
}

/// A reply's code and enhanced status ("250 2.0.0"), for the transaction line: the
/// texts are in the lines of the next hop's own log.
fn brief(reply: &Reply) -> String {
    format!("{} {}", reply.code, reply.status())
}

/// At debug level, one line per recipient: the rule that decided, what its verdict
/// asked for (with the key to encrypt to), and as `action` what was done (`done[i]`;
/// empty when the transform did not run). The `transaction` line says it all at info.
fn log_verdicts(id: &str, envelope: &Envelope, verdicts: &[Verdict], done: &[String]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for (i, (recipient, verdict)) in envelope.recipients.iter().zip(verdicts).enumerate() {
        let key = match &verdict.treatment {
            Treatment::Encrypt(key) => key.fingerprint.as_str(),
            _ => "",
        };
        tracing::debug!(
            %id,
            direction = %envelope.direction,
            %recipient,
            rule = verdict.rule.as_deref().unwrap_or("none"),
            asked = %verdict.asks(),
            // What was done: README's `action`, written as before for log readers.
            action = %done.get(i).map_or("nothing (the transform failed)", String::as_str),
            key,
            note = verdict.note.unwrap_or(""),
            "policy"
        );
    }
}
