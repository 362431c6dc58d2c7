//! Gateways on one shared PostgreSQL store (`[store] backend = "postgres"`), each test
//! with a private PostgreSQL instance of its own: a key imported or harvested on one
//! member is used by another with the same cache times, a delete on one is seen by all,
//! a member whose key-encryption key differs refuses to start, and `check` reports the
//! database.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use support::cli::{BIN, Mailroom, Serve, entry, path_str, run_with_timeout, send, text};
use support::keys::{GpgHome, autocrypt_header};
use support::postgres::PgServer;

/// A member: its own config and data_dir, the shared store, and `kek` as its
/// key-encryption key (every member of a cluster needs the same one).
fn member(pg: &PgServer, kek: &[u8; 32]) -> Mailroom {
    let room = Mailroom::with(&format!(
        "[keys]\nencrypt_to_mailflow_keys = true\n\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\n",
        pg.default_url()
    ));
    std::fs::create_dir_all(&room.data_dir).unwrap();
    std::fs::set_permissions(&room.data_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = room.data_dir.join("secret.key");
    std::fs::write(&path, kek).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    room
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
    assert!(
        text(&out.stdout).contains("[store] postgres: answers; schema version 1"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(pg.sql("SELECT version FROM sealgate_schema"), "1");
    pg.stop();
    let out = a.sealgate_expect("check", &[], 0);
    assert!(
        text(&out.stdout).contains("[store] postgres: warning:")
            && text(&out.stdout).contains("unavailable"),
        "{}",
        text(&out.stdout)
    );
}
