//! The store benchmark: relay throughput with the key cache and the spool on sled and on
//! a shared PostgreSQL store, side by side in one run, for plain relay and for PGP
//! encryption to a recipient whose key is in the cache; and the latency of one key
//! cache lookup in each store.
//!
//! PostgreSQL is a private instance on loopback (`tests/support/postgres.rs`), with
//! `fsync=off`: the figures are the round trips and the work, not this machine's disk.
//! In production every commit waits for the WAL to reach the disk, as sled's spool
//! flush does.
//!
//! `cargo bench --bench store` gets the full run; without `--bench` (as under `cargo
//! test --all-targets`) a smoke run at a tiny scale proves that every path works.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/postgres.rs"]
mod postgres;
#[path = "../tests/support/sink.rs"]
mod sink;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealgate::config::Config;
use sealgate::keys::Source;
use sealgate::keys::material::{self, Origin};
use sealgate::keys::store::{KeyStore, SledKeyStore};
use sealgate::mail::Direction;
use sealgate::server::Server;
use sequoia_openpgp::serialize::SerializeInto;
use time::OffsetDateTime;

use common::{Run, dot_stuff, message, throughput, verdict};
use postgres::PgServer;
use sink::Sink;

/// Who gets the encrypted messages: a cv25519 key in both caches.
const KEYED: &str = "keyed@example.org";
/// Who gets the plain ones: no key anywhere.
const PLAIN: &str = "plain@example.org";

struct Scale {
    messages: usize,
    rounds: usize,
    sessions: usize,
    lookups: usize,
}

const BENCH: Scale = Scale {
    messages: 2000,
    rounds: 4,
    sessions: 10,
    lookups: 5000,
};

const SMOKE: Scale = Scale {
    messages: 20,
    rounds: 1,
    sessions: 2,
    lookups: 50,
};

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let scale = if bench { &BENCH } else { &SMOKE };
    println!(
        "sealgate store benchmark ({})",
        if bench {
            "full run"
        } else {
            "smoke run; use `cargo bench --bench store`"
        }
    );
    let pg = PgServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(scale, &pg));
}

async fn run(scale: &Scale, pg: &PgServer) {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = keyed_cert();

    // The same key in each store, before the gateways hold them.
    let sled_dir = dir.path().join("sled");
    let sled_config = config(&sled_dir, sink.addr, None);
    {
        let db = sealgate::store::open(&sled_dir).expect("sled");
        let keys = SledKeyStore::open(&db, Duration::from_secs(86400)).expect("keys");
        store_key(&keys, &key);
        db.flush().expect("flush");
    }
    let pg_dir = dir.path().join("postgres");
    let pg_config = config(&pg_dir, sink.addr, Some(&pg.default_url()));
    let shared = sealgate::store::postgres::Postgres::connect(&pg_config.store).expect("postgres");
    let pg_keys =
        sealgate::keys::store::postgres::PgKeyStore::new(shared, Duration::from_secs(86400));
    store_key(&pg_keys, &key);

    println!();
    println!(
        "1. one key cache lookup (KeyStore::find of an address with one key), {} each",
        scale.lookups
    );
    {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let sled_keys = SledKeyStore::open(&db, Duration::from_secs(86400)).expect("keys");
        store_key(&sled_keys, &key);
        let sled = lookups(&sled_keys, scale.lookups);
        let shared = lookups(&pg_keys, scale.lookups);
        println!(
            "   sled      : p50 {:7.1} µs, p99 {:7.1} µs",
            sled.0, sled.1
        );
        println!(
            "   postgres  : p50 {:7.1} µs, p99 {:7.1} µs",
            shared.0, shared.1
        );
    }

    let gateways = [
        ("sled    ", start(sled_config).await),
        ("postgres", start(pg_config).await),
    ];
    let stuffed = Arc::new(dot_stuff(&message(4 * 1024)));
    println!();
    println!(
        "2. relay throughput: {} messages of 4 KiB per path, {} parallel sessions, one connection per message; the two stores take turns in {} rounds",
        scale.messages, scale.sessions, scale.rounds
    );
    for (what, rcpt) in [("plain", PLAIN), ("PGP-encrypted", KEYED)] {
        let mut runs = [Run::default(), Run::default()];
        for (run, (_, addr)) in runs.iter_mut().zip(&gateways) {
            throughput(
                *addr,
                rcpt,
                scale.sessions * 2,
                scale.sessions,
                &stuffed,
                "self",
            )
            .await;
            let _ = run;
        }
        for _ in 0..scale.rounds {
            for (run, (_, addr)) in runs.iter_mut().zip(&gateways) {
                let per_round = scale.messages / scale.rounds;
                run.add(throughput(*addr, rcpt, per_round, scale.sessions, &stuffed, "self").await);
            }
        }
        println!("   {what}:");
        for (run, (name, _)) in runs.iter().zip(&gateways) {
            run.print(name);
        }
        let ratio = runs[1].rate() / runs[0].rate();
        println!(
            "   postgres/sled: {ratio:.2} (target >= 0.80: {})",
            verdict(ratio >= 0.8)
        );
    }
    let received = sink.received();
    let encrypted = received
        .iter()
        .filter(|r| r.recipients == [KEYED])
        .filter(|r| memchr::memmem::find(&r.data, b"multipart/encrypted").is_some())
        .count();
    let to_keyed = received.iter().filter(|r| r.recipients == [KEYED]).count();
    assert_eq!(
        encrypted, to_keyed,
        "every message to {KEYED} was encrypted"
    );
    println!();
    println!(
        "all {} transactions arrived; every one to {KEYED} encrypted",
        received.len()
    );
}

/// A cv25519 key for [`KEYED`], as a binary OpenPGP cert.
fn keyed_cert() -> Vec<u8> {
    let (cert, _) = sequoia_openpgp::cert::CertBuilder::new()
        .set_creation_time(std::time::SystemTime::now() - Duration::from_secs(60))
        .add_userid(format!("Keyed <{KEYED}>"))
        .add_transport_encryption_subkey()
        .generate()
        .expect("a key");
    cert.to_vec().expect("serialized")
}

fn store_key(keys: &dyn KeyStore, cert: &[u8]) {
    let origin = Origin {
        source: Source::Admin,
        message_id: None,
        sender: None,
    };
    let now = OffsetDateTime::now_utc();
    for candidate in material::import_candidates(cert, &origin, now).expect("an importable key") {
        keys.put(candidate, now).expect("stored");
    }
}

/// p50 and p99 of `count` lookups of [`KEYED`], in microseconds.
fn lookups(keys: &dyn KeyStore, count: usize) -> (f64, f64) {
    let mut times: Vec<Duration> = (0..count)
        .map(|_| {
            let started = Instant::now();
            let found = keys.find(KEYED).expect("lookup");
            assert_eq!(found.len(), 1);
            started.elapsed()
        })
        .collect();
    times.sort();
    let at = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)].as_secs_f64() * 1e6;
    (at(50), at(99))
}

fn config(data_dir: &Path, next_hop: SocketAddr, postgres: Option<&str>) -> Config {
    let store = postgres.map_or(String::new(), |url| {
        format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n")
    });
    let text = format!(
        r#"
data_dir = "{data}"
internal_domains = ["example.com"]
hostname = "gw.bench"

[inbound]
listen = "127.0.0.1:0"
next_hop = "{next_hop}"

[outbound]
listen = "127.0.0.1:0"
next_hop = "{next_hop}"
allowed_clients = ["127.0.0.0/8"]

[limits]
max_connections = 1000
max_connections_per_client = 1000

[lookup]
keys = false

{store}"#,
        data = data_dir.display()
    );
    Config::parse(&text, Path::new("bench.toml")).expect("bench config")
}

/// An in-process gateway; returns its outbound address. It runs until the process ends.
async fn start(config: Config) -> SocketAddr {
    let server = Server::bind(config).await.expect("bind the gateway");
    let addr = server.local_addr(Direction::Outbound);
    tokio::spawn(server.run(std::future::pending()));
    addr
}
