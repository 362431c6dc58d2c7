//! Gateways on one shared PostgreSQL store (`[store] backend = "postgres"`), each test
//! with a private PostgreSQL instance of its own: a key imported or harvested on one
//! member is used by another with the same cache times, a delete on one is seen by all,
//! a member whose key-encryption key differs refuses to start, and `check` reports the
//! database.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use std::sync::atomic::Ordering;

use support::cli::{BIN, Mailroom, Serve, Setup, entry, path_str, run_with_timeout, send, text};
use support::keys::{GpgHome, autocrypt_header};
use support::postgres::PgServer;
use support::{Client, Sink};

/// A member: its own config and data_dir, the shared store, and `kek` as its
/// key-encryption key (every member of a cluster needs the same one).
fn member(pg: &PgServer, kek: &[u8; 32]) -> Mailroom {
    member_with(pg, kek, "")
}

/// [`member`] with `extra` appended to its config (more sections).
fn member_with(pg: &PgServer, kek: &[u8; 32], extra: &str) -> Mailroom {
    let room = Mailroom::with(&format!(
        "[keys]\nencrypt_to_mailflow_keys = true\n\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\n\n{extra}",
        pg.default_url()
    ));
    std::fs::create_dir_all(&room.data_dir).unwrap();
    std::fs::set_permissions(&room.data_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = room.data_dir.join("secret.key");
    std::fs::write(&path, kek).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    room
}

/// A member that relays to `sink` in both directions, with a quick spool and a short
/// member timeout, and `kek` as its key-encryption key.
fn relaying_member(pg: &PgServer, sink: &Sink, kek: &[u8; 32]) -> Setup {
    let setup = Setup::new(
        |dir| {
            format!(
                "data_dir = \"{data}\"\nhostname = \"member.test\"\n\
                 [inbound]\nlisten = \"127.0.0.1:0\"\nnext_hop = \"{hop}\"\n\
                 [outbound]\nlisten = \"127.0.0.1:0\"\nnext_hop = \"{hop}\"\nallowed_clients = [\"127.0.0.0/8\"]\n\
                 [spool]\nfirst_retry = \"200ms\"\nmax_retry = \"500ms\"\n\
                 [lookup]\nkeys = false\n\
                 [store]\nbackend = \"postgres\"\nurl = \"{url}\"\nmember_timeout = \"3s\"\n",
                data = dir.join("data").display(),
                hop = sink.addr,
                url = pg.default_url(),
            )
        },
        Duration::from_secs(30),
    );
    std::fs::create_dir_all(&setup.data_dir).unwrap();
    std::fs::set_permissions(&setup.data_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = setup.data_dir.join("secret.key");
    std::fs::write(&path, kek).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    setup
}

/// The Message-ID of a message as the sink received it.
fn message_id(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .find_map(|line| line.strip_prefix("Message-ID: "))
        .unwrap_or("")
        .to_string()
}

/// Sends one message per id to now@ and later@ (whom the sink refuses for now), and
/// asserts each `250`: later@'s copy is then in a spool.
async fn send_now_and_later(addr: std::net::SocketAddr, message_ids: &[String]) {
    let mut client = Client::connect(addr).await;
    for id in message_ids {
        let message = outgoing("later@example.org", id, "Later.");
        let reply = client
            .send_mail(
                "user@example.com",
                &["now@example.org", "later@example.org"],
                &message,
            )
            .await;
        assert_eq!(reply.code, 250, "{id}: {reply:?}");
    }
    client.quit().await;
}

fn outgoing(to: &str, message_id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: User <user@example.com>\r\nTo: {to}\r\nSubject: Numbers\r\nMessage-ID: <{message_id}>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

fn encrypted(message: &str, body: &str) -> bool {
    message.contains("multipart/encrypted") && !message.contains(body)
}

#[tokio::test]
async fn a_key_imported_or_harvested_on_one_member_is_used_by_the_other() {
    let pg = PgServer::start();
    let kek = [7u8; 32];
    let (a, b) = (member(&pg, &kek), member(&pg, &kek));

    // Imported on A (no server: the CLI writes the shared store itself).
    let carol = GpgHome::new();
    carol.make_key("Carol <carol@example.org>", "ed25519", "cv25519", "encr");
    let file = a.file("carol.asc", carol.run(&["--armor", "--export"], None));
    a.keys_expect(&["import", path_str(&file)], 0);

    let a_serve = Serve::start(&a);
    let b_serve = Serve::start(&b);
    send(
        b_serve.addr("outbound"),
        "user@example.com",
        &["carol@example.org"],
        &outgoing("carol@example.org", "to-carol@example.com", "For Carol."),
    )
    .await;
    let relayed = b.delivered_with("out", "to-carol@example.com");
    assert!(encrypted(&relayed, "For Carol."), "{relayed}");

    // Harvested on B, used by A, with the same cache times on both.
    let dave = GpgHome::new();
    dave.make_key("Dave <dave@example.org>", "ed25519", "cv25519", "encr");
    let mail = format!(
        "From: Dave <dave@example.org>\r\nTo: user@example.com\r\nSubject: Hi\r\nMessage-ID: <hi@example.org>\r\n{}\r\n\r\nHi.\r\n",
        autocrypt_header("dave@example.org", &dave.run(&["--export"], None))
    );
    send(
        b_serve.addr("inbound"),
        "dave@example.org",
        &["user@example.com"],
        mail.as_bytes(),
    )
    .await;
    b.wait_for_list(&b_serve, |entries| {
        entries.iter().any(|e| e["address"] == "dave@example.org")
    });
    let on_a = a.list_json();
    let on_b = b.list_json();
    assert_eq!(
        entry(&on_a, "dave@example.org"),
        entry(&on_b, "dave@example.org")
    );
    assert_eq!(entry(&on_a, "dave@example.org")["source"], "mailflow");
    send(
        a_serve.addr("outbound"),
        "user@example.com",
        &["dave@example.org"],
        &outgoing("dave@example.org", "to-dave@example.com", "For Dave."),
    )
    .await;
    let relayed = a.delivered_with("out", "to-dave@example.com");
    assert!(encrypted(&relayed, "For Dave."), "{relayed}");

    // Deleted through A's running server: B no longer has it.
    a.keys_expect(&["delete", "carol@example.org"], 0);
    assert!(
        b.list_json()
            .iter()
            .all(|e| e["address"] != "carol@example.org")
    );
    send(
        b_serve.addr("outbound"),
        "user@example.com",
        &["carol@example.org"],
        &outgoing("carol@example.org", "again@example.com", "In clear now."),
    )
    .await;
    let relayed = b.delivered_with("out", "again@example.com");
    assert!(relayed.contains("In clear now."), "{relayed}");
    drop((a_serve, b_serve));
}

#[test]
fn a_member_with_another_key_encryption_key_refuses_to_start() {
    let pg = PgServer::start();
    let a = member(&pg, &[1u8; 32]);
    let b = member(&pg, &[2u8; 32]);
    let a_serve = Serve::start(&a);
    let out = run_with_timeout(
        Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&b.config)
            .current_dir(b.dir.path()),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("key-encryption key"),
        "{}",
        text(&out.stderr)
    );
    drop(a_serve);
}

#[test]
fn check_says_whether_the_shared_store_answers_and_its_schema_version() {
    let pg = PgServer::start();
    let a = member(&pg, &[1u8; 32]);
    let out = a.sealgate_expect("check", &[], 0);
    assert!(
        text(&out.stdout).contains("[store] postgres: answers; no schema yet"),
        "{}",
        text(&out.stdout)
    );
    a.keys_expect(&["list"], 0);
    let out = a.sealgate_expect("check", &[], 0);
    let version = sealgate::store::postgres::SCHEMA_VERSION;
    assert!(
        text(&out.stdout).contains(&format!(
            "[store] postgres: answers; schema version {version}"
        )),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        pg.sql("SELECT version FROM sealgate_schema"),
        version.to_string()
    );
    pg.stop();
    let out = a.sealgate_expect("check", &[], 0);
    assert!(
        text(&out.stdout).contains("[store] postgres: warning:")
            && text(&out.stdout).contains("unavailable"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_members_spooled_copies_are_delivered_once_by_the_others() {
    let pg = PgServer::start();
    // The next hop takes one recipient now and, slowly, refuses the other for the
    // moment: the retrier's passes take long enough to be caught holding claims.
    let sink = Sink::start().await;
    let refusing = sink.refuse_for_now("later@example.org", Duration::from_millis(100));
    let kek = [9u8; 32];
    let a = relaying_member(&pg, &sink, &kek);
    let mut a_serve = Serve::start(&a);
    const MESSAGES: usize = 12;
    let ids: Vec<String> = (0..MESSAGES).map(|n| format!("m{n}@example.com")).collect();
    send_now_and_later(a_serve.addr("outbound"), &ids).await;
    assert_eq!(pg.sql("SELECT count(*) FROM spool"), MESSAGES.to_string());

    // A dies while its retrier holds claims on spooled copies.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pg.sql("SELECT count(*) FROM spool WHERE lease_owner IS NOT NULL") == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "A never claimed: {}",
            a_serve.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    a_serve.kill9();
    refusing.store(false, Ordering::SeqCst);

    // Two live members take over, side by side.
    let b = relaying_member(&pg, &sink, &kek);
    let c = relaying_member(&pg, &sink, &kek);
    let (b_serve, c_serve) = (Serve::start(&b), Serve::start(&c));
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while pg.sql("SELECT count(*) FROM spool") != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered: {}\nB: {}\nC: {}",
            pg.sql("SELECT id, lease_owner, meta FROM spool"),
            b_serve.log(),
            c_serve.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = b.sealgate_expect("cluster", &["status"], 0);
    let status = text(&status.stdout);
    assert_eq!(status.matches("\talive").count(), 2, "{status}");
    assert_eq!(status.matches("\tdead").count(), 1, "{status}");
    assert!(status.contains("spool: 0 copies"), "{status}");
    drop((b_serve, c_serve));

    // Every later@ copy arrived exactly once; every now@ copy once, from A.
    let received = sink.received();
    for n in 0..MESSAGES {
        let id = format!("<m{n}@example.com>");
        let later = received
            .iter()
            .filter(|r| r.recipients.contains(&"later@example.org".to_string()))
            .filter(|r| message_id(&r.data) == id)
            .count();
        assert_eq!(later, 1, "{id} to later@");
        let now = received
            .iter()
            .filter(|r| r.recipients.contains(&"now@example.org".to_string()))
            .filter(|r| message_id(&r.data) == id)
            .count();
        assert_eq!(now, 1, "{id} to now@");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_under_load_loses_and_duplicates_nothing() {
    let pg = PgServer::start();
    let sink = Sink::start().await;
    // later@ is refused for now: each message leaves a copy to hold while the database
    // comes and goes.
    let refusing = sink.refuse_for_now("later@example.org", Duration::from_millis(0));
    let a = relaying_member(&pg, &sink, &[3u8; 32]);
    let a_serve = Serve::start(&a);
    let addr = a_serve.addr("outbound");

    // A client that sends MESSAGES messages one after the other and, as an MTA does,
    // sends a message again after a 4xx, until it gets 250.
    const MESSAGES: usize = 40;
    let sender = tokio::spawn(async move {
        let mut deferred = 0;
        for n in 0..MESSAGES {
            let message = outgoing("later@example.org", &format!("m{n}@example.com"), "Load.");
            loop {
                let mut client = Client::connect(addr).await;
                let reply = client
                    .send_mail(
                        "user@example.com",
                        &["now@example.org", "later@example.org"],
                        &message,
                    )
                    .await;
                client.quit().await;
                match reply.code {
                    250 => break,
                    400..=499 => {
                        deferred += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ => panic!("m{n}: {reply:?}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        deferred
    });
    // The database goes away in the middle of the load, and comes back.
    tokio::time::sleep(Duration::from_millis(400)).await;
    pg.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.restart();
    let deferred = sender.await.unwrap();

    refusing.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sink.received().len() < 2 * MESSAGES {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} copies; spool: {}\n{}",
            sink.received().len(),
            2 * MESSAGES,
            pg.sql("SELECT id, lease_owner, meta FROM spool"),
            a_serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few more retrier passes: anything delivered twice would show now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = sink.received();
    for n in 0..MESSAGES {
        let id = format!("<m{n}@example.com>");
        for rcpt in ["now@example.org", "later@example.org"] {
            let copies = received
                .iter()
                .filter(|r| r.recipients.contains(&rcpt.to_string()))
                .filter(|r| message_id(&r.data) == id)
                .count();
            assert_eq!(
                copies,
                1,
                "{id} to {rcpt} ({deferred} deferrals)\n{}",
                a_serve.log()
            );
        }
    }
    let log = a_serve.log();
    // While the database was away, copies were held in the member's own spool.
    assert!(log.contains("this member holds them"), "{log}");
    drop(a_serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_gateway_migrates_into_the_cluster_with_its_keys_and_spool() {
    let pg = PgServer::start();
    let sink = Sink::start().await;
    let refusing = sink.refuse_for_now("later@example.org", Duration::from_millis(0));
    // A member's config without its [store] section: a gateway on sled.
    let gateway = relaying_member(&pg, &sink, &[5u8; 32]);
    let clustered = std::fs::read_to_string(&gateway.config).unwrap();
    let alone = clustered[..clustered.find("[store]").unwrap()].to_string();
    std::fs::write(&gateway.config, &alone).unwrap();

    let carol = GpgHome::new();
    carol.make_key("Carol <carol@example.org>", "ed25519", "cv25519", "encr");
    let file = gateway.file("carol.asc", carol.run(&["--armor", "--export"], None));
    gateway.keys_expect(&["import", path_str(&file)], 0);
    let user = GpgHome::new();
    let (_, sub) = user.make_key("User <user@example.com>", "ed25519", "cv25519", "encr");
    let file = gateway.file("user.asc", user.sckm_export(&sub));
    gateway.keys_expect(&["import-sckm", path_str(&file)], 0);
    let before = gateway.list_json();
    gateway.sealgate_expect("org", &["init"], 0);
    let org_key = gateway.sealgate_expect("org", &["export"], 0).stdout;
    let transport = gateway.sealgate_expect("transfer", &["cert"], 0).stdout;

    let mut serve = Serve::start(&gateway);
    send_now_and_later(serve.addr("outbound"), &["moved@example.com".to_string()]).await;
    assert_eq!(serve.sigterm(), Some(0), "{}", serve.log());

    std::fs::write(&gateway.config, &clustered).unwrap();
    let out = gateway.sealgate_expect(
        "store",
        &["migrate", "--from", "sled", "--to", "postgres"],
        0,
    );
    let said = text(&out.stdout);
    assert!(
        said.contains("copied 2 key cache entries (1 with SCKM secrets)")
            && said.contains("moved 1 spooled copies"),
        "{said}"
    );
    assert!(
        said.contains("copied the organization's keys")
            && said.contains("copied the transport certificate"),
        "{said}"
    );
    assert_eq!(
        gateway.list_json(),
        before,
        "every entry and time as it was"
    );
    assert_eq!(
        gateway.sealgate_expect("org", &["export"], 0).stdout,
        org_key
    );
    assert_eq!(
        gateway.sealgate_expect("transfer", &["cert"], 0).stdout,
        transport
    );
    assert_eq!(pg.sql("SELECT count(*) FROM spool"), "1");

    refusing.store(false, Ordering::SeqCst);
    let serve = Serve::start(&gateway);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pg.sql("SELECT count(*) FROM spool") != "0" {
        assert!(std::time::Instant::now() < deadline, "{}", serve.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let later = sink
        .received()
        .iter()
        .filter(|r| r.recipients.contains(&"later@example.org".to_string()))
        .count();
    assert_eq!(later, 1);
    drop(serve);
}

#[test]
fn the_members_are_one_gateway_to_their_transfer_peers() {
    let pg = PgServer::start();
    let kek = [4u8; 32];
    let (a, b) = (member(&pg, &kek), member(&pg, &kek));
    let cluster_cert = a.sealgate_expect("transfer", &["cert"], 0).stdout;
    assert_eq!(
        b.sealgate_expect("transfer", &["cert"], 0).stdout,
        cluster_cert,
        "one transport certificate for the cluster"
    );

    // A gateway of its own, on sled, sends Carol's key to the cluster.
    let peer = Mailroom::new();
    let carol = GpgHome::new();
    carol.make_key("Carol <carol@example.org>", "ed25519", "cv25519", "encr");
    let file = peer.file("carol.asc", carol.run(&["--armor", "--export"], None));
    peer.keys_expect(&["import", path_str(&file)], 0);
    let to_cluster = peer.file("cluster.pem", &cluster_cert);
    peer.sealgate_expect(
        "transfer",
        &["trust", path_str(&to_cluster), "--name", "cluster"],
        0,
    );
    let peer_cert = a.file(
        "peer.pem",
        peer.sealgate_expect("transfer", &["cert"], 0).stdout,
    );
    // Trusted on A; the bundle is imported on B.
    a.sealgate_expect(
        "transfer",
        &["trust", path_str(&peer_cert), "--name", "site"],
        0,
    );
    assert!(text(&b.sealgate_expect("transfer", &["peers"], 0).stdout).contains("site"));
    let bundle = peer.keys_expect(&["export", "--to", "cluster"], 0).stdout;
    let bundle = b.file("bundle.pem", bundle);
    let out = b.keys_expect(&["import-bundle", path_str(&bundle)], 0);
    assert!(
        text(&out.stdout).contains("bundle 1 from site"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        entry(&a.list_json(), "carol@example.org")["source"],
        "admin"
    );
    // The same bundle on A is a replay: the cluster remembers it.
    let again = a.file("bundle.pem", std::fs::read(&bundle).unwrap());
    let out = a.keys_expect(&["import-bundle", path_str(&again)], 1);
    assert!(
        text(&out.stderr).contains("replayed"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_members_share_one_organization_key_and_certificate() {
    let pg = PgServer::start();
    let kek = [6u8; 32];
    let (a, b) = (member(&pg, &kek), member(&pg, &kek));
    a.sealgate_expect("org", &["init"], 0);
    a.sealgate_expect(
        "org",
        &[
            "cert",
            "init",
            "--subject",
            "CN=Example Org CA,O=Example Org",
        ],
        0,
    );
    let on_a = a.sealgate_expect("org", &["export"], 0).stdout;
    assert!(
        text(&on_a).contains("BEGIN PGP PUBLIC KEY BLOCK"),
        "{}",
        text(&on_a)
    );
    assert_eq!(b.sealgate_expect("org", &["export"], 0).stdout, on_a);
    // B issues a CRL with the CA made on A (its key opens with the shared KEK), and the
    // numbers go on across members.
    let first = b.sealgate_expect("org", &["cert", "crl"], 0).stdout;
    let second = a.sealgate_expect("org", &["cert", "crl"], 0).stdout;
    let number = |crl: &[u8]| {
        let crl = a.file("crl.pem", crl);
        text(&support::keys::openssl(&[
            "crl",
            "-noout",
            "-crlnumber",
            "-in",
            path_str(&crl),
        ]))
    };
    assert_ne!(number(&first), number(&second), "{}", number(&first));
}

#[tokio::test]
async fn one_member_leads_the_chores_and_the_next_takes_over_when_it_dies() {
    use sealgate::cluster::Membership;
    let pg = PgServer::start();
    let config = sealgate::config::Config::parse(
        &format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{}\"\nmember_timeout = \"3s\"\n",
            pg.default_url()
        ),
        std::path::Path::new("sealgate.toml"),
    )
    .unwrap();
    let shared = sealgate::store::postgres::Postgres::connect(&config.store).unwrap();
    let timeout = config.store.member_timeout.0;
    let first = Membership::join(shared.clone(), "first", "none", timeout).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = Membership::join(shared.clone(), "second", "none", timeout).unwrap();
    assert!(first.leads().await, "the member that started first leads");
    assert!(!second.leads().await);
    // The first stops writing heartbeats; the second goes on, and leads once the first
    // counts as dead.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        second.beat(None).await.unwrap();
    }
    assert!(second.leads().await);
    assert!(!first.leads().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_503_while_the_shared_store_is_away() {
    let pg = PgServer::start();
    let a = member_with(&pg, &[1u8; 32], "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let serve = Serve::start(&a);
    let metrics = serve.addr("metrics");
    assert_eq!(
        support::http(metrics, "GET", "/healthz").await,
        (200, "ok\n".into())
    );
    pg.stop();
    let (status, body) = support::http(metrics, "GET", "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the shared store does not answer"), "{body}");
    // The metrics still answer: they are what an admin looks at in an outage.
    let (status, _) = support::http(metrics, "GET", "/metrics").await;
    assert_eq!(status, 200);
    pg.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if support::http(metrics, "GET", "/healthz").await.0 == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", serve.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_verbs_act_on_the_clusters_shared_spool() {
    let pg = PgServer::start();
    let sink = Sink::start().await;
    let refusing = sink.refuse_for_now("later@example.org", Duration::ZERO);
    let a = relaying_member(&pg, &sink, &[5u8; 32]);
    // Only the admin's verbs move the spool here: no retry of its own for an hour.
    let config = std::fs::read_to_string(&a.config)
        .unwrap()
        .replace("first_retry = \"200ms\"", "first_retry = \"1h\"")
        .replace("max_retry = \"500ms\"", "max_retry = \"2h\"");
    std::fs::write(&a.config, config).unwrap();
    let serve = Serve::start(&a);
    let ids = ["s1@example.com".to_string(), "s2@example.com".to_string()];
    send_now_and_later(serve.addr("outbound"), &ids).await;

    let out = a.sealgate_expect("spool", &["list", "--json"], 0);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let spool_id = |i: usize| listed[i]["id"].as_str().unwrap().to_string();
    let (first, second) = (spool_id(0), spool_id(1));
    assert!(
        first.starts_with('S') && second.starts_with('S'),
        "in the shared spool: {listed:?}"
    );
    assert_eq!(
        listed[0]["recipients"],
        serde_json::json!(["later@example.org"])
    );

    // Deleted: gone from the shared spool, and the sender told.
    let out = a.sealgate_expect("spool", &["delete", &first], 0);
    assert!(
        text(&out.stdout).contains("a DSN goes to <user@example.com>"),
        "{}",
        text(&out.stdout)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !sink
        .received()
        .iter()
        .any(|r| r.mail_from.is_empty() && r.recipients == ["user@example.com"])
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no DSN: {}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Retried at once once the next hop takes it.
    refusing.store(false, Ordering::SeqCst);
    let out = a.sealgate_expect("spool", &["retry", &second], 0);
    assert!(
        text(&out.stdout).contains(&format!("{second}: done")),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(pg.sql("SELECT count(*) FROM spool"), "0");
    let later = sink
        .received()
        .iter()
        .filter(|r| r.recipients == ["later@example.org"])
        .count();
    assert_eq!(later, 1, "only the copy not deleted went out");
    a.sealgate_expect("spool", &["show", &first], 1);
}
