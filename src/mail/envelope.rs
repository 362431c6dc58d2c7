//! The envelope: who sent a message, to whom, over which listener. It is the value the
//! SMTP session, the policy, the transform, the relay and the spool all share.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::Direction;

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
    /// The session's TLS version and cipher suite ("TLSv1_3 TLS13_AES_256_GCM_SHA384"),
    /// `None` in the clear (Received: "with ESMTPS" or "with ESMTP").
    pub tls: Option<String>,
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

/// The address as it must be written in a SMTP path. smtp-proto hands us quoted local
/// parts unquoted (`"john smith"@example.org` arrives as `john smith@example.org`);
/// relayed like that, the address would change meaning, and
/// `"bob@evil.example"@example.com` would leave as `bob@evil.example@example.com`, which
/// some MTAs route to evil.example. So a local part that is not a dot-atom is quoted
/// again (RFC 5321 §4.1.2).
pub fn quote_local_part(address: &str) -> String {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return address.to_string();
    };
    if is_dot_atom(local) {
        return address.to_string();
    }
    let escaped = local.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"@{domain}")
}

/// RFC 5322 dot-atom, with non-ASCII allowed as RFC 6531 does.
fn is_dot_atom(text: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";
    !text.is_empty()
        && text.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || SPECIALS.contains(c) || !c.is_ascii())
        })
}

#[cfg(test)]
mod tests {
    use super::quote_local_part;

    #[test]
    fn quotes_what_is_not_a_dot_atom() {
        assert_eq!(quote_local_part("a.b+c@example.org"), "a.b+c@example.org");
        assert_eq!(
            quote_local_part("john smith@example.org"),
            "\"john smith\"@example.org"
        );
        assert_eq!(
            quote_local_part("bob@evil.example@example.com"),
            "\"bob@evil.example\"@example.com"
        );
        assert_eq!(
            quote_local_part("a\"b@example.org"),
            "\"a\\\"b\"@example.org"
        );
        assert_eq!(quote_local_part(".a@example.org"), "\".a\"@example.org");
        assert_eq!(quote_local_part("jörg@example.org"), "jörg@example.org");
        assert_eq!(quote_local_part(""), "");
    }
}
