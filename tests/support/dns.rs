//! A real authoritative DNS server on loopback, for the lookup tests and benchmark:
//! hickory-server with in-memory zones built at test time, UDP and TCP on one ephemeral
//! port, answering for every zone it holds (the resolver under test points at it as if
//! it were a recursive resolver).
//!
//! A zone may be DNSSEC-signed with a key made here; [`DnsServer::trust_anchors`] hands
//! its DNSKEY to the resolver, which then trusts the zone directly, with no DS chain to
//! the root. A zone below another one held here is delegated from it (an NS record, no
//! DS), so an unsigned child of a signed zone is provably insecure, as on the internet.
//! A DS question goes to the parent zone, as it would.
//!
//! Faults are set per name (and everything below it): SERVFAIL, or no answer at all.
//! Every question that reaches the server is counted, faults included.
//!
//! [`DnsServer::strip_dnssec`] makes the server behave like the resolvers that strip
//! DNSSEC (the systemd-resolved stub, Docker's embedded DNS): it ignores the DO bit, so
//! its answers carry no RRSIG, NSEC or DNSKEY-signature records. A root zone (`Zone::new(".")`)
//! held here lets a resolver that trusts the real root's keys ask for them.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::dnssec::NxProofKind;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::dnssec::crypto::EcdsaSigningKey;
use hickory_server::proto::dnssec::rdata::DNSKEY;
use hickory_server::proto::dnssec::{Algorithm, DnssecSigner, PublicKey, SigningKey};
use hickory_server::proto::op::{Header, HeaderCounts, Message, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_server::proto::rr::rdata::{A, AAAA, MX, NS, OPENPGPKEY, SMIMEA, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};
use sealgate::config::LookupConfig;
use sealgate::config::units::HumanDuration;
use sealgate::dns::TrustAnchor;
use sha2::{Digest, Sha256};

/// The TTL of every record served.
const TTL: u32 = 300;

/// A fully qualified name from `text` ("mx1.mail.test" or "mx1.mail.test.").
pub fn fqdn(text: &str) -> Name {
    let text = text.trim_end_matches('.');
    Name::from_utf8(format!("{text}.")).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The owner of an address's key record, computed here apart from sealgate's own code:
/// hex of the first 28 octets of SHA-256 of the local part as written, then `label`
/// (`_openpgpkey` or `_smimecert`), then the domain.
pub fn key_owner(address: &str, label: &str) -> Name {
    let (local, domain) = address.rsplit_once('@').expect("local@domain");
    let hash: String = Sha256::digest(local.as_bytes())[..28]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    fqdn(&format!("{hash}.{label}.{domain}"))
}

/// One zone, built up record by record.
pub struct Zone {
    origin: Name,
    records: Vec<Record>,
    signed: bool,
}

impl Zone {
    /// A zone with its SOA and an NS record.
    pub fn new(origin: &str) -> Zone {
        let origin = fqdn(origin);
        let ns = fqdn(&format!("ns.{origin}"));
        let soa = SOA::new(
            ns.clone(),
            fqdn(&format!("hostmaster.{origin}")),
            1,
            3600,
            600,
            86400,
            60,
        );
        Zone {
            records: vec![
                Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)),
                Record::from_rdata(origin.clone(), TTL, RData::NS(NS(ns.clone()))),
                Record::from_rdata(ns, TTL, RData::A(A(Ipv4Addr::LOCALHOST))),
            ],
            origin,
            signed: false,
        }
    }

    /// Signs the zone (ECDSA P-256, NSEC) with a key made when the server starts.
    pub fn signed(mut self) -> Zone {
        self.signed = true;
        self
    }

    /// Any record; its owner must be in the zone.
    pub fn record(mut self, owner: &str, data: RData) -> Zone {
        let owner = fqdn(owner);
        assert!(
            self.origin.zone_of(&owner),
            "{owner} is not in zone {}",
            self.origin
        );
        self.records.push(Record::from_rdata(owner, TTL, data));
        self
    }

    /// An OPENPGPKEY record for `address` (RFC 7929) holding `key` (binary).
    pub fn openpgpkey(self, address: &str, key: &[u8]) -> Zone {
        let owner = key_owner(address, "_openpgpkey").to_ascii();
        self.record(&owner, RData::OPENPGPKEY(OPENPGPKEY::new(key.to_vec())))
    }

    /// An SMIMEA record for `address` (RFC 8162) with the given usage, selector and
    /// matching type, holding `data` (a DER certificate for `3 0 0`).
    pub fn smimea(self, address: &str, usage: u8, selector: u8, matching: u8, data: &[u8]) -> Zone {
        let owner = key_owner(address, "_smimecert").to_ascii();
        let smimea = SMIMEA::new(
            CertUsage::from(usage),
            Selector::from(selector),
            Matching::from(matching),
            data.to_vec(),
        );
        self.record(&owner, RData::SMIMEA(smimea))
    }

    pub fn mx(self, owner: &str, preference: u16, exchange: &str) -> Zone {
        let exchange = if exchange == "." {
            Name::root()
        } else {
            fqdn(exchange)
        };
        self.record(owner, RData::MX(MX::new(preference, exchange)))
    }

    pub fn a(self, owner: &str, address: Ipv4Addr) -> Zone {
        self.record(owner, RData::A(A(address)))
    }

    pub fn aaaa(self, owner: &str, address: Ipv6Addr) -> Zone {
        self.record(owner, RData::AAAA(AAAA(address)))
    }

    pub fn txt(self, owner: &str, text: &str) -> Zone {
        self.record(owner, RData::TXT(TXT::new(vec![text.to_string()])))
    }
}

/// What the server does with questions about a name (and the names below it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers SERVFAIL.
    ServFail,
    /// Never answers.
    Silence,
}

/// What the tests steer and read while the server runs.
#[derive(Default)]
struct Control {
    /// Every question received.
    queries: AtomicUsize,
    /// The questions, as "name TYPE", for a failing test's message.
    asked: Mutex<Vec<String>>,
    faults: Mutex<Vec<(LowerName, Fault)>>,
    /// Answer as if the question had no DO bit: no DNSSEC records in any answer.
    strip_dnssec: AtomicBool,
}

/// Routes each question to the zone that holds it.
struct Handler {
    /// One catalog per zone, so that a DS question can be sent to the parent zone.
    zones: Vec<(LowerName, Catalog)>,
    /// For questions about names in no zone: it answers REFUSED.
    nowhere: Catalog,
    control: Arc<Control>,
}

impl Handler {
    fn catalog(&self, name: &LowerName, rtype: RecordType) -> &Catalog {
        self.zones
            .iter()
            .filter(|(origin, _)| origin.zone_of(name))
            // The DS of a zone lives in its parent.
            .filter(|(origin, _)| !(rtype == RecordType::DS && origin == name))
            .max_by_key(|(origin, _)| origin.num_labels())
            .map_or(&self.nowhere, |(_, catalog)| catalog)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        self.control.queries.fetch_add(1, Ordering::SeqCst);
        let Ok(info) = request.request_info() else {
            return self
                .nowhere
                .handle_request::<R, T>(request, response_handle)
                .await;
        };
        let (name, rtype) = (info.query.name().clone(), info.query.query_type());
        self.control
            .asked
            .lock()
            .unwrap()
            .push(format!("{name} {rtype}"));
        let fault = self
            .control
            .faults
            .lock()
            .unwrap()
            .iter()
            .find(|(under, _)| under.zone_of(&name))
            .map(|(_, fault)| *fault);
        match fault {
            None if self.control.strip_dnssec.load(Ordering::SeqCst) => {
                let request = without_dnssec_ok(request);
                self.catalog(&name, rtype)
                    .handle_request::<R, T>(&request, response_handle)
                    .await
            }
            None => {
                self.catalog(&name, rtype)
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
            Some(Fault::ServFail) => {
                let response = MessageResponseBuilder::new(&request.queries, None)
                    .error_msg(&request.metadata, ResponseCode::ServFail);
                response_handle
                    .send_response(response)
                    .await
                    .expect("send SERVFAIL")
            }
            Some(Fault::Silence) => {
                // Nothing is sent; the client times out.
                ResponseInfo::from(Header {
                    metadata: Metadata::response_from_request(&request.metadata),
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// A running DNS server; it stops when dropped.
pub struct DnsServer {
    /// UDP and TCP, on loopback.
    pub addr: SocketAddr,
    control: Arc<Control>,
    anchors: Vec<TrustAnchor>,
    server: Server<Handler>,
}

impl DnsServer {
    /// Starts a server for `zones` on the current tokio runtime.
    pub async fn start(zones: Vec<Zone>) -> DnsServer {
        let zones = delegate(zones);
        let mut anchors = Vec::new();
        let mut catalogs = Vec::new();
        for zone in zones {
            let origin = LowerName::new(&zone.origin);
            let mut handler = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
                zone.origin.clone(),
                ZoneType::Primary,
                AxfrPolicy::Deny,
                zone.signed.then_some(NxProofKind::Nsec),
            );
            let fillers = if zone.signed {
                key_label_fillers(&zone.records)
            } else {
                Vec::new()
            };
            for record in zone.records.into_iter().chain(fillers) {
                assert!(
                    handler.upsert_mut(record.clone(), 1),
                    "{} refused {record:?}",
                    zone.origin
                );
            }
            if zone.signed {
                anchors.push(sign(&mut handler, &zone.origin));
            }
            let mut catalog = Catalog::new();
            catalog.upsert(origin.clone(), vec![Arc::new(handler)]);
            catalogs.push((origin, catalog));
        }
        let control = Arc::new(Control::default());
        let mut server = Server::new(Handler {
            zones: catalogs,
            nowhere: Catalog::new(),
            control: control.clone(),
        });
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().unwrap();
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64);
        DnsServer {
            addr,
            control,
            anchors,
            server,
        }
    }

    /// Questions received so far (a resolver's DNSSEC questions included).
    pub fn queries(&self) -> usize {
        self.control.queries.load(Ordering::SeqCst)
    }

    /// The questions received so far, as "name TYPE".
    pub fn asked(&self) -> Vec<String> {
        self.control.asked.lock().unwrap().clone()
    }

    /// From now on, questions about `name` and the names below it get `fault`.
    pub fn fault(&self, name: &str, fault: Fault) {
        self.control
            .faults
            .lock()
            .unwrap()
            .push((LowerName::new(&fqdn(name)), fault));
    }

    /// From now on, answers as a resolver that strips DNSSEC does: the DO bit of every
    /// question is ignored, so no answer carries signatures.
    pub fn strip_dnssec(&self) {
        self.control.strip_dnssec.store(true, Ordering::SeqCst);
    }

    /// Answers normally again.
    pub fn heal(&self) {
        self.control.faults.lock().unwrap().clear();
        self.control.strip_dnssec.store(false, Ordering::SeqCst);
    }

    /// The DNSKEY of each signed zone, for the resolver to trust.
    pub fn trust_anchors(&self) -> Vec<TrustAnchor> {
        self.anchors.clone()
    }

    /// `[lookup]` pointing at this server, with a short timeout.
    pub fn lookup_config(&self) -> LookupConfig {
        LookupConfig {
            keys: true,
            nameservers: vec![self.addr],
            insecure_domains: Vec::new(),
            timeout: HumanDuration(Duration::from_secs(2)),
            negative_ttl: HumanDuration::from_secs(3600),
            // The tests of failures look again at once.
            failure_rest: HumanDuration(Duration::ZERO),
        }
    }

    /// Stops answering and closes the sockets.
    pub async fn stop(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

/// The request as it would be without the DO bit (EDNS kept: the stripping resolvers
/// speak EDNS, they only drop what DNSSEC adds).
fn without_dnssec_ok(request: &Request) -> Request {
    let mut message = Message::from_vec(request.as_slice()).expect("a request that parsed once");
    if let Some(edns) = message.edns.as_mut() {
        edns.set_dnssec_ok(false);
    }
    let bytes = message.to_vec().expect("re-encode the request");
    Request::from_bytes(bytes, request.src(), request.protocol()).expect("re-read the request")
}

/// Adds an NS record to each zone's parent zone (the nearest zone above it that is
/// served here), without DS: an insecure delegation.
fn delegate(mut zones: Vec<Zone>) -> Vec<Zone> {
    let origins: Vec<Name> = zones.iter().map(|z| z.origin.clone()).collect();
    for child in &origins {
        let parent = origins
            .iter()
            .enumerate()
            .filter(|(_, o)| *o != child && o.zone_of(child))
            .max_by_key(|(_, o)| o.num_labels())
            .map(|(i, _)| i);
        if let Some(parent) = parent {
            let ns = fqdn(&format!("ns.{child}"));
            zones[parent]
                .records
                .push(Record::from_rdata(child.clone(), TTL, RData::NS(NS(ns))));
        }
    }
    zones
}

/// For each domain with key records in a signed zone, a TXT record at both
/// `_openpgpkey.<domain>` and `_smimecert.<domain>`.
///
/// Why: hickory-server 0.26's NSEC denial proves the wildcard below the query name's
/// parent, not below the closest encloser. When the parent does not exist (an SMIMEA
/// question where only OPENPGPKEY records are published: `_smimecert.<domain>` is then
/// no name at all), the proof is incomplete and the validating resolver rightly calls
/// the answer bogus. With both label names present, the parent is the closest encloser
/// and the server's proof is right. (Its NSEC3 denial finds the closest encloser, but
/// it also puts an NSEC3 record into positive answers, which the resolver calls bogus.)
fn key_label_fillers(records: &[Record]) -> Vec<Record> {
    let mut domains: Vec<Name> = records
        .iter()
        .filter(|r| matches!(r.record_type(), RecordType::OPENPGPKEY | RecordType::SMIMEA))
        .filter(|r| r.name.num_labels() > 2)
        .map(|r| r.name.base_name().base_name())
        .collect();
    domains.sort();
    domains.dedup();
    let mut fillers = Vec::new();
    for domain in domains {
        for label in ["_openpgpkey", "_smimecert"] {
            let owner = fqdn(&format!("{label}.{domain}"));
            if !records.iter().any(|r| r.name == owner) {
                let text = TXT::new(vec![
                    "keeps this name from being an empty non-terminal".into(),
                ]);
                fillers.push(Record::from_rdata(owner, TTL, RData::TXT(text)));
            }
        }
    }
    fillers
}

/// Signs a zone with a fresh key; returns the key as a trust anchor.
fn sign(handler: &mut InMemoryZoneHandler<TokioRuntimeProvider>, origin: &Name) -> TrustAnchor {
    let algorithm = Algorithm::ECDSAP256SHA256;
    let pkcs8 = EcdsaSigningKey::generate_pkcs8(algorithm).expect("key generation");
    let key = EcdsaSigningKey::from_pkcs8(&pkcs8, algorithm).expect("key");
    let public = key.to_public_key().expect("public key");
    let anchor = TrustAnchor {
        zone: origin.to_ascii(),
        algorithm: u8::from(algorithm),
        public_key: public.public_bytes().to_vec(),
    };
    let signer = DnssecSigner::new(
        DNSKEY::from_key(&public),
        Box::new(key),
        origin.clone(),
        Duration::from_secs(7 * 86400),
    );
    handler.add_zone_signing_key_mut(signer).expect("add key");
    handler.secure_zone_mut().expect("sign zone");
    anchor
}

/// A UDP socket and a TCP listener on the same ephemeral loopback port.
async fn bind_pair() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    for _ in 0..50 {
        let udp = tokio::net::UdpSocket::bind((IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
            .await
            .expect("bind UDP");
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            return (udp, tcp);
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}
