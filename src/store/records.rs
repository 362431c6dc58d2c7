//! A small key-value tree that lives in sled on one gateway and in the shared store in a
//! cluster: what the organization's state and key transfer's records are kept in, so
//! that the members share one Organization key and certificate, one transport identity
//! and one list of peers.
//!
//! In PostgreSQL it is the `records` table, keyed by (tree, key); keys are bytes, as in
//! sled, so that prefix scans work the same (an index range, not a pattern).

use std::sync::Arc;

use super::postgres::{PgError, Postgres};

/// Why a tree could not be read or written. The gateway's own problem; a retry may help.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("database: {0}")]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Shared(#[from] PgError),
}

/// One record: its key and its value.
pub type Record = (Vec<u8>, Vec<u8>);

/// One named tree of records.
#[derive(Clone)]
pub enum Records {
    Sled(sled::Tree),
    Postgres {
        pg: Arc<Postgres>,
        tree: &'static str,
    },
}

/// The smallest key above every key that starts with `prefix`, if there is one.
fn after_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Records {
    /// The tree `name`: of `db`, or of the shared store when there is one.
    pub fn open(
        db: &sled::Db,
        shared: Option<Arc<Postgres>>,
        name: &'static str,
    ) -> Result<Records, RecordsError> {
        Ok(match shared {
            None => Records::Sled(db.open_tree(name)?),
            Some(pg) => Records::Postgres { pg, tree: name },
        })
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, RecordsError> {
        match self {
            Records::Sled(tree) => Ok(tree.get(key)?.map(|v| v.to_vec())),
            Records::Postgres { pg, tree } => {
                let (tree, key) = (*tree, key.as_ref().to_vec());
                Ok(pg.run(move |pool| async move {
                    let client = pool.get().await?;
                    Ok(client
                        .query_opt(
                            "SELECT value FROM records WHERE tree = $1 AND key = $2",
                            &[&tree, &key],
                        )
                        .await?
                        .map(|row| row.get(0)))
                })?)
            }
        }
    }

    pub fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), RecordsError> {
        match self {
            Records::Sled(tree) => {
                tree.insert(key.as_ref(), value.as_ref())?;
                Ok(())
            }
            Records::Postgres { pg, tree } => {
                let (tree, key, value) = (*tree, key.as_ref().to_vec(), value.as_ref().to_vec());
                Ok(pg.run(move |pool| async move {
                    let client = pool.get().await?;
                    client
                        .execute(
                            "INSERT INTO records (tree, key, value) VALUES ($1, $2, $3)
                             ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value",
                            &[&tree, &key, &value],
                        )
                        .await?;
                    Ok(())
                })?)
            }
        }
    }

    /// Stores `value` at `key` unless a value is there; says whether it stored it. Of
    /// two members that race to make the same record, one wins and both see it.
    pub fn insert_new(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<bool, RecordsError> {
        match self {
            Records::Sled(tree) => Ok(tree
                .compare_and_swap(key.as_ref(), None::<&[u8]>, Some(value.as_ref()))?
                .is_ok()),
            Records::Postgres { pg, tree } => {
                let (tree, key, value) = (*tree, key.as_ref().to_vec(), value.as_ref().to_vec());
                Ok(pg.run(move |pool| async move {
                    let client = pool.get().await?;
                    Ok(client
                        .execute(
                            "INSERT INTO records (tree, key, value) VALUES ($1, $2, $3)
                             ON CONFLICT (tree, key) DO NOTHING",
                            &[&tree, &key, &value],
                        )
                        .await?
                        == 1)
                })?)
            }
        }
    }

    /// Copies every record into `to` (`store migrate`); returns how many.
    pub fn copy_all(&self, to: &Records) -> Result<usize, RecordsError> {
        let records = self.scan_prefix(b"")?;
        for (key, value) in &records {
            to.insert(key, value)?;
        }
        to.flush()?;
        Ok(records.len())
    }

    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), RecordsError> {
        match self {
            Records::Sled(tree) => {
                tree.remove(key)?;
                Ok(())
            }
            Records::Postgres { pg, tree } => {
                let (tree, key) = (*tree, key.as_ref().to_vec());
                Ok(pg.run(move |pool| async move {
                    let client = pool.get().await?;
                    client
                        .execute(
                            "DELETE FROM records WHERE tree = $1 AND key = $2",
                            &[&tree, &key],
                        )
                        .await?;
                    Ok(())
                })?)
            }
        }
    }

    /// The records whose keys start with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<Record>, RecordsError> {
        match self {
            Records::Sled(tree) => tree
                .scan_prefix(prefix)
                .map(|item| {
                    let (key, value) = item?;
                    Ok((key.to_vec(), value.to_vec()))
                })
                .collect(),
            Records::Postgres { pg, tree } => {
                let (tree, start, end) = (*tree, prefix.to_vec(), after_prefix(prefix));
                Ok(pg.run(move |pool| async move {
                    let client = pool.get().await?;
                    let rows = client
                        .query(
                            "SELECT key, value FROM records WHERE tree = $1 AND key >= $2
                             AND ($3::bytea IS NULL OR key < $3) ORDER BY key",
                            &[&tree, &start, &end],
                        )
                        .await?;
                    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
                })?)
            }
        }
    }

    /// Adds one to the big-endian counter at `key` (0 when absent) and returns it.
    pub fn increment(&self, key: &'static str) -> Result<u64, RecordsError> {
        match self {
            Records::Sled(tree) => Ok(tree
                .update_and_fetch(key, |old| {
                    let n = old
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map_or(0, u64::from_be_bytes);
                    Some((n + 1).to_be_bytes().to_vec())
                })?
                .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
                .map_or(1, u64::from_be_bytes)),
            Records::Postgres { pg, tree } => {
                let tree = *tree;
                // The counter's bytes are replaced inside one statement, under the row's
                // lock: two members never get the same number.
                let value: Vec<u8> = pg.run(move |pool| async move {
                    let mut client = pool.get().await?;
                    let transaction = client.transaction().await?;
                    let old: Option<Vec<u8>> = transaction
                        .query_opt(
                            "SELECT value FROM records WHERE tree = $1 AND key = $2 FOR UPDATE",
                            &[&tree, &key.as_bytes()],
                        )
                        .await?
                        .map(|row| row.get(0));
                    let n = old
                        .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
                        .map_or(0, u64::from_be_bytes);
                    let next = (n + 1).to_be_bytes().to_vec();
                    transaction
                        .execute(
                            "INSERT INTO records (tree, key, value) VALUES ($1, $2, $3)
                             ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value",
                            &[&tree, &key.as_bytes(), &next],
                        )
                        .await?;
                    transaction.commit().await?;
                    Ok(next)
                })?;
                Ok(<[u8; 8]>::try_from(&value[..]).map_or(1, u64::from_be_bytes))
            }
        }
    }

    /// Waits until what was written is durable (sled; a commit already is).
    pub fn flush(&self) -> Result<(), RecordsError> {
        if let Records::Sled(tree) = self {
            tree.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::after_prefix;

    #[test]
    fn the_end_of_a_prefix_range() {
        assert_eq!(
            after_prefix(b"certified\0"),
            Some(b"certified\x01".to_vec())
        );
        assert_eq!(after_prefix(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(after_prefix(b"\xff\xff"), None);
        assert_eq!(after_prefix(b""), None);
    }
}
