//! `sealgate org ...` and `sealgate keys export`: the command line in front of
//! [`sealgate::org::admin`], reached like the `keys` verbs (the running server's admin
//! socket, or the database).

use std::fs::Permissions;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
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
    /// The Organization certificate (an X.509 CA that issues users' S/MIME certificates).
    Cert {
        #[command(subcommand)]
        what: CertCommand,
    },
    /// Publish the certified keys of internal users where partners look for them.
    Publish {
        #[command(subcommand)]
        what: PublishCommand,
    },
}

#[derive(Subcommand)]
pub enum CertCommand {
    /// Make a self-signed org certificate (discouraged in production: import your CA's).
    Init {
        /// Its subject, as "CN=Example Org CA,O=Example Org"; no user's address.
        #[arg(long, value_name = "DN")]
        subject: String,
        /// Days it is valid. Default: as long as the org key, or 10 years when that
        /// never expires.
        #[arg(long, value_name = "N")]
        days: Option<u32>,
    },
    /// Take the keypair of the organization's own CA.
    Import {
        /// A file whose first line is the passphrase of an encrypted key.
        #[arg(long, value_name = "F")]
        passphrase_file: Option<PathBuf>,
        #[arg(value_name = "CA.pem")]
        cert: PathBuf,
        #[arg(value_name = "KEY.pem")]
        key: PathBuf,
    },
    /// Revoke the user certificates of an address, or the one with this serial.
    Revoke {
        #[arg(value_name = "ADDRESS_OR_SERIAL")]
        target: String,
    },
    /// Print the CRL (PEM) of the org certificate in force.
    Crl,
}

#[derive(Subcommand)]
pub enum PublishCommand {
    /// Print OPENPGPKEY records (RFC 7929) for the users of a zone, to sign into it.
    Dane {
        #[arg(long, value_name = "DOMAIN")]
        zone: String,
    },
    /// Write a Web Key Directory tree (DOMAIN/hu/HASH, DOMAIN/policy) into DIR, as
    /// gpg-wks-client --install-key does: serve DIR/DOMAIN as .well-known/openpgpkey/.
    Wkd {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
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
        OrgCommand::Publish { what } => return publish(config, what),
        OrgCommand::Cert { what } => match what {
            CertCommand::Init { subject, days } => OrgRequest::CertInit { subject, days },
            CertCommand::Import {
                passphrase_file,
                cert,
                key,
            } => {
                let passphrase = match first_line(passphrase_file) {
                    Ok(p) => p,
                    Err(code) => return code,
                };
                let read = |path: &PathBuf| {
                    admin::File::read(path).map(|f| f.data).map_err(|e| {
                        eprintln!("{}: cannot read: {e}", path.display());
                        ExitCode::FAILURE
                    })
                };
                let (cert, key) = match (read(&cert), read(&key)) {
                    (Ok(cert), Ok(key)) => (cert, key),
                    _ => return ExitCode::FAILURE,
                };
                OrgRequest::CertImport {
                    cert,
                    key,
                    passphrase,
                }
            }
            CertCommand::Revoke { target } => OrgRequest::CertRevoke { target },
            CertCommand::Crl => OrgRequest::CertCrl,
        },
    };
    send(config, request)
}

/// `org publish`: the certified keys come from the server (or the database); the
/// files are written here, where the admin runs the command.
fn publish(config: &Config, what: PublishCommand) -> ExitCode {
    use base64::Engine;
    use sealgate::org::publish::{self, Published};
    let response = match ask(config, OrgRequest::Published) {
        Ok(response) if !response.failed => response,
        Ok(_) => return ExitCode::FAILURE,
        Err(code) => return code,
    };
    let listed: Vec<sealgate::org::admin::PublishedKey> =
        match serde_json::from_str(&response.output) {
            Ok(keys) => keys,
            Err(e) => {
                eprintln!("sealgate: the server sent a bad answer: {e}");
                return ExitCode::FAILURE;
            }
        };
    let keys: Vec<Published> = listed
        .into_iter()
        .filter_map(|k| {
            let b64 = base64::engine::general_purpose::STANDARD;
            Some(Published {
                address: k.address,
                key: b64.decode(k.key).ok()?,
                certificate: k.certificate.and_then(|c| b64.decode(c).ok()),
            })
        })
        .collect();
    match what {
        PublishCommand::Dane { zone } => {
            print!("{}", publish::dane(&keys, &zone));
            ExitCode::SUCCESS
        }
        PublishCommand::Wkd { dir } => {
            for (path, contents) in publish::wkd(&keys) {
                let path = dir.join(path);
                let written = path
                    .parent()
                    .map_or(Ok(()), public_dir)
                    .and_then(|()| std::fs::write(&path, contents))
                    .and_then(|()| std::fs::set_permissions(&path, Permissions::from_mode(0o644)));
                if let Err(e) = written {
                    eprintln!("sealgate: {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
    }
}

/// Creates `dir` and its missing parents readable by all (0755): a web server serves
/// them, whatever sealgate's own umask (077).
fn public_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(0o755))
}

/// `keys export ADDRESS [--smime]`.
pub fn export(config: &Config, address: String, smime: bool) -> ExitCode {
    send(config, OrgRequest::KeysExport { address, smime })
}

/// Sends an org request and prints the answer: the output on standard output, the
/// messages on standard error (they are about the output, not part of it).
fn send(config: &Config, request: OrgRequest) -> ExitCode {
    let response = match ask(config, request) {
        Ok(response) => response,
        Err(code) => return code,
    };
    print!("{}", response.output);
    if response.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Sends an org request; its messages go to standard error at once.
fn ask(config: &Config, request: OrgRequest) -> Result<admin::Response, ExitCode> {
    match admin::request(config, Request::Org { request }) {
        Ok(response) => {
            for message in &response.messages {
                eprintln!("{message}");
            }
            Ok(response)
        }
        Err(e) => {
            eprintln!("sealgate: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}
