//! One transaction's policy: fixed when MAIL starts it, asked at each RCPT, and asked
//! again after DATA for every recipient's verdict.
//!
//! What depends only on the envelope (addresses, what the key cache knows) is decided
//! at RCPT, so a recipient refused by the envelope alone gets its own RCPT reply. The
//! rest waits for the message. A transaction keeps the policy it started with, even
//! when a reload replaces it meanwhile.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::config::{Config, Direction};
use crate::envelope::domain_of;
use crate::keys::{KeyEntry, KeyStore, address};
use crate::message::Message;
use crate::mime;
use crate::policy::verdict::Context;
use crate::policy::{Content, Evaluation, Facts, Live, Policy, Treatment, Verdict};
use crate::smtp::reply::Reply;

/// Makes plans: the policy in force and the key cache it consults.
pub struct Planner {
    pub policy: Arc<Live>,
    pub keys: Arc<dyn KeyStore>,
    pub config: Arc<Config>,
}

/// The policy a transaction runs on, and what was learnt about each recipient.
pub struct Plan {
    policy: Arc<Policy>,
    direction: Direction,
    sender: String,
    /// In the order the recipients were accepted.
    recipients: Vec<Screened>,
}

struct Screened {
    address: String,
    facts: Facts,
    entries: Vec<KeyEntry>,
}

impl Planner {
    /// At MAIL: takes the policy in force now.
    pub fn begin(&self, direction: Direction, mail_from: &str) -> Plan {
        Plan {
            policy: self.policy.current(),
            direction,
            sender: mail_from.to_string(),
            recipients: Vec::new(),
        }
    }

    /// At RCPT: refuses the recipient when the envelope alone decides so; otherwise
    /// remembers it for DATA.
    pub fn screen(&self, plan: &mut Plan, recipient: &str) -> Result<(), Reply> {
        let now = OffsetDateTime::now_utc();
        let entries = self.entries(recipient)?;
        // The bare "postmaster" (RFC 5321 §4.5.1) is ours too.
        let internal = self.config.is_internal_domain(domain_of(recipient))
            || recipient.eq_ignore_ascii_case("postmaster");
        let facts = Facts::from_entries(&plan.sender, recipient, internal, &entries, now);
        let chain = plan.policy.chain(plan.direction);
        if let Evaluation::Decided(decision) = chain.evaluate(&facts, None) {
            let verdict = Verdict::new(
                chain,
                &decision,
                &self.context(recipient, &entries, now, None),
            );
            if let Treatment::Refuse(reply) = verdict.treatment {
                tracing::info!(
                    direction = %plan.direction,
                    from = %plan.sender,
                    %recipient,
                    rule = verdict.rule.as_deref().unwrap_or("none"),
                    note = verdict.note.unwrap_or(""),
                    %reply,
                    "refused at RCPT by policy"
                );
                return Err(reply);
            }
        }
        plan.recipients.push(Screened {
            address: recipient.to_string(),
            facts,
            entries,
        });
        Ok(())
    }

    /// After DATA: the verdict for each recipient, in the order they were accepted.
    pub fn verdicts(&self, plan: &Plan, message: &Message) -> Vec<Verdict> {
        let chain = plan.policy.chain(plan.direction);
        let content = Content::read(message, chain.needs);
        let now = OffsetDateTime::now_utc();
        // Whether it is already encrypted matters only when a copy would be encrypted
        // to a key; finding out costs a copy and a parse of the whole message, so
        // only then, and once.
        let mut already = chain.needs.structure.then_some(content.encrypted.is_some());
        plan.recipients
            .iter()
            .map(|r| {
                let decision = match chain.evaluate(&r.facts, Some(&content)) {
                    Evaluation::Decided(d) => d,
                    Evaluation::NeedsContent => unreachable!("every condition is known after DATA"),
                };
                let verdict = |already| {
                    Verdict::new(
                        chain,
                        &decision,
                        &self.context(&r.address, &r.entries, now, already),
                    )
                };
                let first = verdict(already);
                match first.treatment {
                    Treatment::Encrypt(_) if already.is_none() => {
                        already = Some(mime::encrypted(&message.to_vec()).is_some());
                        verdict(already)
                    }
                    _ => first,
                }
            })
            .collect()
    }

    fn context<'a>(
        &self,
        recipient: &'a str,
        entries: &'a [KeyEntry],
        now: OffsetDateTime,
        already_encrypted: Option<bool>,
    ) -> Context<'a> {
        Context {
            recipient,
            entries,
            now,
            mailflow_default: self.config.keys.encrypt_to_mailflow_keys,
            already_encrypted,
        }
    }

    /// The recipient's cache entries. A cache failure defers the recipient: treating
    /// it as "no key" could send in clear what a rule would have encrypted.
    fn entries(&self, recipient: &str) -> Result<Vec<KeyEntry>, Reply> {
        let Some(address) = address::normalize(recipient) else {
            return Ok(Vec::new());
        };
        self.keys.find(&address).map_err(|e| {
            tracing::error!(%recipient, error = %e, "key cache lookup failed");
            crate::smtp::reply::local_error("key cache unavailable")
        })
    }
}
