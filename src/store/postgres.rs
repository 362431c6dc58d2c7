//! The shared store: a PostgreSQL database that the gateways of a cluster share
//! (`[store] backend = "postgres"`).
//!
//! The rest of sealgate calls its stores synchronously, as it does sled. The database
//! client is asynchronous (tokio-postgres, pooled by deadpool-postgres), so the pool and
//! its connections live on a small runtime of their own, and [`Postgres::run`] hands a
//! request to it and waits for the answer. The caller's thread waits for one round trip,
//! as it waits for sled's disk; it never waits on its own runtime, so it cannot
//! deadlock it.
//!
//! The schema is versioned: the migrations run at start-up, in order, in one
//! transaction, by whichever member gets the version row's lock first. The SQL is plain
//! (no advisory locks, no stored procedures, no extensions) so that PostgreSQL-wire
//! engines such as CockroachDB could serve later.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, Pool, Runtime};
use tokio_postgres::NoTls;

use crate::config::StoreConfig;
use crate::keys::secrets::Sealer;

/// The schema changes, in order; the database's version is how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: the key cache and its sealed secrets, and the canary that tells whether a
    // member's key-encryption key is the one the secrets were sealed with.
    "CREATE TABLE key_addresses (address text PRIMARY KEY);
     CREATE TABLE key_entries (
         address text NOT NULL,
         fingerprint text NOT NULL,
         meta text NOT NULL,
         material bytea NOT NULL,
         expires timestamptz,
         PRIMARY KEY (address, fingerprint));
     CREATE INDEX key_entries_by_fingerprint ON key_entries (fingerprint);
     CREATE INDEX key_entries_by_expiry ON key_entries (expires);
     CREATE TABLE key_secrets (fingerprint text PRIMARY KEY, sealed bytea NOT NULL);
     CREATE TABLE kek_canary (id integer PRIMARY KEY CHECK (id = 1), sealed bytea NOT NULL);",
    // 2: the retry spool, whose copies members claim, and the members with their
    // heartbeats.
    "CREATE TABLE spool (
         id bigserial PRIMARY KEY,
         meta text NOT NULL,
         next_attempt_ms bigint NOT NULL,
         lease_owner text,
         message bytea NOT NULL);
     CREATE INDEX spool_by_due ON spool (next_attempt_ms);
     CREATE TABLE members (
         id text PRIMARY KEY,
         hostname text NOT NULL,
         version text NOT NULL,
         policy_hash text NOT NULL,
         started timestamptz NOT NULL,
         heartbeat timestamptz NOT NULL);",
    // 3: small trees of records the members share: the organization's keys and what
    // they vouched for, and key transfer's identity, peers and sequence.
    "CREATE TABLE records (
         tree text NOT NULL, key bytea NOT NULL, value bytea NOT NULL,
         PRIMARY KEY (tree, key));",
];

/// What the KEK canary seals: nothing secret. Opening it proves that a member's KEK is
/// the one the shared store's secrets were sealed with.
const CANARY: &[u8] = b"sealgate key-encryption key canary";
const CANARY_BINDING: &str = "kek-canary";

/// The schema version this build expects.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Why the shared store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PgError {
    /// The database cannot be reached, or did not answer in time: like a next hop that
    /// is down. A retry may help.
    #[error("the shared store (PostgreSQL) is unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error: a bug, or a schema this build does not know.
    #[error("the shared store (PostgreSQL) failed: {0}")]
    Failed(String),
    /// `[store]` cannot be used: the admin's to fix.
    #[error("{0}")]
    Config(String),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> PgError {
        match e.as_db_error() {
            // The server said no: it is there, and a retry will not change its mind.
            Some(db) => PgError::Failed(format!("{}: {}", db.code().code(), db.message())),
            None => PgError::Unavailable(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> PgError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => PgError::Unavailable(other.to_string()),
        }
    }
}

/// The shared store when `[store]` names one: connected, its schema brought up to
/// date, and with `sealer`, this member's key-encryption key checked against it.
pub fn shared(
    config: &StoreConfig,
    sealer: Option<&Sealer>,
) -> Result<Option<Arc<Postgres>>, PgError> {
    if config.backend != crate::config::Backend::Postgres {
        return Ok(None);
    }
    let pg = Postgres::connect(config)?;
    if let Some(sealer) = sealer {
        pg.check_kek(sealer)?;
    }
    Ok(Some(pg))
}

/// The pool, on its runtime.
pub struct Postgres {
    pool: Pool,
    /// `Some` until dropped; see [`Drop`].
    runtime: Option<tokio::runtime::Runtime>,
}

impl Postgres {
    /// Connects as `[store]` says and brings the schema up to [`SCHEMA_VERSION`].
    /// Refuses a database whose schema is newer than this build knows.
    pub fn connect(config: &StoreConfig) -> Result<Arc<Postgres>, PgError> {
        let postgres = Postgres::open(config)?;
        // Two members that start at once may both create the version table; the one
        // that loses that race finds it made on its next attempt.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match postgres.run(migrate) {
                Err(PgError::Failed(e)) if attempts < 3 => {
                    tracing::warn!(error = %e, "shared store: migration raced another member; trying again");
                }
                other => break other?,
            }
        }
        Ok(postgres)
    }

    /// The pool, without touching the database yet (`check` only looks).
    pub fn open(config: &StoreConfig) -> Result<Arc<Postgres>, PgError> {
        let url = config.database_url().map_err(PgError::Config)?;
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| PgError::Config(format!("[store] url is not a PostgreSQL URL: {e}")))?;
        let timeout = config.timeout.0;
        pg.connect_timeout(timeout);
        pg.application_name("sealgate");
        // A statement that hangs (a lock held by a dead member's transaction, a server
        // under load) fails like an unreachable server.
        pg.options(format!("-c statement_timeout={}", timeout.as_millis()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sealgate-postgres")
            .enable_all()
            .build()
            .map_err(|e| PgError::Config(format!("cannot start the database runtime: {e}")))?;
        let pool = {
            let _entered = runtime.enter();
            Pool::builder(Manager::new(pg, NoTls))
                .max_size(config.pool_size.get())
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(timeout))
                .create_timeout(Some(timeout))
                .recycle_timeout(Some(timeout))
                .build()
                .map_err(|e| PgError::Config(format!("[store]: {e}")))?
        };
        Ok(Arc::new(Postgres {
            pool,
            runtime: Some(runtime),
        }))
    }

    /// Runs `request` with the pool on the database runtime, and waits for its result.
    pub fn run<T, F, Fut>(&self, request: F) -> Result<T, PgError>
    where
        F: FnOnce(Pool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, PgError>> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let pool = self.pool.clone();
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .spawn(async move {
                let _ = tx.send(request(pool).await);
            });
        rx.recv()
            .map_err(|_| PgError::Unavailable("the database request was abandoned".into()))?
    }

    /// [`Postgres::run`] for async code: the caller's task waits without holding its
    /// thread.
    pub async fn run_async<T, F, Fut>(&self, request: F) -> Result<T, PgError>
    where
        F: FnOnce(Pool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, PgError>> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .spawn(async move { request(pool).await })
            .await
            .map_err(|e| PgError::Unavailable(format!("the database request failed: {e}")))?
    }

    /// The schema version the database is at (0 for an empty database).
    /// Whether the database answers now (for `/healthz`).
    pub async fn ping(&self) -> Result<(), PgError> {
        self.run_async(|pool| async move {
            pool.get().await?.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }

    pub fn schema_version(&self) -> Result<i64, PgError> {
        self.run(|pool| async move {
            let client = pool.get().await?;
            let exists = client
                .query_one("SELECT to_regclass('sealgate_schema') IS NOT NULL", &[])
                .await?
                .get::<_, bool>(0);
            if !exists {
                return Ok(0);
            }
            let row = client
                .query_opt("SELECT version FROM sealgate_schema WHERE id = 1", &[])
                .await?;
            Ok(row.map_or(0, |row| row.get::<_, i64>(0)))
        })
    }

    /// Checks that `sealer`, this member's key-encryption key, is the one the shared
    /// store's secrets are sealed with; the first member to start records its own.
    /// Every member needs the same KEK: a member with another one would fail to open
    /// every secret, and seal new ones that no other member could open.
    pub fn check_kek(&self, sealer: &Sealer) -> Result<(), PgError> {
        let mine = sealer.seal(CANARY_BINDING, CANARY);
        let recorded = self.run(move |pool| async move {
            let client = pool.get().await?;
            client
                .execute(
                    "INSERT INTO kek_canary (id, sealed) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                    &[&mine],
                )
                .await?;
            let row = client
                .query_one("SELECT sealed FROM kek_canary WHERE id = 1", &[])
                .await?;
            Ok(row.get::<_, Vec<u8>>(0))
        })?;
        match sealer.open_sealed(CANARY_BINDING, &recorded) {
            Ok(opened) if opened.as_slice() == CANARY => Ok(()),
            _ => Err(PgError::Config(
                "this member's key-encryption key (data_dir/secret.key) does not open the shared store's secrets: every member needs the same one; copy secret.key from a running member (mode 0600)".into(),
            )),
        }
    }

    /// How long a request may wait, as configured.
    pub fn timeout(&self) -> Duration {
        self.pool.timeouts().wait.unwrap_or(Duration::from_secs(5))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed on an async thread (a server
        // dropped in a task); letting it go in the background is.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Brings the schema up to date. Two members starting at once serialize on the
/// version row's lock; the second finds nothing left to do.
async fn migrate(pool: Pool) -> Result<(), PgError> {
    let mut client = pool.get().await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS sealgate_schema (
                 id integer PRIMARY KEY CHECK (id = 1), version bigint NOT NULL);
             INSERT INTO sealgate_schema (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;",
        )
        .await?;
    let transaction = client.transaction().await?;
    let version: i64 = transaction
        .query_one(
            "SELECT version FROM sealgate_schema WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?
        .get(0);
    if version > SCHEMA_VERSION {
        return Err(PgError::Config(format!(
            "the shared store's schema is at version {version}, newer than this sealgate knows ({SCHEMA_VERSION}): upgrade this member"
        )));
    }
    for (done, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        transaction.batch_execute(migration).await?;
        tracing::info!(version = done + 1, "shared store: schema migrated");
    }
    transaction
        .execute(
            "UPDATE sealgate_schema SET version = $1 WHERE id = 1",
            &[&SCHEMA_VERSION],
        )
        .await?;
    transaction.commit().await?;
    Ok(())
}
