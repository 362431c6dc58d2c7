//! Whether the next hops and the DNS resolvers can be reached, and whether the
//! resolver lets key records be validated: said by `sealgate check` and logged at
//! start-up, so that an admin sees a wrong address or a dead server before the first
//! message does. A failed probe is a warning, never an error: a next hop may be down
//! for a moment while the config is right. (`serve` leaves DNSSEC to the server, which
//! keeps probing it and acts on what it finds.)

use std::time::Duration;

use tokio::net::TcpStream;

use sealgate::config::{Config, NextHop};
use sealgate::dns::resolver::describe;
use sealgate::dns::{DnsResolver, DnssecProbe};
use sealgate::mail::Direction;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One thing probed, and what was found.
pub struct Probe {
    /// What was probed, for the admin ("inbound next hop 10.0.0.5:25").
    pub what: String,
    /// `Err` with what is wrong ("not reachable: ...").
    pub result: Result<String, String>,
}

/// Whether to probe the resolver's DNSSEC too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dnssec {
    /// `sealgate check`: once, here.
    Probe,
    /// `serve`: the server probes it itself, at start-up and then periodically, and
    /// acts on what it finds.
    Skip,
}

/// Probes both next hops and, when anything uses DNS, the resolvers.
pub async fn probe_all(config: &Config, dnssec: Dnssec) -> Vec<Probe> {
    let mut probes = Vec::new();
    for direction in [Direction::Inbound, Direction::Outbound] {
        let hop = &config.listener(direction).next_hop;
        probes.push(Probe {
            what: format!("{direction} next hop {hop}"),
            result: next_hop(hop).await,
        });
    }
    let uses_dns = config.lookup.keys || config.outbound.next_hop == NextHop::Mx;
    if uses_dns {
        let resolver = DnsResolver::new(&config.lookup);
        let result = match &resolver {
            Err(e) => Err(e.to_string()),
            Ok(resolver) => match tokio::time::timeout(PROBE_TIMEOUT, resolver.probe()).await {
                Ok(Ok(())) => Ok("answers".to_string()),
                Ok(Err(reason)) => Err(format!("no answer: {reason}")),
                Err(_) => Err("no answer within 3 s".to_string()),
            },
        };
        probes.push(Probe {
            what: describe(&config.lookup),
            result,
        });
        if config.lookup.keys && dnssec == Dnssec::Probe {
            let result = match &resolver {
                Err(e) => Err(e.to_string()),
                Ok(resolver) => {
                    match tokio::time::timeout(PROBE_TIMEOUT, resolver.probe_dnssec()).await {
                        Ok(DnssecProbe::Validates) => Ok(DnssecProbe::Validates.explain()),
                        Ok(other) => Err(other.explain()),
                        Err(_) => Err("no answer within 3 s".to_string()),
                    }
                }
            };
            probes.push(Probe {
                what: "DNSSEC through the resolver".to_string(),
                result,
            });
        }
    }
    probes
}

/// An SMTP next hop: a TCP connection (closed at once); a folder: that it exists and
/// is a folder; MX: nothing to probe ahead of a recipient.
async fn next_hop(hop: &NextHop) -> Result<String, String> {
    match hop {
        NextHop::Smtp(addr) => {
            match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr.as_str())).await {
                Ok(Ok(_)) => Ok("reachable".into()),
                Ok(Err(e)) => Err(format!("not reachable: {e}")),
                Err(_) => Err("not reachable: no connection within 3 s".into()),
            }
        }
        NextHop::Dir(path) if path.is_dir() => Ok("folder exists".into()),
        NextHop::Dir(_) => Ok("folder will be created on first delivery".into()),
        NextHop::Mx => Ok("by MX lookup per recipient domain".into()),
    }
}
