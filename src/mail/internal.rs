//! Who is internal: the one rule that the SMTP session (the inbound listener takes
//! internal recipients only), the policy (`recipient_is`) and `policy explain` all ask,
//! so that they cannot disagree.

/// The domains whose users are ours (`internal_domains`), in the form of
/// [`super::domain::Domain::ascii`]: lower case, IDNs in A-labels, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalDomains(Vec<String>);

impl InternalDomains {
    /// Domains read with [`super::domain::read`], which is where the config refuses
    /// what is not a domain. Text it would refuse is kept lower-cased here: it matches
    /// no real address, which is what such an entry can mean.
    pub fn new(domains: impl IntoIterator<Item = impl AsRef<str>>) -> InternalDomains {
        let mut ours: Vec<String> = Vec::new();
        for text in domains {
            let text = text.as_ref();
            let domain =
                super::domain::read(text).map_or_else(|_| text.trim().to_lowercase(), |d| d.ascii);
            if !ours.contains(&domain) {
                ours.push(domain);
            }
        }
        InternalDomains(ours)
    }

    /// The domains, as configured (normalised).
    pub fn domains(&self) -> &[String] {
        &self.0
    }

    /// Whether `domain` (any case, with or without a trailing dot, an IDN in A-labels
    /// or in UTF-8) is one of ours.
    pub fn contains_domain(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.');
        if domain.is_ascii() {
            return self.0.iter().any(|d| d.eq_ignore_ascii_case(domain));
        }
        // An SMTPUTF8 client writes an IDN in UTF-8; ours are kept in A-labels.
        idna::domain_to_ascii(domain).is_ok_and(|ascii| self.0.contains(&ascii))
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

    #[test]
    fn an_idn_is_ours_in_either_form() {
        let ours = InternalDomains::new(["Bücher.Example", "bücher.example"]);
        assert_eq!(ours.domains(), ["xn--bcher-kva.example"]);
        assert!(ours.is_internal("anna@bücher.example"));
        assert!(ours.is_internal("anna@BÜCHER.example"));
        assert!(ours.is_internal("anna@xn--bcher-kva.example"));
        assert!(!ours.is_internal("anna@bucher.example"));
    }
}
