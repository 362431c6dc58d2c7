//! E-mail addresses as the key cache compares them: lower-cased, with the domain in
//! its IDNA ASCII form, so that `Alice@Bücher.Example` and `alice@xn--bcher-kva.example`
//! are one address.

/// The normalised form of `address`, or `None` when it is not `local@domain`.
pub fn normalize(address: &str) -> Option<String> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, domain) = address.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || local.chars().any(char::is_whitespace) {
        return None;
    }
    let domain = idna::domain_to_ascii(domain.trim_end_matches('.')).ok()?;
    if domain.is_empty() {
        return None;
    }
    Some(format!("{}@{}", local.to_lowercase(), domain))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn lower_cases_and_idna_encodes() {
        assert_eq!(
            normalize("Alice@Example.ORG").as_deref(),
            Some("alice@example.org")
        );
        assert_eq!(
            normalize("<bob@Bücher.example>").as_deref(),
            Some("bob@xn--bcher-kva.example")
        );
        assert_eq!(normalize("no-at-sign"), None);
        assert_eq!(normalize("@example.org"), None);
    }
}
