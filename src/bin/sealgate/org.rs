//! `sealgate org ...` and `sealgate keys export`: the command line in front of
//! [`sealgate::org::admin`], reached like the `keys` verbs (the running server's admin
//! socket, or the database).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use sealgate::config::Config;
use sealgate::keys::admin::{self, Request};
use sealgate::org::admin::OrgRequest;

#[derive(Subcommand)]
pub enum OrgCommand {
    /// Make the Organization OpenPGP key (certify-only; no expiry by default).
    Init {
        /// Its user ID. Default: "<first internal domain> Organization Key".
        #[arg(long, value_name = "N")]
        name: Option<String>,
        /// "never" (the default) or a duration such as "5y", "730d".
        #[arg(long, value_name = "never|DURATION", default_value = "never")]
        expires: String,
        /// Replace the org key in force: every user's key is unverified until the new
        /// key has certified it.
        #[arg(long)]
        replace: bool,
    },
    /// Take an org key made elsewhere (its secret primary key, which must certify).
    Import {
        /// A file whose first line is the passphrase of a protected key.
        #[arg(long, value_name = "F")]
        passphrase_file: Option<PathBuf>,
        #[arg(long)]
        replace: bool,
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the org key (public) to distribute, or with --secret the keypair to back up.
    Export {
        #[arg(long)]
        secret: bool,
    },
    /// Show the org key, the org certificate, the certified users and the next renewal.
    Status,
    /// Run the certification job now.
    Renew,
}

/// The text of a file's first line (a passphrase file).
fn first_line(path: Option<PathBuf>) -> Result<Option<String>, ExitCode> {
    match path.map(std::fs::read_to_string).transpose() {
        Ok(text) => Ok(text.map(|t| t.lines().next().unwrap_or("").to_string())),
        Err(e) => {
            eprintln!("sealgate: cannot read the passphrase file: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

pub fn run(config: &Config, command: OrgCommand) -> ExitCode {
    let request = match command {
        OrgCommand::Init {
            name,
            expires,
            replace,
        } => {
            let expires = match expires.as_str() {
                "never" => None,
                text => match humantime::parse_duration(text) {
                    Ok(d) => Some(d.as_secs()),
                    Err(e) => {
                        eprintln!("sealgate: --expires {text:?}: {e} (\"never\" or like \"5y\")");
                        return ExitCode::FAILURE;
                    }
                },
            };
            let name = name.unwrap_or_else(|| {
                let domain = config
                    .internal_domains
                    .domains()
                    .first()
                    .unwrap_or(&config.hostname);
                format!("{domain} Organization Key")
            });
            OrgRequest::Init {
                name,
                expires,
                replace,
            }
        }
        OrgCommand::Import {
            passphrase_file,
            replace,
            file,
        } => {
            let passphrase = match first_line(passphrase_file) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let data = match admin::File::read(&file) {
                Ok(f) => f.data,
                Err(e) => {
                    eprintln!("{}: cannot read: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            OrgRequest::Import {
                data,
                passphrase,
                replace,
            }
        }
        OrgCommand::Export { secret } => OrgRequest::Export { secret },
        OrgCommand::Status => OrgRequest::Status,
        OrgCommand::Renew => OrgRequest::Renew,
    };
    send(config, request)
}

/// `keys export ADDRESS [--smime]`.
pub fn export(config: &Config, address: String, smime: bool) -> ExitCode {
    send(config, OrgRequest::KeysExport { address, smime })
}

/// Sends an org request and prints the answer: the output on standard output, the
/// messages on standard error (they are about the output, not part of it).
fn send(config: &Config, request: OrgRequest) -> ExitCode {
    let response = match admin::request(config, Request::Org { request }) {
        Ok(response) => response,
        Err(e) => {
            eprintln!("sealgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", response.output);
    for message in &response.messages {
        eprintln!("{message}");
    }
    if response.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
