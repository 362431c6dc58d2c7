//! One transaction's policy: fixed when MAIL starts it, asked at each RCPT, and asked
//! again after DATA for every recipient's verdict.
//!
//! What depends only on the envelope (addresses, what the key cache knows) is decided
//! at RCPT, so a recipient refused by the envelope alone gets its own RCPT reply. The
//! rest waits for the message. A transaction keeps the policy it started with, even
//! when a reload replaces it meanwhile.
//!
//! An outbound recipient without a usable key in the cache has one looked up (DNS,
//! [`KeyFinder`]). The lookup starts at RCPT and runs while the client sends more
//! recipients and the message, so lookups for several recipients run in parallel and
//! the message does not wait for them one by one. Such a recipient is decided after
//! DATA, once its lookup has finished.

use std::sync::Arc;

use futures::future::BoxFuture;
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::dns::{Found, KeyLookup};
use crate::keys::{KeyEntry, KeyStore, address};
use crate::mail::Direction;
use crate::mail::message::Message;
use crate::mail::mime;
use crate::policy::verdict::{Circumstances, Lookup};
use crate::policy::{Content, Evaluation, Facts, Live, Policy, Treatment, Verdict};
use crate::smtp::reply::Reply;

/// Looks up keys the cache does not have; what it finds goes into the cache.
pub trait KeyFinder: Send + Sync + 'static {
    /// Whether a recent lookup for `address` found no key (so no query is needed).
    fn known_absent(&self, address: &str) -> bool;

    /// Looks up `address`. `Err` when the lookup could not be answered: SERVFAIL,
    /// timeout, no resolver, or a resolver that cannot validate DNSSEC. Bounded in time
    /// by the finder.
    fn find(self: Arc<Self>, address: String) -> BoxFuture<'static, Result<(), Unanswered>>;
}

/// A key lookup that could not be answered: how (for the verdict) and why (for the log).
#[derive(Debug, Clone)]
pub struct Unanswered {
    /// [`Lookup::Unavailable`] or [`Lookup::CannotValidate`].
    pub lookup: Lookup,
    pub reason: String,
}

impl Unanswered {
    /// An outage: a retry may find the key.
    pub fn unavailable(reason: impl Into<String>) -> Unanswered {
        Unanswered {
            lookup: Lookup::Unavailable,
            reason: reason.into(),
        }
    }
}

impl KeyFinder for crate::dns::KeyLookup {
    fn known_absent(&self, address: &str) -> bool {
        self.is_negative_cached(address)
    }

    fn find(self: Arc<Self>, address: String) -> BoxFuture<'static, Result<(), Unanswered>> {
        Box::pin(async move {
            match KeyLookup::find(&self, &address).await {
                Found::Keys(_) | Found::NoKey => Ok(()),
                Found::Unavailable(reason) => Err(Unanswered::unavailable(reason)),
                Found::CannotValidate(reason) => Err(Unanswered {
                    lookup: Lookup::CannotValidate,
                    reason,
                }),
            }
        })
    }
}

/// A finder for when no resolver could be set up: every lookup is unavailable, so
/// the rules' `lookup_offline` decides, as for a resolver that does not answer.
pub struct NoResolver(pub String);

impl KeyFinder for NoResolver {
    fn known_absent(&self, _address: &str) -> bool {
        false
    }

    fn find(self: Arc<Self>, _address: String) -> BoxFuture<'static, Result<(), Unanswered>> {
        Box::pin(async move { Err(Unanswered::unavailable(self.0.clone())) })
    }
}

/// Makes plans: the policy in force and the key cache it consults.
pub struct Planner {
    pub policy: Arc<Live>,
    pub keys: Arc<dyn KeyStore>,
    pub config: Arc<Config>,
    /// Key lookup for outbound recipients the cache has no key for; `None` turns it off.
    pub finder: Option<Arc<dyn KeyFinder>>,
}

/// The policy a transaction runs on, and what was learnt about each recipient.
pub struct Plan {
    /// The transaction's id, from MAIL on: in every log line about it.
    id: String,
    policy: Arc<Policy>,
    direction: Direction,
    sender: String,
    /// In the order the recipients were accepted.
    recipients: Vec<Screened>,
}

impl Plan {
    /// The transaction's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

struct Screened {
    address: String,
    internal: bool,
    entries: Vec<KeyEntry>,
    /// The key lookup started at RCPT, until DATA collects it. A transaction dropped
    /// before DATA detaches it: it still fills the cache for next time.
    pending: Option<JoinHandle<Result<(), Unanswered>>>,
    /// How the key lookup (or the key cache) answered.
    lookup: Lookup,
}

impl Planner {
    /// At MAIL: takes the policy in force now.
    pub fn begin(&self, direction: Direction, mail_from: &str) -> Plan {
        Plan {
            id: crate::mail::message::new_id(),
            policy: self.policy.current(),
            direction,
            sender: mail_from.to_string(),
            recipients: Vec::new(),
        }
    }

    /// At RCPT: refuses the recipient when the envelope alone decides so; otherwise
    /// remembers it for DATA, with its key lookup under way if it needs one.
    pub async fn screen(&self, plan: &mut Plan, recipient: &str) -> Result<(), Reply> {
        let now = OffsetDateTime::now_utc();
        // A cache that cannot answer (the shared store is down) is a lookup that
        // failed: the rule's lookup_offline decides after DATA, and no verdict is
        // reached here on keys that may be there.
        let (entries, cache_failed) = match self.entries(&plan.id, recipient).await {
            Ok(entries) => (entries, false),
            Err(_) => (Vec::new(), true),
        };
        let internal = self.config.internal_domains.is_internal(recipient);
        let chain = plan.policy.chain(plan.direction);
        let facts = Facts::from_entries(&plan.sender, recipient, internal, &entries, now);
        let evaluation = chain.evaluate(&facts, None);
        let allowed = self.config.allowed_keys();
        let has_key = entries
            .iter()
            .any(|e| e.usable_for_encryption(now, allowed));
        let pending = (chain.wants_lookup(&evaluation, internal, has_key) && !cache_failed)
            .then(|| self.start_lookup(recipient))
            .flatten();
        // With a lookup under way, what the cache says now may change: decided later.
        if pending.is_none()
            && !cache_failed
            && let Evaluation::Decided(decision) = evaluation
        {
            let cx = self.context(recipient, &entries, now, None, Lookup::Answered);
            let verdict = Verdict::new(chain, &decision, &cx);
            if let Treatment::Refuse(reply) = verdict.treatment {
                tracing::info!(
                    id = %plan.id,
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
            internal,
            entries,
            pending,
            lookup: if cache_failed {
                Lookup::Unavailable
            } else {
                Lookup::Answered
            },
        });
        Ok(())
    }

    /// Starts a key lookup, unless lookups are off or a recent one came back empty.
    fn start_lookup(&self, recipient: &str) -> Option<JoinHandle<Result<(), Unanswered>>> {
        let finder = self.finder.as_ref()?;
        (!finder.known_absent(recipient))
            .then(|| tokio::spawn(finder.clone().find(recipient.to_string())))
    }

    /// After DATA: the verdict for each recipient, in the order they were accepted.
    /// Waits for the key lookups started at RCPT first.
    pub async fn verdicts(&self, plan: &mut Plan, message: &Message, id: &str) -> Vec<Verdict> {
        for r in &mut plan.recipients {
            let Some(pending) = r.pending.take() else {
                continue;
            };
            let found = pending.await.unwrap_or_else(|e| {
                Err(Unanswered::unavailable(format!(
                    "the lookup task failed: {e}"
                )))
            });
            // What the lookup found is in the cache now; a cache failure here counts
            // as a failed lookup, so that no rule sends in clear because of it.
            let found = match found {
                Ok(()) => self
                    .entries(id, &r.address)
                    .await
                    .map_err(Unanswered::unavailable),
                Err(unanswered) => Err(unanswered),
            };
            match found {
                Ok(entries) => r.entries = entries,
                Err(Unanswered { lookup, reason }) => {
                    tracing::info!(%id, recipient = %r.address, %reason, "key lookup failed");
                    r.lookup = lookup;
                }
            }
        }
        let chain = plan.policy.chain(plan.direction);
        let content = Content::read(message, chain.needs);
        let now = OffsetDateTime::now_utc();
        // Whether it is already encrypted matters only when a copy would be encrypted
        // to a key; finding out costs a search of the whole message (and a parse of
        // it, when it may hold inline PGP), so only then, and once.
        let mut already = chain.needs.structure.then_some(content.encrypted.is_some());
        plan.recipients
            .iter()
            .map(|r| {
                let facts =
                    Facts::from_entries(&plan.sender, &r.address, r.internal, &r.entries, now);
                let decision = match chain.evaluate(&facts, Some(&content)) {
                    Evaluation::Decided(d) => d,
                    Evaluation::NeedsContent => unreachable!("every condition is known after DATA"),
                };
                let verdict = |already| {
                    let cx = self.context(&r.address, &r.entries, now, already, r.lookup);
                    Verdict::new(chain, &decision, &cx)
                };
                let first = verdict(already);
                match first.treatment {
                    Treatment::Encrypt(_) if already.is_none() => {
                        already = Some(mime::encrypted_message(message).is_some());
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
        lookup: Lookup,
    ) -> Circumstances<'a> {
        Circumstances {
            recipient,
            entries,
            now,
            allowed: self.config.allowed_keys(),
            authenticated_encryption: self.config.crypto.smime_authenticated_encryption,
            already_encrypted,
            lookup,
        }
    }

    /// The recipient's cache entries. A cache failure is never "no key", which could
    /// send in clear what a rule would have encrypted: the caller counts it as a failed
    /// lookup, and the rule's lookup_offline decides.
    async fn entries(&self, id: &str, recipient: &str) -> Result<Vec<KeyEntry>, String> {
        let Some(address) = address::normalize(recipient) else {
            return Ok(Vec::new());
        };
        self.keys.find_async(&address).await.map_err(|e| {
            tracing::error!(%id, %recipient, error = %e, "key cache lookup failed");
            format!("the key cache is unavailable: {e}")
        })
    }
}
