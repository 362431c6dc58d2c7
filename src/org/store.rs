//! What the organization's keys need kept, in the `org` tree of the gateway's sled
//! database: the Organization key (public cert, and its secret sealed at rest like SCKM
//! secrets), the Organization certificate (its DER, and its key sealed), the
//! certifications made of users' keys, the user certificates issued, and when each
//! internal user last had mail through the gateway.
//!
//! Keys of the tree: `key`, `key-secret`, `ca`, `ca-secret`, `crl-number`,
//! `certified\0ADDRESS\0FPR`, `issued\0ADDRESS\0SERIAL`, `active\0ADDRESS`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::keys::secrets::{Sealer, SecretError};
use crate::store::base64_bytes;
use crate::store::records::Records;

/// Why the org store failed. The gateway's own problem (disk, database, KEK).
#[derive(Debug, thiserror::Error)]
pub enum OrgStoreError {
    #[error("org store database: {0}")]
    Db(#[from] sled::Error),
    #[error("org store: {0}")]
    Records(#[from] crate::store::records::RecordsError),
    #[error("org store entry {0:?} does not decode")]
    Corrupt(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// The Organization key's certification of one user's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certification {
    pub address: String,
    /// The user's key (primary fingerprint).
    pub fingerprint: String,
    /// The org key that made it.
    pub org_fingerprint: String,
    /// The signature packets (one per user ID of the address), serialized.
    #[serde(with = "base64_bytes")]
    pub signatures: Vec<u8>,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
}

/// A user certificate the Organization certificate issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    pub address: String,
    /// The user's key it certifies (the cache entry's fingerprint).
    pub fingerprint: String,
    /// Upper-case hex, as openssl prints it.
    pub serial: String,
    #[serde(with = "base64_bytes")]
    pub der: Vec<u8>,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The issuing org certificate's SHA-256 fingerprint (upper-case hex).
    pub issuer: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked: Option<OffsetDateTime>,
}

/// The `org` tree: in sled on one gateway, in the shared store in a cluster.
#[derive(Clone)]
pub struct OrgStore {
    tree: Records,
}

/// What a sealed secret is bound to (the GCM associated data): a sealed org secret
/// cannot be passed off as another key's.
fn binding(what: &str, fingerprint: &str) -> String {
    format!("org-{what}:{fingerprint}")
}

impl OrgStore {
    pub fn open(db: &sled::Db) -> Result<OrgStore, OrgStoreError> {
        OrgStore::open_configured(db, None)
    }

    /// The shared store's, when there is one, else the `org` tree of `db`.
    pub fn open_configured(
        db: &sled::Db,
        shared: Option<std::sync::Arc<crate::store::postgres::Postgres>>,
    ) -> Result<OrgStore, OrgStoreError> {
        Ok(OrgStore {
            tree: Records::open(db, shared, "org")?,
        })
    }

    fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, OrgStoreError> {
        match self.tree.get(key)? {
            None => Ok(None),
            Some(value) => serde_json::from_slice(&value)
                .map(Some)
                .map_err(|_| OrgStoreError::Corrupt(String::from_utf8_lossy(key).into_owned())),
        }
    }

    fn put_json<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), OrgStoreError> {
        let bytes = serde_json::to_vec(value).expect("org records always serialize");
        self.tree.insert(key, bytes)?;
        Ok(())
    }

    fn scan<T: for<'de> Deserialize<'de>>(&self, prefix: &[u8]) -> Result<Vec<T>, OrgStoreError> {
        let mut out = Vec::new();
        for (key, value) in self.tree.scan_prefix(prefix)? {
            out.push(
                serde_json::from_slice(&value).map_err(|_| {
                    OrgStoreError::Corrupt(String::from_utf8_lossy(&key).into_owned())
                })?,
            );
        }
        Ok(out)
    }

    // --- The Organization key ------------------------------------------------------

    /// The org key's public cert (binary), if there is one.
    pub fn key(&self) -> Result<Option<Vec<u8>>, OrgStoreError> {
        Ok(self.tree.get("key")?.map(|v| v.to_vec()))
    }

    /// Stores the org key: its public cert and its secret (TSK), sealed. Replaces any
    /// earlier org key, and with it every certification it made.
    pub fn set_key(
        &self,
        sealer: &Sealer,
        fingerprint: &str,
        public: &[u8],
        secret: &[u8],
    ) -> Result<(), OrgStoreError> {
        let sealed = sealer.seal(&binding("key", fingerprint), secret);
        for (key, _) in self.tree.scan_prefix(b"certified\0")? {
            self.tree.remove(key)?;
        }
        self.tree.insert("key", public)?;
        self.tree.insert("key-secret", sealed)?;
        self.tree.flush()?;
        Ok(())
    }

    /// The org key's secret (TSK), unsealed.
    pub fn key_secret(
        &self,
        sealer: &Sealer,
        fingerprint: &str,
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, OrgStoreError> {
        let Some(sealed) = self.tree.get("key-secret")? else {
            return Ok(None);
        };
        Ok(Some(
            sealer.open_sealed(&binding("key", fingerprint), &sealed)?,
        ))
    }

    // --- The Organization certificate ----------------------------------------------

    /// The org certificate's DER, if there is one.
    pub fn ca(&self) -> Result<Option<Vec<u8>>, OrgStoreError> {
        Ok(self.tree.get("ca")?.map(|v| v.to_vec()))
    }

    /// Stores the org certificate and its key (PKCS#8), sealed. Certificates issued by
    /// an earlier one stay, valid until they expire.
    pub fn set_ca(
        &self,
        sealer: &Sealer,
        fingerprint: &str,
        der: &[u8],
        key_pkcs8: &[u8],
    ) -> Result<(), OrgStoreError> {
        let sealed = sealer.seal(&binding("ca", fingerprint), key_pkcs8);
        self.tree.insert("ca", der)?;
        self.tree.insert("ca-secret", sealed)?;
        self.tree.flush()?;
        Ok(())
    }

    pub fn ca_secret(
        &self,
        sealer: &Sealer,
        fingerprint: &str,
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, OrgStoreError> {
        let Some(sealed) = self.tree.get("ca-secret")? else {
            return Ok(None);
        };
        Ok(Some(
            sealer.open_sealed(&binding("ca", fingerprint), &sealed)?,
        ))
    }

    /// The next CRL number (each CRL gets a larger one).
    pub fn next_crl_number(&self) -> Result<u64, OrgStoreError> {
        let next = self.tree.increment("crl-number")?;
        Ok(next)
    }

    // --- Certifications and issued certificates ------------------------------------

    pub fn certifications(&self) -> Result<Vec<Certification>, OrgStoreError> {
        self.scan(b"certified\0")
    }

    pub fn certification(
        &self,
        address: &str,
        fingerprint: &str,
    ) -> Result<Option<Certification>, OrgStoreError> {
        self.get_json(format!("certified\0{address}\0{fingerprint}").as_bytes())
    }

    pub fn put_certification(&self, c: &Certification) -> Result<(), OrgStoreError> {
        self.put_json(
            format!("certified\0{}\0{}", c.address, c.fingerprint).as_bytes(),
            c,
        )
    }

    pub fn issued(&self) -> Result<Vec<IssuedCert>, OrgStoreError> {
        self.scan(b"issued\0")
    }

    /// The certificates issued to `address`.
    pub fn issued_to(&self, address: &str) -> Result<Vec<IssuedCert>, OrgStoreError> {
        self.scan(format!("issued\0{address}\0").as_bytes())
    }

    pub fn put_issued(&self, c: &IssuedCert) -> Result<(), OrgStoreError> {
        self.put_json(format!("issued\0{}\0{}", c.address, c.serial).as_bytes(), c)
    }

    /// When the renewal job runs next (the server records it).
    pub fn next_renewal(&self) -> Result<Option<OffsetDateTime>, OrgStoreError> {
        self.get_time("renew-next")
    }

    /// A time stored as Unix seconds, big-endian.
    fn get_time(&self, key: &str) -> Result<Option<OffsetDateTime>, OrgStoreError> {
        let Some(value) = self.tree.get(key)? else {
            return Ok(None);
        };
        <[u8; 8]>::try_from(&value[..])
            .ok()
            .and_then(|b| OffsetDateTime::from_unix_timestamp(i64::from_be_bytes(b)).ok())
            .map(Some)
            .ok_or_else(|| OrgStoreError::Corrupt(key.replace('\0', " ")))
    }

    pub fn set_next_renewal(&self, at: OffsetDateTime) -> Result<(), OrgStoreError> {
        self.tree
            .insert("renew-next", at.unix_timestamp().to_be_bytes())?;
        Ok(())
    }

    // --- Activity ------------------------------------------------------------------

    /// When `address` last had mail through the gateway.
    pub fn last_active(&self, address: &str) -> Result<Option<OffsetDateTime>, OrgStoreError> {
        self.get_time(&format!("active\0{address}"))
    }

    /// Records mail for `address` at `now`.
    pub fn touch(&self, address: &str, now: OffsetDateTime) -> Result<(), OrgStoreError> {
        self.tree.insert(
            format!("active\0{address}"),
            now.unix_timestamp().to_be_bytes(),
        )?;
        Ok(())
    }
}
