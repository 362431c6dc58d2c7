//! What key transfer keeps: this gateway's transport identity (the certificate, and its
//! key sealed at rest), the peers an admin trusts, the sequence number of the last
//! bundle this gateway made, and the last bundle accepted from each signer (to refuse
//! replays).
//!
//! On one gateway it is the `transfer` tree of the sled database (keys `identity`,
//! `identity-secret`, `sequence`, `peer\0FPR`, `received\0FPR`). In a cluster it is in
//! the shared store (`transfer_*` tables), so that the members are one gateway to their
//! peers: one transport certificate, one list of peers, one sequence.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::identity::Identity;
use super::{Peer, TransferError};
use crate::keys::secrets::Sealer;
use crate::store::postgres::{PgError, Postgres};

/// The last bundle accepted from one signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Where the transfer records are.
#[derive(Clone)]
pub struct TransferStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sled(sled::Tree),
    Postgres(Arc<Postgres>),
}

/// The transport certificate (DER) and its key, sealed, as stored.
struct StoredIdentity {
    cert: Vec<u8>,
    sealed: Vec<u8>,
}

/// What the sealed transport key is bound to (the GCM associated data).
fn binding(fingerprint: &str) -> String {
    format!("transfer-identity:{fingerprint}")
}

/// The records kept by signer fingerprint.
#[derive(Clone, Copy)]
enum Record {
    Peer,
    Received,
}

impl Record {
    fn name(self) -> &'static str {
        match self {
            Record::Peer => "peer",
            Record::Received => "received",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Record::Peer => "transfer_peers",
            Record::Received => "transfer_received",
        }
    }

    /// Its key in the sled tree.
    fn key(self, fingerprint: &str) -> Vec<u8> {
        format!("{}\0{fingerprint}", self.name()).into_bytes()
    }
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, TransferError> {
    serde_json::from_slice(bytes)
        .map_err(|_| TransferError::Internal(format!("transfer record {what:?} does not decode")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("transfer records always serialize")
}

impl TransferStore {
    /// The `transfer` tree of `db`.
    pub fn open(db: &sled::Db) -> Result<TransferStore, TransferError> {
        Ok(TransferStore {
            backend: Backend::Sled(db.open_tree("transfer").map_err(db_error)?),
        })
    }

    /// The shared store's, when there is one, else the `transfer` tree of `db`.
    pub fn open_configured(
        db: &sled::Db,
        shared: Option<Arc<Postgres>>,
    ) -> Result<TransferStore, TransferError> {
        match shared {
            None => TransferStore::open(db),
            Some(pg) => Ok(TransferStore {
                backend: Backend::Postgres(pg),
            }),
        }
    }

    /// One record (JSON) by signer fingerprint.
    fn get(&self, kind: Record, fingerprint: &str) -> Result<Option<Vec<u8>>, TransferError> {
        match &self.backend {
            Backend::Sled(tree) => Ok(tree
                .get(kind.key(fingerprint))
                .map_err(db_error)?
                .map(|v| v.to_vec())),
            Backend::Postgres(pg) => {
                let fingerprint = fingerprint.to_string();
                Ok(pg.run(move |pool| async move {
                    let client = pool.get().await?;
                    let sql = format!("SELECT record FROM {} WHERE fingerprint = $1", kind.table());
                    Ok(client
                        .query_opt(&sql, &[&fingerprint])
                        .await?
                        .map(|row| row.get::<_, String>(0).into_bytes()))
                })?)
            }
        }
    }

    fn put(&self, kind: Record, fingerprint: &str, record: Vec<u8>) -> Result<(), TransferError> {
        match &self.backend {
            Backend::Sled(tree) => {
                tree.insert(kind.key(fingerprint), record)
                    .map_err(db_error)?;
                tree.flush().map_err(db_error)?;
                Ok(())
            }
            Backend::Postgres(pg) => {
                let fingerprint = fingerprint.to_string();
                let record = String::from_utf8(record).expect("JSON is UTF-8");
                Ok(pg.run(move |pool| async move {
                    let client = pool.get().await?;
                    let table = kind.table();
                    client
                        .execute(
                            &format!(
                                "INSERT INTO {table} (fingerprint, record) VALUES ($1, $2)
                                 ON CONFLICT (fingerprint) DO UPDATE SET record = EXCLUDED.record"
                            ),
                            &[&fingerprint, &record],
                        )
                        .await?;
                    Ok(())
                })?)
            }
        }
    }

    /// This gateway's transport certificate (DER) and its sealed key, if it has them.
    fn stored_identity(&self) -> Result<Option<StoredIdentity>, TransferError> {
        match &self.backend {
            Backend::Sled(tree) => {
                let Some(cert) = tree.get("identity").map_err(db_error)? else {
                    return Ok(None);
                };
                let Some(sealed) = tree.get("identity-secret").map_err(db_error)? else {
                    return Err(TransferError::Internal(
                        "the transport certificate is stored without its key".into(),
                    ));
                };
                Ok(Some(StoredIdentity {
                    cert: cert.to_vec(),
                    sealed: sealed.to_vec(),
                }))
            }
            Backend::Postgres(pg) => Ok(pg.run(|pool| async move {
                let client = pool.get().await?;
                Ok(client
                    .query_opt(
                        "SELECT cert, sealed FROM transfer_identity WHERE id = 1",
                        &[],
                    )
                    .await?
                    .map(|row| StoredIdentity {
                        cert: row.get(0),
                        sealed: row.get(1),
                    }))
            })?),
        }
    }

    /// This gateway's transport identity, if it has one.
    pub fn identity(&self, sealer: &Sealer) -> Result<Option<Identity>, TransferError> {
        let Some(StoredIdentity { cert, sealed }) = self.stored_identity()? else {
            return Ok(None);
        };
        let fingerprint = crate::keys::material::x509_fingerprint(&cert);
        let secret = sealer
            .open_sealed(&binding(&fingerprint), &sealed)
            .map_err(|e| TransferError::Internal(format!("the transport key: {e}")))?;
        Identity::from_stored(&cert, &secret).map(Some)
    }

    /// This gateway's transport certificate (DER), without opening its key.
    pub fn identity_cert(&self) -> Result<Option<Vec<u8>>, TransferError> {
        Ok(self.stored_identity()?.map(|stored| stored.cert))
    }

    /// This gateway's transport identity, made and stored on first use. In a cluster,
    /// the first member to make one wins, and the others use it.
    pub fn identity_or_create(
        &self,
        sealer: &Sealer,
        hostname: &str,
        now: OffsetDateTime,
    ) -> Result<Identity, TransferError> {
        if let Some(identity) = self.identity(sealer)? {
            return Ok(identity);
        }
        let identity = Identity::generate(hostname, now)?;
        let secret: Zeroizing<Vec<u8>> = identity.key_pkcs8()?;
        let sealed = sealer.seal(&binding(identity.fingerprint()), &secret);
        match &self.backend {
            Backend::Sled(tree) => {
                // The key first: a certificate is never stored without it.
                tree.insert("identity-secret", sealed).map_err(db_error)?;
                tree.insert("identity", identity.cert_der())
                    .map_err(db_error)?;
                tree.flush().map_err(db_error)?;
            }
            Backend::Postgres(pg) => {
                let cert = identity.cert_der().to_vec();
                pg.run(move |pool| async move {
                    let client = pool.get().await?;
                    client
                        .execute(
                            "INSERT INTO transfer_identity (id, cert, sealed) VALUES (1, $1, $2)
                             ON CONFLICT (id) DO NOTHING",
                            &[&cert, &sealed],
                        )
                        .await?;
                    Ok(())
                })?;
                // Another member may have made one a moment earlier: that one counts.
                let stored = self.identity(sealer)?.ok_or_else(|| {
                    TransferError::Internal("the transport identity was not stored".into())
                })?;
                if stored.fingerprint() != identity.fingerprint() {
                    return Ok(stored);
                }
            }
        }
        tracing::info!(
            fingerprint = identity.fingerprint(),
            "transfer: made this gateway's transport certificate"
        );
        Ok(identity)
    }

    /// The next bundle sequence number; each bundle this gateway makes has a higher one.
    pub fn next_sequence(&self) -> Result<u64, TransferError> {
        match &self.backend {
            Backend::Sled(tree) => {
                let next = tree
                    .update_and_fetch("sequence", |old| {
                        let last = old
                            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                            .map_or(0, u64::from_be_bytes);
                        Some((last + 1).to_be_bytes().to_vec())
                    })
                    .map_err(db_error)?
                    .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
                    .map(u64::from_be_bytes)
                    .expect("the update always stores eight bytes");
                tree.flush().map_err(db_error)?;
                Ok(next)
            }
            Backend::Postgres(pg) => {
                let next: i64 = pg.run(|pool| async move {
                    let client = pool.get().await?;
                    Ok(client
                        .query_one(
                            "INSERT INTO transfer_sequence (id, value) VALUES (1, 1)
                             ON CONFLICT (id) DO UPDATE SET value = transfer_sequence.value + 1
                             RETURNING value",
                            &[],
                        )
                        .await?
                        .get(0))
                })?;
                Ok(next as u64)
            }
        }
    }

    pub fn peers(&self) -> Result<Vec<Peer>, TransferError> {
        let records: Vec<Vec<u8>> = match &self.backend {
            Backend::Sled(tree) => {
                let mut out = Vec::new();
                for item in tree.scan_prefix(b"peer\0") {
                    out.push(item.map_err(db_error)?.1.to_vec());
                }
                out
            }
            Backend::Postgres(pg) => pg.run(|pool| async move {
                let client = pool.get().await?;
                Ok(client
                    .query(
                        "SELECT record FROM transfer_peers ORDER BY fingerprint",
                        &[],
                    )
                    .await?
                    .iter()
                    .map(|row| row.get::<_, String>(0).into_bytes())
                    .collect())
            })?,
        };
        records.iter().map(|r| decode("peer", r)).collect()
    }

    pub fn peer(&self, fingerprint: &str) -> Result<Option<Peer>, TransferError> {
        self.get(Record::Peer, fingerprint)?
            .map(|r| decode("peer", &r))
            .transpose()
    }

    pub fn put_peer(&self, peer: &Peer) -> Result<(), TransferError> {
        self.put(Record::Peer, &peer.fingerprint, encode(peer))
    }

    /// The last bundle accepted from the signer `fingerprint`.
    pub fn received(&self, fingerprint: &str) -> Result<Option<Received>, TransferError> {
        self.get(Record::Received, fingerprint)?
            .map(|r| decode("received", &r))
            .transpose()
    }

    pub fn set_received(
        &self,
        fingerprint: &str,
        received: &Received,
    ) -> Result<(), TransferError> {
        self.put(Record::Received, fingerprint, encode(received))
    }
}

impl TransferStore {
    /// Copies this gateway's transfer records (sled) into `shared`, for `store migrate`,
    /// unless the shared store has a transport identity already: then the cluster's
    /// stays, and nothing is copied. Says whether it copied.
    pub fn copy_into(&self, shared: &TransferStore) -> Result<bool, TransferError> {
        let (Backend::Sled(tree), Backend::Postgres(pg)) = (&self.backend, &shared.backend) else {
            return Err(TransferError::Internal(
                "transfer records are copied from sled into the shared store".into(),
            ));
        };
        if shared.stored_identity()?.is_some() {
            return Ok(false);
        }
        let Some(identity) = self.stored_identity()? else {
            return Ok(false);
        };
        for (kind, prefix) in [(Record::Peer, "peer\0"), (Record::Received, "received\0")] {
            for item in tree.scan_prefix(prefix) {
                let (key, value) = item.map_err(db_error)?;
                let fingerprint = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                shared.put(kind, &fingerprint, value.to_vec())?;
            }
        }
        let sequence = tree
            .get("sequence")
            .map_err(db_error)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map_or(0, u64::from_be_bytes) as i64;
        pg.run(move |pool| async move {
            let client = pool.get().await?;
            client
                .execute(
                    "INSERT INTO transfer_sequence (id, value) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET value = GREATEST(transfer_sequence.value, $1)",
                    &[&sequence],
                )
                .await?;
            client
                .execute(
                    "INSERT INTO transfer_identity (id, cert, sealed) VALUES (1, $1, $2)
                     ON CONFLICT (id) DO NOTHING",
                    &[&identity.cert, &identity.sealed],
                )
                .await?;
            Ok(())
        })?;
        Ok(true)
    }
}

fn db_error(e: sled::Error) -> TransferError {
    TransferError::Internal(format!("transfer store database: {e}"))
}

impl From<PgError> for TransferError {
    fn from(e: PgError) -> TransferError {
        TransferError::Internal(e.to_string())
    }
}
