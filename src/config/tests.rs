//! Config parsing: defaults, errors with their lines, units.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, Path::new("sealgate.toml"))
}

/// The one error `text` has.
fn error(text: &str) -> ConfigError {
    let mut refused = parse(text).unwrap_err();
    assert_eq!(refused.errors.len(), 1, "{refused}");
    refused.errors.remove(0)
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
    let err = error("data_dir = \"x\"\n\n[limits]\nidle_timeout = \"soon\"\n");
    assert_eq!(err.line, 4, "{err}");
    assert!(err.to_string().starts_with("sealgate.toml:4: "), "{err}");

    let err = error("[keys]\nlookup_ttl = \"30m\"\n");
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.contains("1h"), "{err}");

    let err = error("[inbound]\nlisten = \"nowhere\"\n");
    assert_eq!(err.line, 2, "{err}");

    let err = error("\n[inbound]\nnext_hop = \"mx\"\n");
    assert_eq!(err.line, 3, "{err}");

    let err = error("[limits]\nmax_errors = 3\nmax_recipients = 0\n");
    assert_eq!(err.line, 3, "{err}");
    let err = error("[limits]\n\nmax_line_length = 100\n");
    assert_eq!(err.line, 3, "{err}");

    let err = error("[crypto]\nadditional_decryption_key = \"/nonexistent/adk.asc\"\n");
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.contains("additional_decryption_key"), "{err}");

    let err = error("colour = \"blue\"\n");
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

    let err = error("[outbound]\nnext_hop = \"mx\"\n\n[inbound]\nnext_hop = \"mx\"\n");
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

    let err = error("[outbound]\nallow_untrusted_routing = true\n");
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.contains("inbound mail only"), "{err}");
    let err = error("[keys]\n\nsmime_trust = \"/nonexistent/ca.pem\"\n");
    assert_eq!(err.line, 3, "{err}");
    assert!(err.message.contains("smime_trust"), "{err}");
    let err = error("[spool]\ninbound_dsn = \"sometimes\"\n");
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
    let err = error("[crypto]\n\nsmime_authenticated_encryption = \"gcm\"\n");
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
    let err = error("\n[org]\ncertification_validity = \"1d\"\nrenew_every = \"13h\"\n");
    assert_eq!(err.line, 4, "{err}");
    assert!(err.message.contains("at most half"), "{err}");
    let err = error("[org]\nautocrypt = true\n");
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
    let err = error("[store]\nbackend = \"postgres\"\n");
    assert!(err.message.contains("url"), "{err}");
    // Both given, and the URL is no URL: both are said.
    let refused =
        parse("[store]\nbackend = \"postgres\"\nurl = \"x\"\nurl_file = \"f\"\n").unwrap_err();
    assert!(refused.errors[0].message.contains("one of"), "{refused}");
    assert!(
        refused.errors[1].message.contains("not a PostgreSQL URL"),
        "{refused}"
    );
    let err =
        error("[store]\nbackend = \"postgres\"\nurl = \"postgres://gw:s3cret@db:notaport/x\"\n");
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

#[test]
fn every_error_in_the_file_is_reported_in_line_order() {
    let text = "\
internal_domains = [\"user@example.com\"]
[inbound]
listen = \"nowhere\"
next_hop = \"mx\"
allowed_clients = [\"bogus\"]
[outbound]
trusted_authserv_ids = [\"mx.example.com\"]
[tls]
key = \"key.pem\"
";
    let refused = parse(text).unwrap_err();
    let lines: Vec<usize> = refused.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [1, 3, 4, 5, 7, 9], "{refused}");
    // Shown one a line, each as path:line: message.
    let shown = refused.to_string();
    assert_eq!(shown.lines().count(), 6, "{shown}");
    assert!(
        shown.lines().all(|l| l.starts_with("sealgate.toml:")),
        "{shown}"
    );
}

#[test]
fn warnings_come_after_the_errors() {
    let refused = parse("internal_domains = [\"@example.com\"]\n[inbound]\nlisten = \"nowhere\"\n")
        .unwrap_err();
    assert_eq!(refused.errors.len(), 1, "{refused}");
    assert_eq!(refused.warnings.len(), 1, "{refused}");
    let shown = refused.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[0].starts_with("sealgate.toml:3: "), "{shown}");
    assert!(
        lines[1].starts_with("sealgate.toml:1: warning: "),
        "{shown}"
    );
}

#[test]
fn a_cidr_error_names_the_value_and_its_line() {
    for (value, words) in [
        ("10.0.0.0/33", "prefix length 33"),
        ("bogus", "not an IP address or network"),
        ("10.0.0.0/x", "prefix length"),
        ("2001:db8::/129", "prefix length 129"),
    ] {
        let err = error(&format!(
            "[outbound]\nallowed_clients = [\n  \"127.0.0.1/32\",\n  \"{value}\",\n]\n"
        ));
        assert_eq!(err.line, 4, "{err}");
        assert!(err.message.contains(&format!("{value:?}")), "{err}");
        assert!(err.message.contains("[outbound] allowed_clients"), "{err}");
        assert!(err.message.contains(words), "{err}");
    }
}

#[test]
fn allowed_clients_take_single_addresses_and_warn_about_host_bits() {
    let config =
        parse("[outbound]\nallowed_clients = [\"192.0.2.7\", \"2001:db8::1\", \"10.1.2.3/8\"]\n")
            .unwrap();
    let nets: Vec<String> = config
        .outbound
        .allowed_clients
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["192.0.2.7/32", "2001:db8::1/128", "10.0.0.0/8"]);
    assert!(config.client_allowed(Direction::Outbound, "10.200.0.1".parse().unwrap()));
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    let warning = config.warnings[0].to_string();
    assert!(
        warning.starts_with("sealgate.toml:2: warning: "),
        "{warning}"
    );
    assert!(warning.contains("\"10.1.2.3/8\""), "{warning}");
    assert!(warning.contains("10.0.0.0/8"), "{warning}");
}

#[test]
fn internal_domains_are_fixed_with_a_warning_where_that_is_unambiguous() {
    let config = parse(
        "internal_domains = [\n  \"@example.com\",\n  \" example.org \",\n  \"Example.NET.\",\n  \"bücher.example\",\n]\n",
    )
    .unwrap();
    assert_eq!(
        config.internal_domains.domains(),
        [
            "example.com",
            "example.org",
            "example.net",
            "xn--bcher-kva.example"
        ]
    );
    assert!(config.internal_domains.is_internal("user@example.com"));
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[0].starts_with("sealgate.toml:2: warning: internal_domains: \"@example.com\" is read as \"example.com\" (without a leading @)"),
        "{warnings:?}"
    );
    assert!(warnings[1].contains("surrounding spaces"), "{warnings:?}");
    assert!(warnings[2].contains("upper case"), "{warnings:?}");
    assert!(warnings[2].contains("a trailing dot"), "{warnings:?}");

    let config = parse("internal_domains = []\n").unwrap();
    assert!(
        config.warnings[0]
            .message
            .contains("refuses every recipient"),
        "{:?}",
        config.warnings
    );
}

#[test]
fn internal_domains_refuse_what_is_not_a_domain() {
    let refused = parse(
        "internal_domains = [\n  \"*.example.com\",\n  \"user@example.com\",\n  \"\",\n  \"example.com\",\n]\n",
    )
    .unwrap_err();
    let errors: Vec<String> = refused.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].starts_with("sealgate.toml:2: internal_domains: \"*.example.com\" is a pattern"),
        "{errors:?}"
    );
    assert!(
        errors[1]
            .starts_with("sealgate.toml:3: internal_domains: \"user@example.com\" is an address"),
        "{errors:?}"
    );
    assert!(errors[1].contains("\"example.com\""), "{errors:?}");
    assert!(errors[2].starts_with("sealgate.toml:4: "), "{errors:?}");
}

#[test]
fn hostname_must_be_a_domain_name() {
    let config = parse("hostname = \"GW.Example.com\"\n").unwrap();
    assert_eq!(config.hostname, "gw.example.com");
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    let err = error("\nhostname = \"mail gateway\"\n");
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.contains("\"mail gateway\""), "{err}");
}

#[test]
fn values_that_cannot_be_read_are_all_reported_with_the_other_errors() {
    let text = "\
colour = \"blue\"
[limits]
idle_timeout = \"soon\"
max_recipients = 0
[keys]
lookup_ttl = \"30m\"
[inbound]
next_hop = \"mx\"
allowed_clients = [
  \"10.0.0.0/8\",
  \"10.0.0.0/33\",
]
";
    let refused = parse(text).unwrap_err();
    let lines: Vec<usize> = refused.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [1, 3, 4, 6, 8, 11], "{refused}");
    assert!(refused.errors[1].message.contains("soon"), "{refused}");
}

#[test]
fn a_syntax_error_is_reported_alone() {
    // toml reads the whole syntax before any value, and what follows a syntax error
    // may be misread: no guesses about the values around it.
    let refused =
        parse("[limits]\nidle_timeout = \"soon\"\nmax_errors = = 3\nmax_recipients = 0\n")
            .unwrap_err();
    assert_eq!(refused.errors.len(), 1, "{refused}");
    assert_eq!(refused.errors[0].line, 3, "{refused}");
    assert!(!refused.errors[0].message.contains('\n'), "{refused}");
}

#[test]
fn the_readme_shows_the_shipped_example_as_it_is() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../../sealgate.toml.example");
    assert!(
        readme.contains(&format!("```toml\n{example}```")),
        "README.md's copy of sealgate.toml.example differs from the file"
    );
}
