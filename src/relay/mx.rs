//! Delivery by MX lookup (`next_hop = "mx"`, outbound only).
//!
//! A transaction is split by recipient domain, and each domain's part is its own SMTP
//! transaction, all run at once; their outcomes are put back in the recipients' order.
//! For each domain, the MX hosts are tried in preference order, and each host's
//! addresses in order (RFC 5321 §5.1), on `[relay] mx_port`:
//!
//! - A host that fails at the connection level (refused, timed out, dropped, 421, a
//!   greeting or EHLO that refuses) decided nothing, and the next address is tried.
//! - A host that took part in the transaction (answered MAIL, RCPT or DATA) decides:
//!   its 5xx is final, its 4xx is a 4xx. A connection lost once the final dot was on
//!   its way is not offered to another host either: the message may have arrived.
//! - Each host address has its own circuit breaker, named "ip:port" in the relay's
//!   [`Breakers`]; a resting address is skipped without a connection. When every
//!   address rests, the recipients get `451 4.4.1 ... try again in N minutes`.
//! - DNS decides before any host when it can: a domain that does not exist or has a
//!   null MX is a 5xx, a lookup that failed is `451 4.4.3`.
//!
//! STARTTLS is used whenever a host offers it, as opportunistic TLS (RFC 7435, see
//! [`crate::tls::opportunistic_client_config`]); when the handshake fails, the host is
//! tried once more without TLS, as Postfix does at `smtp_tls_security_level = may`.
//! MX connections are not pooled: each transaction has a connection of its own.

use std::net::{IpAddr, SocketAddr};

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::breaker::{Breakers, Resting};
use super::smtp::{self, HostOutcome, Reach, StartTls};
use super::{Delivery, Outcome, Outgoing};
use crate::config::RelayConfig;
use crate::dns::{DnsError, DnsResolver, MxHost};
use crate::smtp::reply::{self, Reply};

/// Most host addresses one domain's transaction connects to (resting ones, skipped
/// without a connection, do not count): a domain with many dead MX hosts must not hold
/// the client for many connect timeouts. Postfix's `smtp_mx_address_limit` is 5 too.
const MAX_CONNECTIONS: usize = 5;

/// What MX delivery needs beside the relay's config, name and breakers.
pub struct Mx {
    /// Asked for each recipient domain's MX hosts.
    resolver: DnsResolver,
    /// STARTTLS towards MX hosts: opportunistic, any certificate is taken.
    tls: TlsConnector,
}

impl std::fmt::Debug for Mx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mx").finish_non_exhaustive()
    }
}

/// The relay's parts that MX delivery shares with a smart host.
pub struct RelayParts<'a> {
    pub config: &'a RelayConfig,
    /// Our name in EHLO.
    pub hostname: &'a str,
    pub breakers: &'a Breakers,
}

impl Mx {
    pub fn new(resolver: DnsResolver) -> Mx {
        Mx {
            resolver,
            tls: TlsConnector::from(crate::tls::opportunistic_client_config()),
        }
    }

    /// Delivers `tx` to its recipients' MX hosts, one transaction per domain. Returns
    /// [`Resting`] only when nothing was tried because every host of every domain is
    /// resting (the shortest rest); a domain whose hosts all rest beside others that
    /// were tried gets `451 4.4.1` for its recipients.
    pub async fn deliver(&self, cx: &RelayParts<'_>, tx: &Outgoing) -> Result<Delivery, Resting> {
        let domains = by_domain(&tx.recipients);
        // A plain loop rather than a closure: futures made in a closure that borrows
        // would not be provably `Send` (rust-lang/rust#102211).
        let mut transactions = Vec::with_capacity(domains.len());
        for (domain, indices) in &domains {
            let part = Outgoing {
                recipients: indices.iter().map(|&i| tx.recipients[i].clone()).collect(),
                ..tx.clone()
            };
            transactions.push(self.deliver_domain(cx, domain, part));
        }
        let parts = futures::future::join_all(transactions).await;
        if let Some(resting) = all_resting(&parts) {
            return Err(resting);
        }
        let parts = parts
            .into_iter()
            .map(|part| {
                part.unwrap_or_else(|resting| {
                    let reply = reply::next_hop_resting(resting.minutes());
                    Delivery::all(0, reply)
                })
            })
            .collect();
        Ok(merge(tx.recipients.len(), &domains, parts))
    }

    /// One domain's transaction: DNS, then the hosts in order until one decides.
    async fn deliver_domain(
        &self,
        cx: &RelayParts<'_>,
        domain: &str,
        tx: Outgoing,
    ) -> Result<Delivery, Resting> {
        let count = tx.recipients.len();
        let hosts = match self.hosts(domain).await {
            Ok(hosts) => hosts,
            Err(error) => {
                let reply = dns_reply(domain, &error);
                tracing::info!(id = %tx.id, domain, error = %error, reply = %reply, "MX lookup decided");
                return Ok(Delivery::all(count, reply));
            }
        };

        let mut outcomes: Vec<Option<Outcome>> = vec![None; count];
        let mut resting: Option<Resting> = None;
        let mut last_failure: Option<String> = None;
        let mut connections = 0;
        let mut addresses = Vec::new();
        for host in &hosts {
            addresses.extend(host.addresses.iter().map(|&ip| (host, ip)));
        }
        for (host, ip) in addresses {
            let pending: Vec<usize> = (0..count).filter(|&i| outcomes[i].is_none()).collect();
            if pending.is_empty() || connections == MAX_CONNECTIONS {
                break;
            }
            let addr = SocketAddr::new(ip, cx.config.mx_port);
            let breaker = cx.breakers.get(&addr.to_string());
            let pass = match breaker.admit() {
                Ok(pass) => pass,
                Err(rest) => {
                    tracing::debug!(id = %tx.id, domain, mx = %host.name, %addr, "MX host resting; skipped");
                    resting = Some(resting.map_or(rest, |r| shorter(r, rest)));
                    continue;
                }
            };
            connections += 1;
            let part = Outgoing {
                recipients: pending.iter().map(|&i| tx.recipients[i].clone()).collect(),
                ..tx.clone()
            };
            let attempt = self.attempt(cx, host, addr, &part).await;
            match attempt.reach {
                Reach::Answered => pass.succeeded(),
                Reach::Unavailable => pass.failed(&match &attempt.outcome {
                    HostOutcome::Decided(delivery) => delivery.reply.to_string(),
                    HostOutcome::Undecided { reason, .. } => reason.clone(),
                }),
            }
            match attempt.outcome {
                HostOutcome::Decided(delivery) => {
                    tracing::info!(
                        id = %tx.id,
                        domain,
                        mx = %host.name,
                        %addr,
                        tls = attempt.tls,
                        reply = %delivery.reply,
                        "MX delivery"
                    );
                    for (&i, outcome) in pending.iter().zip(delivery.outcomes) {
                        outcomes[i] = Some(outcome);
                    }
                    return Ok(Delivery {
                        tls: delivery.tls,
                        ..finish(outcomes, delivery.reply)
                    });
                }
                HostOutcome::Undecided { reason, refused } => {
                    tracing::info!(
                        id = %tx.id,
                        domain,
                        mx = %host.name,
                        %addr,
                        reason,
                        "MX host failed; trying the next"
                    );
                    for (&i, refusal) in pending.iter().zip(refused) {
                        outcomes[i] = refusal;
                    }
                    last_failure = Some(format!("{} [{addr}]: {reason}", host.name));
                }
            }
        }

        let reply = match (last_failure, resting) {
            (Some(failure), _) => reply::next_hop_unavailable(&failure),
            (None, Some(rest)) if outcomes.iter().all(Option::is_none) => return Err(rest),
            (None, Some(rest)) => reply::next_hop_resting(rest.minutes()),
            // Every recipient was refused at RCPT by hosts that then decided nothing.
            (None, None) => reply::next_hop_unavailable("no MX host decided"),
        };
        Ok(finish(outcomes, reply))
    }

    /// One address of one host: with STARTTLS when offered, and once more without TLS
    /// if the handshake fails.
    async fn attempt(
        &self,
        cx: &RelayParts<'_>,
        host: &MxHost,
        addr: SocketAddr,
        tx: &Outgoing,
    ) -> smtp::Attempt {
        let target = addr.to_string();
        let starttls = StartTls {
            connector: self.tls.clone(),
            server_name: server_name(&host.name, addr.ip()),
        };
        let attempt = smtp::attempt(&target, cx.hostname, cx.config, tx, Some(&starttls)).await;
        if !attempt.tls_failed {
            return attempt;
        }
        if let HostOutcome::Undecided { reason, .. } = &attempt.outcome {
            tracing::info!(id = %tx.id, mx = %host.name, %addr, reason, "trying once more without TLS");
        }
        smtp::attempt(&target, cx.hostname, cx.config, tx, None).await
    }

    /// The hosts to try for `domain`: its MX hosts, or the address in a domain literal.
    async fn hosts(&self, domain: &str) -> Result<Vec<MxHost>, DnsError> {
        match domain.strip_prefix('[') {
            Some(literal) => address_literal(literal)
                .map(|ip| {
                    vec![MxHost {
                        preference: 0,
                        name: domain.to_string(),
                        addresses: vec![ip],
                    }]
                })
                .ok_or_else(|| DnsError::BadName(domain.to_string())),
            None => self.resolver.mx_hosts(domain).await,
        }
    }
}

/// The recipients' indices by domain (compared without case), domains in the order
/// they first appear.
fn by_domain(recipients: &[String]) -> Vec<(String, Vec<usize>)> {
    let mut domains: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, recipient) in recipients.iter().enumerate() {
        let domain = recipient
            .rsplit_once('@')
            .map_or("", |(_, domain)| domain)
            .to_ascii_lowercase();
        match domains.iter_mut().find(|(d, _)| *d == domain) {
            Some((_, indices)) => indices.push(i),
            None => domains.push((domain, vec![i])),
        }
    }
    domains
}

/// The shortest rest, when every part rested.
fn all_resting(parts: &[Result<Delivery, Resting>]) -> Option<Resting> {
    let mut shortest: Option<Resting> = None;
    for part in parts {
        let rest = *part.as_ref().err()?;
        shortest = Some(shortest.map_or(rest, |s| shorter(s, rest)));
    }
    shortest
}

fn shorter(a: Resting, b: Resting) -> Resting {
    if b.left < a.left { b } else { a }
}

/// The domains' deliveries as one, in the recipients' order. A part that rested comes
/// with no outcomes and its reply for all of its recipients. The overall reply, for
/// the log and the spool, is the first temporary failure's, else the first failure's,
/// else the first domain's.
fn merge(count: usize, domains: &[(String, Vec<usize>)], parts: Vec<Delivery>) -> Delivery {
    let mut outcomes = vec![None; count];
    let mut replies = Vec::with_capacity(parts.len());
    let tls = !parts.is_empty() && parts.iter().all(|part| part.tls);
    for ((_, indices), part) in domains.iter().zip(parts) {
        let reply = part.reply;
        let mut part_outcomes = part.outcomes.into_iter();
        for &i in indices {
            let outcome = part_outcomes
                .next()
                .unwrap_or_else(|| Outcome::from_reply(reply.clone()));
            outcomes[i] = Some(outcome);
        }
        replies.push(reply);
    }
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Temporary(reply::local_error("no outcome"))))
        .collect();
    let reply = outcomes
        .iter()
        .find(|o| matches!(o, Outcome::Temporary(_)))
        .or_else(|| outcomes.iter().find(|o| o.reply().is_some()))
        .and_then(Outcome::reply)
        .cloned()
        .or_else(|| replies.into_iter().next())
        .unwrap_or_else(|| reply::local_error("no recipients"));
    Delivery {
        outcomes,
        reply,
        tls,
    }
}

/// One domain's outcomes, every recipient still without one getting `reply`.
fn finish(outcomes: Vec<Option<Outcome>>, reply: Reply) -> Delivery {
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::from_reply(reply.clone())))
        .collect();
    Delivery {
        outcomes,
        reply,
        tls: false,
    }
}

/// What the recipients of `domain` get when DNS decides.
fn dns_reply(domain: &str, error: &DnsError) -> Reply {
    match error {
        DnsError::NullMx(_) => reply::null_mx(domain),
        error if error.is_permanent() => reply::bad_destination(&error.to_string()),
        error => reply::mx_lookup_failed(&error.to_string()),
    }
}

/// The address in a domain literal, without its opening bracket: `192.0.2.1]` or
/// `IPv6:2001:db8::1]` (RFC 5321 §4.1.3).
fn address_literal(literal: &str) -> Option<IpAddr> {
    let inside = literal.strip_suffix(']')?;
    match inside.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inside[5..]
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(IpAddr::V6),
        _ => inside.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// The name for SNI: the MX host's name, or its address when the name will not do
/// (a domain literal).
fn server_name(host: &str, ip: IpAddr) -> ServerName<'static> {
    ServerName::try_from(host.to_string()).unwrap_or(ServerName::IpAddress(ip.into()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn recipients(list: &[&str]) -> Vec<String> {
        list.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn recipients_are_grouped_by_domain_in_first_seen_order() {
        let list = recipients(&["a@x.example", "b@Y.example", "c@X.EXAMPLE", "d@z.example"]);
        let groups = by_domain(&list);
        assert_eq!(
            groups,
            [
                ("x.example".to_string(), vec![0, 2]),
                ("y.example".to_string(), vec![1]),
                ("z.example".to_string(), vec![3]),
            ]
        );
    }

    #[test]
    fn outcomes_are_merged_back_in_the_recipients_order() {
        let list = recipients(&["a@x.example", "b@y.example", "c@x.example"]);
        let groups = by_domain(&list);
        let gone = Reply::new(550, Some([5, 1, 1]), "no such user");
        let later = Reply::new(451, Some([4, 4, 1]), "later");
        let x = Delivery {
            outcomes: vec![Outcome::Completed, Outcome::Permanent(gone.clone())],
            reply: reply::OK,
            tls: true,
        };
        // A part that rested comes without outcomes.
        let y = Delivery::all(0, later.clone());
        let merged = merge(3, &groups, vec![x, y]);
        assert_eq!(
            merged.outcomes,
            [
                Outcome::Completed,
                Outcome::Temporary(later.clone()),
                Outcome::Permanent(gone),
            ]
        );
        assert_eq!(merged.reply, later, "a temporary failure is the reply");
    }

    #[test]
    fn the_shortest_rest_counts_only_when_every_part_rests() {
        let rest = |secs| Resting {
            left: Duration::from_secs(secs),
        };
        assert_eq!(
            all_resting(&[Err(rest(600)), Err(rest(90))]),
            Some(rest(90))
        );
        let delivered = Ok(Delivery::all(1, reply::OK));
        assert_eq!(all_resting(&[Err(rest(90)), delivered]), None);
    }

    #[test]
    fn dns_errors_become_replies_with_their_enhanced_codes() {
        let status = |error: DnsError| dns_reply("x.example", &error).to_string();
        let null = status(DnsError::NullMx("x.example".into()));
        assert!(
            null.starts_with("550 5.1.10 Recipient address has null MX"),
            "{null}"
        );
        let gone = status(DnsError::NoSuchDomain("x.example".into()));
        assert!(gone.starts_with("550 5.1.2 "), "{gone}");
        assert!(gone.contains("does not exist"), "{gone}");
        let failed = status(DnsError::Temporary {
            name: "x.example".into(),
            reason: "SERVFAIL".into(),
        });
        assert!(failed.starts_with("451 4.4.3 "), "{failed}");
        assert!(failed.contains("SERVFAIL"), "{failed}");
    }

    #[test]
    fn address_literals() {
        assert_eq!(address_literal("192.0.2.1]"), Some([192, 0, 2, 1].into()));
        assert_eq!(
            address_literal("IPv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(address_literal("2001:db8::1]"), None, "needs its tag");
        assert_eq!(address_literal("192.0.2.1"), None);
        assert_eq!(address_literal("example.org]"), None);
    }
}
