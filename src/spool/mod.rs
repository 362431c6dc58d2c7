//! The durable retry spool: copies of a fanned-out message that the next hop did not
//! take at once, and DSNs still to be sent.
//!
//! An entry is written and flushed to disk *before* the client hears `250`, so the
//! `250` always means that the next hop or this spool holds every copy. The retrier
//! delivers entries with exponential backoff; a permanent refusal, or an entry older
//! than `[spool] lifetime`, turns into a DSN to the envelope sender, which is itself an
//! entry of this spool.
//!
//! The entries live in the gateway's sled database ([`sled`]), or in the shared
//! PostgreSQL store of a cluster ([`postgres`]), where every member's retrier claims the
//! copies it attempts.

pub mod admin;
mod changes;
pub mod dsn;
mod key;
pub mod postgres;
mod settle;
pub mod sled;

pub use changes::{Change, Changed};
pub use key::Key;
pub use settle::{Attempt, Settled, settle};

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::dsn::Failure;
use crate::config::SpoolConfig;
use crate::mail::Direction;
use crate::mail::envelope::MailParams;
use crate::mail::message::Message;
use crate::relay::{Outgoing, Relays};
use crate::smtp::reply::{self, Reply};

/// Everything about a held copy except the message itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The id the client was given for the original transaction.
    pub id: String,
    /// Which direction's next hop takes it.
    pub direction: Direction,
    /// Reverse path; empty for a DSN (which must never cause another DSN).
    pub mail_from: String,
    pub params: MailParams,
    /// Recipients still waiting.
    pub recipients: Vec<String>,
    /// When the original message arrived (Unix seconds).
    pub arrived: u64,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// When to try next (Unix milliseconds).
    pub next_attempt_ms: u64,
    /// The last reply, for logs and the DSN.
    pub last_reply: Option<String>,
    /// Whether the sender may get a DSN. Always for outbound mail; for inbound, only
    /// when `[spool] inbound_dsn` allows it for this sender (no backscatter).
    #[serde(default = "yes")]
    pub notify: bool,
}

fn yes() -> bool {
    true
}

/// Why the spool could not do its job. The client must then get a 4xx: nothing may be
/// acknowledged that is not held.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The sled database failed (disk full, I/O error). Internal; a retry may help.
    #[error("spool database: {0}")]
    Db(#[from] ::sled::Error),
    /// The shared store failed or cannot be reached. Like a next hop that is down: a
    /// retry may help.
    #[error(transparent)]
    Shared(crate::store::postgres::PgError),
    /// An entry on disk does not decode. Internal; it is kept for inspection.
    #[error("spool entry {0} is corrupt")]
    Corrupt(u64),
    /// Another member of the cluster took over this entry while this one attempted it
    /// (this member's heartbeat had gone stale): the other member now decides.
    #[error("spool entry {0} was taken over by another member")]
    ClaimLost(u64),
}

/// Where the entries are: this gateway's sled spool, and in a cluster the members'
/// shared spool beside it. A member holds in its own spool only the copies the shared
/// store could not take (it was down): those are durable too, and it delivers them
/// itself.
#[derive(Clone)]
pub struct Storage {
    pub local: sled::SledSpool,
    pub shared: Option<postgres::PgSpool>,
}

/// The spool and its retrier.
#[derive(Clone)]
pub struct Spool {
    storage: Storage,
    config: Arc<SpoolConfig>,
    /// How many passes of the retrier have completed ([`Spool::passes`]). Nothing in
    /// the gateway reads it: it lets an observer wait for the retrier instead of
    /// guessing at its timing. A clone of the spool shares it.
    passes: watch::Sender<u64>,
    /// The local entries the retrier is attempting now. The admin's `spool delete` and
    /// `spool retry` leave them alone: the attempt's result would undo the change (or
    /// a deleted copy would go out anyway). Shared entries have their claims instead.
    busy: Arc<Mutex<HashSet<u64>>>,
    /// Wakes the retrier before its next tick (`spool retry`).
    wake: Arc<tokio::sync::Notify>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Spool {
    pub fn open(db: &::sled::Db, config: SpoolConfig) -> Result<Spool, SpoolError> {
        let storage = Storage {
            local: sled::SledSpool::open(db)?,
            shared: None,
        };
        Ok(Spool::new(storage, config))
    }

    pub fn new(storage: Storage, config: SpoolConfig) -> Spool {
        Spool {
            storage,
            config: Arc::new(config),
            passes: watch::channel(0).0,
            busy: Arc::default(),
            wake: Arc::default(),
        }
    }

    /// The number of passes of the retrier ([`Spool::retry_due`]) completed so far.
    /// Once it has grown by two from some moment, a whole pass has begun and ended
    /// since then, so every entry that was due at that moment has had its attempt (or
    /// was left alone because its next hop rests). Tests wait on it rather than sleep;
    /// it costs the retrier one uncontended update per pass.
    pub fn passes(&self) -> watch::Receiver<u64> {
        self.passes.subscribe()
    }

    /// Number of entries held (those of the shared store counted as 0 when it cannot
    /// say).
    pub fn len(&self) -> usize {
        let shared = self.storage.shared.as_ref();
        self.storage.local.count() + shared.map_or(0, |shared| shared.count().unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A new entry for `recipients`, due after the first retry delay.
    pub fn entry(
        &self,
        id: &str,
        direction: Direction,
        mail_from: &str,
        params: &MailParams,
        recipients: Vec<String>,
        last_reply: Option<&Reply>,
    ) -> Entry {
        let now = now_ms();
        Entry {
            id: id.to_string(),
            direction,
            mail_from: mail_from.to_string(),
            params: params.clone(),
            recipients,
            arrived: now / 1000,
            attempts: 0,
            next_attempt_ms: now + self.config.first_retry.0.as_millis() as u64,
            last_reply: last_reply.map(Reply::to_string),
            notify: true,
        }
    }

    /// Stores entries atomically and waits until they are durable (on disk, or
    /// committed to the shared store). In a cluster whose shared store fails, they are
    /// held in this member's own spool instead.
    pub async fn hold(&self, entries: Vec<(Entry, Message)>) -> Result<(), SpoolError> {
        if let Some(shared) = &self.storage.shared {
            match shared.hold(entries.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, copies = entries.len(), "spool: the shared store cannot take the copies; this member holds them");
                }
            }
        }
        self.storage.local.hold(entries).await
    }

    /// Every entry, oldest first, with its key (in a cluster, the shared ones first,
    /// none of them when the shared store cannot say).
    pub fn entries(&self) -> Vec<(Key, Entry)> {
        self.listed().unwrap_or_else(|_| {
            self.storage
                .local
                .entries()
                .into_iter()
                .map(|(key, e)| (Key::Local(key), e))
                .collect()
        })
    }

    /// Every entry, oldest first, with its key; an error when the shared store cannot
    /// say (the admin must not take a partial list for the whole).
    pub fn listed(&self) -> Result<Vec<(Key, Entry)>, SpoolError> {
        let mut all: Vec<(Key, Entry)> = match &self.storage.shared {
            Some(shared) => shared
                .entries()?
                .into_iter()
                .map(|(key, e)| (Key::Shared(key), e))
                .collect(),
            None => Vec::new(),
        };
        all.extend(
            self.storage
                .local
                .entries()
                .into_iter()
                .map(|(key, e)| (Key::Local(key), e)),
        );
        Ok(all)
    }

    /// The entries due at `now` for this retrier: in a cluster, a batch claimed for
    /// this member from the shared spool; and every due one of its own.
    async fn due(&self, now: u64) -> Vec<(Key, Entry)> {
        let mut due = Vec::new();
        if let Some(shared) = &self.storage.shared {
            match shared.claim_due(now).await {
                Ok(claimed) => {
                    due.extend(claimed.into_iter().map(|(key, e)| (Key::Shared(key), e)))
                }
                Err(e) => {
                    tracing::error!(error = %e, "spool: cannot claim due copies from the shared store");
                }
            }
        }
        due.extend(
            self.storage
                .local
                .entries()
                .into_iter()
                .filter(|(_, e)| e.next_attempt_ms <= now)
                .map(|(key, e)| (Key::Local(key), e)),
        );
        due
    }

    /// Marks a local entry busy and reads it, unless the admin holds it or it is gone.
    fn claim_local(&self, id: u64) -> Option<(Busy, Entry)> {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        if busy.contains(&id) {
            return None;
        }
        let entry = self.storage.local.entry(id)?;
        busy.insert(id);
        Some((
            Busy {
                set: self.busy.clone(),
                id,
            },
            entry,
        ))
    }

    /// Wakes the retrier for a pass now, rather than at its next tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The shared spool, which a [`Key::Shared`] comes from.
    fn shared(&self) -> &postgres::PgSpool {
        self.storage
            .shared
            .as_ref()
            .expect("only the shared spool hands out shared keys")
    }

    async fn message(&self, key: Key) -> Result<Message, SpoolError> {
        match key {
            Key::Shared(id) => self.shared().message(id).await,
            Key::Local(id) => self.storage.local.message(id),
        }
    }

    /// Leaves an entry that was not attempted as it was (a shared one's claim let go).
    async fn leave(&self, key: Key) -> Result<(), SpoolError> {
        match key {
            Key::Shared(id) => self.shared().release(id).await,
            Key::Local(_) => Ok(()),
        }
    }

    /// Records an attempt: the entry `updated`, or gone; a DSN entry if there is one,
    /// beside it.
    async fn record(
        &self,
        key: Key,
        updated: Option<Entry>,
        message: &Message,
        dsn: Option<(Entry, Message)>,
    ) -> Result<(), SpoolError> {
        match key {
            Key::Shared(id) => self.shared().settle(id, updated, dsn).await,
            Key::Local(id) => {
                let updated = updated.map(|e| (e, message));
                self.storage.local.settle(id, updated, dsn).await
            }
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let first = self.config.first_retry.0;
        let factor = 1u32.checked_shl(attempts.min(20)).unwrap_or(u32::MAX);
        first.saturating_mul(factor).min(self.config.max_retry.0)
    }

    /// Delivers every due entry once. Returns how many entries were attempted.
    ///
    /// An entry whose next hop rests after a failure (its circuit breaker is open) is
    /// not attempted and left exactly as it is: no connection, no attempt counted, its
    /// time unchanged. It stays due, so the first pass after the rest tries it, and
    /// since a pass goes one entry at a time, the first of those is the next hop's
    /// probe and the rest follow its verdict. Counting the skip as a failed attempt
    /// would stretch the entry's backoff for a failure nobody saw; the lifetime is
    /// counted from arrival either way, and an entry that outlives it while its next
    /// hop rests becomes a DSN at its next real attempt, as it always did.
    pub async fn retry_due(&self, relays: &Relays, hostname: &str) -> usize {
        let due = self.due(now_ms()).await;
        let mut attempted = 0;
        let mut resting = 0;
        for (key, entry) in &due {
            // A local entry is marked busy while it is attempted, and read again under
            // that mark: the admin may have deleted or changed it since the list.
            let (_busy, entry) = match key {
                Key::Local(id) => match self.claim_local(*id) {
                    Some((busy, fresh)) => (Some(busy), fresh),
                    None => continue,
                },
                Key::Shared(_) => (None, entry.clone()),
            };
            match self.retry_one(*key, &entry, relays, hostname).await {
                Ok(Retried::Yes) => attempted += 1,
                Ok(Retried::Resting) => resting += 1,
                Err(e) => {
                    attempted += 1;
                    tracing::error!(id = %entry.id, error = %e, "spool: cannot process entry");
                }
            }
        }
        if resting > 0 {
            // Every pass while a next hop rests ends here: info would flood the log.
            tracing::debug!(
                resting,
                "spool: entries wait for a next hop to be available"
            );
        }
        self.passes.send_modify(|passes| *passes += 1);
        attempted
    }

    async fn retry_one(
        &self,
        key: Key,
        entry: &Entry,
        relays: &Relays,
        hostname: &str,
    ) -> Result<Retried, SpoolError> {
        let relay = relays.get(entry.direction);
        // A look first, so that no message is read from disk only to be put back.
        if relay.resting().is_some() {
            self.leave(key).await?;
            return Ok(Retried::Resting);
        }
        let message = self.message(key).await?;
        let tx = Outgoing {
            mail_from: entry.mail_from.clone(),
            params: entry.params.clone(),
            recipients: entry.recipients.clone(),
            message,
            id: entry.id.clone(),
        };
        // A client's transaction may have taken the probe since the look.
        let Ok(delivery) = relay.try_deliver(&tx).await else {
            self.leave(key).await?;
            return Ok(Retried::Resting);
        };
        let expired = now_ms() / 1000 >= entry.arrived + self.config.lifetime.0.as_secs();

        let how = if expired {
            Attempt::Expired
        } else {
            Attempt::Relayed
        };
        let Settled { waiting, failures } = settle(&entry.recipients, &delivery.outcomes, how);
        tracing::info!(
            id = %entry.id,
            direction = %entry.direction,
            attempt = entry.attempts + 1,
            delivered = entry.recipients.len() - waiting.len() - failures.len(),
            waiting = waiting.len(),
            failed = failures.len(),
            reply = %delivery.reply,
            "spool: retried"
        );

        let updated = (!waiting.is_empty()).then(|| {
            let attempts = entry.attempts + 1;
            Entry {
                recipients: waiting,
                attempts,
                next_attempt_ms: now_ms() + self.backoff(attempts).as_millis() as u64,
                last_reply: Some(delivery.reply.to_string()),
                ..entry.clone()
            }
        });
        let notice = self.notice(
            entry,
            &failures,
            &tx.message,
            relay.next_hop().to_string(),
            hostname,
        );
        self.record(key, updated, &tx.message, notice).await?;
        Ok(Retried::Yes)
    }

    /// The DSN entry that tells `entry`'s sender about `failures`, if anyone should be
    /// told. A DSN about inbound mail names no internal host: no Remote-MTA, and the
    /// internal server's replies in the generic form of [`reply::for_outsiders`].
    pub fn notice(
        &self,
        entry: &Entry,
        failures: &[Failure],
        message: &Message,
        next_hop: String,
        hostname: &str,
    ) -> Option<(Entry, Message)> {
        if failures.is_empty() {
            return None;
        }
        if entry.mail_from.is_empty() {
            // A bounce of a bounce would loop: RFC 5321 §6.1 says drop it.
            tracing::error!(id = %entry.id, failed = failures.len(), "spool: a DSN could not be delivered and is dropped");
            return None;
        }
        if !entry.notify {
            tracing::warn!(
                id = %entry.id,
                sender = %entry.mail_from,
                failed = failures.len(),
                "spool: no DSN to an unverified sender of inbound mail (it would be backscatter)"
            );
            return None;
        }
        let inbound = entry.direction == Direction::Inbound;
        let outsiders: Vec<Failure>;
        let failures = if inbound {
            outsiders = failures
                .iter()
                .map(|f| Failure {
                    reply: if f.remote {
                        reply::for_outsiders(&f.reply)
                    } else {
                        f.reply.clone()
                    },
                    remote: false,
                    ..f.clone()
                })
                .collect();
            &outsiders[..]
        } else {
            failures
        };
        let arrival = time::OffsetDateTime::from_unix_timestamp(entry.arrived as i64)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let dsn = dsn::build(&dsn::Report {
            hostname,
            next_hop: &next_hop,
            sender: &entry.mail_from,
            id: &entry.id,
            arrival,
            failures,
            original_headers: &message.header_block(64 * 1024),
        });
        let mut notice = self.entry(
            &format!("{}-dsn", entry.id),
            entry.direction,
            "",
            &MailParams::default(),
            vec![entry.mail_from.clone()],
            None,
        );
        // A DSN goes out at once, not after the first retry delay.
        notice.next_attempt_ms = now_ms();
        Some((notice, Message::new(dsn)))
    }

    /// Retries due entries until `shutdown` is cancelled.
    pub async fn run(self, relays: Relays, hostname: String, shutdown: CancellationToken) {
        // Poll often enough for short test delays, rarely enough to cost nothing.
        let tick = self
            .config
            .first_retry
            .0
            .clamp(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
                _ = self.wake.notified() => {}
            }
            self.retry_due(&relays, &hostname).await;
        }
    }
}

/// A local entry marked busy; the mark goes with it.
struct Busy {
    set: Arc<Mutex<HashSet<u64>>>,
    id: u64,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// What became of one due entry in a pass of the retrier.
enum Retried {
    /// It was attempted, and the spool records the result.
    Yes,
    /// Its next hop rests after a failure; the entry is left as it was.
    Resting,
}
