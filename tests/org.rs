//! The Organization key as an admin and a partner meet it: `sealgate org ...` and
//! `sealgate keys export` as processes, a partner's GnuPG that trusts the exported org
//! key and then sees internal users' keys as fully valid, the certification's expiry,
//! the renewal job of a running `sealgate serve`, replacing the org key, and `check`'s
//! warning while keys are unverified.

mod support;

use std::time::{Duration, Instant};

use support::cli::{Mailroom, Serve, path_str, text};
use support::keys::GpgHome;

/// A user of `example.com` whose SCKM key the gateway holds; returns its GnuPG home and
/// primary fingerprint.
fn sckm_user(setup: &Mailroom, name: &str) -> (GpgHome, String) {
    let gpg = GpgHome::new();
    let address = format!("{name}@example.com");
    let (primary, sub) = gpg.make_key(&format!("{name} <{address}>"), "ed25519", "cv25519", "encr");
    let file = setup.file(&format!("{name}.sckm.asc"), gpg.sckm_export(&sub));
    setup.keys_expect(&["import-sckm", path_str(&file)], 0);
    (gpg, primary)
}

/// Runs `sealgate ARGS --config F`; asserts the exit code; returns (stdout, stderr).
fn sealgate(setup: &Mailroom, args: &[&str], code: i32) -> (String, String) {
    let out = support::cli::run_with_timeout(
        std::process::Command::new(support::cli::BIN)
            .args(args)
            .arg("--config")
            .arg(&setup.config)
            .current_dir(setup.dir.path()),
        Duration::from_secs(60),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "sealgate {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

/// A partner's GnuPG that has imported the org key and trusts it ultimately, as
/// README tells partners to.
fn partner_trusting(org_asc: &str) -> GpgHome {
    let partner = GpgHome::new();
    partner.run(&["--import"], Some(org_asc.as_bytes()));
    let org_fpr = first_fingerprint(&partner);
    partner.run(
        &["--import-ownertrust"],
        Some(format!("{org_fpr}:6:\n").as_bytes()),
    );
    partner
}

/// What the partner's gpg says of `address` after importing `exported`: the user ID's
/// validity (`f` is full) and the org certification's (creation, expiry) times.
fn partner_sees(
    partner: &GpgHome,
    exported: &str,
    address: &str,
    org_fpr: &str,
) -> (String, Vec<(i64, i64)>) {
    partner.run(&["--import"], Some(exported.as_bytes()));
    let listing = text(&partner.run(&["--with-colons", "--check-sigs", address], None));
    let validity = listing
        .lines()
        .find(|l| l.starts_with("uid:"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or_default()
        .to_string();
    let certifications = listing
        .lines()
        .filter(|l| l.starts_with("sig:!") && l.split(':').nth(12) == Some(org_fpr))
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[5].parse().unwrap(), f[6].parse().unwrap_or(0))
        })
        .collect();
    (validity, certifications)
}

/// The fingerprint of the first key in a GnuPG home.
fn first_fingerprint(gpg: &GpgHome) -> String {
    let listing = text(&gpg.run(&["--with-colons", "--list-keys"], None));
    let line = listing.lines().find(|l| l.starts_with("fpr:")).unwrap();
    line.split(':').nth(9).unwrap().to_string()
}

fn org_fingerprint(org_asc: &str) -> String {
    let gpg = GpgHome::new();
    gpg.run(&["--import"], Some(org_asc.as_bytes()));
    first_fingerprint(&gpg)
}

#[test]
fn partners_who_trust_the_org_key_see_internal_users_keys_as_fully_valid() {
    let setup = Mailroom::with("[org]\ncertification_validity = \"3d\"\nrenew_every = \"1d\"\n");
    let (_, user_fpr) = sckm_user(&setup, "user");

    let (_, said) = sealgate(&setup, &["org", "init", "--name", "Example Org"], 0);
    assert!(said.contains("certified user@example.com"), "{said}");
    let (org_asc, _) = sealgate(&setup, &["org", "export"], 0);
    assert!(!org_asc.contains("PRIVATE KEY"), "{org_asc}");
    let org_fpr = org_fingerprint(&org_asc);
    let (status, _) = sealgate(&setup, &["org", "status"], 0);
    assert!(
        status.contains(&org_fpr)
            && status.contains("expires never")
            && status.contains("users certified: 1"),
        "{status}"
    );

    // The org key is certify-only, and never expires.
    let inspect = GpgHome::new();
    inspect.run(&["--import"], Some(org_asc.as_bytes()));
    let listing = text(&inspect.run(&["--with-colons", "--list-keys"], None));
    let pub_line = listing.lines().find(|l| l.starts_with("pub:")).unwrap();
    let fields: Vec<&str> = pub_line.split(':').collect();
    assert_eq!(fields[6], "", "no expiry: {pub_line}");
    assert!(
        fields[11].starts_with('c') && !fields[11].contains('e'),
        "{pub_line}"
    );
    assert!(!listing.contains("\nsub:"), "no subkeys: {listing}");

    let (exported, _) = sealgate(&setup, &["keys", "export", "user@example.com"], 0);
    assert!(!exported.contains("PRIVATE KEY"), "{exported}");
    let partner = partner_trusting(&org_asc);
    let (validity, certifications) =
        partner_sees(&partner, &exported, "user@example.com", &org_fpr);
    assert_eq!(validity, "f", "fully valid through the org key");
    let [(created, expires)] = certifications[..] else {
        panic!("one org certification: {certifications:?}");
    };
    assert_eq!(
        expires - created,
        3 * 24 * 3600,
        "expires after certification_validity"
    );
    let unknown = GpgHome::new();
    let (validity, _) = partner_sees(&unknown, &exported, "user@example.com", &org_fpr);
    assert_ne!(
        validity, "f",
        "without trusting the org key, nothing is vouched for"
    );

    // A user added later, with no server running to certify them: check warns until
    // the job has run.
    sckm_user(&setup, "later");
    let (checked, _) = sealgate(&setup, &["check"], 0);
    assert!(
        checked.contains("org: warning: 1 internal user key(s) are not certified"),
        "{checked}"
    );
    let (_, said) = sealgate(&setup, &["org", "renew"], 0);
    assert!(said.contains("certified later@example.com"), "{said}");
    assert!(said.contains("1 still current"), "{said}");
    let (checked, _) = sealgate(&setup, &["check"], 0);
    assert!(!checked.contains("org: warning"), "{checked}");

    // Replacing the org key: refused without --replace; with it, every key is
    // certified again by the new key, and the old key's certifications are gone.
    let (_, said) = sealgate(&setup, &["org", "init"], 1);
    assert!(said.contains("--replace"), "{said}");
    let (backup, _) = sealgate(&setup, &["org", "export", "--secret"], 0);
    assert!(backup.contains("PRIVATE KEY"));
    sealgate(&setup, &["org", "init", "--replace"], 0);
    let (new_asc, _) = sealgate(&setup, &["org", "export"], 0);
    let new_fpr = org_fingerprint(&new_asc);
    assert_ne!(new_fpr, org_fpr);
    let (exported, _) = sealgate(&setup, &["keys", "export", "user@example.com"], 0);
    let fresh = partner_trusting(&new_asc);
    let (validity, by_new) = partner_sees(&fresh, &exported, "user@example.com", &new_fpr);
    assert_eq!((validity.as_str(), by_new.len()), ("f", 1));
    // A partner who trusts only the old key (and never saw the user's key before).
    let stale = partner_trusting(&org_asc);
    let (validity, by_old) = partner_sees(&stale, &exported, "user@example.com", &org_fpr);
    assert!(
        by_old.is_empty(),
        "the old org key's certification is not exported"
    );
    assert_ne!(validity, "f");

    // The backup brings the first key back (import, with --replace).
    let file = setup.file("org-backup.asc", &backup);
    let (_, said) = sealgate(&setup, &["org", "import", path_str(&file)], 1);
    assert!(said.contains("--replace"), "{said}");
    let (_, said) = sealgate(&setup, &["org", "import", "--replace", path_str(&file)], 0);
    assert!(said.contains(&org_fpr), "{said}");
    let (exported, _) = sealgate(&setup, &["keys", "export", "user@example.com"], 0);
    let (validity, _) = partner_sees(&stale, &exported, "user@example.com", &org_fpr);
    assert_eq!(validity, "f");
    assert!(exported.contains("BEGIN PGP PUBLIC KEY BLOCK") && !user_fpr.is_empty());
}

#[test]
fn an_org_key_made_with_gnupg_is_imported_with_its_passphrase_and_others_are_refused() {
    let setup = Mailroom::new();
    sckm_user(&setup, "user");
    let org = GpgHome::with_passphrase("org secret");
    org.run(
        &["--quick-gen-key", "Example Org", "ed25519", "cert", "never"],
        None,
    );
    let org_fpr = org.fingerprints("Example Org")[0].clone();
    let secret = setup.file(
        "org.asc",
        org.run(&["--armor", "--export-secret-keys", "Example Org"], None),
    );
    let (_, said) = sealgate(&setup, &["org", "import", path_str(&secret)], 1);
    assert!(said.contains("--passphrase-file"), "{said}");
    let wrong = setup.file("wrong.txt", "not it\n");
    let (_, said) = sealgate(
        &setup,
        &[
            "org",
            "import",
            "--passphrase-file",
            path_str(&wrong),
            path_str(&secret),
        ],
        1,
    );
    assert!(said.contains("passphrase does not unlock"), "{said}");
    // A public key alone cannot certify anything.
    let public = setup.file("org.pub", org.run(&["--armor", "--export"], None));
    let (_, said) = sealgate(&setup, &["org", "import", path_str(&public)], 1);
    assert!(said.contains("no secret primary key"), "{said}");

    let right = setup.file("pass.txt", "org secret\n");
    let (_, said) = sealgate(
        &setup,
        &[
            "org",
            "import",
            "--passphrase-file",
            path_str(&right),
            path_str(&secret),
        ],
        0,
    );
    assert!(
        said.contains(&org_fpr) && said.contains("certified user@example.com"),
        "{said}"
    );
    // The sealed copy needs no passphrase any more: the job runs unattended.
    let (exported, _) = sealgate(&setup, &["keys", "export", "user@example.com"], 0);
    let (org_asc, _) = sealgate(&setup, &["org", "export"], 0);
    let partner = partner_trusting(&org_asc);
    let (validity, _) = partner_sees(&partner, &exported, "user@example.com", &org_fpr);
    assert_eq!(validity, "f");
}

#[test]
fn keys_export_serves_internal_users_only() {
    let setup = Mailroom::new();
    sckm_user(&setup, "user");
    let bob = GpgHome::new();
    bob.make_key("Bob <bob@example.org>", "ed25519", "cv25519", "encr");
    let file = setup.file("bob.asc", bob.run(&["--armor", "--export"], None));
    setup.keys_expect(&["import", path_str(&file)], 0);
    let (_, said) = sealgate(&setup, &["keys", "export", "bob@example.org"], 1);
    assert!(
        said.contains("no current key of an internal user"),
        "{said}"
    );
    // Without an org key the user's key is exported uncertified, and it says so.
    let (exported, said) = sealgate(&setup, &["keys", "export", "user@example.com"], 0);
    assert!(
        exported.contains("BEGIN PGP PUBLIC KEY BLOCK"),
        "{exported}"
    );
    assert!(said.contains("not certified"), "{said}");
}

#[test]
fn the_renewal_job_of_a_running_gateway_renews_certifications_before_they_expire() {
    let setup = Mailroom::with("[org]\ncertification_validity = \"4s\"\nrenew_every = \"1s\"\n");
    sckm_user(&setup, "user");
    let serve = Serve::start(&setup);
    let (_, said) = sealgate(&setup, &["org", "init"], 0);
    assert!(said.contains("certified user@example.com"), "{said}");
    let (org_asc, _) = sealgate(&setup, &["org", "export"], 0);
    let org_fpr = org_fingerprint(&org_asc);
    let partner = partner_trusting(&org_asc);
    let (exported, _) = sealgate(&setup, &["keys", "export", "user@example.com"], 0);
    let (_, first) = partner_sees(&partner, &exported, "user@example.com", &org_fpr);
    let [(first_created, first_expires)] = first[..] else {
        panic!("{first:?}");
    };
    assert_eq!(first_expires - first_created, 4);

    // With less than half the validity left, the job (every second) certifies again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (exported, _) = sealgate(&setup, &["keys", "export", "user@example.com"], 0);
        let renewal = GpgHome::new();
        renewal.run(&["--import"], Some(org_asc.as_bytes()));
        let (_, seen) = partner_sees(&renewal, &exported, "user@example.com", &org_fpr);
        if let [(created, expires)] = seen[..]
            && created > first_created
        {
            assert_eq!(expires - created, 4);
            assert!(
                created < first_expires,
                "renewed before the old one expired"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not renewed: {}", serve.log());
        // Polled: the job tells no one when it has run.
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, _) = sealgate(&setup, &["org", "status"], 0);
    assert!(status.contains("renewal: every 1s, next 20"), "{status}");
}

/// Every file under `dir`, as paths relative to it, sorted.
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn published_keys_are_where_gnupg_and_dns_look_for_them() {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;

    let setup = Mailroom::new();
    sckm_user(&setup, "user");
    sckm_user(&setup, "Mixed.Case");
    sealgate(&setup, &["org", "init"], 0);
    let (org_asc, _) = sealgate(&setup, &["org", "export"], 0);
    let org_fpr = org_fingerprint(&org_asc);

    // WKD: the same tree as GnuPG's own gpg-wks-client --install-key makes.
    let ours = setup.dir.path().join("wkd");
    sealgate(&setup, &["org", "publish", "wkd", path_str(&ours)], 0);
    let theirs = setup.dir.path().join("wkd-gnupg");
    std::fs::create_dir(&theirs).unwrap();
    let wks_home = GpgHome::new();
    for address in ["user@example.com", "mixed.case@example.com"] {
        let (exported, _) = sealgate(&setup, &["keys", "export", address], 0);
        let file = setup.file("export.asc", &exported);
        support::keys::run_tool(
            std::process::Command::new("/usr/lib/gnupg/gpg-wks-client")
                .env("GNUPGHOME", wks_home.path())
                .arg("-C")
                .arg(&theirs)
                .arg("--install-key")
                .arg(&file)
                .arg(address),
            None,
        );
    }
    assert_eq!(tree(&ours), tree(&theirs));
    assert_eq!(tree(&ours).len(), 3, "{:?}", tree(&ours));
    for file in tree(&ours) {
        let mode = std::fs::metadata(ours.join(&file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{file}: a web server must read it");
        if file.contains("/hu/") {
            // What a WKD client fetches: the key, certified.
            let partner = partner_trusting(&org_asc);
            partner.run(&["--import", path_str(&ours.join(&file))], None);
            let listing = text(&partner.run(&["--with-colons", "--list-keys"], None));
            assert!(
                listing.lines().any(|l| l.starts_with("uid:f:")),
                "{file}: {listing}"
            );
        }
    }

    // DANE: one OPENPGPKEY record per user, under the owner name RFC 7929 gives (as
    // the tests' DNS server computes it), holding the certified key.
    let (zone, _) = sealgate(
        &setup,
        &["org", "publish", "dane", "--zone", "example.com"],
        0,
    );
    let records: Vec<&str> = zone.lines().filter(|l| !l.starts_with(';')).collect();
    assert_eq!(records.len(), 2, "{zone}");
    for address in ["user@example.com", "Mixed.Case@example.com"] {
        let owner = support::dns::key_owner(&address.to_lowercase(), "_openpgpkey").to_string();
        let record = records
            .iter()
            .find(|r| r.starts_with(&format!("{owner} IN OPENPGPKEY ")))
            .unwrap_or_else(|| panic!("no record for {address} at {owner}:\n{zone}"));
        let key = base64::engine::general_purpose::STANDARD
            .decode(record.rsplit(' ').next().unwrap())
            .unwrap();
        let partner = partner_trusting(&org_asc);
        partner.run(&["--import"], Some(&key));
        let listing = text(&partner.run(
            &["--with-colons", "--check-sigs", &address.to_lowercase()],
            None,
        ));
        let by_org = |l: &&str| l.starts_with("sig:!") && l.split(':').nth(12) == Some(&org_fpr);
        assert!(
            listing.lines().any(|l| l.starts_with("uid:f:")) && listing.lines().any(|l| by_org(&l)),
            "{address}: {listing}"
        );
    }
    let (other, _) = sealgate(
        &setup,
        &["org", "publish", "dane", "--zone", "example.org"],
        0,
    );
    assert!(!other.contains(" IN OPENPGPKEY "), "{other}");
}

/// `openssl ARGS` in `dir`; (success, stdout + stderr).
fn openssl_in(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// Splits a PEM bundle into its blocks.
fn pem_blocks(pem: &str) -> Vec<String> {
    pem.split_inclusive("-----END CERTIFICATE-----\n")
        .filter(|b| b.contains("BEGIN CERTIFICATE"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_org_certificate_issues_certificates_openssl_verifies_and_mail_to_them_opens() {
    let setup = Mailroom::new();
    let d = setup.dir.path();
    let rsa = GpgHome::new();
    let (rsa_fpr, rsa_sub) = rsa.make_key("Rsa <rsa@example.com>", "ed25519", "rsa3072", "encr");
    let ec = GpgHome::new();
    let (_, ec_sub) = ec.make_key("Ec <ec@example.com>", "ed25519", "nistp256", "encr");
    for (home, sub, name) in [(&rsa, &rsa_sub, "rsa"), (&ec, &ec_sub, "ec")] {
        let file = setup.file(&format!("{name}.sckm"), home.sckm_export(sub));
        setup.keys_expect(&["import-sckm", path_str(&file)], 0);
    }
    sckm_user(&setup, "curve");
    // An S/MIME SCKM user: the org certificate certifies the key of their own
    // certificate, and mail to either opens.
    let own = support::keys::SmimeCert::openssl("smime@example.com", "keyEncipherment");
    setup.keys_expect(&["import-sckm", path_str(&own.sckm_bundle())], 0);
    let mut serve = Serve::start(&setup);

    // A CA valid three days: every user certificate (14 days asked) ends with it.
    let (_, said) = sealgate(
        &setup,
        &[
            "org",
            "cert",
            "init",
            "--subject",
            "CN=Example Org CA,O=Example Org",
            "--days",
            "3",
        ],
        0,
    );
    assert!(
        said.contains("warning: a self-signed org certificate"),
        "{said}"
    );
    assert!(
        said.contains("issued 3 S/MIME certificate(s) now"),
        "{said}"
    );
    assert!(
        said.contains("not certified curve@example.com: no S/MIME certificate")
            && said.contains("nistp256"),
        "cv25519 cannot have one, and the admin is told what to do: {said}"
    );

    let mut ca_pem = String::new();
    for user in ["rsa", "ec", "smime"] {
        let (bundle, _) = sealgate(
            &setup,
            &["keys", "export", &format!("{user}@example.com"), "--smime"],
            0,
        );
        let blocks = pem_blocks(&bundle);
        assert_eq!(blocks.len(), 2, "the certificate and its chain: {bundle}");
        std::fs::write(d.join(format!("{user}.pem")), &blocks[0]).unwrap();
        std::fs::write(d.join("ca.pem"), &blocks[1]).unwrap();
        ca_pem = blocks[1].clone();
        let (ok, said) = openssl_in(d, &["verify", "-CAfile", "ca.pem", &format!("{user}.pem")]);
        assert!(ok, "{said}");
        let (_, user_end) = openssl_in(
            d,
            &["x509", "-in", &format!("{user}.pem"), "-noout", "-enddate"],
        );
        let (_, ca_end) = openssl_in(d, &["x509", "-in", "ca.pem", "-noout", "-enddate"]);
        assert_eq!(
            user_end, ca_end,
            "a user certificate never outlives the org certificate"
        );
        let (_, listing) = openssl_in(
            d,
            &["x509", "-in", &format!("{user}.pem"), "-noout", "-text"],
        );
        assert!(
            listing.contains(&format!("email:{user}@example.com")),
            "{listing}"
        );
    }
    let (_, ca_text) = openssl_in(d, &["x509", "-in", "ca.pem", "-noout", "-text"]);
    assert!(
        ca_text.contains("CA:TRUE") && !ca_text.contains('@'),
        "{ca_text}"
    );

    // S/MIME mail to the issued certificates opens with the SCKM secret already held.
    let users = ["rsa", "ec", "smime"];
    std::fs::write(
        d.join("entity.txt"),
        "Content-Type: text/plain\r\n\r\nSealed for an org certificate.\r\n",
    )
    .unwrap();
    for user in users {
        let (ok, said) = openssl_in(
            d,
            &[
                "cms",
                "-encrypt",
                "-aes256",
                "-in",
                "entity.txt",
                "-out",
                "mail.eml",
                &format!("{user}.pem"),
            ],
        );
        assert!(ok, "{said}");
        let body = std::fs::read_to_string(d.join("mail.eml"))
            .unwrap()
            .replace("\r\n", "\n")
            .replace('\n', "\r\n");
        let mail = format!(
            "From: sender@example.org\r\nTo: {user}@example.com\r\nSubject: cms\r\nMessage-ID: <{user}-cms@example.org>\r\n{body}"
        );
        support::cli::send(
            serve.addr("inbound"),
            "sender@example.org",
            &[&format!("{user}@example.com")],
            mail.as_bytes(),
        )
        .await;
        let delivered = setup
            .delivered("in")
            .into_iter()
            .map(|m| text(&m))
            .find(|m| m.contains(&format!("<{user}-cms@example.org>")))
            .unwrap_or_else(|| panic!("not delivered: {}", serve.log()));
        assert!(
            delivered.contains("Sealed for an org certificate.")
                && delivered.contains("X-Sealgate-Decrypted: smime"),
            "{delivered}\n{}",
            serve.log()
        );
    }

    // DANE: an SMIMEA record (3 0 0, the full certificate) per user with a certificate,
    // beside the OPENPGPKEY records of certified keys (none here: no org key).
    let (zone, _) = sealgate(
        &setup,
        &["org", "publish", "dane", "--zone", "example.com"],
        0,
    );
    for user in ["rsa", "ec"] {
        let owner =
            support::dns::key_owner(&format!("{user}@example.com"), "_smimecert").to_string();
        let (ok, said) = openssl_in(
            d,
            &[
                "x509",
                "-in",
                &format!("{user}.pem"),
                "-outform",
                "DER",
                "-out",
                "user.der",
            ],
        );
        assert!(ok, "{said}");
        let der: String = std::fs::read(d.join("user.der"))
            .unwrap()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert!(
            zone.contains(&format!("{owner} IN SMIMEA 3 0 0 {der}\n")),
            "{user}: {zone}"
        );
    }
    assert!(!zone.contains(" IN OPENPGPKEY "), "{zone}");

    // A user who has a certificate gets no new one while it is good.
    let (_, said) = sealgate(&setup, &["org", "renew"], 0);
    assert!(
        said.contains("issued 0 S/MIME certificate(s) now, 3 still current"),
        "{said}"
    );

    // Revocation, and the CRL openssl checks against.
    let (_, said) = sealgate(&setup, &["org", "cert", "revoke", "rsa@example.com"], 0);
    assert!(said.contains("revoked rsa@example.com"), "{said}");
    let (crl, _) = sealgate(&setup, &["org", "cert", "crl"], 0);
    std::fs::write(d.join("crl.pem"), &crl).unwrap();
    let (ok, said) = openssl_in(
        d,
        &[
            "crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout", "-verify",
        ],
    );
    assert!(ok && said.contains("verify OK"), "{said}");
    let (ok, said) = openssl_in(
        d,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "ca.pem",
            "-CRLfile",
            "crl.pem",
            "rsa.pem",
        ],
    );
    assert!(!ok && said.contains("revoked"), "{said}");
    let (ok, said) = openssl_in(
        d,
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "ca.pem",
            "-CRLfile",
            "crl.pem",
            "ec.pem",
        ],
    );
    assert!(ok, "{said}");
    let (_, said) = sealgate(&setup, &["keys", "export", "rsa@example.com", "--smime"], 1);
    assert!(said.contains("no current S/MIME certificate"), "{said}");
    // The next run issues the revoked user a new certificate.
    let (_, said) = sealgate(&setup, &["org", "renew"], 0);
    assert!(said.contains("issued rsa@example.com"), "{said}");

    // A new org certificate: certificates from the old one stay until they expire.
    sealgate(
        &setup,
        &[
            "org",
            "cert",
            "init",
            "--subject",
            "CN=Second CA,O=Example Org",
        ],
        0,
    );
    let (bundle, _) = sealgate(&setup, &["keys", "export", "ec@example.com", "--smime"], 0);
    assert!(bundle.contains(pem_blocks(&bundle)[0].as_str()));
    std::fs::write(d.join("ec-again.pem"), &pem_blocks(&bundle)[0]).unwrap();
    let (ok, said) = openssl_in(d, &["verify", "-CAfile", "ca.pem", "ec-again.pem"]);
    assert!(ok, "still the first CA's: {said}");
    assert!(!rsa_fpr.is_empty() && !ca_pem.is_empty());
    assert_eq!(serve.sigterm(), Some(0), "{}", serve.log());
}

#[test]
fn the_organizations_own_ca_is_imported_and_its_users_certificates_chain_to_it() {
    let setup = Mailroom::new();
    let d = setup.dir.path();
    let rsa = GpgHome::new();
    let (_, sub) = rsa.make_key("Rsa <rsa@example.com>", "ed25519", "rsa3072", "encr");
    let file = setup.file("rsa.sckm", rsa.sckm_export(&sub));
    setup.keys_expect(&["import-sckm", path_str(&file)], 0);
    std::fs::write(
        d.join("ca.cnf"),
        "[req]\ndistinguished_name = dn\nx509_extensions = v3_ca\n[dn]\n[v3_ca]\n\
         basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n",
    )
    .unwrap();
    let (ok, said) = openssl_in(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-keyout",
            "org-ca.key",
            "-out",
            "org-ca.pem",
            "-days",
            "365",
            "-subj",
            "/CN=Example Org Issuing CA/O=Example Org",
            "-config",
            "ca.cnf",
        ],
    );
    assert!(ok, "{said}");
    // Its own certificate must not pass for a key.
    let (_, said) = sealgate(
        &setup,
        &["org", "cert", "import", "org-ca.pem", "org-ca.pem"],
        1,
    );
    assert!(!said.is_empty());
    let (_, said) = sealgate(
        &setup,
        &["org", "cert", "import", "org-ca.pem", "org-ca.key"],
        0,
    );
    assert!(said.contains("issued rsa@example.com"), "{said}");
    assert!(!said.contains("self-signed"), "{said}");
    let (bundle, _) = sealgate(&setup, &["keys", "export", "rsa@example.com", "--smime"], 0);
    std::fs::write(d.join("rsa.pem"), &pem_blocks(&bundle)[0]).unwrap();
    let (ok, said) = openssl_in(d, &["verify", "-CAfile", "org-ca.pem", "rsa.pem"]);
    assert!(ok, "{said}");
    let (status, _) = sealgate(&setup, &["org", "status"], 0);
    assert!(
        status.contains("Example Org Issuing CA") && status.contains("1 current"),
        "{status}"
    );
}

#[tokio::test]
async fn outbound_mail_carries_the_senders_certified_key_in_an_autocrypt_field() {
    use base64::Engine;
    let setup = Mailroom::with("[org]\nautocrypt_outbound = true\n");
    sckm_user(&setup, "user");
    sealgate(&setup, &["org", "init"], 0);
    let (org_asc, _) = sealgate(&setup, &["org", "export"], 0);
    let org_fpr = org_fingerprint(&org_asc);
    let mut serve = Serve::start(&setup);

    let mail = |id: &str, from: &str, extra: &str| {
        format!(
            "From: {from}\r\nTo: bob@example.org\r\nSubject: hi\r\nMessage-ID: <{id}>\r\n{extra}\r\nHello.\r\n"
        )
    };
    let send =
        |id: &'static str, envelope: &'static str, from: &'static str, extra: &'static str| {
            let addr = serve.addr("outbound");
            let message = mail(id, from, extra);
            async move {
                support::cli::send(addr, envelope, &["bob@example.org"], message.as_bytes()).await;
            }
        };
    send(
        "plain@example.com",
        "user@example.com",
        "User <User@Example.com>",
        "",
    )
    .await;
    send(
        "own@example.com",
        "user@example.com",
        "user@example.com",
        "Autocrypt: addr=user@example.com; keydata=AAAA\r\n",
    )
    .await;
    send(
        "other@example.com",
        "user@example.com",
        "someone@example.com",
        "",
    )
    .await;
    let out = |id: &str| {
        setup
            .delivered("out")
            .into_iter()
            .map(|m| text(&m))
            .find(|m| m.contains(&format!("<{id}>")))
            .unwrap_or_else(|| panic!("{id} not relayed: {}", serve.log()))
    };

    let relayed = out("plain@example.com");
    let head = &relayed[..relayed.find("\r\n\r\n").unwrap()];
    let start = head
        .find("Autocrypt: addr=user@example.com; keydata=")
        .expect(head);
    let field: String = head[start..]
        .split("\r\n")
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with(' '))
        .map(|(_, l)| l.trim())
        .collect();
    let keydata = field.rsplit("keydata=").next().unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(keydata)
        .unwrap();
    let partner = partner_trusting(&org_asc);
    partner.run(&["--import"], Some(&key));
    let listing = text(&partner.run(&["--with-colons", "--check-sigs", "user@example.com"], None));
    assert!(
        listing.lines().any(|l| l.starts_with("uid:f:")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("sig:!") && l.split(':').nth(12) == Some(org_fpr.as_str())),
        "{listing}"
    );
    assert_eq!(
        listing.lines().filter(|l| l.starts_with("sub:")).count(),
        1,
        "{listing}"
    );

    let own = out("own@example.com");
    assert_eq!(
        own.matches("Autocrypt:").count(),
        1,
        "the client's own field stays alone: {own}"
    );
    assert!(!out("other@example.com").contains("Autocrypt:"));
    assert_eq!(serve.sigterm(), Some(0), "{}", serve.log());
}
