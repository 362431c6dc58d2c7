//! Membership of a cluster: the gateways that share one PostgreSQL store.
//!
//! Each `serve` registers itself as a member (a fresh id per start), writes a heartbeat
//! every [`HEARTBEAT_EVERY`], and says which version it runs and a hash of its policy
//! files (policy files stay files, distributed by the admins' configuration management;
//! the hash makes a drift visible). A member whose heartbeat is older than `[store]
//! member_timeout` counts as dead: the spooled copies it claimed go to the others.
//! `sealgate cluster status` shows the members and the spool.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::store::postgres::{PgError, Postgres};

/// How often a member writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// A member as `cluster status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Member {
    pub id: String,
    pub hostname: String,
    pub version: String,
    pub policy_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub heartbeat: OffsetDateTime,
    /// Its heartbeat is younger than `member_timeout`.
    pub alive: bool,
}

/// This process as a member.
#[derive(Clone)]
pub struct Membership {
    pg: Arc<Postgres>,
    id: String,
    /// `[store] member_timeout`.
    timeout: Duration,
}

impl Membership {
    /// Registers this process as a new member.
    pub fn join(
        pg: Arc<Postgres>,
        hostname: &str,
        policy_hash: &str,
        timeout: Duration,
    ) -> Result<Membership, PgError> {
        let id = {
            use rand::RngCore;
            let mut bytes = [0u8; 8];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            format!("{hostname}-{}", hex(&bytes))
        };
        let (row_id, hostname, policy_hash) =
            (id.clone(), hostname.to_string(), policy_hash.to_string());
        pg.run(move |pool| async move {
            let client = pool.get().await?;
            // Members gone for a day, and holding no copy, are forgotten.
            client
                .execute(
                    "DELETE FROM members WHERE heartbeat < now() - interval '1 day'
                     AND NOT EXISTS (SELECT 1 FROM spool WHERE lease_owner = members.id)",
                    &[],
                )
                .await?;
            client
                .execute(
                    "INSERT INTO members (id, hostname, version, policy_hash, started, heartbeat)
                     VALUES ($1, $2, $3, $4, now(), now())",
                    &[&row_id, &hostname, &env!("CARGO_PKG_VERSION"), &policy_hash],
                )
                .await?;
            Ok(())
        })?;
        tracing::info!(member = %id, "cluster: joined the shared store");
        Ok(Membership { pg, id, timeout })
    }

    /// This member's id: the owner of the spooled copies it claims.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this member does the cluster's chores now (purging expired cache
    /// entries, renewing the organization's certifications): the live member that
    /// started first. When it dies, the next one takes over; while the database cannot
    /// say, nobody does.
    pub async fn leads(&self) -> bool {
        let (id, timeout_ms) = (self.id.clone(), self.timeout.as_millis() as i64);
        let eldest = self
            .pg
            .run_async(move |pool| async move {
                let client = pool.get().await?;
                Ok(client
                    .query_opt(
                        "SELECT id FROM members
                         WHERE heartbeat > now() - ($1::bigint * interval '1 millisecond')
                         ORDER BY started, id LIMIT 1",
                        &[&timeout_ms],
                    )
                    .await?
                    .map(|row| row.get::<_, String>(0)))
            })
            .await;
        matches!(eldest, Ok(Some(eldest)) if eldest == id)
    }

    /// Writes a heartbeat (and the policy hash, which changes on reload).
    pub async fn beat(&self, policy_hash: Option<String>) -> Result<(), PgError> {
        let id = self.id.clone();
        self.pg
            .run_async(move |pool| async move {
                let client = pool.get().await?;
                client
                    .execute(
                        "UPDATE members SET heartbeat = now(),
                         policy_hash = COALESCE($2, policy_hash) WHERE id = $1",
                        &[&id, &policy_hash],
                    )
                    .await?;
                Ok(())
            })
            .await
    }

    /// Writes heartbeats until `shutdown`, then leaves (its row stays, marked by its
    /// last heartbeat, so that `cluster status` shows who was there).
    pub async fn run(self, policy_dir: std::path::PathBuf, shutdown: CancellationToken) {
        let mut failing_since: Option<std::time::Instant> = None;
        loop {
            let hash = policy_hash(&policy_dir);
            match self.beat(Some(hash)).await {
                Ok(()) => {
                    if failing_since.take().is_some() {
                        tracing::info!(member = %self.id, "cluster: heartbeat written again");
                    }
                }
                Err(e) => {
                    if failing_since.is_none() {
                        tracing::error!(member = %self.id, error = %e, "cluster: cannot write the heartbeat");
                        failing_since = Some(std::time::Instant::now());
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            }
        }
    }
}

/// The members and the spool's depth, for `cluster status`.
pub fn status(pg: &Postgres, member_timeout: Duration) -> Result<(Vec<Member>, i64), PgError> {
    let timeout_ms = member_timeout.as_millis() as i64;
    pg.run(move |pool| async move {
        let client = pool.get().await?;
        let rows = client
            .query(
                "SELECT id, hostname, version, policy_hash, started, heartbeat,
                        heartbeat > now() - ($1::bigint * interval '1 millisecond')
                 FROM members ORDER BY started",
                &[&timeout_ms],
            )
            .await?;
        let members = rows
            .iter()
            .map(|row| Member {
                id: row.get(0),
                hostname: row.get(1),
                version: row.get(2),
                policy_hash: row.get(3),
                started: row.get(4),
                heartbeat: row.get(5),
                alive: row.get(6),
            })
            .collect();
        let depth: i64 = client
            .query_one("SELECT count(*) FROM spool", &[])
            .await?
            .get(0);
        Ok((members, depth))
    })
}

/// SHA-256 over the policy files (`*.toml` in `policy_dir`, by name: name and content),
/// the first 16 hex digits; "none" without the folder (the built-in policy).
pub fn policy_hash(policy_dir: &Path) -> String {
    let Ok(dir) = std::fs::read_dir(policy_dir) else {
        return "none".into();
    };
    let mut files: Vec<_> = dir
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut hash = Sha256::new();
    for file in files {
        hash.update(file.file_name().unwrap_or_default().as_encoded_bytes());
        hash.update([0]);
        hash.update(std::fs::read(&file).unwrap_or_default());
        hash.update([0]);
    }
    hex(&hash.finalize()[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
