//! The sections of `sealgate.toml` that are read as they are written, with their
//! built-in defaults: `[policy]`, `[lookup]`, `[relay]`, `[spool]`, `[org]`, `[limits]`,
//! `[store]`, `[metrics]`, `[trace]` and `[log]`. Their values are checked while they are
//! deserialized ([`super::units`]).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::units::{ByteSize, HumanDuration, LineLength};
use crate::mail::Direction;

/// `[policy]`: how the rules' decisions show in the mail itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Adds `X-Sealgate: <what was done>; rule=<rule>` to inbound mail, so users (and
    /// their filters) can see it was decrypted or passed, and by which rule.
    pub header_inbound: bool,
    /// The same on outbound mail; off, because it tells outsiders about our rules.
    pub header_outbound: bool,
}

impl PolicyConfig {
    /// Whether mail of `direction` gets the X-Sealgate field.
    pub fn header(&self, direction: Direction) -> bool {
        match direction {
            Direction::Inbound => self.header_inbound,
            Direction::Outbound => self.header_outbound,
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            header_inbound: true,
            header_outbound: false,
        }
    }
}

/// `[lookup]`: key discovery and MX resolution through DNS.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LookupConfig {
    /// Look up the keys of outbound recipients the cache has none for (OPENPGPKEY,
    /// SMIMEA). Off, a recipient without a cached key simply has none.
    pub keys: bool,
    /// Resolvers as "ip:port"; empty means the system resolver.
    pub nameservers: Vec<SocketAddr>,
    /// Domains whose key records are accepted without DNSSEC validation.
    pub insecure_domains: Vec<String>,
    /// How long one recipient's key lookup may take; past it, the lookup counts as
    /// unavailable (the rule's `lookup_offline` decides).
    pub timeout: HumanDuration,
    /// How long "this recipient publishes no key" is remembered, so that mail to
    /// someone without a key does not cost a DNS query every time.
    pub negative_ttl: HumanDuration,
    /// After a key lookup in a domain went unanswered, further lookups there are
    /// "unavailable" at once for this long, without a query: a resolver that is down
    /// must not cost every message a timeout.
    pub failure_rest: HumanDuration,
}

impl Default for LookupConfig {
    fn default() -> Self {
        LookupConfig {
            keys: true,
            nameservers: Vec::new(),
            insecure_domains: Vec::new(),
            timeout: HumanDuration::from_secs(5),
            negative_ttl: HumanDuration::from_secs(60 * 60),
            failure_rest: HumanDuration::from_secs(60),
        }
    }
}

/// `[relay]`: the client side towards the next hop.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// How long a failed next hop is left alone before it is tried again.
    pub retry_after: HumanDuration,
    /// After a next hop's first failure, it is probed again this soon; only when that
    /// probe fails too is it left alone for `retry_after`.
    pub first_probe: HumanDuration,
    /// The port MX hosts are reached on (`next_hop = "mx"`); 25 except in tests.
    pub mx_port: u16,
    /// How long to wait for the next hop's TCP connection.
    pub connect_timeout: HumanDuration,
    /// How long to wait for each of the next hop's replies (RFC 5321 §4.5.3.2 says 5 min).
    pub command_timeout: HumanDuration,
    /// How long the next hop may take to send and answer the message body (RFC 5321: 10 min).
    pub data_timeout: HumanDuration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            retry_after: HumanDuration::from_secs(15 * 60),
            first_probe: HumanDuration::from_secs(60),
            mx_port: 25,
            connect_timeout: HumanDuration::from_secs(30),
            command_timeout: HumanDuration::from_secs(5 * 60),
            data_timeout: HumanDuration::from_secs(10 * 60),
        }
    }
}

/// `[spool]`: the durable retry spool for copies that a fanned-out message could not
/// hand on at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Delay before the first retry; each later retry waits twice as long.
    pub first_retry: HumanDuration,
    /// The longest wait between two retries.
    pub max_retry: HumanDuration,
    /// After this long in the spool, a copy is given up and its sender gets a DSN.
    pub lifetime: HumanDuration,
    /// Who gets a DSN for inbound mail some of whose recipients failed: "verified"
    /// (the default) only a sender the trusted MTA vouches for (SPF, DKIM or DMARC in
    /// an Authentication-Results field of `[inbound] trusted_authserv_ids`), "always",
    /// or "never". A DSN to a forged sender is backscatter.
    pub inbound_dsn: InboundDsn,
}

/// `[org]`: what the Organization key and certificate do for internal users.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrgConfig {
    /// How long a certification of a user's key by the org key, and a user certificate
    /// issued by the org certificate, are valid. Short, so that a key the gateway no
    /// longer holds stops being vouched for soon.
    pub certification_validity: HumanDuration,
    /// How often the renewal job runs. It renews what has less than half its validity
    /// left, so this must be well under half of `certification_validity`.
    pub renew_every: HumanDuration,
    /// A user with no mail through the gateway for this long is not renewed.
    pub inactive_after: HumanDuration,
    /// Outbound mail from an internal user carries an Autocrypt header with the
    /// user's key.
    pub autocrypt_outbound: bool,
}

impl Default for OrgConfig {
    fn default() -> Self {
        const DAY: u64 = 24 * 60 * 60;
        OrgConfig {
            certification_validity: HumanDuration(Duration::from_secs(14 * DAY)),
            renew_every: HumanDuration(Duration::from_secs(12 * 60 * 60)),
            inactive_after: HumanDuration(Duration::from_secs(90 * DAY)),
            autocrypt_outbound: false,
        }
    }
}

/// `[spool] inbound_dsn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboundDsn {
    Verified,
    Always,
    Never,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            first_retry: HumanDuration::from_secs(60),
            max_retry: HumanDuration::from_secs(60 * 60),
            lifetime: HumanDuration::from_secs(5 * 24 * 60 * 60),
            inbound_dsn: InboundDsn::Verified,
        }
    }
}

/// `[limits]`: everything that bounds what one client can cost.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Announced in EHLO SIZE; larger DATA gets 552 5.3.4.
    pub max_message_size: ByteSize,
    /// Per transaction; more get 452 4.5.3.
    pub max_recipients: NonZeroUsize,
    /// Connections per listener; over it a new connection gets 421 4.3.2 at once.
    /// Each listener has its own, so a flood on one does not lock the other out.
    pub max_connections: NonZeroUsize,
    /// Connections one client (an IPv4 address, or an IPv6 /64) may hold on one
    /// listener; over it a new one gets 421 4.7.0 at once (Postfix's
    /// smtpd_client_connection_count_limit).
    pub max_connections_per_client: NonZeroUsize,
    /// A client silent this long between commands gets 421.
    pub idle_timeout: HumanDuration,
    /// The whole DATA phase, from 354 to the final dot.
    pub data_timeout: HumanDuration,
    /// Longest command line, CRLF included; longer lines get 500 5.5.2.
    pub max_line_length: LineLength,
    /// Errors one session may make before it is dropped with 421.
    pub max_errors: NonZeroUsize,
    /// How long transactions in flight may take to finish after SIGTERM.
    pub shutdown_grace: HumanDuration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: ByteSize(50 * 1024 * 1024),
            max_recipients: NonZeroUsize::new(100).unwrap(),
            max_connections: NonZeroUsize::new(1000).unwrap(),
            // Postfix's default; an internal MTA's concurrency towards one relay
            // (default_destination_concurrency_limit, 20) stays well under it.
            max_connections_per_client: NonZeroUsize::new(50).unwrap(),
            idle_timeout: HumanDuration::from_secs(5 * 60),
            data_timeout: HumanDuration::from_secs(10 * 60),
            // Postfix's line_length_limit; RFC 5321's 512 is too tight once MAIL carries
            // extension parameters.
            max_line_length: LineLength(2048),
            max_errors: NonZeroUsize::new(10).unwrap(),
            shutdown_grace: HumanDuration::from_secs(30),
        }
    }
}

/// `[store]`: where the key cache, the sealed secrets and the retry spool live.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub backend: Backend,
    /// `postgres://user:password@host:port/db`. Better in `url_file`, which keeps the
    /// password out of the config.
    pub url: Option<String>,
    /// A file whose first line is the URL.
    pub url_file: Option<PathBuf>,
    /// Connections to the database, at most.
    pub pool_size: NonZeroUsize,
    /// How long connecting, waiting for a connection, and one statement may take; past
    /// it the database counts as unavailable for that request.
    pub timeout: HumanDuration,
    /// A member whose heartbeat is older than this counts as dead: the spooled copies it
    /// claimed go to the other members.
    pub member_timeout: HumanDuration,
}

/// `[store] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded database under `data_dir`: one machine, nothing to set up.
    #[default]
    Sled,
    /// A PostgreSQL database shared by the gateways of a cluster.
    Postgres,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Sled,
            url: None,
            url_file: None,
            pool_size: NonZeroUsize::new(8).expect("8 is not 0"),
            timeout: HumanDuration::from_secs(5),
            member_timeout: HumanDuration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    // Never the URL, which may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("url_file", &self.url_file)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("member_timeout", &self.member_timeout)
            .finish()
    }
}

impl StoreConfig {
    /// The database URL: `url`, or the first line of `url_file`.
    pub fn database_url(&self) -> Result<String, String> {
        match (&self.url, &self.url_file) {
            (Some(url), None) => Ok(url.clone()),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|text| text.lines().next().unwrap_or("").trim().to_string())
                .map_err(|e| format!("[store] url_file {}: {e}", path.display())),
            (Some(_), Some(_)) => Err("[store] has both url and url_file: give one".into()),
            (None, None) => Err("[store] backend = \"postgres\" needs url or url_file".into()),
        }
    }
}

/// `[metrics]`: the HTTP listener for Prometheus (`/metrics`) and health checks
/// (`/healthz`). Off unless `listen` is set: it tells whoever can reach it how much mail
/// flows, so it belongs on loopback or a management network.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
}

/// `[trace]`: what sealgate writes into the mail it hands on about what it did.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceConfig {
    /// Adds one `X-Sealgate-Trace` field to every message handed on: the queue id, the
    /// direction, the rules that decided, the action per recipient and the key ids
    /// used. For mail-flow tests; it tells the next hop (and, outbound, the world) how
    /// the policy treated the message.
    pub header: bool,
}

/// `[log]`: how log lines are written (to standard error).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}
