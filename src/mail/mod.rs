//! The values every stage of the gateway shares, with no I/O: which way a message
//! travels, its envelope, the message itself, its MIME structure as far as encryption
//! cares (and where the ciphertext of an encrypted one lies), the encrypted message we write, domain names as the config gives them, and the one rule of who is internal.

pub mod authentication;
pub mod decrypted;
pub mod domain;
pub mod envelope;
pub mod internal;
pub mod message;
pub mod mime;
pub mod parser;
pub mod payload;
pub mod wrap;

pub use internal::InternalDomains;

/// Which way a message travels. It is decided by the listener it arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the internet to internal users.
    Inbound,
    /// From internal MTAs to the outside.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
