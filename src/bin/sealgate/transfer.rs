//! `sealgate transfer ...`, `keys export --to` and `keys import-bundle`: the command line
//! in front of [`sealgate::transfer::admin`], reached like the `keys` verbs (the running
//! server's admin socket, or the database).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use clap::Subcommand;
use sealgate::config::Config;
use sealgate::keys::address;
use sealgate::keys::admin::{self, Request};
use sealgate::transfer::admin::TransferRequest;
use sealgate::transfer::export::Selection;

#[derive(Subcommand)]
pub enum TransferCommand {
    /// Print this gateway's transport certificate (PEM), made on first use: give it to
    /// the gateways that send keys here. Its private key never leaves this gateway.
    Cert {
        /// Print only its SHA-256 fingerprint, for the admins to compare.
        #[arg(long)]
        fingerprint: bool,
    },
    /// Trust a peer gateway's transport certificate: bundles go to it, and come from it.
    Trust {
        #[arg(value_name = "PEER.pem")]
        cert: PathBuf,
        /// What to call it in `keys export --to`. Default: its host name.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// List the trusted peers.
    Peers,
}

pub fn run(config: &Config, command: TransferCommand) -> ExitCode {
    match command {
        TransferCommand::Cert { fingerprint } => {
            let Ok(response) = ask(config, TransferRequest::Cert, !fingerprint) else {
                return ExitCode::FAILURE;
            };
            if fingerprint {
                for line in &response.messages {
                    println!("{line}");
                }
            } else {
                print!("{}", response.output);
            }
            exit(&response)
        }
        TransferCommand::Trust { cert, name } => {
            let Ok(cert) = read(&cert) else {
                return ExitCode::FAILURE;
            };
            send(config, TransferRequest::Trust { cert, name })
        }
        TransferCommand::Peers => send(config, TransferRequest::Peers),
    }
}

/// `keys export --to PEER [--sckm] [--cache] [--admin] [ADDRESS...]`. PEER is a trusted
/// peer's name (or fingerprint), or the path of a peer's certificate file.
pub fn export(
    config: &Config,
    to: String,
    mut selection: Selection,
    addresses: Vec<String>,
) -> ExitCode {
    for text in addresses {
        match address::normalize(&text) {
            Some(address) => selection.addresses.push(address),
            None => {
                eprintln!("sealgate: {text:?} is not an e-mail address");
                return ExitCode::FAILURE;
            }
        }
    }
    let path = Path::new(&to);
    let cert = if path.is_file() {
        match read(path) {
            Ok(cert) => Some(cert),
            Err(()) => return ExitCode::FAILURE,
        }
    } else {
        None
    };
    send(
        config,
        TransferRequest::Export {
            to,
            cert,
            selection,
        },
    )
}

/// `keys import-bundle FILE [--trust-once]`.
pub fn import(config: &Config, file: PathBuf, trust_once: bool) -> ExitCode {
    let Ok(data) = read(&file) else {
        return ExitCode::FAILURE;
    };
    let Ok(response) = ask(config, TransferRequest::Import { data, trust_once }, false) else {
        return ExitCode::FAILURE;
    };
    // What was imported is the command's result: standard output, as `keys import`.
    // (A refusal was said on standard error.)
    if !response.failed {
        for line in &response.messages {
            println!("{}: {line}", file.display());
        }
    }
    exit(&response)
}

/// A file's bytes, base64, for the request.
fn read(path: &Path) -> Result<String, ()> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(base64::engine::general_purpose::STANDARD.encode(bytes)),
        Err(e) => {
            eprintln!("sealgate: cannot read {}: {e}", path.display());
            Err(())
        }
    }
}

/// Sends a request and prints the answer: the output on standard output, the messages
/// on standard error (they are about the output, not part of it).
fn send(config: &Config, request: TransferRequest) -> ExitCode {
    let Ok(response) = ask(config, request, true) else {
        return ExitCode::FAILURE;
    };
    print!("{}", response.output);
    exit(&response)
}

/// Sends a request; with `say`, its messages go to standard error at once.
fn ask(config: &Config, request: TransferRequest, say: bool) -> Result<admin::Response, ()> {
    match admin::request(config, Request::Transfer { request }) {
        Ok(response) => {
            if say || response.failed {
                for message in &response.messages {
                    eprintln!("{message}");
                }
            }
            Ok(response)
        }
        Err(e) => {
            eprintln!("sealgate: {e}");
            Err(())
        }
    }
}

fn exit(response: &admin::Response) -> ExitCode {
    if response.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
