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

use futures::StreamExt;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::DnsHandle;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::dnssec::{Algorithm, Proof, PublicKeyBuf, TrustAnchors};
use hickory_resolver::proto::op::{DnsRequestOptions, Query, ResponseCode};
use hickory_resolver::proto::rr::{LowerName, Name, Record, RecordType};
use hickory_resolver::{
    NameServerPool, PoolContext, ResolverBuilder, TlsConfig, TokioResolver, system_conf,
};

use super::DnsError;
use super::dnssec::DnssecProbe;
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
    /// The nameservers and options both resolvers were built from: the DNSSEC probe
    /// asks them directly, past the resolvers' caches and validation, to see what they
    /// send back (see [`DnsResolver::probe_dnssec`]).
    servers: ResolverConfig,
    options: ResolverOpts,
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
        let (servers, options) = setup(&config.nameservers, timeout)?;
        let builder = || {
            TokioResolver::builder_with_config(servers.clone(), TokioRuntimeProvider::default())
                .with_options(options.clone())
        };
        let mut validating = builder();
        validating.options_mut().validate = true;
        if let Some(anchors) = anchors {
            validating = validating.with_trust_anchor(anchors);
        }
        let mut plain = builder();
        plain.options_mut().validate = false;
        let build = |b: ResolverBuilder<TokioRuntimeProvider>| {
            b.build()
                .map_err(|e| DnsError::Setup(format!("cannot build the resolver: {e}")))
        };
        Ok(DnsResolver {
            validating: build(validating)?,
            plain: build(plain)?,
            timeout,
            servers,
            options,
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

    /// Whether key records can be validated through these resolvers (see
    /// [`super::dnssec`]). First the nameservers are asked for the root's SOA with the
    /// DO bit, directly: an answer without any RRSIG is the mark of a resolver that
    /// strips DNSSEC. Then the root's DNSKEY is asked for through the validating
    /// resolver, afresh: it must come out secure from the trust anchors. Never takes
    /// much longer than twice `[lookup] timeout`.
    pub async fn probe_dnssec(&self) -> DnssecProbe {
        match tokio::time::timeout(self.timeout, self.root_soa_signed()).await {
            Err(_) => {
                return DnssecProbe::Unanswered(format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                ));
            }
            Ok(Err(reason)) => return DnssecProbe::Unanswered(reason),
            Ok(Ok(false)) => return DnssecProbe::Strips,
            Ok(Ok(true)) => {}
        }
        // An earlier probe's answer, good or bad, must not stand in for this one.
        self.validating
            .clear_lookup_cache(Name::root(), RecordType::DNSKEY);
        match self
            .query(&Name::root(), RecordType::DNSKEY, Validation::Dnssec)
            .await
        {
            Answer::Records(records) if records.iter().all(|r| r.proof == Proof::Secure) => {
                DnssecProbe::Validates
            }
            Answer::Records(records) => DnssecProbe::DoesNotValidate(format!(
                "the root's DNSKEY came back {}",
                records
                    .iter()
                    .map(|r| r.proof)
                    .find(|p| *p != Proof::Secure)
                    .unwrap_or(Proof::Indeterminate)
            )),
            Answer::Bogus => {
                DnssecProbe::DoesNotValidate("the root's DNSKEY failed validation".into())
            }
            Answer::NoData | Answer::NxDomain => {
                DnssecProbe::DoesNotValidate("the root's DNSKEY came back empty".into())
            }
            Answer::Failed(reason) => DnssecProbe::Unanswered(reason),
        }
    }

    /// Asks the nameservers for the root's SOA with the DO bit, without the resolvers
    /// (their caches, and the validator that would turn a missing signature into an
    /// error and hide what was sent): `Ok(true)` when the answer carries an RRSIG,
    /// `Ok(false)` when it has the SOA and no RRSIG. The SOA, not the DNSKEY: its
    /// signed answer is small enough for any UDP path.
    async fn root_soa_signed(&self) -> Result<bool, String> {
        let tls = TlsConfig::new().map_err(|e| e.to_string())?;
        let context = Arc::new(PoolContext::new(self.options.clone(), tls));
        let pool = NameServerPool::from_config(
            self.servers.name_servers().to_vec(),
            context,
            TokioRuntimeProvider::default(),
        );
        let mut options = DnsRequestOptions::default();
        options.recursion_desired = true;
        options.use_edns = true;
        options.edns_set_dnssec_ok = true;
        let query = Query::query(Name::root(), RecordType::SOA);
        let response = pool
            .lookup(query, options)
            .next()
            .await
            .ok_or("no response")?
            .map_err(|e| e.to_string())?;
        if response.metadata.response_code != ResponseCode::NoError {
            return Err(format!(
                "the root's SOA: server answered {}",
                response.metadata.response_code
            ));
        }
        let has = |rtype| response.answers.iter().any(|r| r.record_type() == rtype);
        if !has(RecordType::SOA) {
            return Err("the answer for the root's SOA holds no SOA".into());
        }
        Ok(has(RecordType::RRSIG))
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

/// The nameservers to ask, `nameservers` or the system's when there are none, and the
/// options both resolvers share.
fn setup(
    nameservers: &[SocketAddr],
    timeout: Duration,
) -> Result<(ResolverConfig, ResolverOpts), DnsError> {
    let (config, mut options) = if nameservers.is_empty() {
        system_conf::read_system_conf()
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
        (
            ResolverConfig::from_name_servers(servers),
            ResolverOpts::default(),
        )
    };
    // Each try gets half the time, so that one lost UDP datagram still leaves room for
    // a second try; the caller bounds the whole question by `timeout`.
    options.timeout = (timeout / 2).max(Duration::from_millis(50));
    options.attempts = 2;
    // Keys and their signatures do not fit in 512 bytes.
    options.edns0 = true;
    // Mail is routed by DNS only, as Postfix does by default (smtp_host_lookup = dns).
    options.use_hosts_file = ResolveHosts::Never;
    Ok((config, options))
}

/// The resolvers `[lookup]` names, for an admin: "DNS resolver 192.0.2.53:53", or
/// "DNS resolver (system, /etc/resolv.conf)".
pub fn describe(config: &LookupConfig) -> String {
    if config.nameservers.is_empty() {
        "DNS resolver (system, /etc/resolv.conf)".to_string()
    } else {
        let servers: Vec<String> = config.nameservers.iter().map(|s| s.to_string()).collect();
        format!("DNS resolver {}", servers.join(", "))
    }
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
