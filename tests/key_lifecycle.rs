//! Keys after day one, through `sealgate serve` and `sealgate keys` as an admin runs
//! them, with the keys' owners using their own tools: a GnuPG user revokes a key (the
//! admin imports the revocation certificate GnuPG left, or the revoked cert, or the
//! owner's next mail carries it), a CA revokes an S/MIME certificate (`openssl ca`, the
//! CRL as PEM and DER), and an SCKM user adds a new encryption subkey (`gpg
//! --quick-add-key`) while mail to the old one is still on its way. `keys list` and
//! `keys delete` take the fingerprints as gpg and openssl print them.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::cli::{Mailroom, Serve, entries_for, entry, path_str, send, table_line, text};
use support::keys::{GpgHome, autocrypt_header, pgp_mime, run_tool};

/// An outbound message from an internal user to `to`.
fn outgoing(to: &str, message_id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: User <user@example.com>\r\nTo: {to}\r\nSubject: Numbers\r\nMessage-ID: <{message_id}>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Whether a relayed message is PGP/MIME or S/MIME encrypted and `body` is not in it.
fn encrypted(message: &str, body: &str) -> bool {
    let pgp = message.contains("multipart/encrypted");
    let smime = message.contains("application/pkcs7-mime") || message.contains("enveloped-data");
    (pgp || smime) && !message.contains(body)
}

/// GnuPG's revocation certificate for `fingerprint`, with the `:` guard taken off the
/// armor line as GnuPG's own comment in the file tells its owner to do.
fn gnupg_revocation(gpg: &GpgHome, fingerprint: &str) -> Vec<u8> {
    let path = gpg
        .path()
        .join("openpgp-revocs.d")
        .join(format!("{fingerprint}.rev"));
    let guarded = std::fs::read_to_string(&path).expect("gpg leaves a revocation certificate");
    assert!(guarded.contains(":-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    guarded
        .replace(":-----BEGIN PGP", "-----BEGIN PGP")
        .into_bytes()
}

/// `fingerprint` as `gpg --fingerprint` prints it: groups of four, two spaces midway.
fn gpg_style(fingerprint: &str) -> String {
    let groups: Vec<&str> = (0..fingerprint.len())
        .step_by(4)
        .map(|i| &fingerprint[i..(i + 4).min(fingerprint.len())])
        .collect();
    let half = groups.len() / 2;
    format!("{}  {}", groups[..half].join(" "), groups[half..].join(" "))
}

// ---------------------------------------------------------------------------------------
// OpenPGP revocation

#[tokio::test]
async fn a_revoked_openpgp_key_is_never_encrypted_to_again() {
    let setup = Mailroom::new();
    let bob = GpgHome::new();
    let (bob_fpr, _) = bob.make_key("Bob <bob@example.org>", "ed25519", "cv25519", "encr");
    let carol = GpgHome::new();
    let (carol_fpr, _) = carol.make_key("Carol <carol@example.org>", "ed25519", "cv25519", "encr");
    let bob_key = setup.file("bob.asc", bob.run(&["--armor", "--export"], None));
    let carol_key = setup.file("carol.asc", carol.run(&["--armor", "--export"], None));
    setup.keys_expect(&["import", path_str(&bob_key)], 0);
    setup.keys_expect(&["import", path_str(&carol_key)], 0);

    let mut serve = Serve::start(&setup);
    send(
        serve.addr("outbound"),
        "user@example.com",
        &["bob@example.org"],
        &outgoing(
            "bob@example.org",
            "before@example.com",
            "Before the revocation.",
        ),
    )
    .await;
    let before = setup.delivered_with("out", "before@example.com");
    assert!(encrypted(&before, "Before the revocation."), "{before}");

    // Bob's key is revoked: the admin imports the certificate GnuPG made with the key.
    let rev = setup.file("bob.rev", gnupg_revocation(&bob, &bob_fpr));
    let out = setup.keys_expect(&["import", path_str(&rev)], 0);
    assert!(
        text(&out.stdout).contains("revoked"),
        "{}",
        text(&out.stdout)
    );
    // Carol revokes hers in GnuPG, and the admin imports her revoked cert.
    carol.run(&["--import"], Some(&gnupg_revocation(&carol, &carol_fpr)));
    let carol_revoked = setup.file(
        "carol-revoked.asc",
        carol.run(&["--armor", "--export"], None),
    );
    setup.keys_expect(&["import", path_str(&carol_revoked)], 0);

    let entries = setup.list_json();
    for (address, fingerprint) in [
        ("bob@example.org", &bob_fpr),
        ("carol@example.org", &carol_fpr),
    ] {
        let e = entry(&entries, address);
        assert_eq!(e["fingerprint"], Value::from(fingerprint.as_str()), "{e:#}");
        assert_eq!(e["revoked"], Value::Bool(true), "{e:#}");
    }
    let table = setup.list_table();
    assert!(table_line(&table, &bob_fpr).contains("revoked"), "{table}");
    assert!(
        table_line(&table, &carol_fpr).contains("revoked"),
        "{table}"
    );

    // An old copy of the key, imported again, does not bring it back.
    let out = setup.keys(&["import", path_str(&bob_key)]);
    assert!(
        entry(&setup.list_json(), "bob@example.org")["revoked"] == Value::Bool(true),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    for (to, id) in [
        ("bob@example.org", "after-bob@example.com"),
        ("carol@example.org", "after-carol@example.com"),
    ] {
        send(
            serve.addr("outbound"),
            "user@example.com",
            &[to],
            &outgoing(to, id, "After the revocation."),
        )
        .await;
        let after = setup.delivered_with("out", id);
        assert!(
            !after.contains("multipart/encrypted") && after.contains("After the revocation."),
            "{after}"
        );
    }
    assert_eq!(serve.sigterm(), Some(0), "{}", serve.log());
}

#[tokio::test]
async fn a_revoked_cert_in_the_owners_next_mail_marks_the_cached_key() {
    let setup = Mailroom::new();
    let bob = GpgHome::new();
    let (bob_fpr, _) = bob.make_key("Bob <bob@example.org>", "ed25519", "cv25519", "encr");
    let key = setup.file("bob.asc", bob.run(&["--armor", "--export"], None));
    setup.keys_expect(&["import", path_str(&key)], 0);
    let serve = Serve::start(&setup);

    bob.run(&["--import"], Some(&gnupg_revocation(&bob, &bob_fpr)));
    let revoked = bob.run(&["--export"], None);
    let mail = format!(
        "From: Bob <bob@example.org>\r\nTo: user@example.com\r\nSubject: My key is revoked\r\nMessage-ID: <revoked@example.org>\r\n{}\r\n\r\nDo not use my old key.\r\n",
        autocrypt_header("bob@example.org", &revoked)
    );
    send(
        serve.addr("inbound"),
        "bob@example.org",
        &["user@example.com"],
        mail.as_bytes(),
    )
    .await;
    setup.wait_for_list(&serve, |entries| {
        entries_for(entries, "bob@example.org")
            .iter()
            .any(|e| e["revoked"] == Value::Bool(true))
    });
    let entries = setup.list_json();
    let bob_entry = entry(&entries, "bob@example.org");
    assert_eq!(bob_entry["source"], Value::from("admin"), "{bob_entry:#}");
    assert_eq!(bob_entry["fingerprint"], Value::from(bob_fpr.as_str()));

    send(
        serve.addr("outbound"),
        "user@example.com",
        &["bob@example.org"],
        &outgoing(
            "bob@example.org",
            "after@example.com",
            "After the revocation.",
        ),
    )
    .await;
    let after = setup.delivered_with("out", "after@example.com");
    assert!(!after.contains("multipart/encrypted"), "{after}");
}

#[test]
fn a_revocation_for_no_cached_key_or_by_another_key_is_refused() {
    let setup = Mailroom::new();
    let bob = GpgHome::new();
    let (bob_fpr, _) = bob.make_key("Bob <bob@example.org>", "ed25519", "cv25519", "encr");
    let rev = setup.file("bob.rev", gnupg_revocation(&bob, &bob_fpr));
    let out = setup.keys_expect(&["import", path_str(&rev)], 1);
    assert!(
        text(&out.stderr).contains("no cached key"),
        "{}",
        text(&out.stderr)
    );

    // A revocation that names Bob's key as its issuer but is signed by Mallory's.
    let key = setup.file("bob.asc", bob.run(&["--armor", "--export"], None));
    setup.keys_expect(&["import", path_str(&key)], 0);
    let forged_file = setup.file("forged.rev", forged_revocation(&bob));
    let out = setup.keys_expect(&["import", path_str(&forged_file)], 1);
    assert!(
        text(&out.stderr).contains("does not verify"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        entry(&setup.list_json(), "bob@example.org")["revoked"],
        Value::Bool(false)
    );
}

/// A key revocation signature over `victim`'s key whose issuer subpackets name the
/// victim's key, made with another key: what a hostile sender or a doctored file holds.
fn forged_revocation(victim: &GpgHome) -> Vec<u8> {
    use openpgp::packet::signature::SignatureBuilder;
    use openpgp::parse::Parse;
    use openpgp::serialize::SerializeInto;
    use openpgp::types::{ReasonForRevocation, SignatureType};
    use sequoia_openpgp as openpgp;

    let mallory = GpgHome::new();
    mallory.make_key(
        "Mallory <mallory@example.org>",
        "ed25519",
        "cv25519",
        "encr",
    );
    let mallory = openpgp::Cert::from_bytes(&mallory.run(&["--export-secret-keys"], None)).unwrap();
    let victim = openpgp::Cert::from_bytes(&victim.run(&["--export"], None)).unwrap();
    let mut signer = mallory
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .unwrap()
        .into_keypair()
        .unwrap();
    let signature = SignatureBuilder::new(SignatureType::KeyRevocation)
        .set_reason_for_revocation(ReasonForRevocation::KeyCompromised, b"forged")
        .unwrap()
        .set_issuer_fingerprint(victim.fingerprint())
        .unwrap()
        .set_issuer(victim.keyid())
        .unwrap()
        .sign_direct_key(&mut signer, victim.primary_key().key())
        .unwrap();
    openpgp::Packet::from(signature).to_vec().unwrap()
}

// ---------------------------------------------------------------------------------------
// S/MIME: a CA's CRL

/// A CA made with `openssl`, which issues and revokes S/MIME certificates with `openssl
/// ca` and writes its CRL.
struct OpensslCa {
    dir: tempfile::TempDir,
}

impl OpensslCa {
    fn new() -> OpensslCa {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("ca.cnf"),
            format!(
                "[ ca ]\ndefault_ca = CA_default\n[ CA_default ]\ndatabase = {0}/index.txt\n\
                 crlnumber = {0}/crlnumber\ncertificate = {0}/ca.pem\nprivate_key = {0}/ca.key\n\
                 default_md = sha256\ndefault_crl_days = 30\n",
                d.display()
            ),
        )
        .unwrap();
        std::fs::write(d.join("index.txt"), "").unwrap();
        std::fs::write(d.join("crlnumber"), "01\n").unwrap();
        let ca = OpensslCa { dir };
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Test CA",
            "-days",
            "30",
        ]);
        ca
    }

    fn openssl(&self, args: &[&str]) -> Vec<u8> {
        run_tool(
            Command::new("openssl")
                .args(args)
                .current_dir(self.dir.path()),
            None,
        )
    }

    fn path(&self, name: &str) -> String {
        path_str(&self.dir.path().join(name)).to_string()
    }

    /// Issues a certificate for `email`; returns the PEM file's path.
    fn issue(&self, name: &str, email: &str) -> String {
        let ext = format!(
            "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:{email}\n"
        );
        std::fs::write(self.dir.path().join(format!("{name}.ext")), ext).unwrap();
        let subject = format!("/CN={name}/emailAddress={email}");
        self.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &subject,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "30",
            "-extfile",
            &format!("{name}.ext"),
        ]);
        self.path(&format!("{name}.pem"))
    }

    /// Revokes `name`'s certificate and writes the CRL, as PEM and as DER.
    fn revoke(&self, name: &str) -> (String, String) {
        self.openssl(&["ca", "-config", "ca.cnf", "-revoke", &format!("{name}.pem")]);
        self.openssl(&["ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem"]);
        self.openssl(&[
            "crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der",
        ]);
        (self.path("crl.pem"), self.path("crl.der"))
    }

    /// `openssl x509 -fingerprint -sha256` of a certificate: `AB:CD:...`.
    fn fingerprint(&self, cert: &str) -> String {
        let out = text(&self.openssl(&["x509", "-in", cert, "-noout", "-fingerprint", "-sha256"]));
        out.trim().rsplit('=').next().unwrap().to_string()
    }
}

#[tokio::test]
async fn a_crl_pem_or_der_marks_the_certificates_it_lists() {
    let setup = Mailroom::new();
    let ca = OpensslCa::new();
    let dave = ca.issue("dave", "dave@example.net");
    let erin = ca.issue("erin", "erin@example.net");
    let frank = ca.issue("frank", "frank@example.net");
    for cert in [&dave, &erin, &frank] {
        setup.keys_expect(&["import", cert], 0);
    }
    let mut serve = Serve::start(&setup);

    let (pem, _) = ca.revoke("dave");
    let out = setup.keys_expect(&["import", &pem], 0);
    assert!(
        text(&out.stdout).contains("revoked"),
        "{}",
        text(&out.stdout)
    );
    let (_, der) = ca.revoke("erin");
    setup.keys_expect(&["import", &der], 0);

    let entries = setup.list_json();
    for (address, revoked) in [
        ("dave@example.net", true),
        ("erin@example.net", true),
        ("frank@example.net", false),
    ] {
        assert_eq!(
            entry(&entries, address)["revoked"],
            Value::Bool(revoked),
            "{address}: {entries:#?}"
        );
    }
    let dave_fpr = ca.fingerprint(&dave).replace(':', "");
    assert!(table_line(&setup.list_table(), &dave_fpr).contains("revoked"));

    for to in ["dave@example.net", "frank@example.net"] {
        let id = format!("crl-{to}");
        send(
            serve.addr("outbound"),
            "user@example.com",
            &[to],
            &outgoing(to, &id, "Checked against the CRL."),
        )
        .await;
        let relayed = setup.delivered_with("out", &id);
        assert_eq!(
            encrypted(&relayed, "Checked against the CRL."),
            to == "frank@example.net",
            "{relayed}"
        );
    }
    assert_eq!(serve.sigterm(), Some(0), "{}", serve.log());
}

// ---------------------------------------------------------------------------------------
// Fingerprints as the tools print them

#[test]
fn list_and_delete_take_fingerprints_as_gpg_and_openssl_print_them() {
    let setup = Mailroom::new();
    let bob = GpgHome::new();
    let (bob_fpr, bob_sub) = bob.make_key("Bob <bob@example.org>", "ed25519", "cv25519", "encr");
    let key = setup.file("bob.asc", bob.run(&["--armor", "--export"], None));
    setup.keys_expect(&["import", path_str(&key)], 0);
    let ca = OpensslCa::new();
    let dave = ca.issue("dave", "dave@example.net");
    setup.keys_expect(&["import", &dave], 0);

    // What gpg --list-keys shows, the list shows too.
    let table = text(&setup.keys_expect(&["list", &gpg_style(&bob_fpr)], 0).stdout);
    assert!(
        table.contains(&bob_fpr) && !table.contains("dave@"),
        "{table}"
    );
    assert!(
        table.contains("ed25519") && table.contains("[SC]"),
        "{table}"
    );
    assert!(table.contains("uid  Bob <bob@example.org>"), "{table}");
    let sub = table
        .lines()
        .find(|l| l.contains(&bob_sub))
        .unwrap_or_else(|| panic!("no subkey line:\n{table}"));
    assert!(
        sub.trim_start().starts_with("sub  cv25519") && sub.contains("[E]"),
        "{sub}"
    );
    let by_address = text(&setup.keys_expect(&["list", "dave@example.net"], 0).stdout);
    assert!(by_address.contains("dave@example.net") && !by_address.contains(&bob_fpr));

    let openssl_fpr = ca.fingerprint(&dave);
    assert!(openssl_fpr.contains(':'));
    setup.keys_expect(&["delete", &openssl_fpr.to_lowercase()], 0);
    setup.keys_expect(&["delete", &gpg_style(&bob_fpr)], 0);
    assert!(setup.list_json().is_empty());
    setup.keys_expect(&["delete", &gpg_style(&bob_fpr)], 1);
}

// ---------------------------------------------------------------------------------------
// SCKM subkey rotation

/// A MIME entity as a client encrypts it.
fn entity(body: &str) -> Vec<u8> {
    format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").into_bytes()
}

#[tokio::test]
async fn a_new_encryption_subkey_is_current_and_the_old_one_still_decrypts() {
    let setup = Mailroom::new();
    let user = GpgHome::new();
    let (primary, old_sub) = user.make_key("User <user@example.com>", "ed25519", "cv25519", "encr");
    let export = setup.file("old.asc", user.sckm_export(&old_sub));
    setup.keys_expect(&["import-sckm", path_str(&export)], 0);
    let mut serve = Serve::start(&setup);

    // Mail to the old subkey is on its way when the user rotates.
    let in_flight = user.encrypt_to("user@example.com", &entity("To the old subkey."));
    // OpenPGP key times count whole seconds: the new subkey must be newer in them, as
    // it would be for any real user.
    std::thread::sleep(Duration::from_millis(1100));
    user.run(
        &["--quick-add-key", &primary, "cv25519", "encr", "never"],
        None,
    );
    let fingerprints = user.fingerprints("user@example.com");
    let new_sub = fingerprints
        .iter()
        .skip(1)
        .find(|f| **f != old_sub)
        .unwrap()
        .clone();
    let export = setup.file("new.asc", user.sckm_export(&new_sub));
    setup.keys_expect(&["import-sckm", path_str(&export)], 0);
    let to_new = user.encrypt_to("user@example.com", &entity("To the new subkey."));
    let packets = text(&user.run(&["--list-packets"], Some(&to_new)));
    assert!(
        packets.contains(&new_sub[24..]),
        "gpg encrypts to the newest subkey: {packets}"
    );

    let entries = setup.list_json();
    let e = entry(&entries, "user@example.com");
    assert_eq!(
        e["decrypt_subkeys"],
        serde_json::json!([new_sub.as_str(), old_sub.as_str()]),
        "{e:#}"
    );
    let table = setup.list_table();
    let line = |fpr: &str| {
        table
            .lines()
            .find(|l| l.contains(fpr))
            .unwrap_or_else(|| panic!("no {fpr}:\n{table}"))
            .to_string()
    };
    assert!(line(&new_sub).contains("current"), "{table}");
    assert!(
        line(&old_sub).contains("decrypts") && !line(&old_sub).contains("current"),
        "{table}"
    );

    for (id, armored) in [
        ("old@example.org", &in_flight),
        ("new@example.org", &to_new),
    ] {
        send(
            serve.addr("inbound"),
            "sender@example.org",
            &["user@example.com"],
            &pgp_mime("sender@example.org", "user@example.com", id, armored),
        )
        .await;
    }
    let old = setup.delivered_with("in", "old@example.org");
    assert!(
        old.contains("To the old subkey.") && !old.contains("BEGIN PGP MESSAGE"),
        "{old}"
    );
    let new = setup.delivered_with("in", "new@example.org");
    assert!(
        new.contains("To the new subkey.") && !new.contains("BEGIN PGP MESSAGE"),
        "{new}"
    );
    assert_eq!(serve.sigterm(), Some(0), "{}", serve.log());
}

// ---------------------------------------------------------------------------------------
// A Thunderbird (RNP) user's SCKM export, by README's recipe

/// RNP, like Thunderbird's key manager, exports only whole secret keys. README's recipe:
/// the user imports that backup into a throwaway GnuPG home on their own machine and
/// exports the encryption subkey alone; the signing secret never leaves the machine.
#[tokio::test]
async fn a_thunderbird_users_key_reaches_the_gateway_by_the_readme_recipe() {
    let setup = Mailroom::new();
    let rnp_home = tempfile::tempdir().unwrap();
    let rnp = |args: &[&str]| {
        run_tool(
            Command::new("rnpkeys")
                .arg("--homedir")
                .arg(rnp_home.path())
                .args(args),
            None,
        )
    };
    rnp(&[
        "--generate-key",
        "--userid",
        "User <user@example.com>",
        "--password",
        "backup words",
    ]);
    let backup = rnp(&[
        "--export-key",
        "--secret",
        "--password",
        "backup words",
        "user@example.com",
    ]);
    let backup_file = setup.file("thunderbird-backup.asc", &backup);
    let passphrase = setup.file("pass.txt", "backup words\n");

    // The whole key is refused: it holds the signing secret.
    let out = setup.keys_expect(
        &[
            "import-sckm",
            "--passphrase-file",
            path_str(&passphrase),
            path_str(&backup_file),
        ],
        1,
    );
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );

    // The recipe.
    let scratch = GpgHome::with_passphrase("backup words");
    scratch.run(&["--import", path_str(&backup_file)], None);
    let fingerprints = scratch.fingerprints("user@example.com");
    let (primary, subkey) = (fingerprints[0].clone(), fingerprints[1].clone());
    let export = setup.file("user.sckm.asc", scratch.sckm_export(&subkey));
    setup.keys_expect(
        &[
            "import-sckm",
            "--passphrase-file",
            path_str(&passphrase),
            path_str(&export),
        ],
        0,
    );
    let entries = setup.list_json();
    assert_eq!(
        entry(&entries, "user@example.com")["decrypt_subkeys"],
        serde_json::json!([subkey.as_str()])
    );

    // A sender's RNP encrypts to the user; the gateway opens it.
    let mut serve = Serve::start(&setup);
    let public = setup.file("user.pub", scratch.run(&["--export"], None));
    let sender_home = tempfile::tempdir().unwrap();
    run_tool(
        Command::new("rnpkeys")
            .arg("--homedir")
            .arg(sender_home.path())
            .arg("--import")
            .arg(&public),
        None,
    );
    let armored = run_tool(
        Command::new("rnp")
            .arg("--homedir")
            .arg(sender_home.path())
            .args([
                "--encrypt",
                "-r",
                "user@example.com",
                "--armor",
                "--output",
                "-",
            ]),
        Some(&entity("From RNP to a Thunderbird user.")),
    );
    send(
        serve.addr("inbound"),
        "sender@example.org",
        &["user@example.com"],
        &pgp_mime(
            "sender@example.org",
            "user@example.com",
            "rnp@example.org",
            &armored,
        ),
    )
    .await;
    let opened = setup.delivered_with("in", "rnp@example.org");
    assert!(
        opened.contains("From RNP to a Thunderbird user.")
            && opened.contains(&format!("X-Sealgate-Decrypted: pgp; key={primary}\r\n")),
        "{opened}\n{}",
        serve.log()
    );
    assert_eq!(serve.sigterm(), Some(0), "{}", serve.log());
}
