//! The envelope: who sent a message, to whom, over which listener. It is the value the
//! SMTP session, the classifier, the relay and the spool all share.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::Direction;

/// The BODY= parameter of MAIL (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    SevenBit,
    EightBitMime,
}

/// The MAIL FROM parameters sealgate accepts, kept so that the next hop gets them too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailParams {
    /// SIZE= as the client declared it.
    pub size: Option<u64>,
    /// BODY= as the client declared it.
    pub body: Option<Body>,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
}

/// One client transaction's envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Decided by the listener the connection arrived on.
    pub direction: Direction,
    /// The client's address, for logs and the Received header.
    pub client_ip: IpAddr,
    /// The name the client gave in EHLO or HELO.
    pub helo: String,
    /// Whether the session ran over TLS (Received: "with ESMTPS").
    pub tls: bool,
    /// Whether the client said EHLO rather than HELO.
    pub esmtp: bool,
    /// The reverse path; empty for the null sender `<>` (bounces, DSNs).
    pub mail_from: String,
    /// MAIL FROM parameters, passed on to the next hop.
    pub params: MailParams,
    /// Forward paths, in the order the client gave them.
    pub recipients: Vec<String>,
}

/// The domain of an address (after the last '@'), or "" when there is none.
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, domain)| domain)
}
