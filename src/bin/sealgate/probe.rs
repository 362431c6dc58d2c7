//! Whether the next hops and the DNS resolvers can be reached: said by `sealgate
//! check` and logged at start-up, so that an admin sees a wrong address or a dead
//! server before the first message does. A failed probe is a warning, never an error:
//! a next hop may be down for a moment while the config is right.

use std::time::Duration;

use tokio::net::TcpStream;

use sealgate::config::{Config, NextHop};
use sealgate::dns::DnsResolver;
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

/// Probes both next hops and, when anything uses DNS, the resolvers.
pub async fn probe_all(config: &Config) -> Vec<Probe> {
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
        let what = if config.lookup.nameservers.is_empty() {
            "DNS resolver (system, /etc/resolv.conf)".to_string()
        } else {
            let servers: Vec<String> = config
                .lookup
                .nameservers
                .iter()
                .map(|s| s.to_string())
                .collect();
            format!("DNS resolver {}", servers.join(", "))
        };
        let result = match DnsResolver::new(&config.lookup) {
            Err(e) => Err(e.to_string()),
            Ok(resolver) => match tokio::time::timeout(PROBE_TIMEOUT, resolver.probe()).await {
                Ok(Ok(())) => Ok("answers".to_string()),
                Ok(Err(reason)) => Err(format!("no answer: {reason}")),
                Err(_) => Err("no answer within 3 s".to_string()),
            },
        };
        probes.push(Probe { what, result });
        if config.lookup.keys {
            let result = match DnsResolver::new(&config.lookup) {
                Err(e) => Err(e.to_string()),
                Ok(resolver) => {
                    match tokio::time::timeout(PROBE_TIMEOUT, resolver.probe_dnssec()).await {
                        Ok(Ok(())) => Ok("validates: key records can be checked".to_string()),
                        Ok(Err(reason)) => Err(format!(
                            "{reason}; key lookups will fail except in [lookup] insecure_domains"
                        )),
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
