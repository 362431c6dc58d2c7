//! The key cache: every public key sealgate knows, for which address, from where, and
//! until when.
//!
//! - [`entry`]: what one entry records, and the lifetime rules per source.
//! - [`store`]: the [`KeyStore`] trait and its sled implementation.
//! - [`material`]: turning OpenPGP certs and X.509 certificates into entries.
//! - [`secrets`]: sealing SCKM secrets at rest; [`sckm`]: importing SCKM keys.
//! - [`harvest`]: finding keys in inbound mail.
//! - [`admin`]: the operations behind `sealgate keys ...`, and the admin socket that
//!   lets the CLI reach a running server.
//!
//! Time is always passed in (`now`), never read inside: the lifetime rules are then
//! testable with a clock the tests control.

pub mod address;
pub mod admin;
pub mod describe;
pub mod entry;
pub mod harvest;
pub mod material;
pub mod revocation;
pub mod sckm;
pub mod secrets;
pub mod store;

pub use entry::{Allowed, KeyEntry, KeyKind, Source};
pub use store::{KeyStore, KeyStoreError, SledKeyStore};
