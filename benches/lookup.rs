//! Key lookup benchmark: what `KeyLookup::find` costs per recipient, warm and cold,
//! against the loopback DNS server of the tests (`tests/support/dns.rs`), with a
//! DNSSEC-signed zone that the resolver trusts directly.
//!
//! 1. warm: a recipient in the negative cache; a recipient whose key an earlier lookup
//!    put in the sled key cache;
//! 2. cold: a recipient seen for the first time, whose key is found through DNS (two
//!    questions, DNSSEC validation, parsing the key, storing it in sled); and one
//!    without a key (two validated negative answers). The zone's DNSKEY is in the
//!    resolver's cache after the first lookup, as it would be on a running gateway.
//!
//! `cargo bench --bench lookup` passes `--bench` and gets the full run. Without it (as
//! `cargo test --all-targets` runs it) a small smoke run checks every path's outcome.
//! Keys are made in process with sequoia (Cv25519): gpg would take far longer for
//! hundreds of them.

#[path = "../tests/support/dns.rs"]
mod dns;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dns::{DnsServer, Zone};
use openpgp::cert::CertBuilder;
use openpgp::serialize::SerializeInto;
use sealgate::dns::{Found, KeyLookup};
use sealgate::keys::SledKeyStore;
use sequoia_openpgp as openpgp;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (recipients, warm) = if full { (300, 100_000) } else { (10, 1_000) };
    println!(
        "sealgate key lookup benchmark ({})",
        if full { "full run" } else { "smoke run" }
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(recipients, warm));
}

async fn run(recipients: usize, warm: usize) {
    let started = Instant::now();
    let mut zone = Zone::new("test").signed();
    for i in 0..recipients {
        let address = format!("user{i}@bench.test");
        let (cert, _) = CertBuilder::general_purpose([format!("User {i} <{address}>")])
            .generate()
            .expect("sequoia makes a cert");
        zone = zone.openpgpkey(&address, &cert.to_vec().expect("cert serializes"));
    }
    let server = DnsServer::start(vec![zone]).await;
    println!(
        "   {recipients} recipients with an OPENPGPKEY record, signed zone served in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let db = sled::Config::new().temporary(true).open().expect("sled");
    let store = Arc::new(SledKeyStore::open(&db, Duration::from_secs(86400)).expect("store"));
    let lookups = KeyLookup::with_trust_anchors(
        &server.lookup_config(),
        Duration::from_secs(86400),
        store,
        &server.trust_anchors(),
    )
    .expect("key lookup");

    println!("\n1. cold: first lookup of each recipient, through DNS ({recipients} each)");
    let mut found_cold = Vec::with_capacity(recipients);
    for i in 0..recipients {
        let address = format!("user{i}@bench.test");
        let started = Instant::now();
        let found = lookups.find(&address).await;
        found_cold.push(started.elapsed());
        assert!(
            matches!(&found, Found::Keys(keys) if keys.len() == 1),
            "{address}: {found:?}"
        );
    }
    report("key found via DNS (validated, stored)", found_cold);
    let mut none_cold = Vec::with_capacity(recipients);
    for i in 0..recipients {
        let address = format!("nobody{i}@bench.test");
        let started = Instant::now();
        let found = lookups.find(&address).await;
        none_cold.push(started.elapsed());
        assert_eq!(found, Found::NoKey, "{address}");
    }
    report("no key (validated denial)", none_cold);

    println!("\n2. warm: {warm} lookups of recipients looked up before");
    let queries = server.queries();
    let mut cached = Vec::with_capacity(warm);
    for n in 0..warm {
        let address = format!("user{}@bench.test", n % recipients);
        let started = Instant::now();
        let found = lookups.find(&address).await;
        cached.push(started.elapsed());
        assert!(matches!(found, Found::Keys(_)), "{address}: {found:?}");
    }
    report("key in the sled key cache", cached);
    let mut negative = Vec::with_capacity(warm);
    for n in 0..warm {
        let address = format!("nobody{}@bench.test", n % recipients);
        let started = Instant::now();
        let found = lookups.find(&address).await;
        negative.push(started.elapsed());
        assert_eq!(found, Found::NoKey);
    }
    report("negative cache hit", negative);
    let mut skipped = Vec::with_capacity(warm);
    for n in 0..warm {
        let address = format!("nobody{}@bench.test", n % recipients);
        let started = Instant::now();
        let cached = lookups.is_negative_cached(&address);
        skipped.push(started.elapsed());
        assert!(cached);
    }
    report("is_negative_cached (RCPT's check)", skipped);
    assert_eq!(
        server.queries(),
        queries,
        "warm lookups must not ask the DNS server anything"
    );
}

/// Prints p50, p99 and max of `latencies`.
fn report(name: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let show = |d: Duration| {
        if d < Duration::from_millis(1) {
            format!("{:.1} µs", d.as_secs_f64() * 1e6)
        } else {
            format!("{:.2} ms", d.as_secs_f64() * 1e3)
        }
    };
    println!(
        "   {name:<40} p50 {:>9}, p99 {:>9}, max {:>9}",
        show(at(0.50)),
        show(at(0.99)),
        show(*latencies.last().expect("measured"))
    );
}
