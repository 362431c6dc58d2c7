//! DNS: recipients' keys published in DNSSEC-signed zones (RFC 7929 OPENPGPKEY, RFC 8162
//! SMIMEA), and the MX hosts that outbound mail is delivered to.
//!
//! - [`resolver`]: the resolvers built from `[lookup]` (one validates DNSSEC, one does
//!   not), and how an answer is read: records, no data, no domain, bogus, or failed.
//! - [`dnssec`]: whether the resolver lets key records be validated (a resolver that
//!   strips DNSSEC does not), as probed at start-up and every ten minutes.
//! - [`keys`]: [`KeyLookup`], a recipient's key lookup, whose finds go into the key
//!   cache with source `lookup`; `negative.rs` remembers the recipients without a key.
//! - [`mx`]: [`MxHost`]s of a domain in preference order, with RFC 5321's implicit MX
//!   and RFC 7505's null MX.
//!
//! hickory-resolver does the DNS and the DNSSEC validation; nothing here parses DNS
//! messages.

pub mod dnssec;
pub mod keys;
pub mod mx;
mod negative;
pub mod resolver;

pub use dnssec::{DnssecProbe, DnssecStatus};
pub use keys::{Found, KeyLookup};
pub use mx::MxHost;
pub use resolver::{DnsResolver, TrustAnchor};

/// Why a DNS question found no usable answer. [`DnsError::is_permanent`] separates what
/// a retry cannot change (the domain accepts no mail) from what it may (a server did
/// not answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The resolver could not be set up: the system's resolver config is unreadable, or
    /// a trust anchor is malformed. Internal, found at start-up.
    #[error("DNS resolver setup: {0}")]
    Setup(String),
    /// The text is not a domain name that DNS can be asked about.
    #[error("{0:?} is not a valid domain name")]
    BadName(String),
    /// The domain does not exist (NXDOMAIN for its MX).
    #[error("domain {0} does not exist")]
    NoSuchDomain(String),
    /// The domain publishes a null MX (RFC 7505): it accepts no mail at all.
    #[error("domain {0} accepts no mail (null MX)")]
    NullMx(String),
    /// The domain exists but has neither an MX nor an address to be its implicit MX
    /// (RFC 5321 §5.1).
    #[error("domain {0} has no MX and no address")]
    NoMailHost(String),
    /// SERVFAIL, a timeout, a network error, DNSSEC data that does not validate, or MX
    /// hosts without any address: a later retry may succeed.
    #[error("DNS lookup for {name} failed: {reason}")]
    Temporary { name: String, reason: String },
}

impl DnsError {
    /// True when a retry cannot help, so that the relay answers 5xx instead of 4xx.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DnsError::BadName(_)
                | DnsError::NoSuchDomain(_)
                | DnsError::NullMx(_)
                | DnsError::NoMailHost(_)
        )
    }
}
