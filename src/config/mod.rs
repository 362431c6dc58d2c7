//! The config file (`sealgate.toml`): its serde format, its built-in defaults, and the
//! validation that turns it into a [`Config`] the rest of the gateway can trust.
//!
//! Every error an admin can make is reported as `path:line: message`, so that the line
//! can be found without reading the source. Values are checked while they are
//! deserialized (see [`units`]), which is what gives each error its line.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::mail::{Direction, InternalDomains};
use crate::policy::rule::AuthenticatedEncryption;
use units::LookupTtl;

mod sections;
pub mod units;

pub use sections::{
    Backend, InboundDsn, Limits, LogConfig, LogFormat, LookupConfig, MetricsConfig, OrgConfig,
    PolicyConfig, RelayConfig, SpoolConfig, StoreConfig, TraceConfig,
};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "sealgate.toml";
/// The file read when neither `--config` nor [`DEFAULT_CONFIG_FILE`] is there.
pub const SYSTEM_CONFIG_FILE: &str = "/etc/sealgate/sealgate.toml";
/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "SEALGATE_CONFIG";

/// A config problem, always tied to the file (and line, where there is one) that has it.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct ConfigError {
    /// The config file.
    pub path: String,
    /// 1-based line of the offending key or value; 1 when the problem is the whole file.
    pub line: usize,
    /// What is wrong, in the admin's terms.
    pub message: String,
}

/// Where one direction hands its mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    /// An SMTP server at this address.
    Smtp(String),
    /// Delivery by MX lookup (outbound only).
    Mx,
    /// Each accepted transaction becomes one `.eml` file in this folder.
    Dir(PathBuf),
}

impl std::fmt::Display for NextHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NextHop::Smtp(addr) => write!(f, "{addr}"),
            NextHop::Mx => write!(f, "mx"),
            NextHop::Dir(path) => write!(f, "dir:{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for NextHop {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        NextHop::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl NextHop {
    fn parse(text: &str) -> Result<NextHop, String> {
        if text == "mx" {
            return Ok(NextHop::Mx);
        }
        if let Some(path) = text.strip_prefix("dir:") {
            if path.is_empty() {
                return Err("next_hop \"dir:\" needs a folder, as in \"dir:data/out\"".into());
            }
            return Ok(NextHop::Dir(PathBuf::from(path)));
        }
        // host:port, where host may be a name, an IPv4 address or a bracketed IPv6 one.
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(NextHop::Smtp(text.to_string()))
            }
            _ => Err(format!(
                "next_hop {text:?} is not \"host:port\", \"mx\" or \"dir:PATH\""
            )),
        }
    }
}

/// The file format, exactly as an admin writes it. Every key is optional.
#[derive(Debug, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    internal_domains: Option<Vec<String>>,
    policy_dir: Option<PathBuf>,
    hostname: Option<String>,
    inbound: FileListener,
    outbound: FileListener,
    keys: FileKeys,
    lookup: LookupConfig,
    crypto: FileCrypto,
    relay: RelayConfig,
    spool: SpoolConfig,
    limits: Limits,
    tls: FileTls,
    policy: PolicyConfig,
    org: OrgConfig,
    store: StoreConfig,
    metrics: MetricsConfig,
    trace: TraceConfig,
    log: LogConfig,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct FileListener {
    listen: Option<Spanned<String>>,
    next_hop: Option<Spanned<NextHop>>,
    allowed_clients: Option<Vec<IpNet>>,
    trusted_authserv_ids: Option<Spanned<Vec<String>>>,
    allow_untrusted_routing: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct FileTls {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
}

/// `[keys]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileKeys {
    lookup_ttl: LookupTtl,
    encrypt_to_mailflow_keys: bool,
    smime_trust: Option<Spanned<String>>,
    encrypt_to_unvalidated_smime: bool,
}

impl Default for FileKeys {
    fn default() -> Self {
        FileKeys {
            lookup_ttl: LookupTtl::default(),
            encrypt_to_mailflow_keys: false,
            smime_trust: None,
            encrypt_to_unvalidated_smime: true,
        }
    }
}

/// `[keys]`: how the key cache treats what it holds.
#[derive(Debug, Clone, Default)]
pub struct KeysConfig {
    /// Lifetime of keys found by lookup; 1 hour to 999 days.
    pub lookup_ttl: LookupTtl,
    /// Keys harvested from mail are only used to encrypt when the admin opts in.
    pub encrypt_to_mailflow_keys: bool,
    /// The CAs that S/MIME certificates harvested from mail are validated against (a
    /// PEM bundle); `None`: none is validated.
    pub smime_trust: Option<std::sync::Arc<crate::keys::harvest::trust::SmimeTrust>>,
    /// Whether a harvested S/MIME certificate whose chain did not validate may be
    /// encrypted to (when mailflow keys may be at all). Only meaningful with
    /// `smime_trust`; without it, no certificate validates and this is not asked.
    pub encrypt_to_unvalidated_smime: bool,
}

/// `[crypto]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileCrypto {
    protect_subject: bool,
    additional_decryption_key: Option<Spanned<String>>,
    smime_authenticated_encryption: AuthenticatedEncryption,
}

impl Default for FileCrypto {
    fn default() -> Self {
        FileCrypto {
            protect_subject: true,
            additional_decryption_key: None,
            smime_authenticated_encryption: AuthenticatedEncryption::Never,
        }
    }
}

/// `[crypto]`: how messages are encrypted.
#[derive(Debug, Clone)]
pub struct CryptoConfig {
    /// Move the Subject into the encrypted part and show `...` outside ("protected
    /// headers").
    pub protect_subject: bool,
    /// An OpenPGP cert that every PGP message is also encrypted to (an "additional
    /// decryption key", for an archive or for compliance). None unless the admin
    /// names one: by default a message is encrypted to its recipients and no one else.
    pub additional_decryption_key: Option<sequoia_openpgp::Cert>,
    /// When S/MIME mail goes out as AuthEnvelopedData with AES-256-GCM instead of
    /// EnvelopedData with AES-256-CBC: never (the default, which every client reads),
    /// when the recipient's harvested sMIMECapabilities list AES-GCM, or always. A
    /// rule's `smime_authenticated_encryption` overrides it.
    pub smime_authenticated_encryption: AuthenticatedEncryption,
}

/// One listener and where its mail goes.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Address to accept SMTP connections on.
    pub listen: SocketAddr,
    /// Where accepted mail is handed on.
    pub next_hop: NextHop,
    /// Clients allowed to connect; empty means everyone.
    pub allowed_clients: Vec<IpNet>,
    /// Inbound: the authserv-ids whose `Authentication-Results` fields are believed
    /// (the MTA in front of sealgate, which removes such fields arriving from
    /// outside). Empty: none are.
    pub trusted_authserv_ids: Vec<String>,
    /// Inbound: accept recipients with sender-specified routing in the local part
    /// (`user%other.org@`, `host!user@`), as Postfix's allow_untrusted_routing.
    pub allow_untrusted_routing: bool,
}

/// PEM files for STARTTLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, or `None` for the built-in defaults.
    pub source: Option<PathBuf>,
    /// The key store, the spool and any other state live here.
    pub data_dir: PathBuf,
    /// Domains (lower-case) whose users are internal; the inbound side accepts only these.
    pub internal_domains: InternalDomains,
    /// Folder of policy rule files.
    pub policy_dir: PathBuf,
    /// The name this gateway uses in its greeting, Received headers and DSNs.
    pub hostname: String,
    pub inbound: ListenerConfig,
    pub outbound: ListenerConfig,
    pub keys: KeysConfig,
    pub lookup: LookupConfig,
    pub crypto: CryptoConfig,
    pub relay: RelayConfig,
    pub spool: SpoolConfig,
    pub limits: Limits,
    pub policy: PolicyConfig,
    pub org: OrgConfig,
    /// `[store]`: sled under `data_dir`, or a shared PostgreSQL database.
    pub store: StoreConfig,
    /// `[metrics]`: the Prometheus and health-check listener, if any.
    pub metrics: MetricsConfig,
    /// `[trace]`: the X-Sealgate-Trace field.
    pub trace: TraceConfig,
    /// `[log]`: text or JSON lines.
    pub log: LogConfig,
    /// STARTTLS is offered on both listeners when this is set.
    pub tls: Option<TlsFiles>,
}

impl Config {
    /// The built-in defaults: everything on one machine, delivering into `data/delivered/`.
    pub fn defaults() -> Config {
        Config::from_file(FileConfig::default(), None, "").expect("the built-in defaults are valid")
    }

    /// Reads `--config FILE` if given, else `./sealgate.toml` if it exists, else the
    /// built-in defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let from_env = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty());
        let found = Config::find(explicit, from_env.as_deref().map(Path::new), |p| p.exists());
        let Some(path) = found else {
            return Ok(Config::defaults());
        };
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            path: path.display().to_string(),
            line: 1,
            message: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(&text, &path)
    }

    /// Which config file to read: `--config FILE`; else `$SEALGATE_CONFIG` (which must
    /// then exist: a typo there must not fall back to other settings); else
    /// `./sealgate.toml`; else `/etc/sealgate/sealgate.toml`; else none (the built-in
    /// defaults). `exists` says whether a file is there.
    pub fn find(
        explicit: Option<&Path>,
        from_env: Option<&Path>,
        exists: impl Fn(&Path) -> bool,
    ) -> Option<PathBuf> {
        if let Some(path) = explicit.or(from_env) {
            return Some(path.to_path_buf());
        }
        [DEFAULT_CONFIG_FILE, SYSTEM_CONFIG_FILE]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| exists(path))
    }

    /// Parses and validates config text that came from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError {
            path: path.display().to_string(),
            line: e.span().map_or(1, |span| line_of(text, span.start)),
            message: e.message().trim().to_string(),
        })?;
        Config::from_file(file, Some(path), text)
    }

    fn from_file(file: FileConfig, path: Option<&Path>, text: &str) -> Result<Config, ConfigError> {
        let error_at = |span: std::ops::Range<usize>, message: String| ConfigError {
            path: path.map_or("(built-in defaults)".into(), |p| p.display().to_string()),
            line: line_of(text, span.start),
            message,
        };
        let data_dir = file.data_dir.unwrap_or_else(|| PathBuf::from("data"));
        if file.org.renew_every.0 * 2 > file.org.certification_validity.0
            || file.org.renew_every.0.is_zero()
        {
            // A job that runs less often than half the validity would let
            // certifications lapse between two runs.
            let at = text.find("renew_every").unwrap_or(0);
            return Err(error_at(
                at..at,
                format!(
                    "[org] renew_every = {:?} must be more than 0 and at most half of certification_validity = {:?}",
                    humantime::format_duration(file.org.renew_every.0).to_string(),
                    humantime::format_duration(file.org.certification_validity.0).to_string()
                ),
            ));
        }
        if file.store.backend == Backend::Postgres {
            let at = text.find("[store]").unwrap_or(0);
            if file.store.url.is_some() == file.store.url_file.is_some() {
                return Err(error_at(
                    at..at,
                    "[store] backend = \"postgres\" needs one of url and url_file".into(),
                ));
            }
            if file.store.member_timeout.0 < 3 * crate::cluster::HEARTBEAT_EVERY {
                return Err(error_at(
                    at..at,
                    format!(
                        "[store] member_timeout must be at least {:?}: three heartbeats",
                        3 * crate::cluster::HEARTBEAT_EVERY
                    ),
                ));
            }
            if let Some(url) = &file.store.url {
                // The error names the fault, never the URL: it may hold a password.
                if let Err(e) = url.parse::<tokio_postgres::Config>() {
                    return Err(error_at(
                        at..at,
                        format!("[store] url is not a PostgreSQL URL: {e}"),
                    ));
                }
            }
        }
        let listener = |section: FileListener, direction: Direction, default_port: u16| {
            let listen = match section.listen {
                None => SocketAddr::from(([127, 0, 0, 1], default_port)),
                Some(listen) => listen.get_ref().parse().map_err(|_| {
                    error_at(
                        listen.span(),
                        format!(
                            "[{direction}] listen = {:?} is not \"ip:port\"",
                            listen.get_ref()
                        ),
                    )
                })?,
            };
            let next_hop = match section.next_hop {
                None => NextHop::Dir(data_dir.join("delivered").join(direction.as_str())),
                Some(hop) => {
                    if direction == Direction::Inbound && *hop.get_ref() == NextHop::Mx {
                        // Inbound mail is for internal users, whose MX is this gateway:
                        // looking it up would send the mail back here.
                        return Err(error_at(
                            hop.span(),
                            "[inbound] next_hop = \"mx\" is for outbound mail only; \
                             name the internal mail server as \"host:port\""
                                .into(),
                        ));
                    }
                    hop.into_inner()
                }
            };
            let allowed_clients = match (direction, section.allowed_clients) {
                (Direction::Outbound, None) => {
                    vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
                }
                (_, list) => list.unwrap_or_default(),
            };
            if direction == Direction::Outbound {
                let spans = [
                    section
                        .trusted_authserv_ids
                        .as_ref()
                        .map(|s| ("trusted_authserv_ids", s.span())),
                    section
                        .allow_untrusted_routing
                        .as_ref()
                        .map(|s| ("allow_untrusted_routing", s.span())),
                ];
                if let Some((key, span)) = spans.into_iter().flatten().next() {
                    return Err(error_at(
                        span,
                        format!("[outbound] {key} is for inbound mail only; set it in [inbound]"),
                    ));
                }
            }
            Ok(ListenerConfig {
                listen,
                next_hop,
                allowed_clients,
                trusted_authserv_ids: section
                    .trusted_authserv_ids
                    .map(|ids| {
                        ids.into_inner()
                            .into_iter()
                            .map(|id| id.trim().to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
                allow_untrusted_routing: section
                    .allow_untrusted_routing
                    .is_some_and(|allow| allow.into_inner()),
            })
        };
        let inbound = listener(file.inbound, Direction::Inbound, 2525)?;
        let outbound = listener(file.outbound, Direction::Outbound, 2587)?;

        let non_empty = |field: Option<Spanned<String>>| field.filter(|f| !f.get_ref().is_empty());
        let tls = match (non_empty(file.tls.cert), non_empty(file.tls.key)) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: PathBuf::from(cert.get_ref()),
                    key: PathBuf::from(key.get_ref()),
                };
                crate::tls::server_config(&files)
                    .map_err(|e| error_at(cert.span(), format!("[tls] cannot be used: {e}")))?;
                Some(files)
            }
            (None, Some(key)) => {
                return Err(error_at(
                    key.span(),
                    "[tls] key is set but cert is not".into(),
                ));
            }
            (Some(cert), None) => {
                return Err(error_at(
                    cert.span(),
                    "[tls] cert is set but key is not".into(),
                ));
            }
        };

        let limits = file.limits;
        let adk = match file.crypto.additional_decryption_key {
            Some(path) if !path.get_ref().is_empty() => {
                Some(load_adk(path.get_ref()).map_err(|e| {
                    error_at(
                        path.span(),
                        format!("[crypto] additional_decryption_key: {e}"),
                    )
                })?)
            }
            _ => None,
        };
        let crypto = CryptoConfig {
            protect_subject: file.crypto.protect_subject,
            additional_decryption_key: adk,
            smime_authenticated_encryption: file.crypto.smime_authenticated_encryption,
        };
        let smime_trust = match &file.keys.smime_trust {
            Some(path) if !path.get_ref().is_empty() => {
                let read = std::fs::read(path.get_ref())
                    .map_err(|e| format!("cannot read {}: {e}", path.get_ref()))
                    .and_then(|pem| crate::keys::harvest::trust::SmimeTrust::from_pem(&pem));
                Some(std::sync::Arc::new(read.map_err(|e| {
                    error_at(path.span(), format!("[keys] smime_trust: {e}"))
                })?))
            }
            _ => None,
        };
        let keys = KeysConfig {
            lookup_ttl: file.keys.lookup_ttl,
            encrypt_to_mailflow_keys: file.keys.encrypt_to_mailflow_keys,
            encrypt_to_unvalidated_smime: file.keys.encrypt_to_unvalidated_smime
                || smime_trust.is_none(),
            smime_trust,
        };
        Ok(Config {
            source: path.map(Path::to_path_buf),
            internal_domains: InternalDomains::new(
                file.internal_domains
                    .unwrap_or_else(|| vec!["example.com".into()]),
            ),
            policy_dir: file.policy_dir.unwrap_or_else(|| PathBuf::from("policies")),
            hostname: file
                .hostname
                .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
            data_dir,
            inbound,
            outbound,
            keys,
            lookup: file.lookup,
            crypto,
            relay: file.relay,
            spool: file.spool,
            org: file.org,
            store: file.store,
            metrics: file.metrics,
            trace: file.trace,
            log: file.log,
            limits,
            policy: file.policy,
            tls,
        })
    }

    /// The listener of one direction.
    pub fn listener(&self, direction: Direction) -> &ListenerConfig {
        match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }

    /// Whether a client at `ip` may use the listener of `direction`.
    pub fn client_allowed(&self, direction: Direction, ip: IpAddr) -> bool {
        let allowed = &self.listener(direction).allowed_clients;
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        allowed.is_empty() || allowed.iter().any(|net| net.contains(&ip))
    }

    /// Which harvested keys `[keys]` allows to be encrypted to.
    pub fn allowed_keys(&self) -> crate::keys::Allowed {
        crate::keys::Allowed {
            mailflow: self.keys.encrypt_to_mailflow_keys,
            unvalidated_smime: self.keys.encrypt_to_unvalidated_smime,
        }
    }

    /// A timeout from the config as a [`Duration`].
    pub fn idle_timeout(&self) -> Duration {
        self.limits.idle_timeout.0
    }
}

/// Reads the additional decryption key: one OpenPGP cert that can encrypt now.
fn load_adk(path: &str) -> Result<sequoia_openpgp::Cert, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut certs = crate::keys::material::parse_pgp(&bytes).map_err(|e| format!("{path}: {e}"))?;
    if certs.len() != 1 {
        return Err(format!(
            "{path} holds {} keys; name a file with exactly one",
            certs.len()
        ));
    }
    let cert = certs.remove(0);
    crate::crypto::pgp::encrypt(b"", std::slice::from_ref(&cert))
        .map_err(|e| format!("{path}: cannot be encrypted to: {e}"))?;
    Ok(cert.strip_secret_key_material())
}

/// The 1-based line that byte `offset` of `text` is on.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests;
