//! Who is internal: the one rule that the SMTP session (the inbound listener takes
//! internal recipients only), the policy (`recipient_is`) and `policy explain` all ask,
//! so that they cannot disagree.

/// The domains whose users are ours (`internal_domains`), lower-case, without a
/// trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalDomains(Vec<String>);

impl InternalDomains {
    pub fn new(domains: impl IntoIterator<Item = impl AsRef<str>>) -> InternalDomains {
        InternalDomains(
            domains
                .into_iter()
                .map(|d| d.as_ref().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        )
    }

    /// The domains, as configured (normalised).
    pub fn domains(&self) -> &[String] {
        &self.0
    }

    /// Whether `domain` (any case, with or without a trailing dot) is one of ours.
    pub fn contains_domain(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.');
        self.0.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// Whether mail to `address` is for one of our users: its domain is one of ours,
    /// or it is the bare `postmaster`, which RFC 5321 §4.5.1 requires every SMTP server
    /// to accept without a domain.
    pub fn is_internal(&self, address: &str) -> bool {
        address.eq_ignore_ascii_case("postmaster")
            || self.contains_domain(super::envelope::domain_of(address))
    }
}

#[cfg(test)]
mod tests {
    use super::InternalDomains;

    #[test]
    fn domains_any_case_and_the_bare_postmaster() {
        let ours = InternalDomains::new(["Example.COM."]);
        assert_eq!(ours.domains(), ["example.com"]);
        assert!(ours.is_internal("alice@EXAMPLE.com"));
        assert!(ours.is_internal("alice@example.com."));
        assert!(ours.is_internal("PostMaster"));
        assert!(ours.is_internal("postmaster@example.com"));
        assert!(!ours.is_internal("postmaster@example.org"));
        assert!(!ours.is_internal("alice@sub.example.com"));
        assert!(!ours.is_internal("alice"));
    }
}
