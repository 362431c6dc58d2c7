//! The `sealgate` binary: parses the command line, sets up logging, loads the config and
//! runs the verb. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cluster;
mod explain;
mod keytable;
mod logging;
mod operations;
mod org;
mod probe;
mod transfer;
use std::sync::Arc;

use sealgate::config::Config;
use sealgate::keys::admin;
use sealgate::keys::entry::Selector;
use sealgate::mail::Direction;
use sealgate::server::Server;
use sealgate::server::reload::Reloader;

#[derive(Parser)]
#[command(name = "sealgate", version, about = "An SMTP encryption gateway")]
struct Cli {
    /// The config file; without it, $SEALGATE_CONFIG, else ./sealgate.toml, else
    /// /etc/sealgate/sealgate.toml, else built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or SIGINT.
    Serve,
    /// Validate the config and the policy files.
    Check,
    /// Manage the key cache (works while `serve` runs, through its admin socket).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The Organization key and certificate, which vouch for internal users' keys.
    Org {
        #[command(subcommand)]
        command: org::OrgCommand,
    },
    /// Move keys between gateways: this gateway's transport certificate, and the peers
    /// it trusts.
    Transfer {
        #[command(subcommand)]
        command: transfer::TransferCommand,
    },
    /// The gateways that share this one's PostgreSQL store.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Where this gateway keeps its state.
    Store {
        #[command(subcommand)]
        command: cluster::StoreCommand,
    },
    /// The retry spool: copies of accepted mail that a next hop has yet to take.
    Spool {
        #[command(subcommand)]
        command: operations::SpoolCommand,
    },
    /// The next hops, and the rests the circuit breaker gives those that failed.
    Relay {
        #[command(subcommand)]
        command: operations::RelayCommand,
    },
    /// Look at what the policy in policy_dir does.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Dry run: which rule matches each recipient of a message, and what would be done.
    Explain {
        #[arg(long, value_enum)]
        direction: DirectionArg,
        /// The envelope sender (MAIL FROM); "" for the null sender.
        #[arg(long, value_name = "ADDR")]
        from: String,
        /// An envelope recipient (RCPT TO); give it once per recipient.
        #[arg(long = "to", value_name = "ADDR", required = true)]
        to: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The message, as an .eml file.
        #[arg(value_name = "FILE.eml")]
        message: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DirectionArg {
    Inbound,
    Outbound,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Import public keys: OpenPGP (armored or binary) and X.509 (PEM or DER).
    Import {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Import an internal user's SCKM key (encryption secret only; signing secrets are refused).
    ImportSckm {
        /// A file holding the passphrase that unlocks the exported secret.
        #[arg(long, value_name = "F")]
        passphrase_file: Option<PathBuf>,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// List the key cache, one entry per (address, key), with what each key is.
    List {
        /// Only the entries of this address, or of this fingerprint (as gpg or openssl
        /// prints it: spaces, colons and case do not matter).
        #[arg(value_name = "ADDRESS_OR_FINGERPRINT")]
        target: Option<String>,
        /// Print one JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove the entries of an address, or every entry of a fingerprint.
    Delete {
        #[arg(value_name = "ADDRESS_OR_FINGERPRINT")]
        target: String,
    },
    /// Remove expired cache entries now.
    Purge,
    /// Print an internal user's public key with the org key's certification, for
    /// publishing; or with --to, a bundle of keys wrapped to a peer gateway.
    Export {
        /// With --to: only these addresses' keys (default: every address).
        #[arg(value_name = "ADDRESS")]
        addresses: Vec<String>,
        /// The S/MIME certificate the org certificate issued, with its chain, instead.
        #[arg(long, conflicts_with = "to")]
        smime: bool,
        /// Write a bundle for this peer: a name given to `transfer trust`, or the path
        /// of its transport certificate.
        #[arg(long, value_name = "PEER")]
        to: Option<String>,
        /// With --to: SCKM keys, with their secrets.
        #[arg(long, requires = "to")]
        sckm: bool,
        /// With --to: keys the cache found in mail or by lookup.
        #[arg(long, requires = "to")]
        cache: bool,
        /// With --to: keys an admin imported. (No kind named: every kind.)
        #[arg(long, requires = "to")]
        admin: bool,
    },
    /// Import a bundle a peer gateway wrapped to this one (`keys export --to`).
    ImportBundle {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Import from a peer this gateway does not trust, this once: the refusal
        /// without it shows the peer's fingerprint to compare first.
        #[arg(long)]
        trust_once: bool,
    },
}

fn main() -> ExitCode {
    // Everything sealgate writes is private to its user: the key-encryption key,
    // sealed secrets, decrypted copies in the spool, delivered files. The library sets
    // the modes of what it creates itself; the umask covers what sled creates.
    // SAFETY: umask only sets the process's file mode mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    // SAFETY: no other thread has been started yet, and nothing has captured a
    // backtrace.
    unsafe {
        sealgate::crypto::quiet_error_backtraces();
    }
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(refused) => {
            // Every problem, errors first: one run shows all there is to fix.
            eprintln!("{refused}");
            return ExitCode::FAILURE;
        }
    };
    // The log is the gateway's; the other verbs answer on stdout and stderr, and log
    // only what goes wrong unless asked.
    let default_level = match cli.command {
        Command::Serve => "info",
        _ => "warn",
    };
    logging::install(config.log.format, default_level);
    match cli.command {
        Command::Check => check(&config),
        Command::Serve => serve(config),
        Command::Keys {
            command:
                KeysCommand::Export {
                    addresses,
                    smime,
                    to: None,
                    ..
                },
        } => match <[String; 1]>::try_from(addresses) {
            Ok([address]) => org::export(&config, address, smime),
            Err(_) => {
                eprintln!("sealgate: keys export takes one ADDRESS (or --to PEER for a bundle)");
                ExitCode::FAILURE
            }
        },
        Command::Keys {
            command:
                KeysCommand::Export {
                    addresses,
                    to: Some(to),
                    sckm,
                    cache,
                    admin,
                    ..
                },
        } => {
            let selection = sealgate::transfer::export::Selection {
                sckm,
                cache,
                admin,
                addresses: Vec::new(),
            };
            transfer::export(&config, to, selection, addresses)
        }
        Command::Keys {
            command: KeysCommand::ImportBundle { file, trust_once },
        } => transfer::import(&config, file, trust_once),
        Command::Keys { command } => keys(&config, command),
        Command::Org { command } => org::run(&config, command),
        Command::Transfer { command } => transfer::run(&config, command),
        Command::Cluster { command } => cluster::run(&config, command),
        Command::Store { command } => cluster::store(&config, command),
        Command::Spool { command } => operations::spool(&config, command),
        Command::Relay { command } => operations::relay(&config, command),
        Command::Policy {
            command:
                PolicyCommand::Explain {
                    direction,
                    from,
                    to,
                    json,
                    message,
                },
        } => {
            let direction = match direction {
                DirectionArg::Inbound => Direction::Inbound,
                DirectionArg::Outbound => Direction::Outbound,
            };
            explain::run(&config, direction, &from, &to, &message, json)
        }
    }
}

/// The config was valid (or it would not have loaded); now every policy file.
fn check(config: &Config) -> ExitCode {
    let source = config
        .source
        .as_ref()
        .map_or("built-in defaults".to_string(), |p| p.display().to_string());
    println!("{source}: OK");
    for warning in &config.warnings {
        println!("{warning}");
    }
    if let Some(warning) = sealgate::store::exposure(&config.data_dir) {
        println!("{source}: warning: {warning}");
    }
    // Keys the org key in force has not certified (after it was replaced). Only when
    // there is a database already: check must not create one.
    if config.data_dir.join("db").exists() {
        let status = admin::Request::Org {
            request: sealgate::org::admin::OrgRequest::Status,
        };
        if let Ok(response) = admin::request(config, status) {
            for message in response
                .messages
                .iter()
                .filter(|m| m.starts_with("warning"))
            {
                println!("org: {message}");
            }
        }
    }
    let loaded = sealgate::policy::load::load_dir(&config.policy_dir);
    for problem in &loaded.problems {
        if problem.warning {
            println!("{problem}");
        } else {
            eprintln!("{problem}");
        }
    }
    if config.store.backend == sealgate::config::Backend::Postgres {
        println!("{}", cluster::store_state(config));
    }
    // Reachability is reported, not judged: a next hop may be down for a moment
    // while the config is right.
    if let Ok(runtime) = tokio::runtime::Runtime::new() {
        for probe in runtime.block_on(probe::probe_all(config, probe::Dnssec::Probe)) {
            match probe.result {
                Ok(state) => println!("{}: {state}", probe.what),
                Err(reason) => println!("{}: warning: {reason}", probe.what),
            }
        }
    }
    match &loaded.policy {
        Some(policy) => {
            println!(
                "{}: OK ({} inbound and {} outbound rules)",
                config.policy_dir.display(),
                policy.inbound.rules.len(),
                policy.outbound.rules.len()
            );
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

fn keys(config: &Config, command: KeysCommand) -> ExitCode {
    let mut unreadable = false;
    let mut read_all = |paths: Vec<PathBuf>| {
        let mut readable = Vec::new();
        for path in paths {
            match admin::File::read(&path) {
                Ok(file) => readable.push(file),
                Err(e) => {
                    eprintln!("{}: refused: cannot read: {e}", path.display());
                    unreadable = true;
                }
            }
        }
        readable
    };
    let mut selector: Option<Selector> = None;
    let (request, json) = match command {
        KeysCommand::Import { files } => (
            admin::Request::Import {
                files: read_all(files),
            },
            false,
        ),
        KeysCommand::ImportSckm {
            passphrase_file,
            files,
        } => {
            let passphrase = match passphrase_file.map(std::fs::read_to_string).transpose() {
                // The passphrase is the file's first line, without its line end.
                Ok(text) => text.map(|t| t.lines().next().unwrap_or("").to_string()),
                Err(e) => {
                    eprintln!("sealgate: cannot read the passphrase file: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let files = read_all(files);
            (admin::Request::ImportSckm { files, passphrase }, false)
        }
        KeysCommand::List { target, json } => {
            selector = match target.as_deref().map(|t| (t, Selector::parse(t))) {
                None => None,
                Some((_, Some(selector))) => Some(selector),
                Some((text, None)) => {
                    eprintln!("sealgate: {text:?} is neither an address nor a fingerprint");
                    return ExitCode::FAILURE;
                }
            };
            (admin::Request::List, json)
        }
        KeysCommand::Delete { target } => (admin::Request::Delete { target }, false),
        KeysCommand::Purge => (admin::Request::Purge, false),
        KeysCommand::Export { .. } | KeysCommand::ImportBundle { .. } => {
            unreachable!("keys export and import-bundle are dispatched in main")
        }
    };
    let is_list = matches!(request, admin::Request::List);
    let imports = matches!(
        request,
        admin::Request::Import { .. } | admin::Request::ImportSckm { .. }
    );
    if imports
        && config.store.backend == sealgate::config::Backend::Sled
        && !config.data_dir.join("db").exists()
    {
        // Importing in the wrong folder would quietly fill a new database nobody uses.
        eprintln!(
            "note: no database here yet; making a new one ({})",
            whereabouts(config)
        );
    }
    let response = match admin::request(config, request) {
        Ok(response) => response,
        Err(e) => {
            eprintln!("sealgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    for message in &response.messages {
        if response.failed {
            eprintln!("{message}");
        } else {
            println!("{message}");
        }
    }
    if is_list {
        let mut entries = response.entries;
        if let Some(selector) = &selector {
            entries.retain(|e| selector.matches(e));
        }
        let response = admin::Response {
            entries,
            ..response
        };
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&response.entries).expect("entries serialize")
            );
        } else if response.entries.is_empty() {
            // Which cache that was: an empty list from the wrong folder must not pass
            // for the gateway's own.
            println!("no key in the cache matches ({})", whereabouts(config));
        } else {
            print!(
                "{}",
                keytable::render(
                    &response.entries,
                    time::OffsetDateTime::now_utc(),
                    config.allowed_keys()
                )
            );
        }
    }
    if response.failed || unreadable {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Which data_dir and config file a verb used, for the admin who wonders.
fn whereabouts(config: &Config) -> String {
    format!(
        "data_dir {}, config {}",
        config.data_dir.display(),
        config
            .source
            .as_ref()
            .map_or("built-in defaults".to_string(), |p| p.display().to_string())
    )
}

fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A value read otherwise than written is worth fixing, but no reason not to serve.
    for warning in &config.warnings {
        tracing::warn!(%warning, "config");
    }
    let probed = config.clone();
    runtime.block_on(async {
        // Installed before the listeners and the admin socket exist: a supervisor that
        // sees them may signal at once, and a signal with no handler yet would kill
        // the process without a clean shutdown.
        let signals = match Signals::install() {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!("sealgate: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let server = match Server::bind(config).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("sealgate: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Said once at start-up, without holding it up. (Here, not in the library: a
        // test's gateway must not make connections of its own to its next hop.)
        tokio::spawn(async move {
            for probe in probe::probe_all(&probed, probe::Dnssec::Skip).await {
                match probe.result {
                    Ok(state) => tracing::info!(what = %probe.what, %state, "reachable"),
                    Err(reason) => tracing::warn!(what = %probe.what, %reason, "probe failed"),
                }
            }
        });
        let reloader = server.reloader();
        server.run(signals.until_shutdown(reloader)).await;
        ExitCode::SUCCESS
    })
}

/// The signals `serve` acts on.
struct Signals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Completes on SIGTERM or SIGINT. SIGHUP reloads the policy (the config file
    /// needs a restart).
    async fn until_shutdown(self, reloader: Arc<Reloader>) {
        let Signals {
            mut term,
            mut interrupt,
            mut hangup,
        } = self;
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = interrupt.recv() => return,
                _ = hangup.recv() => {
                    let reloader = reloader.clone();
                    let _ = tokio::task::spawn_blocking(move || reloader.reload("SIGHUP")).await;
                    tracing::info!("SIGHUP reloads the policy only; restart sealgate to apply changes to the config file");
                }
            }
        }
    }
}
