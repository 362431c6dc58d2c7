//! Config parsing: defaults, errors with their lines, units.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("sealgate.toml"))
}

#[test]
fn defaults_deliver_into_data_dir() {
    let config = Config::defaults();
    assert_eq!(config.inbound.listen, "127.0.0.1:2525".parse().unwrap());
    assert_eq!(config.outbound.listen, "127.0.0.1:2587".parse().unwrap());
    assert_eq!(
        config.inbound.next_hop,
        NextHop::Dir("data/delivered/inbound".into())
    );
    assert_eq!(
        config.outbound.next_hop,
        NextHop::Dir("data/delivered/outbound".into())
    );
    assert_eq!(config.internal_domains.domains(), ["example.com"]);
    assert!(config.client_allowed(Direction::Outbound, "127.0.0.1".parse().unwrap()));
    assert!(!config.client_allowed(Direction::Outbound, "192.0.2.1".parse().unwrap()));
    assert!(config.client_allowed(Direction::Inbound, "192.0.2.1".parse().unwrap()));
}

#[test]
fn errors_name_the_line() {
    let err = parse("data_dir = \"x\"\n\n[limits]\nidle_timeout = \"soon\"\n").unwrap_err();
    assert_eq!(err.line, 4, "{err}");
    assert!(err.to_string().starts_with("sealgate.toml:4: "), "{err}");

    let err = parse("[keys]\nlookup_ttl = \"30m\"\n").unwrap_err();
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.contains("1h"), "{err}");

    let err = parse("[inbound]\nlisten = \"nowhere\"\n").unwrap_err();
    assert_eq!(err.line, 2, "{err}");

    let err = parse("\n[inbound]\nnext_hop = \"mx\"\n").unwrap_err();
    assert_eq!(err.line, 3, "{err}");

    let err = parse("[limits]\nmax_errors = 3\nmax_recipients = 0\n").unwrap_err();
    assert_eq!(err.line, 3, "{err}");
    let err = parse("[limits]\n\nmax_line_length = 100\n").unwrap_err();
    assert_eq!(err.line, 3, "{err}");

    let err =
        parse("[crypto]\nadditional_decryption_key = \"/nonexistent/adk.asc\"\n").unwrap_err();
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.contains("additional_decryption_key"), "{err}");

    let err = parse("colour = \"blue\"\n").unwrap_err();
    assert!(err.message.contains("colour"), "{err}");
}

#[test]
fn sizes_and_durations() {
    let config = parse(
        "[limits]\nmax_message_size = \"1MiB\"\nidle_timeout = \"90s\"\n[keys]\nlookup_ttl = \"999d\"\n",
    )
    .unwrap();
    assert_eq!(config.limits.max_message_size.0, 1024 * 1024);
    assert_eq!(config.limits.idle_timeout.0, Duration::from_secs(90));
    assert_eq!(config.keys.lookup_ttl.0, Duration::from_secs(999 * 86400));
    assert!(parse("[keys]\nlookup_ttl = \"1000d\"\n").is_err());
}

#[test]
fn mx_next_hop_is_for_outbound_only() {
    let config = parse("[outbound]\nnext_hop = \"mx\"\n[relay]\nmx_port = 2525\n").unwrap();
    assert_eq!(config.outbound.next_hop, NextHop::Mx);
    assert_eq!(config.relay.mx_port, 2525);

    let err = parse("[outbound]\nnext_hop = \"mx\"\n\n[inbound]\nnext_hop = \"mx\"\n").unwrap_err();
    assert_eq!(err.line, 5, "{err}");
    assert!(err.message.contains("[inbound]"), "{err}");
    assert!(err.message.contains("outbound mail only"), "{err}");
}

#[test]
fn security_settings_and_their_errors() {
    let config = parse(
        "[inbound]\ntrusted_authserv_ids = [\" mx.example.com \"]\nallow_untrusted_routing = true\n\
         [spool]\ninbound_dsn = \"never\"\n[limits]\nmax_connections_per_client = 7\n",
    )
    .unwrap();
    assert_eq!(config.inbound.trusted_authserv_ids, ["mx.example.com"]);
    assert!(config.inbound.allow_untrusted_routing);
    assert_eq!(config.spool.inbound_dsn, InboundDsn::Never);
    assert_eq!(config.limits.max_connections_per_client.get(), 7);
    // Defaults: nothing trusted, no routing, DSNs to verified senders only.
    let defaults = Config::defaults();
    assert!(defaults.inbound.trusted_authserv_ids.is_empty());
    assert!(!defaults.inbound.allow_untrusted_routing);
    assert_eq!(defaults.spool.inbound_dsn, InboundDsn::Verified);
    assert!(defaults.keys.smime_trust.is_none());

    let err = parse("[outbound]\nallow_untrusted_routing = true\n").unwrap_err();
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.contains("inbound mail only"), "{err}");
    let err = parse("[keys]\n\nsmime_trust = \"/nonexistent/ca.pem\"\n").unwrap_err();
    assert_eq!(err.line, 3, "{err}");
    assert!(err.message.contains("smime_trust"), "{err}");
    let err = parse("[spool]\ninbound_dsn = \"sometimes\"\n").unwrap_err();
    assert_eq!(err.line, 2, "{err}");
}

#[test]
fn smime_authenticated_encryption_is_off_unless_asked_for() {
    use crate::policy::rule::AuthenticatedEncryption;
    assert_eq!(
        Config::defaults().crypto.smime_authenticated_encryption,
        AuthenticatedEncryption::Never
    );
    for (text, want) in [
        ("never", AuthenticatedEncryption::Never),
        ("when_capable", AuthenticatedEncryption::WhenCapable),
        ("always", AuthenticatedEncryption::Always),
    ] {
        let config = parse(&format!(
            "[crypto]\nsmime_authenticated_encryption = \"{text}\"\n"
        ))
        .unwrap();
        assert_eq!(config.crypto.smime_authenticated_encryption, want);
    }
    let err = parse("[crypto]\n\nsmime_authenticated_encryption = \"gcm\"\n").unwrap_err();
    assert_eq!(err.line, 3, "{err}");
    assert!(err.message.contains("when_capable"), "{err}");
}

#[test]
fn org_settings_default_to_two_weeks_twelve_hours_and_ninety_days() {
    let config = Config::defaults();
    assert_eq!(
        config.org.certification_validity.0,
        Duration::from_secs(14 * 86400)
    );
    assert_eq!(config.org.renew_every.0, Duration::from_secs(12 * 3600));
    assert_eq!(config.org.inactive_after.0, Duration::from_secs(90 * 86400));
    let config = parse(
        "[org]\ncertification_validity = \"2d\"\nrenew_every = \"1d\"\ninactive_after = \"30d\"\n",
    )
    .unwrap();
    assert_eq!(config.org.renew_every.0, Duration::from_secs(86400));
    // A job that runs less often than half the validity lets certifications lapse.
    let err =
        parse("\n[org]\ncertification_validity = \"1d\"\nrenew_every = \"13h\"\n").unwrap_err();
    assert_eq!(err.line, 4, "{err}");
    assert!(err.message.contains("at most half"), "{err}");
    let err = parse("[org]\nautocrypt = true\n").unwrap_err();
    assert!(err.message.contains("unknown field"), "{err}");
}

#[test]
fn the_shipped_example_parses() {
    let config = parse(include_str!("../../sealgate.toml.example")).unwrap();
    assert_eq!(config.store.backend, Backend::Sled);
}

#[test]
fn a_postgres_store_needs_one_url_and_never_shows_it() {
    let ok =
        parse("[store]\nbackend = \"postgres\"\nurl = \"postgres://gw:s3cret@db:5432/sealgate\"\n")
            .unwrap();
    assert_eq!(ok.store.backend, Backend::Postgres);
    assert!(
        !format!("{ok:?}").contains("s3cret"),
        "Debug never shows the URL"
    );
    let err = parse("[store]\nbackend = \"postgres\"\n").unwrap_err();
    assert!(err.message.contains("url"), "{err}");
    let err =
        parse("[store]\nbackend = \"postgres\"\nurl = \"x\"\nurl_file = \"f\"\n").unwrap_err();
    assert!(err.message.contains("one of"), "{err}");
    let err =
        parse("[store]\nbackend = \"postgres\"\nurl = \"postgres://gw:s3cret@db:notaport/x\"\n")
            .unwrap_err();
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(err.message.contains("not a PostgreSQL URL"), "{err}");
}

#[test]
fn the_config_file_is_found_in_the_order_an_admin_expects() {
    let there =
        |files: &'static [&'static str]| move |p: &Path| files.iter().any(|f| Path::new(f) == p);
    let explicit = Path::new("/srv/gw.toml");
    let env = Path::new("/run/gw.toml");
    assert_eq!(
        Config::find(Some(explicit), Some(env), there(&["sealgate.toml"])),
        Some(explicit.to_path_buf())
    );
    // The environment's file is taken even when it is missing: loading it then fails,
    // rather than falling back to other settings.
    assert_eq!(
        Config::find(None, Some(env), there(&["sealgate.toml"])),
        Some(env.to_path_buf())
    );
    assert_eq!(
        Config::find(None, None, there(&["sealgate.toml", SYSTEM_CONFIG_FILE])),
        Some(PathBuf::from("sealgate.toml"))
    );
    assert_eq!(
        Config::find(None, None, there(&[SYSTEM_CONFIG_FILE])),
        Some(PathBuf::from(SYSTEM_CONFIG_FILE))
    );
    assert_eq!(Config::find(None, None, there(&[])), None);
}
