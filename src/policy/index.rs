//! Address patterns, and the index that matches one address against every rule's
//! patterns at once.
//!
//! A pattern is an address (`user@example.com`), a domain (`example.com` or
//! `@example.com`), or a glob over the whole address (`*@*.example.com`). With a
//! thousand rules, testing each rule's patterns in turn would cost tens of
//! microseconds per recipient; one glob set over all of them answers in one pass
//! (literals by hash, `*@domain` by suffix), and each rule then checks a bit.

use globset::{Candidate, Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// The glob a pattern stands for. Patterns and addresses are both lower-cased before
/// matching, so the globs are case-sensitive, which keeps globset's fast literal and
/// suffix strategies.
pub fn address_glob(pattern: &str) -> Result<Glob, String> {
    let pattern = pattern.trim().to_lowercase();
    if pattern.is_empty() {
        return Err("an empty pattern matches nothing".into());
    }
    let is_glob = pattern.contains(['*', '?', '[', '{']);
    let text = if is_glob {
        pattern
    } else if let Some(domain) = pattern.strip_prefix('@') {
        format!("*@{}", globset::escape(domain))
    } else if pattern.contains('@') {
        globset::escape(&pattern)
    } else {
        format!("*@{}", globset::escape(&pattern))
    };
    GlobBuilder::new(&text)
        .literal_separator(false)
        .build()
        .map_err(|e| format!("{text:?} is not a valid pattern: {}", e.kind()))
}

/// One glob set over the patterns of many rules.
#[derive(Debug)]
pub struct Index {
    set: GlobSet,
    /// The rule each glob belongs to.
    owner: Vec<usize>,
    rules: usize,
}

impl Index {
    /// `patterns[i]` are rule i's patterns (empty when the rule has none). The
    /// patterns were checked when they were read.
    pub fn new<'a>(patterns: impl Iterator<Item = Option<&'a [String]>>) -> Index {
        let mut builder = GlobSetBuilder::new();
        let mut owner = Vec::new();
        let mut rules = 0;
        for (rule, list) in patterns.enumerate() {
            rules = rule + 1;
            for pattern in list.unwrap_or_default() {
                if let Ok(glob) = address_glob(pattern) {
                    builder.add(glob);
                    owner.push(rule);
                }
            }
        }
        let set = builder.build().unwrap_or_else(|_| GlobSet::empty());
        Index { set, owner, rules }
    }

    /// For each rule, whether one of its patterns matches `address` (lower-cased).
    pub fn hits(&self, address: &str) -> Hits {
        let mut bits = vec![0u64; self.rules.div_ceil(64)];
        if !self.owner.is_empty() {
            let mut found = Vec::new();
            self.set
                .matches_candidate_into(&Candidate::new(address), &mut found);
            for glob in found {
                let rule = self.owner[glob];
                bits[rule / 64] |= 1 << (rule % 64);
            }
        }
        Hits(bits)
    }
}

/// One bit per rule.
#[derive(Debug, Clone)]
pub struct Hits(Vec<u64>);

impl Hits {
    pub fn get(&self, rule: usize) -> bool {
        self.0
            .get(rule / 64)
            .is_some_and(|w| w & (1 << (rule % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(patterns: &[&[&str]]) -> Index {
        let owned: Vec<Vec<String>> = patterns
            .iter()
            .map(|p| p.iter().map(|s| s.to_lowercase()).collect())
            .collect();
        Index::new(
            owned
                .iter()
                .map(|p| (!p.is_empty()).then_some(p.as_slice())),
        )
    }

    #[test]
    fn addresses_domains_and_globs() {
        let index = index(&[
            &["alice@partner.example"],
            &["partner.example"],
            &["@Other.Example"],
            &["*@*.gov"],
            &[],
            &["bob+*@partner.example", "carol@x.example"],
        ]);
        let hits = index.hits("alice@partner.example");
        assert!(hits.get(0) && hits.get(1));
        assert!(!hits.get(2) && !hits.get(3) && !hits.get(4) && !hits.get(5));
        assert!(index.hits("x@other.example").get(2));
        assert!(index.hits("x@mail.agency.gov").get(3));
        assert!(!index.hits("x@gov").get(3));
        assert!(index.hits("bob+tag@partner.example").get(5));
        assert!(index.hits("carol@x.example").get(5));
        // A domain pattern is that domain only, not its subdomains, and not a suffix.
        assert!(!index.hits("a@sub.partner.example").get(1));
        assert!(!index.hits("a@notpartner.example").get(1));
    }

    #[test]
    fn pattern_errors() {
        assert!(address_glob("").is_err());
        assert!(address_glob("[a-").is_err());
        assert!(address_glob("user@example.com").is_ok());
    }
}
