//! What key transfer keeps: this gateway's transport identity (the certificate, and its
//! key sealed at rest), the peers an admin trusts, the sequence number of the last
//! bundle this gateway made, and the last bundle accepted from each signer (to refuse
//! replays).
//!
//! It is the `transfer` tree of [`Records`]: in sled on one gateway, in the shared store
//! in a cluster, so that the members are one gateway to their peers (one transport
//! certificate, one list of peers, one sequence). Keys: `identity` (JSON: the
//! certificate and the sealed key together), `sequence`, `peer\0FPR`, `received\0FPR`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::identity::Identity;
use super::{Peer, TransferError};
use crate::keys::secrets::Sealer;
use crate::store::base64_bytes;
use crate::store::postgres::Postgres;
use crate::store::records::{Records, RecordsError};

/// The last bundle accepted from one signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The transfer records.
#[derive(Clone)]
pub struct TransferStore {
    records: Records,
}

/// The transport certificate (DER) and its key, sealed: one record, so that a member
/// never sees one without the other.
#[derive(Serialize, Deserialize)]
struct StoredIdentity {
    #[serde(with = "base64_bytes")]
    cert: Vec<u8>,
    #[serde(with = "base64_bytes")]
    sealed: Vec<u8>,
}

/// What the sealed transport key is bound to (the GCM associated data).
fn binding(fingerprint: &str) -> String {
    format!("transfer-identity:{fingerprint}")
}

fn peer_key(fingerprint: &str) -> String {
    format!("peer\0{fingerprint}")
}

fn received_key(fingerprint: &str) -> String {
    format!("received\0{fingerprint}")
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
        TransferStore::open_configured(db, None)
    }

    /// The shared store's, when there is one, else the `transfer` tree of `db`.
    pub fn open_configured(
        db: &sled::Db,
        shared: Option<Arc<Postgres>>,
    ) -> Result<TransferStore, TransferError> {
        Ok(TransferStore {
            records: Records::open(db, shared, "transfer")?,
        })
    }

    fn stored_identity(&self) -> Result<Option<StoredIdentity>, TransferError> {
        self.records
            .get("identity")?
            .map(|bytes| decode("identity", &bytes))
            .transpose()
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
    /// the first member to store one wins, and the others use it.
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
        let stored = StoredIdentity {
            cert: identity.cert_der().to_vec(),
            sealed: sealer.seal(&binding(identity.fingerprint()), &secret),
        };
        if !self.records.insert_new("identity", encode(&stored))? {
            return self.identity(sealer)?.ok_or_else(|| {
                TransferError::Internal("the transport identity vanished as it was made".into())
            });
        }
        self.records.flush()?;
        tracing::info!(
            fingerprint = identity.fingerprint(),
            "transfer: made this gateway's transport certificate"
        );
        Ok(identity)
    }

    /// The next bundle sequence number; each bundle this gateway makes has a higher one.
    pub fn next_sequence(&self) -> Result<u64, TransferError> {
        let next = self.records.increment("sequence")?;
        self.records.flush()?;
        Ok(next)
    }

    pub fn peers(&self) -> Result<Vec<Peer>, TransferError> {
        self.records
            .scan_prefix(b"peer\0")?
            .iter()
            .map(|(_, value)| decode("peer", value))
            .collect()
    }

    pub fn peer(&self, fingerprint: &str) -> Result<Option<Peer>, TransferError> {
        self.records
            .get(peer_key(fingerprint))?
            .map(|r| decode("peer", &r))
            .transpose()
    }

    pub fn put_peer(&self, peer: &Peer) -> Result<(), TransferError> {
        self.records
            .insert(peer_key(&peer.fingerprint), encode(peer))?;
        Ok(self.records.flush()?)
    }

    /// The last bundle accepted from the signer `fingerprint`.
    pub fn received(&self, fingerprint: &str) -> Result<Option<Received>, TransferError> {
        self.records
            .get(received_key(fingerprint))?
            .map(|r| decode("received", &r))
            .transpose()
    }

    pub fn set_received(
        &self,
        fingerprint: &str,
        received: &Received,
    ) -> Result<(), TransferError> {
        self.records
            .insert(received_key(fingerprint), encode(received))?;
        Ok(self.records.flush()?)
    }

    /// Copies these records into `shared` (`store migrate`), unless it has a transport
    /// identity already: then the cluster's stays, and nothing is copied. Says whether
    /// it copied.
    pub fn copy_into(&self, shared: &TransferStore) -> Result<bool, TransferError> {
        if shared.identity_cert()?.is_some() || self.identity_cert()?.is_none() {
            return Ok(false);
        }
        self.records.copy_all(&shared.records)?;
        Ok(true)
    }
}

impl From<RecordsError> for TransferError {
    fn from(e: RecordsError) -> TransferError {
        TransferError::Internal(format!("transfer store: {e}"))
    }
}
