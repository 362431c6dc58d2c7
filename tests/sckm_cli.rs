//! `sealgate keys import-sckm` as an admin runs it: the real binary as a process with a
//! temp config, and SCKM exports made at test time by `gpg --export-secret-subkeys` and
//! `openssl` (PEM and PKCS#12). What is accepted and listed, what is refused (and that a
//! refused file stores nothing), passphrase-protected exports, the secret sealed at rest,
//! a key reset with the old key still decrypting through `sealgate serve`, and a legacy
//! (SHA-1) GnuPG 1.4 key that decrypts but is never encrypted to.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sealgate::keys::admin::{self, Request};
use sequoia_openpgp as openpgp;
use serde_json::Value;
use support::cli::{Mailroom, Serve, entries_for, entry, path_str, send, table_line, text};
use support::keys::{GpgHome, SmimeCert, pgp_mime, run_tool};
use support::{Client, Sink, split_received};

// ---------------------------------------------------------------------------------------
// The binary

/// Checks the fields of an SCKM entry in `keys list --json`.
fn assert_sckm_entry(entry: &Value, kind: &str, fingerprint: &str) {
    assert_eq!(entry["kind"], Value::from(kind), "{entry:#}");
    assert_eq!(entry["fingerprint"], Value::from(fingerprint), "{entry:#}");
    assert_eq!(entry["source"], Value::from("sckm"), "{entry:#}");
    assert_eq!(entry["can_decrypt"], Value::Bool(true), "{entry:#}");
    assert_eq!(
        entry["expires"],
        Value::Null,
        "SCKM keys never leave the cache: {entry:#}"
    );
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A MIME entity with protected headers, as a client encrypts it.
fn inner(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"\r\nSubject: {subject}\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------
// Accepted

#[test]
fn encryption_subkey_export_is_imported_and_its_secret_sealed_at_rest() {
    use std::os::unix::fs::PermissionsExt;

    let setup = Mailroom::new();
    let user = GpgHome::new();
    let (primary, subkey) = user.make_key("User <user@example.com>", "rsa3072", "rsa3072", "encr");
    let export = user.sckm_export(&subkey);
    let file = setup.file("user-sckm.asc", &export);

    let out = setup.keys_expect(&["import-sckm", path_str(&file)], 0);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("user@example.com") && stdout.contains(&primary),
        "the import names the address and key: {stdout}"
    );

    let entries = setup.list_json();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let user_entry = entry(&entries, "user@example.com");
    assert_sckm_entry(user_entry, "pgp", &primary);
    assert_eq!(user_entry["legacy"], Value::Bool(false), "{user_entry:#}");
    assert_eq!(user_entry["retired"], Value::Bool(false), "{user_entry:#}");
    let table = setup.list_table();
    let line = table_line(&table, &primary);
    assert!(line.contains("sckm") && line.contains("decrypt"), "{table}");

    // The KEK: data_dir/secret.key, 32 bytes, mode 0600.
    let kek = setup.data_dir.join("secret.key");
    let metadata = std::fs::metadata(&kek).expect("the KEK file exists");
    assert_eq!(
        metadata.permissions().mode() & 0o777,
        0o600,
        "KEK mode {:o}",
        metadata.permissions().mode()
    );
    assert_eq!(metadata.len(), 32);

    // The secret is not in the store in clear: not the export as it is, not its armor
    // lines, and not the subkey's secret RSA numbers themselves.
    let cert = {
        use openpgp::parse::Parse;
        openpgp::Cert::from_bytes(&export).unwrap()
    };
    let secret_numbers: Vec<Vec<u8>> = cert
        .keys()
        .subkeys()
        .secret()
        .flat_map(|ka| match ka.key().optional_secret() {
            Some(openpgp::packet::key::SecretKeyMaterial::Unencrypted(u)) => u.map(|m| match m {
                openpgp::crypto::mpi::SecretKeyMaterial::RSA { d, p, q, .. } => {
                    vec![d.value().to_vec(), p.value().to_vec(), q.value().to_vec()]
                }
                other => panic!("an RSA subkey, not {other:?}"),
            }),
            other => panic!("an unprotected secret subkey, not {other:?}"),
        })
        .collect();
    assert_eq!(secret_numbers.len(), 3);
    assert!(secret_numbers.iter().all(|n| n.len() >= 128));
    // The control: the subkey's public modulus is stored as it is, so a number in
    // clear would be found by this search.
    let modulus = match cert.keys().subkeys().next().unwrap().key().mpis() {
        openpgp::crypto::mpi::PublicKey::RSA { n, .. } => n.value().to_vec(),
        other => panic!("an RSA subkey, not {other:?}"),
    };
    let armor_lines: Vec<&str> = std::str::from_utf8(&export)
        .unwrap()
        .lines()
        .filter(|l| l.len() >= 60 && !l.starts_with("-----"))
        .collect();
    assert!(armor_lines.len() > 10);
    let files = files_under(&setup.data_dir);
    assert!(
        files
            .iter()
            .any(|f| contains(&std::fs::read(f).unwrap(), &modulus)),
        "the public modulus is in the store: {files:?}"
    );
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !contains(&bytes, b"-----BEGIN PGP PRIVATE KEY"),
            "{}",
            path.display()
        );
        assert!(
            !armor_lines.iter().any(|l| contains(&bytes, l.as_bytes())),
            "{} holds the armored export",
            path.display()
        );
        for number in &secret_numbers {
            assert!(
                !contains(&bytes, number),
                "{} holds a secret RSA number in clear",
                path.display()
            );
        }
    }
}

#[test]
fn passphrase_protected_exports_need_the_passphrase_file() {
    let setup = Mailroom::new();
    let user = GpgHome::with_passphrase("pw");
    let (primary, subkey) = user.make_key("Pat <pat@example.com>", "ed25519", "cv25519", "encr");
    let export = user.sckm_export(&subkey);
    let file = setup.file("pat-sckm.asc", &export);

    let out = setup.keys_expect(&["import-sckm", path_str(&file)], 1);
    let stderr = text(&out.stderr);
    assert!(stderr.contains(path_str(&file)), "{stderr}");
    assert!(stderr.contains("--passphrase-file"), "{stderr}");
    assert!(setup.list_json().is_empty());

    let wrong = setup.file("wrong.txt", "not-pw\n");
    let out = setup.keys_expect(
        &[
            "import-sckm",
            "--passphrase-file",
            path_str(&wrong),
            path_str(&file),
        ],
        1,
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(path_str(&file)) && stderr.contains("passphrase"),
        "{stderr}"
    );
    assert!(setup.list_json().is_empty());

    let right = setup.file("pw.txt", "pw\n");
    setup.keys_expect(
        &[
            "import-sckm",
            "--passphrase-file",
            path_str(&right),
            path_str(&file),
        ],
        0,
    );
    let entries = setup.list_json();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_sckm_entry(entry(&entries, "pat@example.com"), "pgp", &primary);
}

#[test]
fn smime_pem_and_pkcs12_are_imported() {
    let setup = Mailroom::new();
    let pem_user = SmimeCert::openssl("sam@example.com", "keyEncipherment");
    let mut pem = pem_user.pem.clone();
    pem.extend(std::fs::read(pem_user.key_path()).unwrap());
    let pem_file = setup.file("sam.pem", pem);

    let p12_user = SmimeCert::openssl("tess@example.com", "digitalSignature,keyEncipherment");
    let p12_file = setup.dir.path().join("tess.p12");
    run_tool(
        Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:pw", "-in"])
            .arg(p12_user.cert_path())
            .arg("-inkey")
            .arg(p12_user.key_path())
            .arg("-out")
            .arg(&p12_file),
        None,
    );
    let pass = setup.file("pw.txt", "pw\n");

    setup.keys_expect(&["import-sckm", path_str(&pem_file)], 0);
    // PKCS#12 is always under a password.
    let out = setup.keys_expect(&["import-sckm", path_str(&p12_file)], 1);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(path_str(&p12_file)) && stderr.contains("--passphrase-file"),
        "{stderr}"
    );
    setup.keys_expect(
        &[
            "import-sckm",
            "--passphrase-file",
            path_str(&pass),
            path_str(&p12_file),
        ],
        0,
    );

    let entries = setup.list_json();
    assert_eq!(entries.len(), 2, "{entries:#?}");
    let sam = entry(&entries, "sam@example.com");
    assert_eq!(sam["kind"], "smime", "{sam:#}");
    assert_eq!(sam["source"], "sckm", "{sam:#}");
    assert_eq!(sam["can_decrypt"], Value::Bool(true), "{sam:#}");
    assert_eq!(sam["fingerprint"], Value::from(pem_user.fingerprint()));
    let tess = entry(&entries, "tess@example.com");
    assert_eq!(tess["kind"], "smime", "{tess:#}");
    assert_eq!(tess["source"], "sckm", "{tess:#}");
    assert_eq!(tess["can_decrypt"], Value::Bool(true), "{tess:#}");
    assert_eq!(tess["fingerprint"], Value::from(p12_user.fingerprint()));
}

// ---------------------------------------------------------------------------------------
// Refused

#[test]
fn signing_secrets_and_garbage_are_refused_and_nothing_is_stored() {
    let setup = Mailroom::new();

    // A full export: the primary's secret is in it.
    let full = GpgHome::new();
    let (full_primary, full_subkey) =
        full.make_key("Full <full@example.com>", "ed25519", "cv25519", "encr");
    let full_export = full.run(&["--armor", "--export-secret-keys", &full_primary], None);
    let full_file = setup.file("full.asc", &full_export);

    // A key whose only subkey signs: its SCKM-style export holds a signing secret.
    let signer = GpgHome::new();
    let (signer_primary, signing_subkey) =
        signer.make_key("Signer <signer@example.com>", "ed25519", "ed25519", "sign");
    let signing_file = setup.file("signing.asc", signer.sckm_export(&signing_subkey));

    // An S/MIME certificate for signing only, with its key.
    let smime_signer = SmimeCert::openssl("smime-signer@example.com", "digitalSignature");
    let mut pem = smime_signer.pem.clone();
    pem.extend(std::fs::read(smime_signer.key_path()).unwrap());
    let smime_file = setup.file("smime-signing.pem", pem);

    let garbage = setup.file("garbage.asc", "this is not a key\n".repeat(20));

    // A good SCKM export and a full one in one file: the whole file is refused.
    let mut mixed = full.sckm_export(&full_subkey);
    mixed.extend_from_slice(&signer.sckm_export(&signing_subkey));
    let mixed_file = setup.file("mixed.asc", mixed);

    for (file, key, reason) in [
        (&full_file, full_primary.as_str(), "primary"),
        (&signing_file, signing_subkey.as_str(), "can sign"),
        (
            &smime_file,
            smime_signer.fingerprint().as_str(),
            "only digital signature",
        ),
        (&garbage, "", ""),
        (&mixed_file, signing_subkey.as_str(), "can sign"),
    ] {
        let out = setup.keys_expect(&["import-sckm", path_str(file)], 1);
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(path_str(file)),
            "the file is named: {stderr}"
        );
        assert!(stderr.contains(key), "the key {key} is named: {stderr}");
        assert!(stderr.contains(reason), "no reason {reason:?}: {stderr}");
        assert!(
            setup.list_json().is_empty(),
            "{} stored something",
            file.display()
        );
    }
    // The signing key's primary is named too: the admin knows whose key it was.
    let out = setup.keys_expect(&["import-sckm", path_str(&signing_file)], 1);
    assert!(text(&out.stderr).contains(&signer_primary));
}

// ---------------------------------------------------------------------------------------
// Reset, through `sealgate serve`

#[tokio::test]
async fn reset_keeps_the_old_key_for_decryption_until_it_is_deleted() {
    let setup = Mailroom::new();
    let old = GpgHome::new();
    let (old_fpr, old_sub) = old.make_key("User <user@example.com>", "ed25519", "cv25519", "encr");
    let new = GpgHome::new();
    let (new_fpr, new_sub) = new.make_key("User <user@example.com>", "ed25519", "cv25519", "encr");
    let bob = GpgHome::new();
    bob.make_key("Bob <bob@example.org>", "ed25519", "cv25519", "encr");

    // The old key is imported with no server running, the new one through the running
    // server's admin socket: both paths store the same way.
    let old_file = setup.file("old.asc", old.sckm_export(&old_sub));
    setup.keys_expect(&["import-sckm", path_str(&old_file)], 0);
    let bob_file = setup.file("bob.asc", bob.run(&["--armor", "--export"], None));
    setup.keys_expect(&["import", path_str(&bob_file)], 0);

    let mut serve = Serve::start(&setup);
    let new_file = setup.file("new.asc", new.sckm_export(&new_sub));
    setup.keys_expect(&["import-sckm", path_str(&new_file)], 0);

    let entries = setup.list_json();
    let user = entries_for(&entries, "user@example.com");
    assert_eq!(user.len(), 2, "both keys are listed: {entries:#?}");
    let old_entry = user.iter().find(|e| e["fingerprint"] == old_fpr.as_str());
    let new_entry = user.iter().find(|e| e["fingerprint"] == new_fpr.as_str());
    let (old_entry, new_entry) = (old_entry.unwrap(), new_entry.unwrap());
    assert_sckm_entry(old_entry, "pgp", &old_fpr);
    assert_sckm_entry(new_entry, "pgp", &new_fpr);
    assert_eq!(old_entry["retired"], Value::Bool(true), "{old_entry:#}");
    assert_eq!(new_entry["retired"], Value::Bool(false), "{new_entry:#}");
    let table = setup.list_table();
    assert!(
        table_line(&table, &old_fpr).contains("retired"),
        "the old key is flagged:\n{table}"
    );
    assert!(
        !table_line(&table, &new_fpr).contains("retired"),
        "the new key is not:\n{table}"
    );

    // Mail encrypted to the old key still opens, with the old key.
    let to_old = pgp_mime(
        "sender@example.org",
        "user@example.com",
        "old@example.org",
        &old.encrypt_to(
            "user@example.com",
            &inner("Old subject", "Sent to the old key."),
        ),
    );
    send(
        serve.addr("inbound"),
        "sender@example.org",
        &["user@example.com"],
        &to_old,
    )
    .await;
    // And mail encrypted to the new key opens with the new one.
    let to_new = pgp_mime(
        "sender@example.org",
        "user@example.com",
        "new@example.org",
        &new.encrypt_to(
            "user@example.com",
            &inner("New subject", "Sent to the new key."),
        ),
    );
    send(
        serve.addr("inbound"),
        "sender@example.org",
        &["user@example.com"],
        &to_new,
    )
    .await;
    let inbox = setup.delivered("in");
    assert_eq!(inbox.len(), 2, "{}", serve.log());
    let find = |id: &str| {
        inbox
            .iter()
            .map(|m| text(m))
            .find(|m| m.contains(id))
            .unwrap_or_else(|| panic!("no {id} delivered"))
    };
    let opened = find("Message-ID: <old@example.org>");
    assert!(
        opened.contains(&format!("X-Sealgate-Decrypted: pgp; key={old_fpr}\r\n")),
        "{opened}"
    );
    assert!(
        opened.contains("Sent to the old key.") && opened.contains("Subject: Old subject\r\n"),
        "{opened}"
    );
    assert!(!opened.contains("BEGIN PGP MESSAGE"), "{opened}");
    let opened = find("Message-ID: <new@example.org>");
    assert!(
        opened.contains(&format!("X-Sealgate-Decrypted: pgp; key={new_fpr}\r\n")),
        "{opened}"
    );
    assert!(opened.contains("Sent to the new key."), "{opened}");

    // Outbound encryption to others goes on as before.
    let outgoing = b"From: User <user@example.com>\r\nTo: bob@example.org\r\nSubject: Numbers\r\nMessage-ID: <out@example.com>\r\n\r\nFor Bob only.\r\n";
    send(
        serve.addr("outbound"),
        "user@example.com",
        &["bob@example.org"],
        outgoing,
    )
    .await;
    let outbox = setup.delivered("out");
    assert_eq!(outbox.len(), 1, "{}", serve.log());
    let sent = text(&outbox[0]);
    assert!(
        sent.contains("multipart/encrypted") && !sent.contains("For Bob only."),
        "{sent}"
    );
    let armor_start = sent.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let armor_end = sent.find("-----END PGP MESSAGE-----").unwrap() + 25;
    let plain = text(&bob.run(
        &["--decrypt"],
        Some(&sent.as_bytes()[armor_start..armor_end]),
    ));
    assert!(plain.contains("For Bob only."), "{plain}");

    // The admin removes the old key: only it goes.
    let out = setup.keys_expect(&["delete", &old_fpr], 0);
    assert!(
        text(&out.stdout).contains("deleted 1"),
        "{}",
        text(&out.stdout)
    );
    let entries = setup.list_json();
    let user = entries_for(&entries, "user@example.com");
    assert_eq!(user.len(), 1, "{entries:#?}");
    assert_sckm_entry(user[0], "pgp", &new_fpr);
    assert_eq!(user[0]["retired"], Value::Bool(false));
    assert_eq!(entries_for(&entries, "bob@example.org").len(), 1);

    // Mail to the old key now arrives as it was sent: not opened, not lost.
    let again = pgp_mime(
        "sender@example.org",
        "user@example.com",
        "old-again@example.org",
        &old.encrypt_to("user@example.com", &inner("Old subject", "Once more.")),
    );
    send(
        serve.addr("inbound"),
        "sender@example.org",
        &["user@example.com"],
        &again,
    )
    .await;
    let inbox = setup.delivered("in");
    let arrived = inbox
        .iter()
        .find(|m| text(m).contains("<old-again@example.org>"))
        .expect("delivered");
    let arrived = text(arrived);
    assert!(
        arrived.ends_with(&text(&again)) && !arrived.contains("X-Sealgate-Decrypted"),
        "{arrived}"
    );

    assert_eq!(serve.sigterm(), Some(0), "{}", serve.log());
}

// ---------------------------------------------------------------------------------------
// Legacy: GnuPG 1.4.11, SHA-1 self-signatures

const LEGACY_KEY: &str = "testdata/corpus/openpgp/gnupg-v1-4-11-001-decrypt.asc";
const LEGACY_ADDRESS: &str = "rsarsa@pgpkey.example.com";
const LEGACY_PRIMARY: &str = "8107E4DBCF7B7267103B397C8F652698C330A72A";
const LEGACY_SUBKEY: &str = "82728BB4D7548DFD7C1A0CE22325271F95BF86A1";

/// The SCKM form of the corpus's GnuPG 1.4.11 key, as its owner would make it: import
/// the full key (passphrase `test`), export the encryption subkey only. The export
/// stays under `test`.
fn legacy_sckm_export() -> Vec<u8> {
    let gpg = GpgHome::with_passphrase("test");
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join(LEGACY_KEY);
    gpg.run(&["--import", path_str(&key)], None);
    gpg.sckm_export(LEGACY_SUBKEY)
}

#[test]
fn legacy_sha1_key_imports_with_a_warning_for_decryption_only() {
    let setup = Mailroom::new();
    let file = setup.file("legacy.asc", legacy_sckm_export());
    let pass = setup.file("pass.txt", "test\n");
    let out = setup.keys_expect(
        &[
            "import-sckm",
            "--passphrase-file",
            path_str(&pass),
            path_str(&file),
        ],
        0,
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        said.contains("warning") && said.contains("legacy") && said.contains(LEGACY_PRIMARY),
        "{said}"
    );

    let entries = setup.list_json();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let legacy = entry(&entries, LEGACY_ADDRESS);
    assert_sckm_entry(legacy, "pgp", LEGACY_PRIMARY);
    assert_eq!(legacy["legacy"], Value::Bool(true), "{legacy:#}");
    let table = setup.list_table();
    let line = table_line(&table, LEGACY_PRIMARY);
    assert!(line.contains("legacy-sha1"), "{table}");
}

#[tokio::test]
async fn legacy_sha1_key_is_never_encrypted_to() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = support::start(&support::config_text(
        &dir.path().join("data"),
        &sink.addr.to_string(),
        "",
    ))
    .await;
    let legacy = dir.path().join("legacy.asc");
    std::fs::write(&legacy, legacy_sckm_export()).unwrap();
    // A current key for another external recipient: the control.
    let bob = GpgHome::new();
    bob.make_key("Bob <bob@example.org>", "ed25519", "cv25519", "encr");
    let bob_file = dir.path().join("bob.asc");
    std::fs::write(&bob_file, bob.run(&["--armor", "--export"], None)).unwrap();

    let response = support::admin_request(
        &gw.data_dir,
        Request::ImportSckm {
            files: vec![admin::File::read(&legacy).unwrap()],
            passphrase: Some("test".into()),
        },
    )
    .unwrap();
    assert!(!response.failed, "{:?}", response.messages);
    assert!(
        response.messages.iter().any(|m| m.contains("legacy")),
        "{:?}",
        response.messages
    );
    let response = support::admin_request(
        &gw.data_dir,
        Request::Import {
            files: vec![admin::File::read(&bob_file).unwrap()],
        },
    )
    .unwrap();
    assert!(!response.failed, "{:?}", response.messages);

    let message = format!(
        "From: Alice <alice@example.com>\r\nTo: {LEGACY_ADDRESS}, bob@example.org\r\nSubject: Hello\r\nMessage-ID: <legacy@example.com>\r\n\r\nNot for a SHA-1 key.\r\n"
    );
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "alice@example.com",
            &[LEGACY_ADDRESS, "bob@example.org"],
            message.as_bytes(),
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(2, Duration::from_secs(20)).await;
    let to_legacy = got
        .iter()
        .find(|r| r.recipients == [LEGACY_ADDRESS])
        .expect("the legacy key's owner gets a copy of their own");
    assert_eq!(
        split_received(&to_legacy.data).1,
        message.as_bytes(),
        "a legacy key is never encrypted to"
    );
    let to_bob = got
        .iter()
        .find(|r| r.recipients == ["bob@example.org"])
        .expect("bob's copy");
    let to_bob = text(&to_bob.data);
    assert!(
        to_bob.contains("multipart/encrypted") && !to_bob.contains("Not for a SHA-1 key."),
        "{to_bob}"
    );
    gw.stop().await;
}
