//! Moving keys between gateways: a bundle of key cache entries, SCKM secrets included,
//! wrapped to the receiving gateway's transport certificate and signed by the sending
//! one's, so that it may travel by any channel.
//!
//! The flow (see `../shared/DOMAIN.md`, "Moving keys between key servers"): the
//! destination prints its transport certificate (`transfer cert`); each side trusts the
//! other's (`transfer trust`); the source exports the keys wrapped to the destination
//! (`keys export --to`); the destination checks and imports them (`keys import-bundle`).
//!
//! - [`identity`]: this gateway's transport key and certificate.
//! - [`store`]: the identity, the trusted peers, and the bundle sequence numbers.
//! - [`bundle`]: the bundle's content, and how it is wrapped and opened.
//! - [`export`] and [`import`]: between the key cache and a bundle.
//! - [`admin`]: the requests behind the CLI verbs.

pub mod admin;
pub mod bundle;
pub mod export;
pub mod identity;
pub mod import;
pub mod store;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use identity::display_fingerprint;
pub use store::TransferStore;

use crate::store::base64_bytes;

/// What went wrong, and whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The admin's input or the bundle cannot be used (altered, not for this gateway,
    /// from an untrusted peer, replayed, holding what an import refuses). Nothing was
    /// stored; the message says why. Trying again with the same input cannot help.
    #[error("{0}")]
    Refused(String),
    /// The gateway's own store or key-encryption key failed: not the admin's doing.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A peer gateway whose transport certificate an admin trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// What the admin calls it (`transfer trust --name`), unique among the peers.
    pub name: String,
    /// SHA-256 of the certificate's DER, upper-case hex.
    pub fingerprint: String,
    /// The certificate's subject, RFC 4514.
    pub subject: String,
    #[serde(with = "base64_bytes")]
    pub cert: Vec<u8>,
    #[serde(with = "time::serde::rfc3339")]
    pub added: OffsetDateTime,
}
