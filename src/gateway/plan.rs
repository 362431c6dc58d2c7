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
use crate::policy::verdict::Circumstances;
use crate::policy::{Content, Evaluation, Facts, Live, Policy, Treatment, Verdict};
use crate::smtp::reply::Reply;

/// Looks up keys the cache does not have; what it finds goes into the cache.
pub trait KeyFinder: Send + Sync + 'static {
    /// Whether a recent lookup for `address` found no key (so no query is needed).
    fn known_absent(&self, address: &str) -> bool;

    /// Looks up `address`. `Err` (with the reason) when the lookup could not be
    /// answered: SERVFAIL, timeout, no resolver. Bounded in time by the finder.
    fn find(self: Arc<Self>, address: String) -> BoxFuture<'static, Result<(), String>>;
}

impl KeyFinder for crate::dns::KeyLookup {
    fn known_absent(&self, address: &str) -> bool {
        self.is_negative_cached(address)
    }

    fn find(self: Arc<Self>, address: String) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async move {
            match KeyLookup::find(&self, &address).await {
                Found::Keys(_) | Found::NoKey => Ok(()),
                Found::Unavailable(reason) => Err(reason),
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

    fn find(self: Arc<Self>, _address: String) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async move { Err(self.0.clone()) })
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
    lookup: Option<JoinHandle<Result<(), String>>>,
    lookup_failed: bool,
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
        let lookup = (chain.wants_lookup(&evaluation, internal, has_key) && !cache_failed)
            .then(|| self.start_lookup(recipient))
            .flatten();
        // With a lookup under way, what the cache says now may change: decided later.
        if lookup.is_none()
            && !cache_failed
            && let Evaluation::Decided(decision) = evaluation
        {
            let cx = self.context(recipient, &entries, now, None, false);
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
            lookup,
            lookup_failed: cache_failed,
        });
        Ok(())
    }

    /// Starts a key lookup, unless lookups are off or a recent one came back empty.
    fn start_lookup(&self, recipient: &str) -> Option<JoinHandle<Result<(), String>>> {
        let finder = self.finder.as_ref()?;
        (!finder.known_absent(recipient))
            .then(|| tokio::spawn(finder.clone().find(recipient.to_string())))
    }

    /// After DATA: the verdict for each recipient, in the order they were accepted.
    /// Waits for the key lookups started at RCPT first.
    pub async fn verdicts(&self, plan: &mut Plan, message: &Message, id: &str) -> Vec<Verdict> {
        for r in &mut plan.recipients {
            let Some(lookup) = r.lookup.take() else {
                continue;
            };
            let found = lookup
                .await
                .unwrap_or_else(|e| Err(format!("the lookup task failed: {e}")));
            // What the lookup found is in the cache now; a cache failure here counts
            // as a failed lookup, so that no rule sends in clear because of it.
            let found = match found {
                Ok(()) => self.entries(id, &r.address).await,
                Err(reason) => Err(reason),
            };
            match found {
                Ok(entries) => r.entries = entries,
                Err(reason) => {
                    tracing::info!(%id, recipient = %r.address, %reason, "key lookup failed");
                    r.lookup_failed = true;
                }
            }
        }
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
                let facts =
                    Facts::from_entries(&plan.sender, &r.address, r.internal, &r.entries, now);
                let decision = match chain.evaluate(&facts, Some(&content)) {
                    Evaluation::Decided(d) => d,
                    Evaluation::NeedsContent => unreachable!("every condition is known after DATA"),
                };
                let verdict = |already| {
                    let cx = self.context(&r.address, &r.entries, now, already, r.lookup_failed);
                    Verdict::new(chain, &decision, &cx)
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
        lookup_failed: bool,
    ) -> Circumstances<'a> {
        Circumstances {
            recipient,
            entries,
            now,
            allowed: self.config.allowed_keys(),
            authenticated_encryption: self.config.crypto.smime_authenticated_encryption,
            already_encrypted,
            lookup_failed,
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
