//! The organization's own keys, which speak for it: the **Organization key** (OpenPGP)
//! certifies internal users' keys with short-lived certifications, and the
//! **Organization certificate** (an X.509 CA) issues S/MIME certificates for them.
//! Both secrets are the organization's, not users', so the gateway holds them, sealed
//! at rest like SCKM secrets. A renewal job, every `[org] renew_every`, certifies and
//! issues for every active internal user whose key the gateway holds.
//!
//! # Layout
//!
//! - [`store`]: what is kept, in the `org` tree of the sled database.
//! - [`activity`]: when each internal user last had mail (recorded on the mail path).
//! - [`key`]: the OpenPGP org key and its certifications (pure).
//! - [`ca`]: the X.509 org certificate, user certificates and the CRL (pure).
//! - [`renew`]: the renewal job: who is certified and issued for, and when.
//! - [`publish`]: DNS records and a Web Key Directory tree of the certified keys.
//! - [`autocrypt`]: the `Autocrypt:` field on internal users' outbound mail.
//! - [`admin`]: the operations behind `sealgate org ...` and `keys export`.

pub mod activity;
pub mod admin;
pub mod autocrypt;
pub mod ca;

pub mod key;
pub mod publish;
pub mod renew;
pub mod store;

pub use store::{OrgStore, OrgStoreError};

/// Why an org operation failed, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    /// The admin's input or request (a bad file, a key that already exists, a missing
    /// org key): say so; retrying the same will not help.
    #[error("{0}")]
    Refused(String),
    /// The gateway's own store. A retry may help once the cause is fixed.
    #[error(transparent)]
    Store(#[from] OrgStoreError),
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyStoreError),
    /// A bug or a damaged key: ours.
    #[error("{0}")]
    Internal(String),
}

#[cfg(test)]
mod tests;
