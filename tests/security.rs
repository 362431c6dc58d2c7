//! What a hostile sender, a hostile local user or a broken peer could do, each guarded
//! by a test that failed before its fix: SMTP smuggling, private data on disk, one
//! client shutting others out, harvesting that costs delivery, forged marks, and more.

mod support;

use std::time::Duration;

use support::{Client, Sink, check, expect_status, gateway_to};

const SINK_WAIT: Duration = Duration::from_secs(10);

/// Whether every line end in `data` is CRLF: no bare CR, no bare LF.
fn only_crlf(data: &[u8]) -> bool {
    data.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => data.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && data[i - 1] == b'\r',
        _ => true,
    })
}

/// SMTP smuggling through `<CR><LF>.<CR><CR><LF>` (and more CRs): smtp-proto 0.2.5
/// ended DATA there, so the commands after it ran as a second, smuggled transaction.
/// Only `<CR><LF>.<CR><LF>` ends DATA, on both listeners, and the next hop gets the
/// smuggled lines as text, with CRLF line ends only, so that it cannot be fooled either.
#[tokio::test]
async fn cr_cr_lf_smuggling_does_not_end_data_on_either_listener() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let cases = [
        (
            gw.outbound,
            "alice@example.com",
            "bob@example.org",
            &b"\r\n.\r\r\n"[..],
        ),
        (
            gw.inbound,
            "bob@example.org",
            "alice@example.com",
            b"\r\n.\r\r\r\r\n",
        ),
        (
            gw.inbound,
            "bob@example.org",
            "alice@example.com",
            b"\r\n.\r",
        ),
    ];
    for (i, (addr, from, to, ending)) in cases.into_iter().enumerate() {
        let mut client = Client::connect(addr).await;
        client.cmd_expect("EHLO client.test", 250).await;
        check(&mut client, &format!("MAIL FROM:<{from}>"), 250, "2.1.0").await;
        check(&mut client, &format!("RCPT TO:<{to}>"), 250, "2.1.5").await;
        client.cmd_expect("DATA", 354).await;
        let mut data = b"Subject: innocent\r\n\r\nhello".to_vec();
        data.extend_from_slice(ending);
        data.extend_from_slice(
            b"MAIL FROM:<admin@example.com>\r\n\
              RCPT TO:<victim@example.com>\r\n\
              DATA\r\n\
              Subject: smuggled\r\n\r\nbad\r\n.\r\n",
        );
        client.send(&data).await;
        expect_status(&mut client, 250, "2.0.0").await;
        // Exactly one reply for the one message: the next command gets its own.
        check(&mut client, "NOOP", 250, "2.0.0").await;
        client.quit().await;

        let got = sink.wait_for(i + 1, SINK_WAIT).await;
        assert_eq!(got.len(), i + 1, "one transaction per message: {got:?}");
        let arrived = &got[i];
        assert_eq!(arrived.mail_from, from);
        let text = String::from_utf8_lossy(&arrived.data);
        assert!(
            text.contains("MAIL FROM:<admin@example.com>\r\n")
                && text.contains("Subject: smuggled"),
            "the smuggled lines are the message's text: {text:?}"
        );
        assert!(
            only_crlf(&arrived.data),
            "a bare CR or LF reached the next hop: {text:?}"
        );
    }
    assert!(
        !sink
            .received()
            .iter()
            .any(|r| r.mail_from.contains("admin")),
        "a smuggled transaction reached the next hop"
    );
}

/// A bare CR in DATA reached the next hop byte for byte, where a next hop that reads
/// a lone CR as a line end would see a line boundary, and a dot line, that we did not.
#[tokio::test]
async fn bare_cr_and_lf_reach_the_next_hop_as_crlf() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.outbound).await;
    client.cmd_expect("EHLO client.test", 250).await;
    check(&mut client, "MAIL FROM:<alice@example.com>", 250, "2.1.0").await;
    check(&mut client, "RCPT TO:<bob@example.org>", 250, "2.1.5").await;
    client.cmd_expect("DATA", 354).await;
    client
        .send(b"Subject: x\r\n\r\none\rtwo\n.\rthree\r\n.\r\n")
        .await;
    expect_status(&mut client, 250, "2.0.0").await;
    client.quit().await;
    let got = sink.wait_for(1, SINK_WAIT).await;
    let (_, body) = support::split_received(&got[0].data);
    assert_eq!(
        String::from_utf8_lossy(&body),
        "Subject: x\r\n\r\none\r\ntwo\r\n.\r\nthree\r\n"
    );
    assert!(only_crlf(&got[0].data));
}

/// Every folder and file under `root` is owner-only: folders 0700, the rest 0600.
fn assert_private(root: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut seen = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}: {mode:03o}", path.display());
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}: {mode:03o}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 3, "{}: too little to check", root.display());
}

/// Decrypted mail waits in the spool under data_dir, and the dir: next hop writes
/// delivered mail: with the usual umask 022, data_dir was 0755 and sled's files 0644,
/// readable by every local user. Everything sealgate writes is owner-only now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_and_delivered_files_are_private_whatever_the_umask() {
    use support::cli::{BIN, Setup, path_str, serving_addr};
    let setup = Setup::new(
        |dir| {
            format!(
                "data_dir = \"{data}\"\nhostname = \"gw.test\"\n\
                 [inbound]\nlisten = \"127.0.0.1:0\"\nnext_hop = \"dir:{out}\"\n\
                 [outbound]\nlisten = \"127.0.0.1:0\"\n[lookup]\nkeys = false\n",
                data = dir.join("data").display(),
                out = dir.join("out/inbound").display(),
            )
        },
        Duration::from_secs(20),
    );
    let log = setup.dir.path().join("serve.log");
    // The umask a shell usually has, whatever this test process has.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$0\" serve --config \"$1\"")
        .arg(BIN)
        .arg(path_str(&setup.config))
        .current_dir(setup.dir.path())
        .env("SEALGATE_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let inbound = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = serving_addr(&text, "inbound") {
            break addr;
        }
        assert!(std::time::Instant::now() < deadline, "not serving: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut client = Client::connect(inbound).await;
    let reply = client
        .send_mail(
            "bob@example.org",
            &["alice@example.com"],
            b"Subject: private\r\n\r\nfor alice only\r\n",
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
    support::cli::signal(child.id(), "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));

    assert_private(&setup.data_dir);
    assert_private(&setup.dir.path().join("out"));
}

/// An existing data_dir that others may read is worth a warning from `check` and at
/// start-up: sealgate does not change an admin's folder, but says what to do.
#[test]
fn check_warns_when_data_dir_is_open_to_others() {
    use std::os::unix::fs::PermissionsExt;
    use support::cli::{Setup, text};
    let setup = Setup::new(
        |dir| support::config_text(&dir.join("data"), "dir:out", ""),
        Duration::from_secs(20),
    );
    std::fs::create_dir_all(&setup.data_dir).unwrap();
    std::fs::set_permissions(&setup.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = support::cli::run_with_timeout(
        std::process::Command::new(support::cli::BIN)
            .args(["check", "--config"])
            .arg(&setup.config),
        Duration::from_secs(20),
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("warning: data_dir")
            && stdout.contains("mode 755")
            && stdout.contains("chmod 700"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(0), "a warning, not an error");
}

/// One client could shut out everyone: `max_connections` was one pool for both
/// listeners, with no limit per client, so idle connections from one address to the
/// inbound listener made the outbound listener, internal MTAs included, answer 421.
/// Each listener has its own slots now, and each client its share of them.
#[tokio::test]
async fn one_client_cannot_take_every_connection_slot() {
    use std::net::Ipv4Addr;
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(
        &sink,
        "[limits]\nmax_connections = 4\nmax_connections_per_client = 2\n",
    )
    .await;
    let flooder = Ipv4Addr::new(127, 0, 0, 2);
    let mut held = vec![
        Client::connect_from(flooder, gw.inbound).await,
        Client::connect_from(flooder, gw.inbound).await,
    ];
    // The flooder's third connection: 421 with a policy status, and closed.
    let (mut third, reply) = Client::connect_from_raw(flooder, gw.inbound).await;
    assert_eq!((reply.code, reply.status()), (421, "4.7.0"), "{reply:?}");
    assert!(third.is_closed().await);
    // Other clients fill the listener; past its total, 421 4.3.2.
    for last in [3, 4] {
        held.push(Client::connect_from(Ipv4Addr::new(127, 0, 0, last), gw.inbound).await);
    }
    let (_, reply) = Client::connect_from_raw(Ipv4Addr::new(127, 0, 0, 5), gw.inbound).await;
    assert_eq!((reply.code, reply.status()), (421, "4.3.2"), "{reply:?}");
    // The outbound listener serves internal MTAs all the while.
    let mut mta = Client::connect(gw.outbound).await;
    let reply = mta
        .send_mail(
            "alice@example.com",
            &["bob@example.org"],
            b"Subject: out\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!((reply.code, reply.status()), (250, "2.0.0"), "{reply:?}");
    mta.quit().await;
    // The held sessions still work.
    for client in &mut held {
        check(client, "NOOP", 250, "2.0.0").await;
    }
}

/// A spoofed inbound mail planted a PGP key for bob, and with `format = "auto"` it
/// beat the S/MIME certificate the admin had imported for him: PGP was chosen before
/// the source was looked at. The source ranks first now.
#[tokio::test]
async fn a_harvested_key_never_outranks_the_admins() {
    use support::keys::{SmimeCert, pgp_key, plain_mail};
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "[keys]\nencrypt_to_mailflow_keys = true\n").await;
    let bob = "bob@partner.example";
    let cert = SmimeCert::openssl(bob, "digitalSignature,keyEncipherment");
    support::import(&gw, false, &[&cert.cert_path()], None);

    // The attacker's key arrives in spoofed mail "from" bob, and is harvested.
    let planted = pgp_key("Bob <bob@partner.example>");
    let spoofed = plain_mail(
        bob,
        "spoof@evil.example",
        &[&planted.autocrypt_header(bob)],
        "hello\r\n",
    );
    let mut client = Client::connect(gw.inbound).await;
    let reply = client
        .send_mail(bob, &["alice@example.com"], &spoofed)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let data_dir = gw.data_dir.clone();
        let list = tokio::task::spawn_blocking(move || {
            support::admin_request(&data_dir, sealgate::keys::admin::Request::List)
        })
        .await
        .unwrap()
        .unwrap();
        if list
            .entries
            .iter()
            .any(|e| e.fingerprint == planted.fingerprint)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not harvested: {:?}",
            list.entries
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Outbound mail to bob: encrypted to the admin's certificate, which openssl opens.
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "alice@example.com",
            &[bob],
            b"From: alice@example.com\r\nTo: bob@partner.example\r\nSubject: offer\r\n\r\nthe offer\r\n",
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
    let got = sink.wait_for(2, SINK_WAIT).await;
    let out = got
        .iter()
        .find(|r| r.recipients == [bob])
        .expect("bob's copy");
    let text = String::from_utf8_lossy(&out.data);
    assert!(text.contains("application/pkcs7-mime"), "{text}");
    assert!(!text.contains("BEGIN PGP MESSAGE"), "{text}");
    let (_, message) = support::split_received(&out.data);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.eml");
    std::fs::write(&path, &message).unwrap();
    let plain = support::keys::openssl(&[
        "cms",
        "-decrypt",
        "-in",
        path.to_str().unwrap(),
        "-recip",
        cert.cert_path().to_str().unwrap(),
        "-inkey",
        cert.key_path().to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&plain).contains("the offer"));
}

/// A forged `X-Sealgate-Decrypted` field on a plaintext inbound message reached the
/// user intact, telling them it had been encrypted. Every `X-Sealgate*` field a message
/// arrives with is removed, on both listeners, before sealgate adds its own.
#[tokio::test]
async fn forged_x_sealgate_fields_are_removed_on_both_listeners() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "[policy]\nheader_outbound = true\n").await;
    let forged = b"From: bob@example.org\r\nX-Sealgate-Decrypted: pgp; key=0123456789\r\n\
                   Subject: totally encrypted\r\nx-sealgate: decrypted pgp; rule=forged\r\n\
                   X-SEALGATE-Note: trust me\r\n\r\nhello\r\n";
    for (i, (addr, from, to)) in [
        (gw.inbound, "bob@example.org", "alice@example.com"),
        (gw.outbound, "alice@example.com", "bob@example.org"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut client = Client::connect(addr).await;
        let reply = client.send_mail(from, &[to], forged).await;
        assert_eq!(reply.code, 250, "{reply:?}");
        client.quit().await;
        let got = sink.wait_for(i + 1, SINK_WAIT).await;
        let text = String::from_utf8_lossy(&got[i].data).to_string();
        assert!(!text.contains("0123456789"), "{text}");
        assert!(
            !text.contains("forged") && !text.contains("trust me"),
            "{text}"
        );
        // Only sealgate's own field is left: what it really did.
        assert_eq!(
            text.to_ascii_lowercase().matches("x-sealgate").count(),
            1,
            "{text}"
        );
        assert!(text.contains("X-Sealgate: passed; rule="), "{text}");
        assert!(text.contains("Subject: totally encrypted\r\n"), "{text}");
    }
}

/// `SEALGATE_LOG=trace` let sled's trace output print database writes, decrypted mail
/// held in the spool among them. No level may log message content or secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logging_never_prints_decrypted_content() {
    use support::cli::{BIN, Setup, path_str, serving_addr, signal};
    use support::keys::{GpgHome, pgp_mime};
    const CANARY: &str = "CANARY-7f3e9a-plaintext";
    // The next hop takes other@ and defers user@, so user's decrypted copy is spooled.
    let sink = Sink::start().await;
    sink.set(|b| {
        b.rcpt_reply = std::sync::Arc::new(|rcpt: &str| {
            if rcpt.starts_with("user@") {
                "451 4.2.0 mailbox busy".into()
            } else {
                "250 2.1.5 OK".into()
            }
        })
    });
    let next_hop = sink.addr.to_string();
    let setup = Setup::new(
        |dir| support::config_text(&dir.join("data"), &next_hop, ""),
        Duration::from_secs(60),
    );
    let user = GpgHome::new();
    let (_, subkey) = user.make_key("User <user@example.com>", "ed25519", "cv25519", "encr");
    let export = setup.file("user.asc", user.sckm_export(&subkey));
    setup.keys_expect(&["import-sckm", path_str(&export)], 0);

    let log = setup.dir.path().join("serve.log");
    let mut serve = std::process::Command::new(BIN)
        .args(["serve", "--config", path_str(&setup.config)])
        // Every crate at trace (RUST_LOG's bare level is every crate's), even the
        // storage engine asked for by name.
        .env_remove("SEALGATE_LOG")
        .env("RUST_LOG", "trace,sled=trace")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let inbound = loop {
        if let Some(addr) = serving_addr(
            &std::fs::read_to_string(&log).unwrap_or_default(),
            "inbound",
        ) {
            break addr;
        }
        assert!(std::time::Instant::now() < deadline, "not serving");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let inner =
        format!("Content-Type: text/plain\r\nSubject: {CANARY}\r\n\r\n{CANARY} in the body\r\n");
    let message = pgp_mime(
        "sender@example.org",
        "user@example.com",
        "trace@example.org",
        &user.encrypt_to("user@example.com", inner.as_bytes()),
    );
    let mut client = Client::connect(inbound).await;
    let reply = client
        .send_mail(
            "sender@example.org",
            &["user@example.com", "other@example.com"],
            &message,
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
    sink.wait_for(1, SINK_WAIT).await;
    signal(serve.id(), "-TERM");
    assert_eq!(serve.wait().unwrap().code(), Some(0));

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("decrypted"), "the decryption ran: {text}");
    assert!(
        text.contains("holding copies in the spool"),
        "the copy was spooled"
    );
    assert!(text.contains("TRACE"), "the log is at trace level");
    assert!(!text.contains(CANARY), "the log shows decrypted content");
    // sled printed the bytes it wrote as a list of numbers.
    let as_numbers: Vec<String> = CANARY.bytes().map(|b| b.to_string()).collect();
    assert!(
        !text.contains(&as_numbers.join(", ")),
        "the log shows decrypted content as bytes"
    );
}

/// Policy files that were symbolic links were followed: run as root, `check` read
/// `/etc/shadow` through one and echoed its lines in the TOML error. Links and other
/// files that are not regular are refused, unread.
#[test]
fn policy_links_are_refused_and_never_read() {
    use support::cli::{Setup, run_with_timeout, text};
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("shadow");
    std::fs::write(&secret, "root:$6$SECRETHASH$abc:19000:0:99999:7:::\n").unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("10-ok.toml"),
        "[[rule]]\nchain = \"outbound\"\naction = \"pass\"\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&secret, policies.join("50-shadow.toml")).unwrap();
    let policy_dir = policies.display().to_string();
    let setup = Setup::new(
        |d| {
            format!(
                "policy_dir = '{policy_dir}'\n{}",
                support::config_text(&d.join("data"), "dir:out", "")
            )
        },
        Duration::from_secs(20),
    );
    let out = run_with_timeout(
        std::process::Command::new(support::cli::BIN)
            .args(["check", "--config"])
            .arg(&setup.config),
        Duration::from_secs(20),
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&format!(
            "{policy_dir}/50-shadow.toml:1: is a symbolic link"
        )),
        "{all}"
    );
    assert!(
        !all.contains("SECRETHASH") && !all.contains("root:"),
        "{all}"
    );
}

/// `user%other.org@example.com` and `victim!other.org@example.com` were accepted inbound
/// and forwarded verbatim, for an internal MTA that may route them onwards: an open
/// relay one hop further in. They are refused unless the admin allows them.
#[tokio::test]
async fn sender_specified_routing_is_refused_inbound_unless_allowed() {
    let sink = Sink::start().await;
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.inbound).await;
    client.cmd_expect("EHLO mx.example.net", 250).await;
    check(&mut client, "MAIL FROM:<x@example.net>", 250, "2.1.0").await;
    for rcpt in [
        "user%other.org@example.com",
        "other.org!victim@example.com",
        "a!b%c@example.com",
    ] {
        let reply = check(&mut client, &format!("RCPT TO:<{rcpt}>"), 550, "5.7.1").await;
        assert!(reply.text.contains("routing"), "{reply:?}");
    }
    check(&mut client, "RCPT TO:<alice@example.com>", 250, "2.1.5").await;
    client.quit().await;

    let dir = tempfile::tempdir().unwrap();
    let text = support::config_text(&dir.path().join("data"), &sink.addr.to_string(), "")
        .replace("[inbound]\n", "[inbound]\nallow_untrusted_routing = true\n");
    let gw = support::start(&text).await;
    let mut client = Client::connect(gw.inbound).await;
    let reply = client
        .send_mail(
            "x@example.net",
            &["user%other.org@example.com"],
            b"Subject: s\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
}

/// Internal host names and addresses leaked to internet senders: in the 451 for an
/// unreachable internal server, and in the internal server's own refusals. On the
/// inbound listener, a refusal from or about the next hop keeps its code and enhanced
/// status code, and says nothing of the inside; outbound clients still get it all.
#[tokio::test]
async fn inbound_replies_name_no_internal_host() {
    let sink = Sink::start().await;
    sink.set(|b| {
        b.rcpt_reply = std::sync::Arc::new(|_: &str| {
            "550 5.1.1 <alice@example.com>: unknown user at exchange01.corp.internal (10.1.2.3)"
                .into()
        })
    });
    let (_dir, gw) = gateway_to(&sink, "").await;
    let mut client = Client::connect(gw.inbound).await;
    let reply = client
        .send_mail(
            "x@partner.example",
            &["alice@example.com"],
            b"Subject: s\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!((reply.code, reply.status()), (550, "5.1.1"), "{reply:?}");
    assert!(
        !reply.text.contains("corp.internal") && !reply.text.contains("10.1.2.3"),
        "{reply:?}"
    );
    client.quit().await;
    // The outbound listener's clients are ours: they get the next hop's words.
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail(
            "alice@example.com",
            &["bob@example.org"],
            b"Subject: s\r\n\r\nhi\r\n",
        )
        .await;
    assert!(reply.text.contains("exchange01.corp.internal"), "{reply:?}");
    client.quit().await;

    // An internal server that cannot be reached: 451 4.4.1, without its address.
    // Bound and never listening: the port is ours for the test, and refuses.
    let dead = tokio::net::TcpSocket::new_v4().unwrap();
    dead.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let hop = dead.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let gw = support::start(&support::config_text(&dir.path().join("data"), &hop, "")).await;
    let mut client = Client::connect(gw.inbound).await;
    let reply = client
        .send_mail(
            "x@partner.example",
            &["alice@example.com"],
            b"Subject: s\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!((reply.code, reply.status()), (451, "4.4.1"), "{reply:?}");
    assert!(
        !reply.text.contains(&hop) && !reply.text.contains("127.0.0.1"),
        "{reply:?}"
    );
    client.quit().await;
}

/// Backscatter: a DSN for an inbound message went to whatever sender it claimed. Only
/// a sender the trusted MTA in front vouches for (SPF, DKIM or DMARC) gets one now, and
/// it names no internal host.
#[tokio::test]
async fn no_dsn_to_an_unverified_inbound_sender() {
    let sink = Sink::start().await;
    sink.set(|b| {
        b.rcpt_reply = std::sync::Arc::new(|rcpt: &str| {
            if rcpt.starts_with("bob@") {
                "550 5.1.1 bob is not here (mailhub.corp.internal)".into()
            } else {
                "250 2.1.5 OK".into()
            }
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let text = support::config_text(&dir.path().join("data"), &sink.addr.to_string(), "").replace(
        "[inbound]\n",
        "[inbound]\ntrusted_authserv_ids = [\"mx.example.com\"]\n",
    );
    let gw = support::start(&text).await;
    let to = ["alice@example.com", "bob@example.com"];

    // Forged, or merely unverified: alice gets it, bob's failure is not bounced.
    let unverified = b"From: x@victim.example\r\n\
                       Authentication-Results: mx.evil.example; spf=pass smtp.mailfrom=victim.example\r\n\
                       Subject: s\r\n\r\nhi\r\n";
    let mut client = Client::connect(gw.inbound).await;
    let reply = client.send_mail("x@victim.example", &to, unverified).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert!(
        gw.spool.is_empty(),
        "a DSN was held for an unverified sender"
    );
    client.quit().await;

    // The MTA in front says SPF passed for the sender's domain: the sender hears of it.
    let verified = b"From: y@partner.example\r\n\
                     Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=y@partner.example\r\n\
                     Subject: s\r\n\r\nhi\r\n";
    let mut client = Client::connect(gw.inbound).await;
    let reply = client.send_mail("y@partner.example", &to, verified).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
    let got = sink.wait_for(3, SINK_WAIT).await;
    let dsn = got.iter().find(|r| r.mail_from.is_empty()).expect("a DSN");
    assert_eq!(dsn.recipients, ["y@partner.example"]);
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(
        text.contains("Final-Recipient: rfc822; bob@example.com"),
        "{text}"
    );
    assert!(text.contains("Status: 5.1.1"), "{text}");
    assert!(
        !text.contains("Remote-MTA") && !text.contains("corp.internal"),
        "{text}"
    );
    assert_eq!(got.iter().filter(|r| r.mail_from.is_empty()).count(), 1);
}
