//! What key transfer keeps, in the `transfer` tree of the gateway's sled database: this
//! gateway's transport identity (the certificate, and its key sealed at rest), the peers
//! an admin trusts, the sequence number of the last bundle this gateway made, and the
//! last bundle accepted from each signer (to refuse replays).
//!
//! Keys of the tree: `identity`, `identity-secret`, `sequence`, `peer\0FPR`,
//! `received\0FPR`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::identity::Identity;
use super::{Peer, TransferError};
use crate::keys::secrets::Sealer;

/// The last bundle accepted from one signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// The `transfer` tree.
#[derive(Clone)]
pub struct TransferStore {
    tree: sled::Tree,
}

/// What the sealed transport key is bound to (the GCM associated data).
fn binding(fingerprint: &str) -> String {
    format!("transfer-identity:{fingerprint}")
}

fn key(kind: &str, fingerprint: &str) -> Vec<u8> {
    format!("{kind}\0{fingerprint}").into_bytes()
}

impl TransferStore {
    pub fn open(db: &sled::Db) -> Result<TransferStore, TransferError> {
        Ok(TransferStore {
            tree: db.open_tree("transfer").map_err(db_error)?,
        })
    }

    fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, TransferError> {
        match self.tree.get(key).map_err(db_error)? {
            None => Ok(None),
            Some(value) => serde_json::from_slice(&value).map(Some).map_err(|_| {
                TransferError::Internal(format!(
                    "transfer store entry {:?} does not decode",
                    String::from_utf8_lossy(key)
                ))
            }),
        }
    }

    fn put_json<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), TransferError> {
        let bytes = serde_json::to_vec(value).expect("transfer records always serialize");
        self.tree.insert(key, bytes).map_err(db_error)?;
        self.tree.flush().map_err(db_error)?;
        Ok(())
    }

    /// This gateway's transport identity, if it has one.
    pub fn identity(&self, sealer: &Sealer) -> Result<Option<Identity>, TransferError> {
        let Some(cert) = self.tree.get("identity").map_err(db_error)? else {
            return Ok(None);
        };
        let Some(sealed) = self.tree.get("identity-secret").map_err(db_error)? else {
            return Err(TransferError::Internal(
                "the transport certificate is stored without its key".into(),
            ));
        };
        let fingerprint = crate::keys::material::x509_fingerprint(&cert);
        let secret = sealer
            .open_sealed(&binding(&fingerprint), &sealed)
            .map_err(|e| TransferError::Internal(format!("the transport key: {e}")))?;
        Identity::from_stored(&cert, &secret).map(Some)
    }

    /// This gateway's transport certificate (DER), without opening its key.
    pub fn identity_cert(&self) -> Result<Option<Vec<u8>>, TransferError> {
        Ok(self
            .tree
            .get("identity")
            .map_err(db_error)?
            .map(|v| v.to_vec()))
    }

    /// This gateway's transport identity, made and stored on first use.
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
        // The key first: a certificate is never stored without it.
        self.tree
            .insert("identity-secret", sealed)
            .map_err(db_error)?;
        self.tree
            .insert("identity", identity.cert_der())
            .map_err(db_error)?;
        self.tree.flush().map_err(db_error)?;
        tracing::info!(
            fingerprint = identity.fingerprint(),
            "transfer: made this gateway's transport certificate"
        );
        Ok(identity)
    }

    /// The next bundle sequence number; each bundle this gateway makes has a higher one.
    pub fn next_sequence(&self) -> Result<u64, TransferError> {
        let next = self
            .tree
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
        self.tree.flush().map_err(db_error)?;
        Ok(next)
    }

    pub fn peers(&self) -> Result<Vec<Peer>, TransferError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"peer\0") {
            let (key, _) = item.map_err(db_error)?;
            out.extend(self.get_json::<Peer>(&key)?);
        }
        Ok(out)
    }

    pub fn peer(&self, fingerprint: &str) -> Result<Option<Peer>, TransferError> {
        self.get_json(&key("peer", fingerprint))
    }

    pub fn put_peer(&self, peer: &Peer) -> Result<(), TransferError> {
        self.put_json(&key("peer", &peer.fingerprint), peer)
    }

    /// The last bundle accepted from the signer `fingerprint`.
    pub fn received(&self, fingerprint: &str) -> Result<Option<Received>, TransferError> {
        self.get_json(&key("received", fingerprint))
    }

    pub fn set_received(
        &self,
        fingerprint: &str,
        received: &Received,
    ) -> Result<(), TransferError> {
        self.put_json(&key("received", fingerprint), received)
    }
}

fn db_error(e: sled::Error) -> TransferError {
    TransferError::Internal(format!("transfer store database: {e}"))
}
