//! Domain names as an admin writes them in the config (`internal_domains`,
//! `hostname`): what can be read as a domain with a small fix, and what is not a
//! domain at all.
//!
//! A domain is kept in the form that mail and DNS compare: lower case, IDNs in
//! A-labels (`xn--…`), without a trailing dot. So `Bücher.Example` and
//! `xn--bcher-kva.example` are one domain, as they are for the key cache
//! ([`crate::keys::address`]).

/// A domain as sealgate uses it, and what was changed to get it from the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Lower case, IDNs in A-labels, no trailing dot.
    pub ascii: String,
    /// The fixes that were made, in the admin's words ("a leading @"): empty when the
    /// text was written the way it is used. Converting an IDN to A-labels is not a fix.
    pub fixed: Vec<&'static str>,
}

/// The longest domain name DNS can carry (RFC 1035 §2.3.4, without the root's dot).
const MAX_NAME: usize = 253;
/// The longest label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;

/// Reads `text` as a domain name. Fixes what can only mean one thing (surrounding
/// spaces, a leading `@` as in a policy rule's pattern, upper case, a trailing dot)
/// and says so in [`Domain::fixed`]; refuses the rest with the reason.
pub fn read(text: &str) -> Result<Domain, String> {
    let mut fixed = Vec::new();
    let mut name = text.trim();
    if name.len() != text.len() {
        fixed.push("surrounding spaces");
    }
    if let Some(rest) = name.strip_prefix('@') {
        name = rest;
        fixed.push("a leading @");
    }
    if let Some(rest) = name.strip_suffix('.') {
        name = rest;
        fixed.push("a trailing dot");
    }
    if name != name.to_lowercase() {
        fixed.push("upper case");
    }
    refuse_what_is_not_a_name(name)?;
    let ascii = idna::domain_to_ascii(name)
        .map_err(|_| "is not a domain name (it is not a valid international name)")?;
    check_labels(&ascii)?;
    Ok(Domain { ascii, fixed })
}

/// Things admins write that look close to a domain and are not one, each with what
/// to write instead.
fn refuse_what_is_not_a_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if let Some((_, domain)) = name.rsplit_once('@') {
        return Err(format!(
            "is an address, not a domain; write the part after @ ({domain:?})"
        ));
    }
    if name.starts_with('[') {
        return Err("is an address literal, not a domain name".into());
    }
    if name.contains(['*', '?', '[', ']']) {
        return Err(
            "is a pattern; only exact domain names are allowed here (list each subdomain)".into(),
        );
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err("is an IP address, not a domain name".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("is not a domain name: it has spaces or control characters inside".into());
    }
    Ok(())
}

/// RFC 1035's preferred name syntax, on the A-label form: labels of letters, digits
/// and hyphens, not starting or ending with a hyphen.
fn check_labels(ascii: &str) -> Result<(), String> {
    if ascii.len() > MAX_NAME {
        return Err(format!(
            "is not a domain name: longer than {MAX_NAME} characters"
        ));
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err("is not a domain name: it has an empty label (\"..\")".into());
        }
        if label.len() > MAX_LABEL {
            return Err(format!(
                "is not a domain name: the label {label:?} is longer than {MAX_LABEL} characters"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "is not a domain name: the label {label:?} has characters other than letters, digits and hyphens"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "is not a domain name: the label {label:?} starts or ends with a hyphen"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::read;

    #[test]
    fn what_can_only_mean_one_domain_is_fixed_and_said() {
        let plain = read("example.com").unwrap();
        assert_eq!(plain.ascii, "example.com");
        assert!(plain.fixed.is_empty());
        for (text, fix) in [
            (" example.com ", "surrounding spaces"),
            ("@example.com", "a leading @"),
            ("Example.COM", "upper case"),
            ("example.com.", "a trailing dot"),
        ] {
            let domain = read(text).unwrap();
            assert_eq!(domain.ascii, "example.com", "{text:?}");
            assert_eq!(domain.fixed, [fix], "{text:?}");
        }
        let all = read(" @Example.COM. ").unwrap();
        assert_eq!(all.ascii, "example.com");
        assert_eq!(all.fixed.len(), 4, "{:?}", all.fixed);
    }

    #[test]
    fn an_idn_is_kept_in_a_labels_without_a_warning() {
        let domain = read("bücher.example").unwrap();
        assert_eq!(domain.ascii, "xn--bcher-kva.example");
        assert!(domain.fixed.is_empty());
        assert_eq!(read("xn--bcher-kva.example").unwrap().ascii, domain.ascii);
        assert_eq!(read("Bücher.example").unwrap().fixed, ["upper case"]);
    }

    #[test]
    fn what_is_not_a_domain_is_refused_with_the_reason() {
        for (text, reason) in [
            ("", "empty"),
            ("@", "empty"),
            ("user@example.com", "an address"),
            ("*.example.com", "a pattern"),
            ("192.0.2.1", "an IP address"),
            ("[192.0.2.1]", "an address literal"),
            ("exa mple.com", "spaces"),
            ("example..com", "empty label"),
            ("under_score.example", "letters, digits and hyphens"),
            ("-bad.example", "hyphen"),
            (&format!("{}.example", "a".repeat(64)), "longer than 63"),
        ] {
            let err = read(text).unwrap_err();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }
}
