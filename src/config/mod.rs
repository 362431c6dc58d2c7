//! The config file (`sealgate.toml`): its serde format, its built-in defaults, and the
//! validation that turns it into a [`Config`] the rest of the gateway can trust.
//!
//! Every error an admin can make is reported as `path:line: message`, so that the line
//! can be found without reading the source, and every error in a file is reported at
//! once ([`ConfigErrors`]), so that one `sealgate check` shows all there is to fix.
//! Single values are checked while they are deserialized (see [`units`]), which is
//! what gives each error its line; the rest is checked by `validate`.

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
mod validate;

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

/// A value sealgate reads, but not as it is written (`"@example.com"` in
/// `internal_domains` is read as `example.com`): the admin should write it the way it
/// is read. `check` shows these; `serve` logs them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: warning: {message}")]
pub struct ConfigWarning {
    pub path: String,
    pub line: usize,
    pub message: String,
}

/// Why a config file was refused: every error found in it, in line order, and the
/// warnings found besides. Never without an error.
#[derive(Debug)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigWarning>,
}

impl ConfigErrors {
    fn one(error: ConfigError) -> ConfigErrors {
        ConfigErrors {
            errors: vec![error],
            warnings: Vec::new(),
        }
    }
}

impl std::fmt::Display for ConfigErrors {
    /// One problem a line: the errors, then the warnings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let errors = self.errors.iter().map(ToString::to_string);
        let warnings = self.warnings.iter().map(ToString::to_string);
        let lines: Vec<String> = errors.chain(warnings).collect();
        write!(f, "{}", lines.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

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
    internal_domains: Option<Vec<Spanned<String>>>,
    policy_dir: Option<PathBuf>,
    hostname: Option<Spanned<String>>,
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
    allowed_clients: Option<Vec<Spanned<String>>>,
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
    /// What was read, but not as written; the config is valid with them.
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// The built-in defaults: everything on one machine, delivering into `data/delivered/`.
    pub fn defaults() -> Config {
        validate::check(
            FileConfig::default(),
            None,
            validate::Problems::new(None, ""),
        )
        .expect("the built-in defaults are valid")
    }

    /// Reads `--config FILE` if given, else `./sealgate.toml` if it exists, else the
    /// built-in defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigErrors> {
        let from_env = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty());
        let found = Config::find(explicit, from_env.as_deref().map(Path::new), |p| p.exists());
        let Some(path) = found else {
            return Ok(Config::defaults());
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigErrors::one(ConfigError {
                path: path.display().to_string(),
                line: 1,
                message: format!("cannot read the config file: {e}"),
            })
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

    /// Parses and validates config text that came from `path`: the config, or every
    /// problem found.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let Some((file, read)) = read_file(text, path, &mut errors) else {
            return Err(ConfigErrors {
                errors,
                warnings: Vec::new(),
            });
        };
        let mut problems = validate::Problems::new(Some(path), &read);
        for error in errors {
            problems.error_on(error.line, error.message);
        }
        validate::check(file, Some(path), problems)
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

/// At most this many values that cannot be read are reported from one file: past
/// them, the file is further off than a list of errors helps with.
const MAX_READ_ERRORS: usize = 50;

/// Reads the file format, recording in `errors` each value that cannot be read. serde
/// stops at the first; so that `check` lists them all, the line of each is blanked
/// (the lines keep their numbers) and the file is read again. A syntax error ends
/// this (what follows it may be misread), and so does a bad value whose line cannot
/// be blanked alone. Returns the file format and the text it was read from, which is
/// what its spans point into; `None` when nothing could be read.
fn read_file(
    text: &str,
    path: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<(FileConfig, String)> {
    let is_toml = |text: &str| toml::from_str::<toml::Table>(text).is_ok();
    let mut text = text.to_string();
    loop {
        let e = match toml::from_str::<FileConfig>(&text) {
            Ok(file) => return Some((file, text)),
            Err(e) => e,
        };
        errors.push(ConfigError {
            path: path.display().to_string(),
            line: e.span().map_or(1, |span| line_of(&text, span.start)),
            // One problem, one line.
            message: e.message().trim().replace('\n', "; "),
        });
        if errors.len() >= MAX_READ_ERRORS || !is_toml(&text) {
            return None;
        }
        text = e
            .span()
            .and_then(|span| without_line(&text, span))
            .filter(|blanked| is_toml(blanked))?;
    }
}

/// `text` with the line that `span` lies on emptied, when the span lies on one line
/// and that line is neither empty nor a table's header (`[inbound]`), without which
/// the keys under it would land in the table before.
fn without_line(text: &str, span: std::ops::Range<usize>) -> Option<String> {
    let start = text[..span.start].rfind('\n').map_or(0, |at| at + 1);
    let end = text[span.start..]
        .find('\n')
        .map_or(text.len(), |at| span.start + at);
    let line = text[start..end].trim();
    if span.end > end || line.is_empty() || line.starts_with('[') {
        return None;
    }
    Some(format!("{}{}", &text[..start], &text[end..]))
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
