//! From the file format to a [`Config`]: every check that needs more than one value,
//! or a file, or that reads a list entry by entry. Each check records what it finds
//! in [`Problems`] and goes on, so that `sealgate check` lists every error at once; a
//! value that failed a check is replaced by its default, which is never used because
//! the config is then refused.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use toml::Spanned;

use super::sections::{Backend, OrgConfig, StoreConfig};
use super::{
    Config, ConfigError, ConfigErrors, ConfigWarning, CryptoConfig, FileConfig, FileCrypto,
    FileKeys, FileListener, FileTls, KeysConfig, ListenerConfig, NextHop, TlsFiles, line_of,
};
use crate::mail::{Direction, InternalDomains, domain};

/// What was found wrong in one config file, each with its line.
pub(super) struct Problems<'a> {
    path: String,
    text: &'a str,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
}

impl<'a> Problems<'a> {
    pub(super) fn new(path: Option<&Path>, text: &'a str) -> Problems<'a> {
        Problems {
            path: path.map_or("(built-in defaults)".into(), |p| p.display().to_string()),
            text,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(super) fn error(&mut self, span: Range<usize>, message: String) {
        let line = line_of(self.text, span.start);
        self.error_on(line, message);
    }

    pub(super) fn error_on(&mut self, line: usize, message: String) {
        self.errors.push(ConfigError {
            path: self.path.clone(),
            line,
            message,
        });
    }

    fn warn(&mut self, span: Range<usize>, message: String) {
        self.warnings.push(ConfigWarning {
            path: self.path.clone(),
            line: line_of(self.text, span.start),
            message,
        });
    }

    /// The offset of the first `key = ` in the file, for a check on a value that has no
    /// span of its own; the start of the file when the key is not there.
    fn key_at(&self, key: &str) -> Range<usize> {
        let at = self
            .text
            .match_indices(key)
            .map(|(at, _)| at)
            .find(|&at| self.text[at + key.len()..].trim_start().starts_with('='))
            .unwrap_or(0);
        at..at
    }

    /// `value` with the warnings, or every problem when there was an error.
    pub(super) fn finish<T>(mut self, value: T) -> Result<(T, Vec<ConfigWarning>), ConfigErrors> {
        if self.errors.is_empty() {
            return Ok((value, self.warnings));
        }
        // Values are checked section by section; an admin reads the file top down.
        self.errors.sort_by_key(|e| e.line);
        self.warnings.sort_by_key(|w| w.line);
        Err(ConfigErrors {
            errors: self.errors,
            warnings: self.warnings,
        })
    }
}

/// Validates `file` into a [`Config`], adding what it finds to `problems` (which may
/// already hold what reading the file found): the config, or every problem.
pub(super) fn check(
    file: FileConfig,
    path: Option<&Path>,
    mut problems: Problems<'_>,
) -> Result<Config, ConfigErrors> {
    let config = config(file, path, &mut problems);
    let (config, warnings) = problems.finish(config)?;
    Ok(Config { warnings, ..config })
}

fn config(file: FileConfig, path: Option<&Path>, problems: &mut Problems<'_>) -> Config {
    check_org(&file.org, problems);
    check_store(&file.store, problems);
    let data_dir = file.data_dir.unwrap_or_else(|| PathBuf::from("data"));
    let inbound = listener(file.inbound, Direction::Inbound, &data_dir, problems);
    let outbound = listener(file.outbound, Direction::Outbound, &data_dir, problems);
    Config {
        source: path.map(Path::to_path_buf),
        internal_domains: internal_domains(file.internal_domains, problems),
        policy_dir: file.policy_dir.unwrap_or_else(|| PathBuf::from("policies")),
        hostname: hostname(file.hostname, problems),
        data_dir,
        inbound,
        outbound,
        keys: keys(file.keys, problems),
        lookup: file.lookup,
        crypto: crypto(file.crypto, problems),
        relay: file.relay,
        spool: file.spool,
        org: file.org,
        store: file.store,
        metrics: file.metrics,
        trace: file.trace,
        log: file.log,
        limits: file.limits,
        policy: file.policy,
        tls: tls(file.tls, problems),
        warnings: Vec::new(),
    }
}

fn check_org(org: &OrgConfig, problems: &mut Problems<'_>) {
    // A job that runs less often than half the validity would let certifications
    // lapse between two runs.
    if org.renew_every.0 * 2 > org.certification_validity.0 || org.renew_every.0.is_zero() {
        let at = problems.key_at("renew_every");
        problems.error(
            at,
            format!(
                "[org] renew_every = {:?} must be more than 0 and at most half of certification_validity = {:?}",
                humantime::format_duration(org.renew_every.0).to_string(),
                humantime::format_duration(org.certification_validity.0).to_string()
            ),
        );
    }
}

fn check_store(store: &StoreConfig, problems: &mut Problems<'_>) {
    if store.backend != Backend::Postgres {
        return;
    }
    let at = problems.text.find("[store]").unwrap_or(0);
    if store.url.is_some() == store.url_file.is_some() {
        problems.error(
            at..at,
            "[store] backend = \"postgres\" needs one of url and url_file".into(),
        );
    }
    if store.member_timeout.0 < 3 * crate::cluster::HEARTBEAT_EVERY {
        problems.error(
            at..at,
            format!(
                "[store] member_timeout must be at least {:?}: three heartbeats",
                3 * crate::cluster::HEARTBEAT_EVERY
            ),
        );
    }
    if let Some(url) = &store.url
        && let Err(e) = url.parse::<tokio_postgres::Config>()
    {
        // The error names the fault, never the URL: it may hold a password.
        problems.error(at..at, format!("[store] url is not a PostgreSQL URL: {e}"));
    }
}

/// One listener and where its mail goes.
fn listener(
    section: FileListener,
    direction: Direction,
    data_dir: &Path,
    problems: &mut Problems<'_>,
) -> ListenerConfig {
    let default_port = match direction {
        Direction::Inbound => 2525,
        Direction::Outbound => 2587,
    };
    let default_listen = SocketAddr::from(([127, 0, 0, 1], default_port));
    let listen = match section.listen {
        None => default_listen,
        Some(listen) => listen.get_ref().parse().unwrap_or_else(|_| {
            problems.error(
                listen.span(),
                format!(
                    "[{direction}] listen = {:?} is not \"ip:port\"",
                    listen.get_ref()
                ),
            );
            default_listen
        }),
    };
    let default_hop = NextHop::Dir(data_dir.join("delivered").join(direction.as_str()));
    let next_hop = match section.next_hop {
        None => default_hop,
        // Inbound mail is for internal users, whose MX is this gateway: looking it up
        // would send the mail back here.
        Some(hop) if direction == Direction::Inbound && *hop.get_ref() == NextHop::Mx => {
            problems.error(
                hop.span(),
                "[inbound] next_hop = \"mx\" is for outbound mail only; \
                 name the internal mail server as \"host:port\""
                    .into(),
            );
            default_hop
        }
        Some(hop) => hop.into_inner(),
    };
    let allowed_clients = match (direction, section.allowed_clients) {
        (Direction::Outbound, None) => {
            vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
        }
        (_, list) => allowed_clients(direction, list.unwrap_or_default(), problems),
    };
    if direction == Direction::Outbound {
        let inbound_only = [
            section
                .trusted_authserv_ids
                .as_ref()
                .map(|s| ("trusted_authserv_ids", s.span())),
            section
                .allow_untrusted_routing
                .as_ref()
                .map(|s| ("allow_untrusted_routing", s.span())),
        ];
        for (key, span) in inbound_only.into_iter().flatten() {
            problems.error(
                span,
                format!("[outbound] {key} is for inbound mail only; set it in [inbound]"),
            );
        }
    }
    ListenerConfig {
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
    }
}

/// `allowed_clients`: networks (`192.0.2.0/24`) or single addresses.
fn allowed_clients(
    direction: Direction,
    list: Vec<Spanned<String>>,
    problems: &mut Problems<'_>,
) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for entry in list {
        let text = entry.get_ref();
        match client_net(text) {
            Ok(net) => {
                if net != net.trunc() {
                    problems.warn(
                        entry.span(),
                        format!(
                            "[{direction}] allowed_clients: {text:?} has host bits set; it is read as {}",
                            net.trunc()
                        ),
                    );
                }
                nets.push(net.trunc());
            }
            Err(reason) => problems.error(
                entry.span(),
                format!("[{direction}] allowed_clients: {text:?} {reason}"),
            ),
        }
    }
    nets
}

/// A network in CIDR notation, or one address (a /32 or /128).
fn client_net(text: &str) -> Result<IpNet, String> {
    let usage = "(write a network as \"192.0.2.0/24\" or \"2001:db8::/32\", or one address)";
    let text = text.trim();
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("is not an IP address or network {usage}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(prefix) => prefix
            .parse::<u8>()
            .map_err(|_| format!("has no valid prefix length after \"/\" {usage}"))?,
    };
    IpNet::new(addr, prefix).map_err(|_| {
        format!("has the prefix length {prefix}, more than the {max} bits of the address")
    })
}

/// `internal_domains`: fixed where that can only mean one thing, with a warning, and
/// refused where the entry is not a domain. A wrong entry would otherwise make the
/// inbound listener refuse every recipient of that domain.
fn internal_domains(
    list: Option<Vec<Spanned<String>>>,
    problems: &mut Problems<'_>,
) -> InternalDomains {
    let Some(list) = list else {
        return InternalDomains::new(["example.com"]);
    };
    if list.is_empty() {
        let at = problems.key_at("internal_domains");
        problems.warn(
            at,
            "internal_domains is empty: the inbound listener refuses every recipient".into(),
        );
    }
    let mut domains = Vec::new();
    for entry in list {
        let text = entry.get_ref();
        match domain::read(text) {
            Ok(read) => {
                if !read.fixed.is_empty() {
                    problems.warn(
                        entry.span(),
                        format!(
                            "internal_domains: {text:?} is read as {:?} (without {}); write it that way",
                            read.ascii,
                            read.fixed.join(", ")
                        ),
                    );
                }
                domains.push(read.ascii);
            }
            Err(reason) => {
                problems.error(entry.span(), format!("internal_domains: {text:?} {reason}"));
            }
        }
    }
    InternalDomains::new(domains)
}

/// `hostname`: it names this gateway in the greeting, in Received fields and in the
/// DSNs it sends (their From and Message-ID), where anything but a domain name breaks
/// the syntax. Fixed and refused as `internal_domains` are. Without one, the
/// machine's name.
fn hostname(hostname: Option<Spanned<String>>, problems: &mut Problems<'_>) -> String {
    let Some(hostname) = hostname else {
        return gethostname::gethostname().to_string_lossy().into_owned();
    };
    let text = hostname.get_ref();
    match domain::read(text) {
        Ok(read) => {
            if !read.fixed.is_empty() {
                problems.warn(
                    hostname.span(),
                    format!(
                        "hostname = {text:?} is read as {:?} (without {}); write it that way",
                        read.ascii,
                        read.fixed.join(", ")
                    ),
                );
            }
            read.ascii
        }
        Err(reason) => {
            problems.error(hostname.span(), format!("hostname = {text:?} {reason}"));
            hostname.into_inner()
        }
    }
}

/// `[tls]`: both files or neither, and they must load.
fn tls(section: FileTls, problems: &mut Problems<'_>) -> Option<TlsFiles> {
    let non_empty = |field: Option<Spanned<String>>| field.filter(|f| !f.get_ref().is_empty());
    match (non_empty(section.cert), non_empty(section.key)) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let files = TlsFiles {
                cert: PathBuf::from(cert.get_ref()),
                key: PathBuf::from(key.get_ref()),
            };
            match crate::tls::server_config(&files) {
                Ok(_) => Some(files),
                Err(e) => {
                    problems.error(cert.span(), format!("[tls] cannot be used: {e}"));
                    None
                }
            }
        }
        (None, Some(key)) => {
            problems.error(key.span(), "[tls] key is set but cert is not".into());
            None
        }
        (Some(cert), None) => {
            problems.error(cert.span(), "[tls] cert is set but key is not".into());
            None
        }
    }
}

/// `[crypto]`, with the additional decryption key loaded.
fn crypto(section: FileCrypto, problems: &mut Problems<'_>) -> CryptoConfig {
    let adk = match section.additional_decryption_key {
        Some(path) if !path.get_ref().is_empty() => match load_adk(path.get_ref()) {
            Ok(cert) => Some(cert),
            Err(e) => {
                problems.error(
                    path.span(),
                    format!("[crypto] additional_decryption_key: {e}"),
                );
                None
            }
        },
        _ => None,
    };
    CryptoConfig {
        protect_subject: section.protect_subject,
        additional_decryption_key: adk,
        smime_authenticated_encryption: section.smime_authenticated_encryption,
    }
}

/// `[keys]`, with the S/MIME trust anchors loaded.
fn keys(section: FileKeys, problems: &mut Problems<'_>) -> KeysConfig {
    let smime_trust = match &section.smime_trust {
        Some(path) if !path.get_ref().is_empty() => {
            let read = std::fs::read(path.get_ref())
                .map_err(|e| format!("cannot read {}: {e}", path.get_ref()))
                .and_then(|pem| crate::keys::harvest::trust::SmimeTrust::from_pem(&pem));
            match read {
                Ok(trust) => Some(std::sync::Arc::new(trust)),
                Err(e) => {
                    problems.error(path.span(), format!("[keys] smime_trust: {e}"));
                    None
                }
            }
        }
        _ => None,
    };
    KeysConfig {
        lookup_ttl: section.lookup_ttl,
        encrypt_to_mailflow_keys: section.encrypt_to_mailflow_keys,
        encrypt_to_unvalidated_smime: section.encrypt_to_unvalidated_smime || smime_trust.is_none(),
        smime_trust,
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
