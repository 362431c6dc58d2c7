//! What happens to one accepted client transaction: the policy's verdict for each
//! recipient, the recipients grouped by what they get, each group handed to the next
//! hop, and the one reply the client gets.
//!
//! The rules for that reply (issue 3, INTERFACE.md):
//! - every recipient accepted: `250`;
//! - nobody accepted: the failure itself; a temporary one wins, so the client retries;
//! - some accepted: the rest go into the durable spool (temporary failures) or become a
//!   DSN in the spool (permanent ones), flushed to disk, and only then `250`.

pub mod classify;
pub mod marks;
pub mod plan;
pub mod transform;

use std::sync::Arc;
use std::time::Instant;

use self::classify::Classifier;
use self::plan::{Plan, Planner};
use crate::keys::harvest::Harvester;
use crate::mail::Direction;
use crate::mail::envelope::Envelope;
use crate::mail::message::Message;
use crate::policy::{Treatment, Verdict};
use crate::relay::{Delivery, Outcome, Outgoing, Relays};
use crate::smtp::reply::{self, Reply};
use crate::spool::{Attempt, Spool, settle};

/// The part of the gateway that acts on messages; shared by every session.
pub struct Gateway {
    /// The policy in force and what it decides, at RCPT and after DATA.
    pub planner: Planner,
    /// Groups recipients by treatment and carries it out.
    pub classifier: Arc<dyn Classifier>,
    /// Where each direction's mail goes.
    pub relays: Relays,
    /// Holds copies that could not be handed on at once.
    pub spool: Spool,
    /// Our name, for DSNs.
    pub hostname: String,
    /// Takes accepted inbound messages for key harvesting, off this path.
    pub harvester: Harvester,
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
        let verdicts = self.planner.verdicts(plan, &message).await;
        log_verdicts(id, envelope, &verdicts);
        // Classifying may encrypt or decrypt: CPU work that must not stall the
        // runtime's threads, so then it runs on the blocking pool.
        let groups = if self.classifier.is_heavy(&verdicts) {
            let (classifier, env, msg, v) = (
                self.classifier.clone(),
                envelope.clone(),
                message.clone(),
                verdicts.clone(),
            );
            match tokio::task::spawn_blocking(move || classifier.classify(&env, &msg, &v)).await {
                Ok(groups) => groups,
                Err(e) => {
                    tracing::error!(%id, error = %e, "classifying the recipients failed");
                    return reply::local_error("internal error");
                }
            }
        } else {
            self.classifier.classify(envelope, &message, &verdicts)
        };

        let deliveries = futures::future::join_all(groups.iter().map(|group| {
            let tx = Outgoing {
                mail_from: envelope.mail_from.clone(),
                params: envelope.params.clone(),
                recipients: group
                    .recipients
                    .iter()
                    .map(|&i| envelope.recipients[i].clone())
                    .collect(),
                message: group.message.clone(),
                id: id.to_string(),
            };
            let refusal = group.refusal.clone();
            async move {
                match refusal {
                    Some(reply) => {
                        let delivery = Delivery::all(tx.recipients.len(), reply);
                        (tx, delivery, true)
                    }
                    None => {
                        let delivery = relay.deliver(&tx).await;
                        (tx, delivery, false)
                    }
                }
            }
        }))
        .await;

        let outcomes = || deliveries.iter().flat_map(|(_, d, _)| d.outcomes.iter());
        let accepted = outcomes().filter(|o| **o == Outcome::Completed).count();
        let total = outcomes().count();

        let reply = if accepted == total {
            reply::queued(id)
        } else if accepted == 0 {
            let first_temporary = outcomes().find(|o| matches!(o, Outcome::Temporary(_)));
            first_temporary
                .or_else(|| outcomes().next())
                .and_then(Outcome::reply)
                .cloned()
                .unwrap_or_else(|| reply::local_error("no outcome"))
        } else {
            match self
                .hold_the_rest(envelope, &deliveries, &message, id)
                .await
            {
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
            self.harvester.submit(&message);
        }

        let next_hop_replies: Vec<String> = deliveries
            .iter()
            .map(|(_, d, _)| d.reply.to_string())
            .collect();
        tracing::info!(
            %id,
            direction = %envelope.direction,
            client = %envelope.client_ip,
            from = %envelope.mail_from,
            to = ?envelope.recipients,
            size = message.len(),
            groups = deliveries.len(),
            next_hop = %relay.next_hop(),
            next_hop_reply = ?next_hop_replies,
            reply = %reply,
            ms = started.elapsed().as_millis() as u64,
            "transaction"
        );
        reply
    }

    /// Puts every copy that was not accepted into the spool, in one flushed batch.
    async fn hold_the_rest(
        &self,
        envelope: &Envelope,
        deliveries: &[(Outgoing, Delivery, bool)],
        original: &Message,
        id: &str,
    ) -> Result<(), crate::spool::SpoolError> {
        let relay = self.relays.get(envelope.direction);
        let mut held = Vec::new();
        let mut failures = Vec::new();
        for (tx, delivery, refused) in deliveries {
            let how = if *refused {
                Attempt::Refused
            } else {
                Attempt::Relayed
            };
            let settled = settle(&tx.recipients, &delivery.outcomes, how);
            failures.extend(settled.failures);
            let waiting = settled.waiting;
            // The reply the waiting recipients got, for the spool's log and its DSN.
            let last_reply = delivery.outcomes.iter().rev().find_map(|o| match o {
                Outcome::Temporary(reply) => Some(reply),
                _ => None,
            });
            if !waiting.is_empty() {
                let entry = self.spool.entry(
                    id,
                    envelope.direction,
                    &envelope.mail_from,
                    &envelope.params,
                    waiting,
                    last_reply,
                );
                held.push((entry, tx.message.clone()));
            }
        }
        let origin = self.spool.entry(
            id,
            envelope.direction,
            &envelope.mail_from,
            &envelope.params,
            Vec::new(),
            None,
        );
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

/// One line per recipient: the rule that decided and what it does, with the key used.
fn log_verdicts(id: &str, envelope: &Envelope, verdicts: &[Verdict]) {
    for (recipient, verdict) in envelope.recipients.iter().zip(verdicts) {
        let key = match &verdict.treatment {
            Treatment::Encrypt(key) => key.fingerprint.as_str(),
            _ => "",
        };
        tracing::info!(
            %id,
            direction = %envelope.direction,
            %recipient,
            rule = verdict.rule.as_deref().unwrap_or("none"),
            action = %verdict.action_text(),
            key,
            note = verdict.note.unwrap_or(""),
            "policy"
        );
    }
}
