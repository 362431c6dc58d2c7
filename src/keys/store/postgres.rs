//! The key cache in the shared PostgreSQL store, for gateways in a cluster: every member
//! sees every entry, and every rule of the cache holds across members because storing a
//! key runs the same [`rules`](super::rules) as sled, in one transaction that holds the
//! lock of the key's address (a row of `key_addresses`), so that two members storing keys
//! for one address at once take turns.
//!
//! An entry is a row of `key_entries`: its JSON (as `keys list --json` prints it), its
//! material, and its cache expiry for the purge. Sealed secrets are rows of
//! `key_secrets`.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::rules::{self, AddressRows};
use super::{Candidate, KeyStore, KeyStoreError, Put};
use crate::keys::entry::{KeyEntry, Selector};
use crate::store::postgres::{PgError, Postgres};

/// The key cache on the shared store.
#[derive(Clone)]
pub struct PgKeyStore {
    pg: Arc<Postgres>,
    /// `[keys] lookup_ttl`.
    lookup_ttl: Duration,
    /// The material that the last lookups of an address read with its entries.
    read_with: Arc<ReadWith>,
}

/// Key material read together with the entries of an address, kept for a moment.
///
/// A message's transaction looks its recipients up at RCPT and asks for the material of
/// the key it encrypts to a few milliseconds later: that second round trip to the
/// database is saved by keeping what the first read, in the state it had then (the
/// entry and its material from one row). Kept [`READ_WITH_FOR`] at most, and dropped
/// when this member changes the address. A change another member makes to a key's
/// material in that moment (a refreshed key, same fingerprint) is seen at the next
/// lookup; whether a key may be used at all is always decided on fresh entries.
#[derive(Default)]
struct ReadWith {
    material: std::sync::Mutex<std::collections::HashMap<(String, String), Kept>>,
}

/// Material kept, and since when.
type Kept = (std::time::Instant, Arc<Vec<u8>>);

/// How long material read with the entries is kept.
const READ_WITH_FOR: Duration = Duration::from_secs(30);
/// The most kept; past it, the memory starts over.
const READ_WITH_MAX: usize = 10_000;

impl ReadWith {
    fn keep(&self, address: &str, rows: &[(KeyEntry, Vec<u8>)]) {
        let mut kept = self.material.lock().expect("material lock");
        if kept.len() >= READ_WITH_MAX {
            kept.clear();
        }
        let now = std::time::Instant::now();
        for (entry, material) in rows {
            kept.insert(
                (address.to_string(), entry.fingerprint.clone()),
                (now, Arc::new(material.clone())),
            );
        }
    }

    fn get(&self, address: &str, fingerprint: &str) -> Option<Arc<Vec<u8>>> {
        let kept = self.material.lock().expect("material lock");
        kept.get(&(address.to_string(), fingerprint.to_string()))
            .filter(|(at, _)| at.elapsed() < READ_WITH_FOR)
            .map(|(_, material)| material.clone())
    }

    fn forget(&self, address: Option<&str>) {
        let mut kept = self.material.lock().expect("material lock");
        match address {
            Some(address) => kept.retain(|(a, _), _| a != address),
            None => kept.clear(),
        }
    }
}

impl PgKeyStore {
    pub fn new(pg: Arc<Postgres>, lookup_ttl: Duration) -> PgKeyStore {
        PgKeyStore {
            pg,
            lookup_ttl,
            read_with: Arc::default(),
        }
    }

    /// The entries of `address`, keeping the material read with them.
    fn kept(&self, address: &str, rows: Vec<(KeyEntry, Vec<u8>)>) -> Vec<KeyEntry> {
        self.read_with.keep(address, &rows);
        rows.into_iter().map(|(entry, _)| entry).collect()
    }
}

fn decode(meta: &str) -> Result<KeyEntry, PgError> {
    serde_json::from_str(meta)
        .map_err(|e| PgError::Failed(format!("a key_entries row does not decode: {e}")))
}

fn encode(entry: &KeyEntry) -> String {
    serde_json::to_string(entry).expect("an entry always serializes")
}

/// The entries of one address with their material: the query of every RCPT, prepared
/// once per connection.
#[allow(clippy::type_complexity)]
fn find(
    address: String,
) -> impl FnOnce(
    deadpool_postgres::Pool,
) -> futures::future::BoxFuture<'static, Result<Vec<(KeyEntry, Vec<u8>)>, PgError>> {
    move |pool| {
        Box::pin(async move {
            let client = pool.get().await?;
            let statement = client
                .prepare_cached(
                    "SELECT meta, material FROM key_entries WHERE address = $1 ORDER BY fingerprint",
                )
                .await?;
            let rows = client.query(&statement, &[&address]).await?;
            rows.iter()
                .map(|row| Ok((decode(row.get(0))?, row.get(1))))
                .collect()
        })
    }
}

/// Entries from rows whose first column is the entry's JSON.
fn entries(rows: &[tokio_postgres::Row]) -> Result<Vec<KeyEntry>, PgError> {
    rows.iter().map(|row| decode(row.get(0))).collect()
}

async fn upsert(
    client: &deadpool_postgres::Transaction<'_>,
    entry: &KeyEntry,
    material: &[u8],
) -> Result<(), PgError> {
    client
        .execute(
            "INSERT INTO key_entries (address, fingerprint, meta, material, expires)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (address, fingerprint)
             DO UPDATE SET meta = EXCLUDED.meta, material = EXCLUDED.material, expires = EXCLUDED.expires",
            &[
                &entry.address,
                &entry.fingerprint,
                &encode(entry),
                &material,
                &entry.expires,
            ],
        )
        .await?;
    Ok(())
}

impl PgKeyStore {
    /// Stores an entry exactly as another store had it, times included, unless the
    /// shared store has one for its address and key already (which it keeps). Says
    /// whether it was stored.
    pub fn insert_as_is(
        &self,
        entry: &KeyEntry,
        material: &[u8],
        sealed_secret: Option<&[u8]>,
    ) -> Result<bool, KeyStoreError> {
        let (entry, material) = (entry.clone(), material.to_vec());
        let secret = sealed_secret.map(<[u8]>::to_vec);
        Ok(self.pg.run(move |pool| async move {
            let mut client = pool.get().await?;
            let transaction = client.transaction().await?;
            transaction
                .execute(
                    "INSERT INTO key_addresses (address) VALUES ($1) ON CONFLICT (address) DO NOTHING",
                    &[&entry.address],
                )
                .await?;
            let stored = transaction
                .execute(
                    "INSERT INTO key_entries (address, fingerprint, meta, material, expires)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (address, fingerprint) DO NOTHING",
                    &[
                        &entry.address,
                        &entry.fingerprint,
                        &encode(&entry),
                        &material,
                        &entry.expires,
                    ],
                )
                .await?
                == 1;
            if let Some(secret) = &secret {
                transaction
                    .execute(
                        "INSERT INTO key_secrets (fingerprint, sealed) VALUES ($1, $2)
                         ON CONFLICT (fingerprint) DO NOTHING",
                        &[&entry.fingerprint, secret],
                    )
                    .await?;
            }
            transaction.commit().await?;
            Ok(stored)
        })?)
    }
}

impl KeyStore for PgKeyStore {
    fn put(&self, mut candidate: Candidate, now: OffsetDateTime) -> Result<Put, KeyStoreError> {
        self.read_with.forget(Some(&candidate.address));
        let lookup_ttl = self.lookup_ttl;
        let secret = candidate.sealed_secret.take();
        Ok(self.pg.run(move |pool| async move {
            let mut client = pool.get().await?;
            let transaction = client.transaction().await?;
            let address = candidate.address.clone();
            let fingerprint = candidate.fingerprint.clone();
            transaction
                .execute(
                    "INSERT INTO key_addresses (address) VALUES ($1) ON CONFLICT (address) DO NOTHING",
                    &[&address],
                )
                .await?;
            transaction
                .query_one(
                    "SELECT address FROM key_addresses WHERE address = $1 FOR UPDATE",
                    &[&address],
                )
                .await?;
            let mut rows = Vec::new();
            for row in transaction
                .query(
                    "SELECT meta, material FROM key_entries WHERE address = $1",
                    &[&address],
                )
                .await?
            {
                rows.push((decode(row.get(0))?, row.get::<_, Vec<u8>>(1)));
            }
            let mut rows = AddressRows::new(rows);
            let put = rules::put(&mut rows, candidate, lookup_ttl, now);
            if let (Some(secret), false) = (secret, matches!(put, Put::Ignored(_))) {
                transaction
                    .execute(
                        "INSERT INTO key_secrets (fingerprint, sealed) VALUES ($1, $2)
                         ON CONFLICT (fingerprint) DO UPDATE SET sealed = EXCLUDED.sealed",
                        &[&fingerprint, &secret],
                    )
                    .await?;
            }
            let writes = rows.writes();
            for removed in &writes.removed {
                transaction
                    .execute(
                        "DELETE FROM key_entries WHERE address = $1 AND fingerprint = $2",
                        &[&address, removed],
                    )
                    .await?;
            }
            for (entry, material) in &writes.stored {
                upsert(&transaction, entry, material).await?;
            }
            transaction.commit().await?;
            Ok(put)
        })?)
    }

    fn find(&self, address: &str) -> Result<Vec<KeyEntry>, KeyStoreError> {
        let rows = self.pg.run(find(address.to_string()))?;
        Ok(self.kept(address, rows))
    }

    fn find_async<'a>(
        &'a self,
        address: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<Vec<KeyEntry>, KeyStoreError>> {
        Box::pin(async move {
            let rows = self.pg.run_async(find(address.to_string())).await?;
            Ok(self.kept(address, rows))
        })
    }

    fn material(&self, address: &str, fingerprint: &str) -> Result<Option<Vec<u8>>, KeyStoreError> {
        if let Some(material) = self.read_with.get(address, fingerprint) {
            return Ok(Some(material.as_ref().clone()));
        }
        let (address, fingerprint) = (address.to_string(), fingerprint.to_string());
        Ok(self.pg.run(move |pool| async move {
            let client = pool.get().await?;
            let statement = client
                .prepare_cached(
                    "SELECT material FROM key_entries WHERE address = $1 AND fingerprint = $2",
                )
                .await?;
            let row = client
                .query_opt(&statement, &[&address, &fingerprint])
                .await?;
            Ok(row.map(|row| row.get(0)))
        })?)
    }

    fn sealed_secret(&self, fingerprint: &str) -> Result<Option<Vec<u8>>, KeyStoreError> {
        let fingerprint = fingerprint.to_string();
        Ok(self.pg.run(move |pool| async move {
            let client = pool.get().await?;
            let statement = client
                .prepare_cached("SELECT sealed FROM key_secrets WHERE fingerprint = $1")
                .await?;
            let row = client.query_opt(&statement, &[&fingerprint]).await?;
            Ok(row.map(|row| row.get(0)))
        })?)
    }

    fn list(&self) -> Result<Vec<KeyEntry>, KeyStoreError> {
        Ok(self.pg.run(|pool| async move {
            let client = pool.get().await?;
            let rows = client
                .query(
                    "SELECT meta FROM key_entries ORDER BY address, fingerprint",
                    &[],
                )
                .await?;
            entries(&rows)
        })?)
    }

    fn mark_revoked(
        &self,
        fingerprint: &str,
        material: Option<&[u8]>,
    ) -> Result<Vec<KeyEntry>, KeyStoreError> {
        self.read_with.forget(None);
        let fingerprint = fingerprint.to_string();
        let material = material.map(<[u8]>::to_vec);
        Ok(self.pg.run(move |pool| async move {
            let mut client = pool.get().await?;
            let transaction = client.transaction().await?;
            let mut marked = Vec::new();
            for row in transaction
                .query(
                    "SELECT meta, material FROM key_entries WHERE fingerprint = $1 FOR UPDATE",
                    &[&fingerprint],
                )
                .await?
            {
                let mut entry = decode(row.get(0))?;
                entry.revoked = true;
                let old: Vec<u8> = row.get(1);
                upsert(&transaction, &entry, material.as_deref().unwrap_or(&old)).await?;
                marked.push(entry);
            }
            transaction.commit().await?;
            Ok(marked)
        })?)
    }

    fn delete(&self, address_or_fingerprint: &str) -> Result<Vec<KeyEntry>, KeyStoreError> {
        self.read_with.forget(None);
        let selector = Selector::parse(address_or_fingerprint);
        Ok(self.pg.run(move |pool| async move {
            let mut client = pool.get().await?;
            let transaction = client.transaction().await?;
            let rows = match &selector {
                Some(Selector::Address(address)) => {
                    transaction
                        .query(
                            "DELETE FROM key_entries WHERE address = $1 RETURNING meta",
                            &[address],
                        )
                        .await?
                }
                Some(Selector::Fingerprint(fingerprint)) => {
                    transaction
                        .query(
                            "DELETE FROM key_entries WHERE fingerprint = $1 RETURNING meta",
                            &[fingerprint],
                        )
                        .await?
                }
                None => Vec::new(),
            };
            let doomed = entries(&rows)?;
            // A secret goes with the last entry that uses it.
            for entry in &doomed {
                transaction
                    .execute(
                        "DELETE FROM key_secrets WHERE fingerprint = $1
                         AND NOT EXISTS (SELECT 1 FROM key_entries WHERE fingerprint = $1)",
                        &[&entry.fingerprint],
                    )
                    .await?;
            }
            transaction.commit().await?;
            Ok(doomed)
        })?)
    }

    fn purge(&self, now: OffsetDateTime) -> Result<Vec<KeyEntry>, KeyStoreError> {
        // Each expired row is deleted, and reported, by exactly one member: two purges
        // at once take turns on the rows' locks.
        let expired = self.pg.run(move |pool| async move {
            let client = pool.get().await?;
            let rows = client
                .query(
                    "DELETE FROM key_entries WHERE expires <= $1 RETURNING meta",
                    &[&now],
                )
                .await?;
            entries(&rows)
        })?;
        expired.iter().for_each(super::log_purged);
        Ok(expired)
    }
}
