//! The spool in the shared PostgreSQL store: every member's copies in one table, so a
//! copy outlives the member that spooled it.
//!
//! A member's retrier **claims** the due copies it is about to attempt (`UPDATE ... FOR
//! UPDATE SKIP LOCKED`, so two members never claim one copy) by writing its member id
//! into them. A claim holds while its member's heartbeat is younger than `[store]
//! member_timeout` (see [`crate::cluster`]); a copy claimed by a member that died is
//! claimed again by another once that member's heartbeat is stale. The attempt's result
//! is written only while the claim is still the member's own.
//!
//! What this cannot promise: a member that dies after the next hop accepted a copy and
//! before it recorded that leaves the copy to be delivered again by another member. SMTP
//! has no way to ask a next hop whether it already has a message; that window, a few
//! milliseconds per delivery, is the one a single gateway's crash leaves too.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_postgres::types::ToSql;

use super::{Entry, SpoolError};
use crate::mail::message::Message;
use crate::store::postgres::{PgError, Postgres};

/// The most copies one pass of a member's retrier claims: the others get the rest.
const CLAIM_BATCH: i64 = 16;

#[derive(Clone)]
pub struct PgSpool {
    pg: Arc<Postgres>,
    /// This member's id: the owner of its claims.
    member: String,
    member_timeout: Duration,
}

fn meta(entry: &Entry) -> String {
    serde_json::to_string(entry).expect("an entry always serializes")
}

fn decode(id: i64, meta: &str) -> Result<(u64, Entry), SpoolError> {
    let key = id as u64;
    serde_json::from_str(meta)
        .map(|entry| (key, entry))
        .map_err(|_| SpoolError::Corrupt(key))
}

/// A new entry: its JSON, when it is due, and the message.
type Row = (String, i64, Vec<u8>);

async fn insert(
    transaction: &deadpool_postgres::Transaction<'_>,
    row: &Row,
) -> Result<(), PgError> {
    let (meta, next, message) = row;
    transaction
        .execute(
            "INSERT INTO spool (meta, next_attempt_ms, message) VALUES ($1, $2, $3)",
            &[meta, next, message],
        )
        .await?;
    Ok(())
}

impl PgSpool {
    pub fn new(pg: Arc<Postgres>, member: String, member_timeout: Duration) -> PgSpool {
        PgSpool {
            pg,
            member,
            member_timeout,
        }
    }

    pub fn count(&self) -> Result<usize, SpoolError> {
        let count = self.pg.run(|pool| async move {
            let client = pool.get().await?;
            Ok(client
                .query_one("SELECT count(*) FROM spool", &[])
                .await?
                .get::<_, i64>(0))
        })?;
        Ok(count as usize)
    }

    /// Stores entries in one transaction; its commit is the durable copy.
    pub async fn hold(&self, entries: Vec<(Entry, Message)>) -> Result<(), SpoolError> {
        let rows: Vec<Row> = entries
            .iter()
            .map(|(entry, message)| (meta(entry), entry.next_attempt_ms as i64, message.to_vec()))
            .collect();
        self.pg
            .run_async(move |pool| async move {
                let mut client = pool.get().await?;
                let transaction = client.transaction().await?;
                for row in &rows {
                    insert(&transaction, row).await?;
                }
                transaction.commit().await?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Every entry, oldest first, with its key.
    pub fn entries(&self) -> Result<Vec<(u64, Entry)>, SpoolError> {
        let rows = self.pg.run(|pool| async move {
            let client = pool.get().await?;
            Ok(client
                .query("SELECT id, meta FROM spool ORDER BY id", &[])
                .await?
                .iter()
                .map(|row| (row.get::<_, i64>(0), row.get::<_, String>(1)))
                .collect::<Vec<_>>())
        })?;
        rows.iter().map(|(id, meta)| decode(*id, meta)).collect()
    }

    /// Claims a batch (`CLAIM_BATCH`) of copies due at `now_ms` that no other live member
    /// holds. A member's retrier runs one pass at a time and lets go of every copy it
    /// claimed before the pass ends, so a copy still claimed by this member at the next
    /// pass is one whose attempt failed half way (the database went away): it is taken
    /// again.
    pub async fn claim_due(&self, now_ms: u64) -> Result<Vec<(u64, Entry)>, SpoolError> {
        let member = self.member.clone();
        let timeout_ms = self.member_timeout.as_millis() as i64;
        let rows = self
            .pg
            .run_async(move |pool| async move {
                let client = pool.get().await?;
                let rows = client
                    .query(
                        "UPDATE spool SET lease_owner = $1
                         WHERE id IN (
                             SELECT s.id FROM spool s
                             WHERE s.next_attempt_ms <= $2
                               AND (s.lease_owner IS NULL OR s.lease_owner = $1 OR NOT EXISTS (
                                   SELECT 1 FROM members m WHERE m.id = s.lease_owner
                                   AND m.heartbeat > now() - ($3::bigint * interval '1 millisecond')))
                             ORDER BY s.id LIMIT $4
                             FOR UPDATE SKIP LOCKED)
                         RETURNING id, meta",
                        &[&member, &(now_ms as i64), &timeout_ms, &CLAIM_BATCH],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|row| (row.get::<_, i64>(0), row.get::<_, String>(1)))
                    .collect::<Vec<_>>())
            })
            .await?;
        let mut claimed = rows
            .iter()
            .map(|(id, meta)| decode(*id, meta))
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|(key, _)| *key);
        Ok(claimed)
    }

    /// Lets go of a claimed copy that was not attempted (its next hop rests).
    pub async fn release(&self, key: u64) -> Result<(), SpoolError> {
        let member = self.member.clone();
        self.pg
            .run_async(move |pool| async move {
                let client = pool.get().await?;
                client
                    .execute(
                        "UPDATE spool SET lease_owner = NULL WHERE id = $1 AND lease_owner = $2",
                        &[&(key as i64), &member],
                    )
                    .await?;
                Ok(())
            })
            .await?;
        Ok(())
    }

    pub async fn message(&self, key: u64) -> Result<Message, SpoolError> {
        let body = self
            .pg
            .run_async(move |pool| async move {
                let client = pool.get().await?;
                Ok(client
                    .query_opt("SELECT message FROM spool WHERE id = $1", &[&(key as i64)])
                    .await?
                    .map(|row| row.get::<_, Vec<u8>>(0)))
            })
            .await?
            .ok_or(SpoolError::Corrupt(key))?;
        Ok(Message::new(Bytes::from(body)))
    }

    /// Records an attempt's result in one transaction, while the claim is still ours:
    /// the entry `updated` (its claim let go), or gone, and a DSN entry if there is one.
    pub async fn settle(
        &self,
        key: u64,
        updated: Option<Entry>,
        dsn: Option<(Entry, Message)>,
    ) -> Result<(), SpoolError> {
        let guard = Guard::ClaimedBy(self.member.clone());
        if self.rewrite(key, guard, updated, dsn).await? {
            Ok(())
        } else {
            // Another member took the copy over: this one was thought dead.
            Err(SpoolError::ClaimLost(key))
        }
    }

    /// The entry `key` replaced by `updated` (its record; the message stays; any claim
    /// let go), or with `None` removed, and a DSN entry added beside it, in one
    /// transaction, if `guard` holds. `false` when it did not (or the entry is gone).
    async fn rewrite(
        &self,
        key: u64,
        guard: Guard,
        updated: Option<Entry>,
        dsn: Option<(Entry, Message)>,
    ) -> Result<bool, SpoolError> {
        let updated = updated.map(|entry| (meta(&entry), entry.next_attempt_ms as i64));
        let dsn = dsn
            .map(|(entry, message)| (meta(&entry), entry.next_attempt_ms as i64, message.to_vec()));
        let changed = self
            .pg
            .run_async(move |pool| async move {
                let mut client = pool.get().await?;
                let transaction = client.transaction().await?;
                let id = key as i64;
                let (condition, mut params): (String, Vec<&(dyn ToSql + Sync)>) = match &guard {
                    Guard::ClaimedBy(member) => ("s.lease_owner = $2".into(), vec![&id, member]),
                    Guard::Unclaimed { seen, timeout_ms } => (
                        format!("s.meta = $3 AND {UNCLAIMED}"),
                        vec![&id, timeout_ms, seen],
                    ),
                };
                let sql = match &updated {
                    None => format!("DELETE FROM spool s WHERE s.id = $1 AND {condition}"),
                    Some((meta, next)) => {
                        let (m, n) = (params.len() + 1, params.len() + 2);
                        params.push(meta);
                        params.push(next);
                        format!(
                            "UPDATE spool s SET meta = ${m}, next_attempt_ms = ${n}, lease_owner = NULL
                             WHERE s.id = $1 AND {condition}"
                        )
                    }
                };
                if transaction.execute(&sql, &params).await? == 0 {
                    return Ok(false);
                }
                if let Some(row) = &dsn {
                    insert(&transaction, row).await?;
                }
                transaction.commit().await?;
                Ok(true)
            })
            .await?;
        Ok(changed)
    }
}

/// Which copies a change may touch.
enum Guard {
    /// Claimed by this member: the retrier's attempt.
    ClaimedBy(String),
    /// Claimed by no live member, and still as `seen` (its record, as JSON): the admin's
    /// change. A member is live while its heartbeat is younger than `timeout_ms`.
    Unclaimed { seen: String, timeout_ms: i64 },
}

/// A copy no live member has claimed (so the admin may change it): unclaimed, or
/// claimed by a member whose heartbeat is older than `$2` milliseconds.
const UNCLAIMED: &str = "(s.lease_owner IS NULL OR NOT EXISTS (
    SELECT 1 FROM members m WHERE m.id = s.lease_owner
    AND m.heartbeat > now() - ($2::bigint * interval '1 millisecond')))";

impl PgSpool {
    /// One entry, if it is held.
    pub async fn entry(&self, key: u64) -> Result<Option<Entry>, SpoolError> {
        let meta = self
            .pg
            .run_async(move |pool| async move {
                let client = pool.get().await?;
                Ok(client
                    .query_opt("SELECT meta FROM spool WHERE id = $1", &[&(key as i64)])
                    .await?
                    .map(|row| row.get::<_, String>(0)))
            })
            .await?;
        meta.map(|meta| decode(key as i64, &meta).map(|(_, entry)| entry))
            .transpose()
    }

    /// The admin's change to an entry no member is attempting and that is still as
    /// `seen`: `updated` replaces it (its record; the message stays), or with `None` it
    /// is removed, and a DSN entry is added beside it, in one transaction. `false` when
    /// it is gone, claimed or changed since.
    pub async fn change_unclaimed(
        &self,
        key: u64,
        seen: &Entry,
        updated: Option<Entry>,
        dsn: Option<(Entry, Message)>,
    ) -> Result<bool, SpoolError> {
        let guard = Guard::Unclaimed {
            seen: meta(seen),
            timeout_ms: self.member_timeout.as_millis() as i64,
        };
        self.rewrite(key, guard, updated, dsn).await
    }
}

impl From<PgError> for SpoolError {
    fn from(e: PgError) -> SpoolError {
        SpoolError::Shared(e)
    }
}
