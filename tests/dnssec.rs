//! A resolver that strips DNSSEC (the systemd-resolved stub, Docker's embedded DNS): the
//! probe recognises it, `serve` says so at start-up and notices when it changes,
//! `check` warns, and mail that a rule requires to be encrypted gets the rule's
//! `no_key` answer at once instead of a 451 on every retry for days.
//!
//! The resolver is a DNS server on loopback that holds a signed root zone, so that it
//! can be asked what a recursive resolver is asked; [`DnsServer::strip_dnssec`] makes it
//! ignore the DO bit, as the stripping resolvers do.

mod support;

use std::time::Duration;

use sealgate::dns::{DnsResolver, DnssecProbe, dnssec};
use support::cli::{BIN, run_with_timeout, text};
use support::dns::{DnsServer, Zone};
use support::{Client, config_text, jump, split_received, start_here};

/// A signed root, and a signed zone with a key record for bob@keys.example. The record
/// holds no real key: through a resolver that strips DNSSEC it must never be read, and
/// if it were, the reply would say "no usable key" instead of naming the resolver.
async fn resolver_with_keys() -> DnsServer {
    DnsServer::start(vec![
        Zone::new(".").signed(),
        Zone::new("keys.example")
            .signed()
            .openpgpkey("bob@keys.example", b"not a key"),
    ])
    .await
}

fn mail(subject: &str) -> Vec<u8> {
    format!(
        "From: alice@example.com\r\nSubject: {subject}\r\nMessage-ID: <d1@example.com>\r\n\r\nThe terms.\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn the_probe_tells_a_resolver_that_strips_dnssec_from_one_that_validates() {
    let dns = resolver_with_keys().await;
    let config = dns.lookup_config();

    // The root's keys, signed and trusted: all is well.
    let trusting = DnsResolver::with_trust_anchors(&config, &dns.trust_anchors()).unwrap();
    assert_eq!(trusting.probe_dnssec().await, DnssecProbe::Validates);

    // Signed, but not by the real root's keys, which are all a production resolver
    // trusts: signatures come through and do not validate.
    let production = DnsResolver::new(&config).unwrap();
    let found = production.probe_dnssec().await;
    assert!(
        matches!(found, DnssecProbe::DoesNotValidate(_)),
        "{found:?}"
    );

    // Without signatures: a resolver that strips them, whatever the trust anchors.
    dns.strip_dnssec();
    assert_eq!(production.probe_dnssec().await, DnssecProbe::Strips);
    assert_eq!(trusting.probe_dnssec().await, DnssecProbe::Strips);

    // A resolver that refuses to answer about the root tells nothing.
    let rootless = DnsServer::start(vec![Zone::new("keys.example")]).await;
    let found = DnsResolver::new(&rootless.lookup_config())
        .unwrap()
        .probe_dnssec()
        .await;
    assert!(matches!(found, DnssecProbe::Unanswered(_)), "{found:?}");
}

/// The whole story on one runtime, so that the test can jump over the ten minutes
/// between two probes.
#[tokio::test]
async fn a_resolver_that_strips_dnssec_gets_the_rules_answer_at_once() {
    let dns = resolver_with_keys().await;
    dns.strip_dnssec();
    let sink = support::Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A failure_rest, as in production: the second message to the domain is answered
    // without a question, and still as the rule says.
    let extra = format!(
        "[lookup]\nnameservers = [\"{}\"]\ntimeout = \"2s\"\nfailure_rest = \"1m\"\n",
        dns.addr
    );
    let gw = start_here(&config_text(
        &dir.path().join("data"),
        &sink.addr.to_string(),
        &extra,
    ))
    .await;
    // This test's resolver, by its port: other tests log into the same capture.
    let ours = format!("DNS resolver {}", dns.addr);

    // Said at start-up, as an error, with the fix.
    let line = support::log::wait_for(
        |l| l.contains("DNSSEC probe at start-up") && l.contains(&ours),
        Duration::from_secs(10),
    )
    .await;
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("strips DNSSEC"), "{line}");
    assert!(line.contains("[lookup] nameservers"), "{line}");

    // [secure] requires encryption (no_key = "reject"): refused for good, now, with
    // the reason, instead of 451 4.4.3 on every retry until the client gives up.
    for _ in 0..2 {
        let mut client = Client::connect(gw.outbound).await;
        let reply = client
            .send_mail(
                "alice@example.com",
                &["bob@keys.example"],
                &mail("[secure] terms"),
            )
            .await;
        assert_eq!((reply.code, reply.status()), (550, "5.7.1"), "{reply:?}");
        assert!(reply.text.contains("bob@keys.example"), "{reply:?}");
        assert!(
            reply
                .text
                .contains("this gateway's DNS resolver cannot validate DNSSEC"),
            "{reply:?}"
        );
    }
    // Opportunistic encryption (no_key = "send_clear") sends in clear, as for a
    // recipient without a key.
    let message = mail("terms");
    let mut client = Client::connect(gw.outbound).await;
    let reply = client
        .send_mail("alice@example.com", &["bob@keys.example"], &message)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(split_received(&got[0].data).1, message);
    support::log::wait_for(
        |l| {
            l.contains(" transaction ")
                && l.contains(
                    "<bob@keys.example> passed (resolver cannot validate DNSSEC: sent in clear)",
                )
        },
        Duration::from_secs(10),
    )
    .await;

    // The resolver passes signatures on again (here they do not validate, as the
    // gateway trusts the real root's keys only): the next probe, ten minutes on, sees
    // the change and says so.
    dns.heal();
    jump(dnssec::PROBE_EVERY).await;
    let line = support::log::wait_for(
        |l| l.contains("DNSSEC probe: the resolver changed") && l.contains(&ours),
        Duration::from_secs(10),
    )
    .await;
    assert!(line.contains("signatures come through"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_a_resolver_that_strips_dnssec() {
    let dns = resolver_with_keys().await;
    dns.strip_dnssec();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sealgate.toml");
    let text_of_config = format!(
        "data_dir = \"{data}\"\n[inbound]\nlisten = \"127.0.0.1:0\"\nnext_hop = \"dir:{data}/in\"\n\
         [outbound]\nlisten = \"127.0.0.1:0\"\nnext_hop = \"dir:{data}/out\"\n\
         [lookup]\nnameservers = [\"{dns}\"]\n",
        data = dir.path().join("data").display(),
        dns = dns.addr,
    );
    std::fs::write(&config, text_of_config).unwrap();
    let cwd = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        run_with_timeout(
            std::process::Command::new(BIN)
                .args(["check", "--config"])
                .arg(&config)
                .current_dir(&cwd),
            Duration::from_secs(20),
        )
    })
    .await
    .unwrap();
    let stdout = text(&out.stdout);
    // A warning: the config is right, the resolver is not.
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("DNSSEC through the resolver: warning: "))
        .unwrap_or_else(|| panic!("no DNSSEC warning in:\n{stdout}"));
    assert!(line.contains("strips DNSSEC"), "{line}");
    assert!(line.contains("unbound"), "{line}");
}
