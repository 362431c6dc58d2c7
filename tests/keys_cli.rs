//! `sealgate keys ...` as admins and scripts run it: the real binary as a process, with
//! a temp config, keys made by `gpg` and `openssl` at test time; first with no server,
//! then while `sealgate serve` holds the database (the CLI goes through its admin
//! socket).

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::cli::{Serve, Setup, entry, path_str, text};
use support::keys::{SmimeCert, pgp_key};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const BOB: &str = "Bob <Bob@Example.ORG>";
const ENCRYPT: &str = "digitalSignature,keyEncipherment";

/// A temp dir with a config file whose data_dir is inside it.
fn setup() -> Setup {
    Setup::new(
        |dir| {
            let next_hop = format!("dir:{}", dir.join("out").display());
            support::config_text(&dir.join("data"), &next_hop, "")
        },
        Duration::from_secs(20),
    )
}

/// The keys every test imports, made once per test: an OpenPGP cert (armored), an S/MIME
/// certificate as PEM and another as DER.
struct Keys {
    pgp: PathBuf,
    pgp_fingerprint: String,
    pem: PathBuf,
    pem_fingerprint: String,
    der: PathBuf,
    der_fingerprint: String,
    /// Kept for their temp dirs.
    _certs: (SmimeCert, SmimeCert),
}

fn keys(setup: &Setup) -> Keys {
    let bob = pgp_key(BOB);
    let carol = SmimeCert::openssl("Carol@Example.NET", ENCRYPT);
    let dave = SmimeCert::openssl("dave@example.net", ENCRYPT);
    Keys {
        pgp: setup.file("bob.asc", &bob.armored),
        pgp_fingerprint: bob.fingerprint.clone(),
        pem: carol.cert_path(),
        pem_fingerprint: carol.fingerprint(),
        der: dave.der_path(),
        der_fingerprint: dave.fingerprint(),
        _certs: (carol, dave),
    }
}

/// Checks one `keys list --json` element of an imported key, field by field and type
/// by type, as INTERFACE.md lists them.
fn assert_admin_entry(entry: &Value, address: &str, kind: &str, fingerprint: &str) {
    let object = entry.as_object().expect("each element is an object");
    assert_eq!(object["address"], Value::from(address), "{entry:#}");
    assert_eq!(address, address.to_lowercase());
    assert_eq!(object["kind"], Value::from(kind), "{entry:#}");
    let fpr = object["fingerprint"]
        .as_str()
        .expect("fingerprint is a string");
    assert!(
        !fpr.is_empty()
            && fpr
                .chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
        "not upper-case hex: {fpr}"
    );
    assert_eq!(fpr, fingerprint, "{entry:#}");
    assert_eq!(object["source"], Value::from("admin"), "{entry:#}");
    let added = object["added"].as_str().expect("added is a string");
    let added = OffsetDateTime::parse(added, &Rfc3339)
        .unwrap_or_else(|e| panic!("added {added:?} is not RFC 3339: {e}"));
    assert!(added.offset().is_utc(), "{entry:#}");
    let age = OffsetDateTime::now_utc() - added;
    assert!(
        age >= -time::Duration::seconds(5) && age < time::Duration::minutes(5),
        "{entry:#}"
    );
    assert_eq!(
        object["expires"],
        Value::Null,
        "admin keys never expire: {entry:#}"
    );
    assert_eq!(object["can_decrypt"], Value::Bool(false), "{entry:#}");
}

/// The human `keys list`: every address on a row of its own (the indented lines under a
/// row describe its key), and the table aligned (each entry's address and fingerprint
/// start in the same column on every row).
fn assert_aligned_table(stdout: &str, rows: &[(&str, &str)]) {
    let mut columns = Vec::new();
    for (address, fingerprint) in rows {
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| !l.starts_with(' ') && l.contains(address))
            .collect();
        assert_eq!(lines.len(), 1, "{address}:\n{stdout}");
        let line = lines[0];
        let fpr = line
            .find(fingerprint)
            .unwrap_or_else(|| panic!("no {fingerprint} on the {address} line:\n{stdout}"));
        columns.push((line.find(address).unwrap(), fpr));
    }
    assert!(
        columns.windows(2).all(|w| w[0] == w[1]),
        "columns {columns:?} are not aligned:\n{stdout}"
    );
}

/// `keys list --json` and `keys list` show the three keys of `keys`, all as imported by
/// an admin, and nothing else.
fn assert_lists_the_three_keys(setup: &Setup, keys: &Keys) {
    let entries = setup.list_json();
    assert_eq!(entries.len(), 3, "{entries:#?}");
    assert_admin_entry(
        entry(&entries, "bob@example.org"),
        "bob@example.org",
        "pgp",
        &keys.pgp_fingerprint,
    );
    assert_admin_entry(
        entry(&entries, "carol@example.net"),
        "carol@example.net",
        "smime",
        &keys.pem_fingerprint,
    );
    assert_admin_entry(
        entry(&entries, "dave@example.net"),
        "dave@example.net",
        "smime",
        &keys.der_fingerprint,
    );

    let out = setup.keys_expect(&["list"], 0);
    assert_aligned_table(
        &text(&out.stdout),
        &[
            ("bob@example.org", &keys.pgp_fingerprint),
            ("carol@example.net", &keys.pem_fingerprint),
            ("dave@example.net", &keys.der_fingerprint),
        ],
    );
}

#[test]
fn import_list_delete_and_purge_without_a_server() {
    let setup = setup();
    let keys = keys(&setup);

    setup.keys_expect(&["import", path_str(&keys.pgp)], 0);
    setup.keys_expect(&["import", path_str(&keys.pem), path_str(&keys.der)], 0);

    assert_lists_the_three_keys(&setup, &keys);

    // Importing a key again refreshes its entry instead of adding one.
    setup.keys_expect(&["import", path_str(&keys.pgp)], 0);
    assert_eq!(setup.list_json().len(), 3);

    setup.keys_expect(&["delete", "bob@example.org"], 0);
    setup.keys_expect(&["delete", &keys.pem_fingerprint], 0);
    let entries = setup.list_json();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    entry(&entries, "dave@example.net");

    // Nothing left to delete: exit 1.
    setup.keys_expect(&["delete", "bob@example.org"], 1);
    setup.keys_expect(&["delete", &keys.pem_fingerprint], 1);
    setup.keys_expect(&["delete", "nobody@example.com"], 1);

    // Admin keys never expire, so purge removes nothing.
    setup.keys_expect(&["purge"], 0);
    assert_eq!(setup.list_json().len(), 1);
}

#[test]
fn refused_imports_exit_1_name_the_file_and_store_nothing() {
    let setup = setup();
    let garbage = setup.file("garbage.asc", "this is not a key\n".repeat(20));
    let noise: Vec<u8> = (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let binary_garbage = setup.file("noise.bin", &noise);
    let secret = setup.file("secret.asc", &pgp_key(BOB).secret_armored);
    let signing_only = SmimeCert::openssl("erin@example.net", "digitalSignature");

    // A certificate with its private key in one PEM file is an SCKM key, not a public one.
    let frank = SmimeCert::openssl("frank@example.net", ENCRYPT);
    let mut with_key = frank.pem.clone();
    with_key.extend(std::fs::read(frank.key_path()).unwrap());
    let with_key = setup.file("frank-with-key.pem", with_key);

    for (file, reason) in [
        (garbage, ""),
        (binary_garbage, ""),
        (secret, "secret"),
        (signing_only.cert_path(), "sign"),
        (signing_only.der_path(), "sign"),
        (with_key, "private key"),
    ] {
        let out = setup.keys_expect(&["import", path_str(&file)], 1);
        let stderr = text(&out.stderr);
        assert!(stderr.contains(path_str(&file)), "{stderr}");
        assert!(stderr.contains(reason), "no reason {reason:?}: {stderr}");
        assert!(
            setup.list_json().is_empty(),
            "{} stored something",
            file.display()
        );
    }

    // A file that does not exist is named too.
    let missing = setup.dir.path().join("missing.asc");
    let out = setup.keys_expect(&["import", path_str(&missing)], 1);
    assert!(text(&out.stderr).contains(path_str(&missing)));
}

/// RFC 7468 lets explanatory text surround PEM blocks; `openssl x509 -text` writes a
/// dump first, and such files were once refused as "not an OpenPGP key".
#[test]
fn pem_certificates_with_explanatory_text_are_imported() {
    let setup = setup();
    let carol = SmimeCert::openssl("carol@example.net", ENCRYPT);
    let dave = SmimeCert::openssl("dave@example.net", ENCRYPT);
    let dump = support::keys::run_tool(
        Command::new("openssl")
            .args(["x509", "-text", "-in"])
            .arg(carol.cert_path()),
        None,
    );
    assert!(!dump.starts_with(b"-----BEGIN"), "{}", text(&dump));
    let dumped = setup.file("carol-text.pem", &dump);
    setup.keys_expect(&["import", path_str(&dumped)], 0);

    // Two certificates with lines between them, as `openssl s_client -showcerts` writes.
    let mut chain = b"subject=CN=Carol\nissuer=CN=Carol\n".to_vec();
    chain.extend(&carol.pem);
    chain.extend(b"subject=CN=Dave\n---\n");
    chain.extend(&dave.pem);
    let chain = setup.file("chain.pem", chain);
    setup.keys_expect(&["import", path_str(&chain)], 0);

    let entries = setup.list_json();
    assert_eq!(entries.len(), 2, "{entries:#?}");
    assert_admin_entry(
        entry(&entries, "carol@example.net"),
        "carol@example.net",
        "smime",
        &carol.fingerprint(),
    );
    assert_admin_entry(
        entry(&entries, "dave@example.net"),
        "dave@example.net",
        "smime",
        &dave.fingerprint(),
    );
}

#[test]
fn keys_commands_reach_a_running_server_through_its_admin_socket() {
    use std::os::unix::fs::PermissionsExt;

    let setup = setup();
    let keys = keys(&setup);
    let mut serve = Serve::start(&setup);
    let socket = setup.data_dir.join("admin.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "admin socket mode {mode:o}");

    // The server holds sled's lock: each of these works only through the socket.
    setup.keys_expect(&["import", path_str(&keys.pgp), path_str(&keys.pem)], 0);
    setup.keys_expect(&["import", path_str(&keys.der)], 0);
    assert_lists_the_three_keys(&setup, &keys);

    setup.keys_expect(&["delete", "bob@example.org"], 0);
    setup.keys_expect(&["delete", &keys.der_fingerprint], 0);
    setup.keys_expect(&["delete", "bob@example.org"], 1);
    setup.keys_expect(&["purge"], 0);
    let garbage = setup.file("garbage.asc", "not a key\n");
    let out = setup.keys_expect(&["import", path_str(&garbage)], 1);
    assert!(text(&out.stderr).contains(path_str(&garbage)));
    let entries = setup.list_json();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    entry(&entries, "carol@example.net");

    assert_eq!(serve.sigterm(), Some(0), "{}", serve.log());

    // What the server stored is on disk: the CLI now opens the database itself.
    let entries = setup.list_json();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_admin_entry(
        entry(&entries, "carol@example.net"),
        "carol@example.net",
        "smime",
        &keys.pem_fingerprint,
    );
}

#[test]
fn sealgate_config_is_honoured_and_an_empty_or_new_cache_says_which_it_is() {
    let setup = setup();
    let key = keys(&setup);
    let bare = tempfile::tempdir().unwrap();
    let sealgate = |args: &[&str]| {
        Command::new(support::cli::BIN)
            .args(args)
            .current_dir(bare.path())
            .env(sealgate::config::CONFIG_ENV, &setup.config)
            .output()
            .unwrap()
    };
    // No --config, and no sealgate.toml here: the file SEALGATE_CONFIG names is used.
    let out = sealgate(&["check"]);
    assert!(
        text(&out.stdout).contains(path_str(&setup.config)),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = sealgate(&["keys", "import", path_str(&key.pgp)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let data_dir = setup.data_dir.display().to_string();
    assert!(
        text(&out.stderr).contains("making a new one") && text(&out.stderr).contains(&data_dir),
        "{}",
        text(&out.stderr)
    );
    assert!(
        setup.data_dir.join("db").exists(),
        "the configured data_dir was used"
    );

    // An empty listing names the data_dir and config it looked at.
    let out = sealgate(&["keys", "list", "nobody@example.net"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("no key in the cache matches")
            && stdout.contains(&data_dir)
            && stdout.contains(path_str(&setup.config)),
        "{stdout}"
    );
}
