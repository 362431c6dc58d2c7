//! The MX hosts of a domain, for outbound delivery (`next_hop = "mx"`).
//!
//! RFC 5321 §5.1: the MX records in preference order, equal preferences in random
//! order; with no MX at all, the domain itself is the one host, at preference 0 (the
//! implicit MX). RFC 7505: an MX whose host is the root (`.`) says the domain accepts no
//! mail. Each host's A and AAAA are asked for in parallel. DNSSEC is not asked for:
//! delivery by MX never depended on it.

use std::net::IpAddr;

use hickory_resolver::proto::rr::{Name, RData, RecordType};
use rand::seq::SliceRandom;

use super::DnsError;
use super::resolver::{self, Answer, DnsResolver, Validation};

/// One host that takes the domain's mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Lower is tried first.
    pub preference: u16,
    /// The host name, ASCII, without the final dot.
    pub name: String,
    /// Its IPv4 addresses, then its IPv6 ones; never empty.
    pub addresses: Vec<IpAddr>,
}

impl DnsResolver {
    /// The hosts that take `domain`'s mail, in the order to try them; only hosts with at
    /// least one address. Each question takes at most `[lookup] timeout`: the MX, then
    /// the hosts' addresses in parallel.
    ///
    /// Permanent errors ([`DnsError::is_permanent`]): the domain does not exist, has a
    /// null MX, or has neither MX nor address. Temporary: SERVFAIL or a timeout on any
    /// question whose answer is missing, or MX hosts none of which has an address.
    pub async fn mx_hosts(&self, domain: &str) -> Result<Vec<MxHost>, DnsError> {
        let name = resolver::fqdn(domain)?;
        let shown = name.to_ascii().trim_end_matches('.').to_string();
        let temporary = |reason: String| DnsError::Temporary {
            name: shown.clone(),
            reason,
        };
        let mut exchanges: Vec<(u16, Name)> = match self
            .query(&name, RecordType::MX, Validation::None)
            .await
        {
            Answer::Records(records) => records
                .into_iter()
                .filter_map(|r| match r.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange)),
                    _ => None,
                })
                .collect(),
            Answer::NoData => Vec::new(),
            Answer::NxDomain => return Err(DnsError::NoSuchDomain(shown)),
            Answer::Bogus => return Err(temporary("MX answer failed DNSSEC validation".into())),
            Answer::Failed(reason) => return Err(temporary(format!("MX: {reason}"))),
        };
        if exchanges.iter().any(|(_, host)| host.is_root()) {
            return Err(DnsError::NullMx(shown));
        }
        let implicit = exchanges.is_empty();
        if implicit {
            exchanges.push((0, name.clone()));
        }
        order(&mut exchanges);

        let resolved =
            futures::future::join_all(exchanges.iter().map(|(_, host)| self.addresses(host))).await;
        let mut hosts = Vec::new();
        let mut failures = Vec::new();
        for ((preference, host), (addresses, failure)) in exchanges.into_iter().zip(resolved) {
            let host = host.to_ascii().trim_end_matches('.').to_string();
            if let Some(reason) = failure {
                failures.push(format!("{host}: {reason}"));
            }
            if addresses.is_empty() {
                tracing::debug!(domain = %shown, mx = %host, "MX host has no address; skipped");
                continue;
            }
            hosts.push(MxHost {
                preference,
                name: host,
                addresses,
            });
        }
        if hosts.is_empty() {
            return Err(match (implicit, failures.is_empty()) {
                (true, true) => DnsError::NoMailHost(shown),
                (false, true) => temporary("no MX host has an address".into()),
                (_, false) => temporary(failures.join("; ")),
            });
        }
        Ok(hosts)
    }

    /// The A and AAAA addresses of `host`, and why some could not be had (a failed
    /// question; "no such record" is not a failure).
    async fn addresses(&self, host: &Name) -> (Vec<IpAddr>, Option<String>) {
        let (v4, v6) = tokio::join!(
            self.query(host, RecordType::A, Validation::None),
            self.query(host, RecordType::AAAA, Validation::None),
        );
        let mut addresses = Vec::new();
        let mut failures = Vec::new();
        for (rtype, answer) in [(RecordType::A, v4), (RecordType::AAAA, v6)] {
            match answer {
                Answer::Records(records) => {
                    addresses.extend(records.into_iter().filter_map(|r| match r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                        _ => None,
                    }))
                }
                Answer::NoData | Answer::NxDomain => {}
                Answer::Bogus => failures.push(format!("{rtype}: failed DNSSEC validation")),
                Answer::Failed(reason) => failures.push(format!("{rtype}: {reason}")),
            }
        }
        let failure = (!failures.is_empty()).then(|| failures.join(", "));
        (addresses, failure)
    }
}

/// Sorts by preference, shuffling hosts of equal preference (RFC 5321 §5.1: spread the
/// load among them).
fn order(exchanges: &mut [(u16, Name)]) {
    exchanges.shuffle(&mut rand::thread_rng());
    // Stable: the shuffle's order survives within each preference.
    exchanges.sort_by_key(|(preference, _)| *preference);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_by_preference_with_ties_shuffled() {
        let name = |s: &str| Name::from_ascii(s).unwrap();
        let mut seen_first = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut exchanges = vec![
                (20, name("c.example.")),
                (10, name("a.example.")),
                (10, name("b.example.")),
                (30, name("d.example.")),
            ];
            order(&mut exchanges);
            let preferences: Vec<u16> = exchanges.iter().map(|(p, _)| *p).collect();
            assert_eq!(preferences, [10, 10, 20, 30]);
            seen_first.insert(exchanges[0].1.to_ascii());
        }
        assert_eq!(
            seen_first.len(),
            2,
            "both hosts of preference 10 come first sometimes"
        );
    }
}
