//! Address patterns, and the index that matches one address against every rule's
//! patterns at once.
//!
//! A pattern is an address (`user@example.com`), a domain (`example.com` or
//! `@example.com`), or a glob over the whole address (`*@*.example.com`). With a
//! thousand rules, testing each rule's patterns in turn would cost tens of
//! microseconds per recipient. The index answers for all rules in one pass: exact
//! addresses and domains by hash, "any subdomain of" globs by a hash per domain
//! suffix, and every other glob in one regex set, which the regex crate runs as a
//! single automaton.

use std::collections::HashMap;

use globset::{Glob, GlobBuilder};
use regex::bytes::RegexSet;

/// What a pattern means, once read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Address(String),
    Domain(String),
    /// `*@*.domain`: any subdomain of `domain` (not `domain` itself).
    Subdomains(String),
    Glob(Glob),
}

/// Reads a pattern (lower-cased first: addresses are lower-cased before matching).
fn pattern(text: &str) -> Result<Pattern, String> {
    let text = text.trim().to_lowercase();
    if text.is_empty() {
        return Err("an empty pattern matches nothing".into());
    }
    let is_glob = |s: &str| s.contains(['*', '?', '[', '{', '\\']);
    if !is_glob(&text) {
        return Ok(match text.split_once('@') {
            Some(("", domain)) => Pattern::Domain(domain.to_string()),
            Some(_) => Pattern::Address(text),
            None => Pattern::Domain(text),
        });
    }
    if let Some(domain) = text.strip_prefix("*@*.")
        && !domain.is_empty()
        && !is_glob(domain)
        && !domain.contains('@')
    {
        return Ok(Pattern::Subdomains(domain.to_string()));
    }
    if let Some(domain) = text.strip_prefix("*@")
        && !is_glob(domain)
        && !domain.contains('@')
    {
        return Ok(Pattern::Domain(domain.to_string()));
    }
    GlobBuilder::new(&text)
        .literal_separator(false)
        .build()
        .map(Pattern::Glob)
        .map_err(|e| format!("{text:?} is not a valid pattern: {}", e.kind()))
}

/// Checks a pattern as an admin wrote it.
pub fn check(text: &str) -> Result<(), String> {
    pattern(text).map(|_| ())
}

/// The patterns of many rules, for matching all of them at once.
#[derive(Debug)]
pub struct Index {
    addresses: HashMap<String, Vec<usize>>,
    domains: HashMap<String, Vec<usize>>,
    subdomains: HashMap<String, Vec<usize>>,
    globs: Option<RegexSet>,
    /// The rule each glob of `globs` belongs to.
    glob_owner: Vec<usize>,
    rules: usize,
}

impl Index {
    /// `patterns[i]` are rule i's patterns (`None` when the rule has none). The
    /// patterns were checked when they were read.
    pub fn new<'a>(patterns: impl Iterator<Item = Option<&'a [String]>>) -> Index {
        let mut index = Index {
            addresses: HashMap::new(),
            domains: HashMap::new(),
            subdomains: HashMap::new(),
            globs: None,
            glob_owner: Vec::new(),
            rules: 0,
        };
        let mut regexes = Vec::new();
        for (rule, list) in patterns.enumerate() {
            index.rules = rule + 1;
            for text in list.unwrap_or_default() {
                let add = |map: &mut HashMap<String, Vec<usize>>, key: String| {
                    map.entry(key).or_default().push(rule)
                };
                match pattern(text) {
                    Ok(Pattern::Address(a)) => add(&mut index.addresses, a),
                    Ok(Pattern::Domain(d)) => add(&mut index.domains, d),
                    Ok(Pattern::Subdomains(d)) => add(&mut index.subdomains, d),
                    Ok(Pattern::Glob(glob)) => {
                        regexes.push(glob.regex().to_string());
                        index.glob_owner.push(rule);
                    }
                    Err(_) => {}
                }
            }
        }
        if !regexes.is_empty() {
            // The globs compiled one by one when they were read; together they only
            // fail if the set is too large, and then no glob matches (logged).
            index.globs = RegexSet::new(&regexes)
                .inspect_err(|e| tracing::error!(error = %e, "address globs cannot be combined"))
                .ok();
        }
        index
    }

    /// For each rule, whether one of its patterns matches `address` (lower-cased).
    pub fn hits(&self, address: &str) -> Hits {
        let mut hits = Hits(vec![0u64; self.rules.div_ceil(64)]);
        let mut mark = |rules: Option<&Vec<usize>>| {
            for &rule in rules.into_iter().flatten() {
                hits.set(rule);
            }
        };
        mark(self.addresses.get(address));
        if let Some((_, domain)) = address.rsplit_once('@') {
            mark(self.domains.get(domain));
            if !self.subdomains.is_empty() {
                // Every proper suffix of the domain: a.b.c tests b.c and c.
                let mut rest = domain;
                while let Some((_, parent)) = rest.split_once('.') {
                    mark(self.subdomains.get(parent));
                    rest = parent;
                }
            }
        }
        if let Some(globs) = &self.globs {
            for glob in globs.matches(address.as_bytes()).iter() {
                hits.set(self.glob_owner[glob]);
            }
        }
        hits
    }
}

/// One bit per rule.
#[derive(Debug, Clone)]
pub struct Hits(Vec<u64>);

impl Hits {
    fn set(&mut self, rule: usize) {
        self.0[rule / 64] |= 1 << (rule % 64);
    }

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
    fn pattern_kinds_and_errors() {
        assert!(check("").is_err());
        assert!(check("[a-").is_err());
        assert_eq!(
            pattern("User@Example.com"),
            Ok(Pattern::Address("user@example.com".into()))
        );
        assert_eq!(
            pattern("@example.com"),
            Ok(Pattern::Domain("example.com".into()))
        );
        assert_eq!(
            pattern("*@example.com"),
            Ok(Pattern::Domain("example.com".into()))
        );
        assert_eq!(
            pattern("*@*.example.com"),
            Ok(Pattern::Subdomains("example.com".into()))
        );
        assert!(matches!(pattern("*@*.dept?.example"), Ok(Pattern::Glob(_))));
    }

    #[test]
    fn globs_in_one_set() {
        let index = index(&[
            &["*@*.dept1.example"],
            &["*@*.dept?.example"],
            &["board+*@corp1.example"],
            &["a*@b.example"],
        ]);
        let hits = index.hits("x@mail.dept1.example");
        assert!(hits.get(0) && hits.get(1) && !hits.get(2));
        let hits = index.hits("x@mail.dept7.example");
        assert!(!hits.get(0) && hits.get(1));
        assert!(index.hits("board+q3@corp1.example").get(2));
        assert!(!index.hits("board@corp1.example").get(2));
        assert!(index.hits("ab@b.example").get(3));
        assert!(!index.hits("b@b.example").get(3));
    }
}
