//! The resolvers built from `[lookup]`, and how one DNS question's answer is read.
//!
//! There are two hickory resolvers over the same nameservers. The validating one checks
//! DNSSEC up from the root's trust anchors and asks for keys. The other does not
//! validate: MX hosts and their addresses need no DNSSEC (RFC 5321 delivery never
//! had it), and keys in `insecure_domains` are taken as they come. With a single
//! validating resolver, an unsigned answer that the validator cannot prove insecure
//! would come back as an error, and those two cases would fail for no reason of theirs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::dnssec::{Algorithm, PublicKeyBuf, TrustAnchors};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{LowerName, Name, Record, RecordType};
use hickory_resolver::{ResolverBuilder, TokioResolver};

use super::DnsError;
use crate::config::LookupConfig;

/// A DNSSEC trust anchor beyond the root's: a zone whose DNSKEY is trusted as it is,
/// with no chain of DS records above it. The tests sign a zone on loopback with a key of
/// their own and trust it through this; production trusts the root's keys only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchor {
    /// The zone, as in `example.test`.
    pub zone: String,
    /// The DNSKEY algorithm number (13 is ECDSA P-256 with SHA-256).
    pub algorithm: u8,
    /// The DNSKEY's public key field, decoded.
    pub public_key: Vec<u8>,
}

/// The answer to one question, as sealgate reads it.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// Records of the type asked for, each with the proof the validator gave it
    /// (`Proof::Indeterminate` from the resolver that does not validate).
    Records(Vec<Record>),
    /// The name exists but has no records of this type (NODATA).
    NoData,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// DNSSEC says the answer is forged or broken. A validating recursive resolver
    /// would have answered SERVFAIL; it is no evidence that nothing is published.
    Bogus,
    /// SERVFAIL, REFUSED, a timeout, a network error: nothing was learnt.
    Failed(String),
}

/// Whether an answer must come through DNSSEC validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validation {
    /// Through the validating resolver: records carry a DNSSEC proof.
    Dnssec,
    /// Through the resolver that does not validate.
    None,
}

/// The resolvers sealgate asks. Cloning is cheap and shares the resolvers' caches.
#[derive(Clone)]
pub struct DnsResolver {
    /// Validates DNSSEC from the root's trust anchors (plus a test's own); asked for keys.
    validating: TokioResolver,
    /// Does not validate; asked for MX, addresses, and keys in `insecure_domains`.
    plain: TokioResolver,
    /// `[lookup] timeout`: how long one question may take, retries included.
    timeout: Duration,
}

impl DnsResolver {
    /// The resolvers for `[lookup]`: its nameservers over UDP and TCP, or, when it names
    /// none, the system's (`/etc/resolv.conf`).
    pub fn new(config: &LookupConfig) -> Result<DnsResolver, DnsError> {
        DnsResolver::build(config, None)
    }

    /// Like [`DnsResolver::new`], with extra trust anchors beside the root's. For tests,
    /// whose signed zones on loopback have no chain of trust to the root.
    pub fn with_trust_anchors(
        config: &LookupConfig,
        anchors: &[TrustAnchor],
    ) -> Result<DnsResolver, DnsError> {
        let mut trusted = TrustAnchors::default();
        for anchor in anchors {
            let zone = Name::from_ascii(&anchor.zone)
                .map_err(|e| DnsError::Setup(format!("trust anchor {:?}: {e}", anchor.zone)))?;
            let key = PublicKeyBuf::new(
                anchor.public_key.clone(),
                Algorithm::from_u8(anchor.algorithm),
            );
            trusted.insert_with_name(&key, LowerName::new(&zone));
        }
        DnsResolver::build(config, Some(Arc::new(trusted)))
    }

    fn build(
        config: &LookupConfig,
        anchors: Option<Arc<TrustAnchors>>,
    ) -> Result<DnsResolver, DnsError> {
        let timeout = config.timeout.0;
        let mut validating = builder(&config.nameservers, timeout)?;
        validating.options_mut().validate = true;
        if let Some(anchors) = anchors {
            validating = validating.with_trust_anchor(anchors);
        }
        let mut plain = builder(&config.nameservers, timeout)?;
        plain.options_mut().validate = false;
        let build = |b: ResolverBuilder<TokioRuntimeProvider>| {
            b.build()
                .map_err(|e| DnsError::Setup(format!("cannot build the resolver: {e}")))
        };
        Ok(DnsResolver {
            validating: build(validating)?,
            plain: build(plain)?,
            timeout,
        })
    }

    /// Asks for the `rtype` records of `name` (a fully qualified name) and reads the
    /// answer. Never takes longer than the timeout.
    pub(crate) async fn query(
        &self,
        name: &Name,
        rtype: RecordType,
        validation: Validation,
    ) -> Answer {
        let resolver = match validation {
            Validation::Dnssec => &self.validating,
            Validation::None => &self.plain,
        };
        match tokio::time::timeout(self.timeout, resolver.lookup(name.clone(), rtype)).await {
            Err(_) => Answer::Failed(format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            )),
            Ok(Ok(lookup)) => {
                let records: Vec<Record> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .cloned()
                    .collect();
                if records.is_empty() {
                    // Only a CNAME chain that ends nowhere, or RRSIGs alone.
                    Answer::NoData
                } else {
                    Answer::Records(records)
                }
            }
            Ok(Err(error)) => read_error(error),
        }
    }
}

impl DnsResolver {
    /// Whether the resolvers answer at all: asks for the root's NS records, which
    /// every resolver can answer. For `sealgate check` and the start-up log.
    pub async fn probe(&self) -> Result<(), String> {
        match self
            .query(&Name::root(), RecordType::NS, Validation::None)
            .await
        {
            Answer::Failed(reason) => Err(reason),
            _ => Ok(()),
        }
    }

    /// Whether the resolvers pass DNSSEC records through, so that key records can be
    /// validated: asks for the root's DNSKEY through the validating resolver. A
    /// resolver that strips them (no DO bit) makes every key lookup fail, outside
    /// `insecure_domains`.
    pub async fn probe_dnssec(&self) -> Result<(), String> {
        match self.query(&Name::root(), RecordType::DNSKEY, Validation::Dnssec).await {
            Answer::Records(_) => Ok(()),
            Answer::Failed(reason) => Err(reason),
            _ => Err("the root's DNSKEY does not validate: the resolver does not pass DNSSEC records on (DO bit)".into()),
        }
    }
}

/// A hickory error, read as an answer: the negative ones are answers too.
fn read_error(error: NetError) -> Answer {
    match &error {
        NetError::Dns(HickoryDnsError::NoRecordsFound(none)) => negative(none.response_code),
        // A negative answer whose proof of non-existence is not secure (an unsigned
        // zone's): still a negative answer.
        NetError::Dns(HickoryDnsError::Nsec { response, .. }) => negative(response.response_code),
        NetError::Dns(HickoryDnsError::DnssecBogus) => Answer::Bogus,
        _ => Answer::Failed(error.to_string()),
    }
}

fn negative(code: ResponseCode) -> Answer {
    match code {
        ResponseCode::NXDomain => Answer::NxDomain,
        ResponseCode::NoError => Answer::NoData,
        other => Answer::Failed(format!("server answered {other}")),
    }
}

/// A resolver builder over `nameservers`, or the system's when there are none.
fn builder(
    nameservers: &[SocketAddr],
    timeout: Duration,
) -> Result<ResolverBuilder<TokioRuntimeProvider>, DnsError> {
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio()
            .map_err(|e| DnsError::Setup(format!("cannot read the system resolver config: {e}")))?
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    // Each try gets half the time, so that one lost UDP datagram still leaves room for
    // a second try; the caller bounds the whole question by `timeout`.
    options.timeout = (timeout / 2).max(Duration::from_millis(50));
    options.attempts = 2;
    // Keys and their signatures do not fit in 512 bytes.
    options.edns0 = true;
    // Mail is routed by DNS only, as Postfix does by default (smtp_host_lookup = dns).
    options.use_hosts_file = ResolveHosts::Never;
    Ok(builder)
}

/// `domain` as a fully qualified DNS name: IDNA to ASCII, lower case, with the root's dot.
pub(crate) fn fqdn(domain: &str) -> Result<Name, DnsError> {
    let bad = || DnsError::BadName(domain.to_string());
    let ascii = idna::domain_to_ascii(domain.trim().trim_end_matches('.')).map_err(|_| bad())?;
    if ascii.is_empty() {
        return Err(bad());
    }
    Name::from_ascii(format!("{ascii}.")).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_is_ascii_lower_case_and_absolute() {
        let name = fqdn("Bücher.Example").unwrap();
        assert!(name.is_fqdn());
        assert_eq!(name.to_ascii(), "xn--bcher-kva.example.");
        assert_eq!(fqdn("example.org.").unwrap().to_ascii(), "example.org.");
        assert!(matches!(fqdn(""), Err(DnsError::BadName(_))));
        assert!(matches!(fqdn("."), Err(DnsError::BadName(_))));
        assert!(matches!(
            fqdn(&format!("{}.org", "a".repeat(64))),
            Err(DnsError::BadName(_))
        ));
    }

    #[test]
    fn negative_answers_are_answers() {
        assert!(matches!(negative(ResponseCode::NXDomain), Answer::NxDomain));
        assert!(matches!(negative(ResponseCode::NoError), Answer::NoData));
        assert!(matches!(
            negative(ResponseCode::ServFail),
            Answer::Failed(_)
        ));
    }
}
