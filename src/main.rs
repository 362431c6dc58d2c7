//! The `sealgate` binary: parses the command line, sets up logging, loads the config and
//! runs the verb. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod keytable;
use sealgate::config::Config;
use sealgate::keys::admin;
use sealgate::server::Server;

#[derive(Parser)]
#[command(name = "sealgate", version, about = "An SMTP encryption gateway")]
struct Cli {
    /// The config file; without it, ./sealgate.toml if present, else built-in defaults.
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
    /// List the key cache, one line per (address, key).
    List {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEALGATE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Check => {
            let source = config
                .source
                .as_ref()
                .map_or("built-in defaults".to_string(), |p| p.display().to_string());
            println!("{source}: OK");
            ExitCode::SUCCESS
        }
        Command::Serve => serve(config),
        Command::Keys { command } => keys(&config, command),
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
        KeysCommand::List { json } => (admin::Request::List, json),
        KeysCommand::Delete { target } => (admin::Request::Delete { target }, false),
        KeysCommand::Purge => (admin::Request::Purge, false),
    };
    let is_list = matches!(request, admin::Request::List);
    let response = match admin::request(&config.data_dir, config.keys.lookup_ttl.0, request) {
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
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&response.entries).expect("entries serialize")
            );
        } else {
            print!(
                "{}",
                keytable::render(&response.entries, time::OffsetDateTime::now_utc())
            );
        }
    }
    if response.failed || unreadable {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match Server::bind(config).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("sealgate: {e}");
                return ExitCode::FAILURE;
            }
        };
        server.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Completes on SIGTERM or SIGINT. SIGHUP, which would otherwise kill the process, is
/// logged and ignored until there is something to reload.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut hangup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hangup.recv() => {
                tracing::warn!("SIGHUP: nothing to reload yet; restart sealgate to apply config changes");
            }
        }
    }
}
