//! What the MTA in front of sealgate found out about a message's sender, from its
//! `Authentication-Results` fields (RFC 8601): DKIM, SPF and DMARC results.
//!
//! Only fields whose authserv-id the admin trusts count (`[inbound]
//! trusted_authserv_ids`): anyone can write an `Authentication-Results` field, so the
//! trusted MTA must remove fields with its own authserv-id that arrive from outside
//! (RFC 8601 §5), as Postfix with OpenDKIM or rspamd does. sealgate verifies nothing
//! itself; it reads what that MTA wrote.
//!
//! Two questions are asked of it: whether the From domain is vouched for (before a key
//! that arrived in the mail may replace one long seen for that address), and whether
//! the envelope sender is (before a DSN goes to it, so that sealgate sends no
//! backscatter).

/// The results that passed, from trusted fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authentication {
    /// Domains of DKIM signatures that verified (`dkim=pass header.d=`).
    pub dkim: Vec<String>,
    /// Domains whose SPF check passed (`spf=pass smtp.mailfrom=`, a domain or an
    /// address).
    pub spf: Vec<String>,
    /// From domains DMARC passed for (`dmarc=pass header.from=`).
    pub dmarc: Vec<String>,
}

impl Authentication {
    /// Reads the `Authentication-Results` field values of a message (unfolded or not),
    /// keeping those from `trusted` authserv-ids (any case).
    pub fn read<'a>(values: impl IntoIterator<Item = &'a str>, trusted: &[String]) -> Self {
        let mut found = Authentication::default();
        if trusted.is_empty() {
            return found;
        }
        for value in values {
            let text = without_comments(value);
            let mut segments = split_outside_quotes(&text, ';').into_iter();
            let Some(id) = segments.next() else { continue };
            let id = id.split_whitespace().next().unwrap_or("");
            if !trusted.iter().any(|t| t.eq_ignore_ascii_case(id)) {
                continue;
            }
            for resinfo in segments {
                found.take(&resinfo);
            }
        }
        found
    }

    /// Whether `domain`, the domain of the message's From, is vouched for: DMARC
    /// passed for it, or a DKIM signature of it, or of a domain it belongs to (relaxed
    /// alignment, RFC 7489 §3.1.1), verified.
    pub fn vouches_for_from(&self, domain: &str) -> bool {
        let domain = normalize(domain);
        !domain.is_empty()
            && (self.dmarc.contains(&domain) || self.dkim.iter().any(|d| aligned(&domain, d)))
    }

    /// Whether `domain`, the envelope sender's, is vouched for: SPF passed for it, or
    /// DKIM or DMARC for it as above. A DSN may go to such a sender.
    pub fn vouches_for_sender(&self, domain: &str) -> bool {
        let domain = normalize(domain);
        !domain.is_empty() && (self.spf.contains(&domain) || self.vouches_for_from(&domain))
    }

    /// Takes one `method=result prop=value ...` segment.
    fn take(&mut self, resinfo: &str) {
        let mut tokens = resinfo.split_whitespace();
        let Some((method, result)) = tokens.next().and_then(|t| t.split_once('=')) else {
            return;
        };
        if !result.eq_ignore_ascii_case("pass") {
            return;
        }
        // `method/version`: the version does not matter here.
        let method = method.split('/').next().unwrap_or("").to_ascii_lowercase();
        for property in tokens {
            let Some((name, value)) = property.split_once('=') else {
                continue;
            };
            let value = value.trim_matches('"');
            let name = name.to_ascii_lowercase();
            let target = match (method.as_str(), name.as_str()) {
                ("dkim", "header.d") => &mut self.dkim,
                ("spf", "smtp.mailfrom") => &mut self.spf,
                ("dmarc", "header.from") => &mut self.dmarc,
                _ => continue,
            };
            // smtp.mailfrom may be an address; its domain is what passed.
            let domain = normalize(value.rsplit_once('@').map_or(value, |(_, d)| d));
            if !domain.is_empty() && !target.contains(&domain) {
                target.push(domain);
            }
        }
    }
}

fn normalize(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Relaxed alignment: the signing domain is the From domain, or a parent domain of it
/// (never a bare top-level domain).
fn aligned(from: &str, signer: &str) -> bool {
    from == signer || (signer.contains('.') && from.ends_with(&format!(".{signer}")))
}

/// The text with RFC 5322 comments (parenthesised, nested, outside quoted strings)
/// taken out.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in text.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                out.push(' ');
            }
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// `text` split at `separator` wherever it is not inside a quoted string.
fn split_outside_quotes(text: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c == separator && !quoted {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::Authentication;

    fn trusted() -> Vec<String> {
        vec!["mx.example.com".into()]
    }

    #[test]
    fn reads_passes_from_trusted_fields_only() {
        let fields = [
            "mx.example.com 1; dkim=pass (2048-bit key; unprotected)\r\n\
             header.d=partner.example header.s=s1 header.b=abc;\r\n\
             spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=bounce@Lists.Partner.Example;\r\n\
             dmarc=pass (p=reject) header.from=partner.example",
            // Written by the sender, or another host: ignored.
            "evil.example; dkim=pass header.d=bank.example; dmarc=pass header.from=bank.example",
            "MX.EXAMPLE.COM; dkim=fail header.d=other.example; spf=softfail smtp.mailfrom=x@y.example",
        ];
        let auth = Authentication::read(fields, &trusted());
        assert_eq!(auth.dkim, ["partner.example"]);
        assert_eq!(auth.spf, ["lists.partner.example"]);
        assert_eq!(auth.dmarc, ["partner.example"]);
        assert!(auth.vouches_for_from("partner.example"));
        assert!(auth.vouches_for_from("sub.partner.example"));
        assert!(!auth.vouches_for_from("bank.example"));
        assert!(!auth.vouches_for_from("notpartner.example"));
        assert!(auth.vouches_for_sender("lists.partner.example"));
        assert!(!auth.vouches_for_sender("y.example"));
    }

    #[test]
    fn nothing_is_trusted_without_trusted_ids() {
        let auth = Authentication::read(["mx.example.com; dmarc=pass header.from=a.example"], &[]);
        assert_eq!(auth, Authentication::default());
    }

    #[test]
    fn quoted_values_and_comments_with_semicolons() {
        let auth = Authentication::read(
            ["mx.example.com; dkim=pass (a; b (nested; c)) header.d=\"a.example\"; none"],
            &trusted(),
        );
        assert_eq!(auth.dkim, ["a.example"]);
        assert!(!auth.vouches_for_from("example"));
    }
}
