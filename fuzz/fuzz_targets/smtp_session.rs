//! A whole SMTP session, over an in-memory stream: the input is everything a client
//! sends, the first byte saying which listener it reached (inbound or outbound).
//!
//! This is the gateway's front door: command lines (smtp-proto's parser and our checks
//! around it), the session's state machine, DATA, and for every accepted transaction
//! the gateway behind it: the policy, the transform (decryption with an SCKM key of
//! bob@example.com, PGP and S/MIME), the marks, and a `dir:` next hop in a scratch
//! folder. Key lookups are off; harvesting runs on its thread as in the gateway.
//!
//! Besides not panicking, every reply must be a well-formed SMTP reply line, and every
//! message the next hop gets (with the envelope lines the `dir:` next hop writes in
//! front) must have only CRLF line ends: a bare CR or LF there is a line the next hop
//! may read differently from us. And the only `X-Sealgate` fields the next hop reads
//! are the ones sealgate wrote: a client must not forge what the gateway did.

#![no_main]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use sealgate::config::Config;
use sealgate::gateway::Gateway;
use sealgate::gateway::plan::Planner;
use sealgate::gateway::transform::Transform;
use sealgate::keys::entry::{KeyKind, Source};
use sealgate::keys::harvest::{Harvester, Rules};
use sealgate::keys::secrets::Sealer;
use sealgate::keys::store::Candidate;
use sealgate::keys::{KeyStore, SledKeyStore, sckm};
use sealgate::mail::Direction;
use sealgate::org::OrgStore;
use sealgate::org::activity::Activity;
use sealgate::org::autocrypt::Autocrypt;
use sealgate::policy::{self, Live};
use sealgate::relay::Relays;
use sealgate::smtp::session::{Session, Shared};
use sealgate::spool::Spool;
use sealgate_fuzz::{NOW, PGP_TSKS, assert_crlf, marks_in, scratch};
use sequoia_openpgp::serialize::SerializeInto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct World {
    runtime: tokio::runtime::Runtime,
    shared: Shared,
    /// The `dir:` next hops of both directions; emptied after every input.
    delivered: [PathBuf; 2],
}

static WORLD: LazyLock<World> = LazyLock::new(world);

/// The gateway as `Server::bind` builds it, without the listeners and the admin socket.
fn world() -> World {
    sealgate_fuzz::tolerate_caught_panics();
    let data = scratch("session");
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let text = format!(
        r#"
data_dir = "{data}"
internal_domains = ["example.com"]
hostname = "gw.test"
policy_dir = "{policies}"

[inbound]
next_hop = "dir:{data}/delivered/inbound"
trusted_authserv_ids = ["mx.example.com"]

[outbound]
next_hop = "dir:{data}/delivered/outbound"

[lookup]
keys = false
"#,
        data = data.display(),
        policies = policies.display(),
    );
    let config = Config::parse(&text, Path::new("fuzz.toml")).expect("the fuzz config is valid");
    let loaded = policy::load::load_dir(&config.policy_dir);
    let live = Arc::new(Live::new(loaded.policy.expect("the shipped policy loads")));
    let db = sealgate::store::open(&config.data_dir).expect("the database opens");
    let spool = Spool::open(&db, config.spool.clone()).expect("the spool opens");
    let keys = Arc::new(SledKeyStore::open(&db, config.keys.lookup_ttl.0).expect("keys"));
    let org = OrgStore::open(&db).expect("the organization store opens");
    let sealer = Arc::new(Sealer::open(&config.data_dir).expect("the KEK is made"));
    add_sckm_keys(keys.as_ref(), &sealer);
    let config = Arc::new(config);
    let relays = Relays::new(
        config.inbound.next_hop.clone(),
        config.outbound.next_hop.clone(),
        &config.relay,
        &config.hostname,
    );
    // Harvested keys go to a database of their own: they must not change what later
    // inputs do, or findings would not replay.
    let harvest_db = sealgate::store::open(&data.join("harvest")).expect("the database opens");
    let harvested = SledKeyStore::open(&harvest_db, config.keys.lookup_ttl.0).expect("keys");
    let harvester = Harvester::start(
        Arc::new(harvested),
        Rules {
            internal: config.internal_domains.clone(),
            trusted_authserv_ids: config.inbound.trusted_authserv_ids.clone(),
            smime_trust: config.keys.smime_trust.clone(),
        },
    );
    // Records users' mail, as in the gateway (the Organization key's renewals use it).
    let activity = Activity::new(org.clone(), keys.clone(), config.internal_domains.clone());
    // [org] autocrypt_outbound, off in this config as by default.
    let autocrypt = Autocrypt {
        keys: keys.clone(),
        org: org.clone(),
        config: config.clone(),
    };
    let gateway = Gateway {
        planner: Planner {
            policy: live,
            keys: keys.clone(),
            config: config.clone(),
            finder: None,
        },
        transform: Arc::new(Transform {
            keys,
            sealer,
            config: config.clone(),
            org,
            prepared: Default::default(),
        }),
        relays,
        spool,
        hostname: config.hostname.clone(),
        activity,
        autocrypt,
        harvester,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    World {
        runtime,
        shared: Shared {
            config,
            gateway: Arc::new(gateway),
            tls: None,
            shutdown: CancellationToken::new(),
        },
        delivered: [
            data.join("delivered/inbound"),
            data.join("delivered/outbound"),
        ],
    }
}

/// bob@example.com gets the corpus's Autocrypt Bob as his OpenPGP SCKM key and NSS
/// Bob as his S/MIME one, so that inbound mail encrypted to either is decrypted.
fn add_sckm_keys(keys: &dyn KeyStore, sealer: &Sealer) {
    let bob = &PGP_TSKS[2];
    assert!(
        bob.userids()
            .any(|u| u.userid().value() == b"bob@autocrypt.example")
    );
    let fingerprint = bob.fingerprint().to_hex();
    let public = bob
        .clone()
        .strip_secret_key_material()
        .to_vec()
        .expect("serializes");
    let pgp = Candidate {
        address: "bob@example.com".into(),
        kind: KeyKind::Pgp,
        fingerprint: fingerprint.clone(),
        source: Source::Sckm,
        message_id: None,
        sender: None,
        can_encrypt: true,
        can_decrypt: true,
        key_created: NOW,
        key_expires: None,
        material: public,
        legacy: false,
        sealed_secret: Some(sealer.seal(&fingerprint, &sealgate::crypto::pgp::serialize_tsk(bob))),
        authenticated: false,
        chain_validated: false,
        reads_aes_gcm: false,
        carried: None,
        revoked: false,
        decrypt_subkeys: sealgate::crypto::pgp::secret_keys(bob),
    };
    let nss_bob =
        [
            &include_bytes!(
                "../../testdata/corpus/smime/thunderbird-nss-smime/derived/Bob.cert.pem"
            )[..],
            include_bytes!("../../testdata/corpus/smime/thunderbird-nss-smime/derived/Bob.key.pem"),
        ]
        .concat();
    let (smime, _) =
        sckm::candidates(&nss_bob, None, sealer, &|_| None, NOW).expect("NSS Bob imports");
    for candidate in std::iter::once(pgp).chain(smime) {
        let candidate = Candidate {
            address: "bob@example.com".into(),
            ..candidate
        };
        keys.put(candidate, NOW).expect("the key is stored");
    }
}

/// Panics unless `output` is a run of SMTP reply lines: `NNN-text` or `NNN text`, each
/// ending in CRLF, the code from 200 to 599.
fn assert_replies(output: &[u8]) {
    assert!(output.starts_with(b"220 "), "no greeting: {output:?}");
    assert!(output.ends_with(b"\r\n"), "unterminated reply: {output:?}");
    assert_crlf(output, "the replies");
    for line in output[..output.len() - 2].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let well_formed = line.len() >= 4
            && matches!(line[0], b'2'..=b'5')
            && line[1..3].iter().all(u8::is_ascii_digit)
            && matches!(line[3], b' ' | b'-');
        assert!(
            well_formed,
            "malformed reply line {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

/// Panics unless the fields of ours that the next hop reads are the ones sealgate
/// wrote: at most one `X-Sealgate` and one `X-Sealgate-Decrypted`. Any a client sent
/// must have been removed, however its header was folded or broken.
fn assert_marks_are_ours(message: &[u8]) {
    let marks = marks_in(message);
    let count = |prefix: &[u8]| marks.iter().filter(|l| l.starts_with(prefix)).count();
    let (status, decrypted) = (count(b"X-Sealgate: "), count(b"X-Sealgate-Decrypted: "));
    assert!(
        status <= 1 && decrypted <= 1 && status + decrypted == marks.len(),
        "fields of ours the next hop reads: {:?}",
        marks
            .iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<Vec<_>>()
    );
}

/// Checks and removes what the next hops got.
fn take_delivered(world: &World) {
    for dir in &world.delivered {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Ok(bytes) = std::fs::read(&path) {
                assert_crlf(&bytes, "a delivered message");
                assert_marks_are_ours(&bytes);
            }
            let _ = std::fs::remove_file(&path);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let world = &*WORLD;
    let (direction, peer) = if first & 1 == 0 {
        (Direction::Outbound, "127.0.0.1:40000")
    } else {
        (Direction::Inbound, "192.0.2.1:40000")
    };
    let peer: SocketAddr = peer.parse().expect("an address");
    let output = world.runtime.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut session = Session::new(server, &world.shared, direction, peer, None);
        session.greet();
        let (mut from_gateway, mut to_gateway) = tokio::io::split(client);
        let send = async {
            // The session may close first (QUIT, too many errors): the rest is not read.
            let _ = to_gateway.write_all(input).await;
            let _ = to_gateway.shutdown().await;
        };
        let receive = async {
            let mut output = Vec::new();
            let _ = from_gateway.read_to_end(&mut output).await;
            output
        };
        // The session's end drops its side of the stream, which ends `receive`.
        let run = async { drop(session.run().await) };
        tokio::join!(run, send, receive).2
    });
    assert_replies(&output);
    take_delivered(world);
});
