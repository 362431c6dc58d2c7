//! Moving keys between gateways, as two admins do it with the real binary: `transfer
//! cert` on the destination, `transfer trust` on both sides, `keys export --to` on the
//! source (while it serves), `keys import-bundle` on the destination, and then mail
//! through the destination that uses the keys. Bundles that are altered, for another
//! gateway, from an untrusted peer or replayed are refused and store nothing. OpenSSL
//! opens a bundle with the destination's key, and makes one that sealgate imports.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::cli::{Mailroom, Serve, entry, path_str, send, text};
use support::keys::{GpgHome, autocrypt_header, openssl, pgp_mime};

/// Runs `sealgate transfer ARGS` on `room`; asserts success and returns stdout.
fn transfer(room: &Mailroom, args: &[&str]) -> String {
    text(&room.sealgate_expect("transfer", args, 0).stdout)
}

/// `room`'s transport certificate, written into `into` as NAME.pem.
fn cert_of(room: &Mailroom, into: &Mailroom, name: &str) -> PathBuf {
    into.file(&format!("{name}.pem"), transfer(room, &["cert"]))
}

/// Two gateways that trust each other: `a` calls `b` "site-b", `b` calls `a` "site-a".
fn pair(a: &Mailroom, b: &Mailroom) {
    let b_cert = cert_of(b, a, "site-b");
    let a_cert = cert_of(a, b, "site-a");
    transfer(a, &["trust", path_str(&b_cert), "--name", "site-b"]);
    transfer(b, &["trust", path_str(&a_cert), "--name", "site-a"]);
}

/// `keys export --to PEER ARGS` on `room`: the bundle, written into `room` as NAME.
fn export(room: &Mailroom, peer: &str, args: &[&str], name: &str) -> PathBuf {
    let mut all = vec!["export", "--to", peer];
    all.extend_from_slice(args);
    let out = room.keys_expect(&all, 0);
    assert!(
        text(&out.stdout).starts_with("-----BEGIN CMS-----"),
        "{}",
        text(&out.stdout)
    );
    room.file(name, &out.stdout)
}

/// An outbound message from an internal user to `to`.
fn outgoing(to: &str, message_id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: User <user@example.com>\r\nTo: {to}\r\nSubject: Numbers\r\nMessage-ID: <{message_id}>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// A MIME entity as a client encrypts it.
fn entity(body: &str) -> Vec<u8> {
    format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").into_bytes()
}

/// The armored OpenPGP message inside a relayed PGP/MIME message.
fn armored_part(message: &str) -> Vec<u8> {
    let start = message
        .find("-----BEGIN PGP MESSAGE-----")
        .unwrap_or_else(|| panic!("not PGP/MIME: {message}"));
    let end = message[start..].find("-----END PGP MESSAGE-----").unwrap() + start + 25;
    message.as_bytes()[start..end].to_vec()
}

/// Asserts `room`'s key cache is empty: a refused bundle stored nothing.
fn assert_empty(room: &Mailroom) {
    let entries = room.list_json();
    assert!(entries.is_empty(), "{entries:#?}");
}

/// Asserts `keys import-bundle FILE` fails on `room` with `expected` in its stderr.
fn assert_refused(room: &Mailroom, bundle: &Path, args: &[&str], expected: &str) -> String {
    let mut all = vec!["import-bundle", path_str(bundle)];
    all.extend_from_slice(args);
    let out = room.keys_expect(&all, 1);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(expected),
        "wanted {expected:?} in: {stderr}"
    );
    stderr
}

/// An SCKM user whose key had a reset of its encryption subkey: the old and the new
/// subkey both imported (the old one decrypts what is still in flight). Returns the
/// user's GnuPG home and the two subkey fingerprints, old first.
fn rotated_sckm_user(room: &Mailroom) -> (GpgHome, String, String) {
    let user = GpgHome::new();
    let (primary, old) = user.make_key("User <user@example.com>", "ed25519", "cv25519", "encr");
    let file = room.file("old-sub.asc", user.sckm_export(&old));
    room.keys_expect(&["import-sckm", path_str(&file)], 0);
    // OpenPGP key times count whole seconds: the new subkey must be newer in them.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    user.run(
        &["--quick-add-key", &primary, "cv25519", "encr", "never"],
        None,
    );
    let new = user
        .fingerprints("user@example.com")
        .into_iter()
        .skip(1)
        .find(|f| *f != old)
        .unwrap();
    let file = room.file("new-sub.asc", user.sckm_export(&new));
    room.keys_expect(&["import-sckm", path_str(&file)], 0);
    (user, old, new)
}

// ---------------------------------------------------------------------------------------
// The whole move

#[tokio::test]
async fn harvested_and_sckm_keys_move_to_another_gateway_which_then_uses_them() {
    let a = Mailroom::new();
    let b = Mailroom::with("[keys]\nencrypt_to_mailflow_keys = true\n");
    pair(&a, &b);

    // On A: Bob's key arrives in mail (Autocrypt), and a user's SCKM key is imported.
    let bob = GpgHome::new();
    bob.make_key("Bob <bob@example.org>", "ed25519", "cv25519", "encr");
    let (user, old_sub, new_sub) = rotated_sckm_user(&a);
    let a_serve = Serve::start(&a);
    let mail = format!(
        "From: Bob <bob@example.org>\r\nTo: user@example.com\r\nSubject: Hello\r\nMessage-ID: <hello@example.org>\r\n{}\r\n\r\nHello.\r\n",
        autocrypt_header("bob@example.org", &bob.run(&["--export"], None))
    );
    send(
        a_serve.addr("inbound"),
        "bob@example.org",
        &["user@example.com"],
        mail.as_bytes(),
    )
    .await;
    a.wait_for_list(&a_serve, |entries| {
        entries.iter().any(|e| e["address"] == "bob@example.org")
    });
    let a_entries = a.list_json();
    let a_bob = entry(&a_entries, "bob@example.org").clone();
    assert_eq!(a_bob["source"], "mailflow", "{a_bob:#}");

    // A exports through its running server's admin socket.
    let bundle = export(&a, "site-b", &[], "to-b.pem");
    let bundle_on_b = b.file("from-a.pem", std::fs::read(&bundle).unwrap());
    drop(a_serve);
    assert!(
        !std::fs::read_to_string(&bundle)
            .unwrap()
            .contains("user@example.com"),
        "the bundle is encrypted"
    );

    let out = b.keys_expect(&["import-bundle", path_str(&bundle_on_b)], 0);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("bundle 1 from site-a"), "{stdout}");
    let b_entries = b.list_json();
    let b_bob = entry(&b_entries, "bob@example.org");
    for field in [
        "source",
        "added",
        "expires",
        "last_seen",
        "message_id",
        "sender",
    ] {
        assert_eq!(b_bob[field], a_bob[field], "{field}: {b_bob:#}\n{a_bob:#}");
    }
    let b_user = entry(&b_entries, "user@example.com");
    assert_eq!(b_user["source"], "sckm", "{b_user:#}");
    assert_eq!(
        b_user["decrypt_subkeys"],
        serde_json::json!([new_sub.as_str(), old_sub.as_str()]),
        "the retired subkey came along: {b_user:#}"
    );

    // B encrypts to the harvested key, and decrypts for the SCKM user with both subkeys.
    let to_new = user.encrypt_to("user@example.com", &entity("To the new subkey."));
    let packets = text(&user.run(&["--list-packets"], Some(&to_new)));
    assert!(packets.contains(&new_sub[24..]), "{packets}");
    let to_old = {
        // gpg encrypts to the newest subkey; this one is made to the old one.
        user.run(
            &[
                "--armor",
                "--trust-model",
                "always",
                "--encrypt",
                "-r",
                &format!("{old_sub}!"),
            ],
            Some(&entity("To the old subkey.")),
        )
    };
    let b_serve = Serve::start(&b);
    send(
        b_serve.addr("outbound"),
        "user@example.com",
        &["bob@example.org"],
        &outgoing("bob@example.org", "out@example.com", "Secret numbers."),
    )
    .await;
    for (id, armored) in [("old@example.org", &to_old), ("new@example.org", &to_new)] {
        send(
            b_serve.addr("inbound"),
            "sender@example.org",
            &["user@example.com"],
            &pgp_mime("sender@example.org", "user@example.com", id, armored),
        )
        .await;
    }
    let relayed = b.delivered_with("out", "out@example.com");
    assert!(!relayed.contains("Secret numbers."), "{relayed}");
    let opened = text(&bob.run(&["--decrypt"], Some(&armored_part(&relayed))));
    assert!(opened.contains("Secret numbers."), "{opened}");
    for (id, body) in [
        ("old@example.org", "To the old subkey."),
        ("new@example.org", "To the new subkey."),
    ] {
        let delivered = b.delivered_with("in", id);
        assert!(
            delivered.contains(body) && !delivered.contains("BEGIN PGP MESSAGE"),
            "{delivered}"
        );
    }
    drop(b_serve);
}

// ---------------------------------------------------------------------------------------
// Refusals

/// A gateway with one admin-imported key, Carol's, to export.
fn source_with_a_key() -> (Mailroom, GpgHome) {
    let a = Mailroom::new();
    let carol = GpgHome::new();
    carol.make_key("Carol <carol@example.org>", "ed25519", "cv25519", "encr");
    let file = a.file("carol.asc", carol.run(&["--armor", "--export"], None));
    a.keys_expect(&["import", path_str(&file)], 0);
    (a, carol)
}

#[test]
fn a_bundle_from_an_untrusted_peer_is_refused_unless_trusted_once() {
    let (a, _carol) = source_with_a_key();
    let b = Mailroom::new();
    let b_cert = cert_of(&b, &a, "b");
    // A may export to a certificate file it was handed, without trusting it first.
    let bundle = export(&a, path_str(&b_cert), &[], "to-b.pem");
    let bundle = b.file("from-a.pem", std::fs::read(bundle).unwrap());
    let a_fingerprint = transfer(&a, &["cert", "--fingerprint"]);
    let stderr = assert_refused(&b, &bundle, &[], "does not trust");
    assert!(stderr.contains(a_fingerprint.trim()), "{stderr}");
    assert_empty(&b);

    let out = b.keys_expect(&["import-bundle", path_str(&bundle), "--trust-once"], 0);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("once") && stdout.contains(a_fingerprint.trim()),
        "{stdout}"
    );
    assert_eq!(b.list_json().len(), 1);
    // Once: the peer is not recorded.
    assert!(transfer(&b, &["peers"]).contains("no trusted peers"));
}

#[test]
fn altered_foreign_and_replayed_bundles_are_refused_and_store_nothing() {
    let (a, carol) = source_with_a_key();
    let b = Mailroom::new();
    let c = Mailroom::new();
    pair(&a, &b);
    let c_cert = cert_of(&c, &a, "c");
    transfer(&a, &["trust", path_str(&c_cert), "--name", "site-c"]);

    // For another gateway: C's bundle handed to B.
    let for_c = export(&a, "site-c", &[], "to-c.pem");
    let for_c = b.file("for-c.pem", std::fs::read(for_c).unwrap());
    assert_refused(&b, &for_c, &[], "not for this gateway");
    assert_empty(&b);

    // Altered: one character of the base64, and one byte of the DER.
    let first = export(&a, "site-b", &[], "first.pem");
    let pem = std::fs::read_to_string(&first).unwrap();
    let mut lines: Vec<String> = pem.lines().map(str::to_string).collect();
    let middle = lines.len() / 2;
    let flipped: String = lines[middle]
        .chars()
        .enumerate()
        .map(|(i, ch)| match (i, ch) {
            (10, 'A') => 'B',
            (10, _) => 'A',
            _ => ch,
        })
        .collect();
    lines[middle] = flipped;
    let altered = b.file("altered.pem", lines.join("\n") + "\n");
    assert_refused(&b, &altered, &[], "altered");
    let der = openssl(&[
        "cms",
        "-cmsout",
        "-inform",
        "PEM",
        "-outform",
        "DER",
        "-in",
        path_str(&first),
    ]);
    let mut tampered = der.clone();
    tampered[40] ^= 0x01;
    let tampered = b.file("tampered.der", tampered);
    assert_refused(&b, &tampered, &[], "bundle");
    assert_empty(&b);

    // The genuine one, as DER, imports.
    let genuine = b.file("first.der", der);
    b.keys_expect(&["import-bundle", path_str(&genuine)], 0);
    assert_eq!(b.list_json().len(), 1);

    // Replayed: again, and an older one after a newer one.
    assert_refused(&b, &genuine, &[], "replayed");
    let dave = GpgHome::new();
    dave.make_key("Dave <dave@example.org>", "ed25519", "cv25519", "encr");
    let file = a.file("dave.asc", dave.run(&["--armor", "--export"], None));
    a.keys_expect(&["import", path_str(&file)], 0);
    let second = export(&a, "site-b", &["dave@example.org"], "second.pem");
    let third = export(&a, "site-b", &["carol@example.org"], "third.pem");
    b.keys_expect(&["import-bundle", path_str(&third)], 0);
    assert_refused(&b, &second, &[], "replayed");
    let entries = b.list_json();
    assert!(
        entries.iter().all(|e| e["address"] != "dave@example.org"),
        "{entries:#?}"
    );
    drop(carol);
}

// ---------------------------------------------------------------------------------------
// OpenSSL on the other side

/// The destination's transport key, read from its store as only the gateway can (no
/// command prints it), written as PEM for `openssl`.
fn transport_key(room: &Mailroom) -> PathBuf {
    let db = sealgate::store::open(&room.data_dir).unwrap();
    let sealer = sealgate::keys::secrets::Sealer::open(&room.data_dir).unwrap();
    let store = sealgate::transfer::TransferStore::open(&db).unwrap();
    let identity = store.identity(&sealer).unwrap().unwrap();
    let pem = der::pem::encode_string(
        "PRIVATE KEY",
        der::pem::LineEnding::LF,
        &identity.key_pkcs8().unwrap(),
    )
    .unwrap();
    room.file("transport.key", pem)
}

#[test]
fn openssl_opens_a_bundle_with_the_destinations_key_and_makes_one_sealgate_imports() {
    let (a, _carol) = source_with_a_key();
    let b = Mailroom::new();
    pair(&a, &b);
    let bundle = export(&a, "site-b", &[], "to-b.pem");
    let b_cert = cert_of(&b, &b, "own");
    let a_cert = cert_of(&a, &b, "a");
    let b_key = transport_key(&b);

    let signed = openssl(&[
        "cms",
        "-decrypt",
        "-inform",
        "PEM",
        "-in",
        path_str(&bundle),
        "-recip",
        path_str(&b_cert),
        "-inkey",
        path_str(&b_key),
        "-binary",
    ]);
    let signed = b.file("signed.der", signed);
    let content = openssl(&[
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-in",
        path_str(&signed),
        "-CAfile",
        path_str(&a_cert),
        "-purpose",
        "any",
        "-binary",
    ]);
    let content: Value = serde_json::from_slice(&content).unwrap();
    assert_eq!(content["format"], "sealgate-key-bundle/1");
    assert_eq!(content["entries"][0]["address"], "carol@example.org");
    assert_eq!(content["sequence"], 1);

    // A peer that is not sealgate: its own P-256 key and certificate, made by openssl,
    // and a bundle made with openssl alone, as the README shows.
    let peer_key = b.file(
        "peer.key",
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ]),
    );
    let peer_cert = b.file(
        "peer.pem",
        openssl(&[
            "req",
            "-new",
            "-x509",
            "-key",
            path_str(&peer_key),
            "-subj",
            "/CN=other gateway",
            "-days",
            "30",
            "-addext",
            "keyUsage=critical,digitalSignature,keyAgreement",
        ]),
    );
    transfer(&b, &["trust", path_str(&peer_cert), "--name", "other"]);
    let fingerprint = |cert: &Path| {
        let out = text(&openssl(&[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            path_str(cert),
        ]));
        out.trim().rsplit('=').next().unwrap().replace(':', "")
    };
    let mut made = content.clone();
    made["from"] = Value::from(fingerprint(&peer_cert));
    made["to"] = Value::from(fingerprint(&b_cert));
    made["sequence"] = Value::from(7);
    let json = b.file("made.json", serde_json::to_vec(&made).unwrap());
    let signed = b.file(
        "made-signed.der",
        openssl(&[
            "cms",
            "-sign",
            "-nodetach",
            "-binary",
            "-md",
            "sha256",
            "-in",
            path_str(&json),
            "-signer",
            path_str(&peer_cert),
            "-inkey",
            path_str(&peer_key),
            "-outform",
            "DER",
        ]),
    );
    let wrapped = b.file(
        "made.pem",
        openssl(&[
            "cms",
            "-encrypt",
            "-binary",
            "-aes-256-gcm",
            "-in",
            path_str(&signed),
            "-outform",
            "PEM",
            path_str(&b_cert),
        ]),
    );
    let out = b.keys_expect(&["import-bundle", path_str(&wrapped)], 0);
    assert!(
        text(&out.stdout).contains("bundle 7 from other"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        entry(&b.list_json(), "carol@example.org")["source"],
        "admin"
    );
}
