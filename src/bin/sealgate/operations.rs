//! `sealgate spool ...` and `sealgate relay ...`: the retry spool and the next hops'
//! circuit breakers, through the running gateway's admin socket (or, for the spool,
//! the database when no gateway runs).

use std::process::ExitCode;

use clap::Subcommand;
use sealgate::config::Config;
use sealgate::keys::admin::{self, Request};
use sealgate::relay::admin::RelayRequest;
use sealgate::spool::admin::SpoolRequest;

#[derive(Subcommand)]
pub enum SpoolCommand {
    /// The copies held, oldest first (like postqueue -p).
    List {
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One copy: its envelope, attempts, last reply and the message's header.
    Show {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Attempt now, ignoring the back-off: one copy, or with --all every copy (like
    /// postqueue -f).
    Retry {
        #[arg(
            value_name = "ID",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Remove a copy; its sender gets a DSN saying so unless --silent (like postsuper -d).
    Delete {
        #[arg(value_name = "ID")]
        id: String,
        #[arg(long)]
        silent: bool,
    },
}

#[derive(Subcommand)]
pub enum RelayCommand {
    /// Each next hop, and each MX host address the circuit breaker rests, with the
    /// time left.
    Status,
    /// End a rest now (every rest without HOP), once the next hop is fixed.
    Reset {
        /// A next hop as `relay status` names it ("host:port").
        #[arg(value_name = "HOP")]
        hop: Option<String>,
    },
}

pub fn spool(config: &Config, command: SpoolCommand) -> ExitCode {
    let request = match command {
        SpoolCommand::List { json } => SpoolRequest::List { json },
        SpoolCommand::Show { id } => SpoolRequest::Show { id },
        SpoolCommand::Retry { id, .. } => SpoolRequest::Retry { id },
        SpoolCommand::Delete { id, silent } => SpoolRequest::Delete { id, silent },
    };
    send(config, Request::Spool { request })
}

pub fn relay(config: &Config, command: RelayCommand) -> ExitCode {
    let request = match command {
        RelayCommand::Status => RelayRequest::Status,
        RelayCommand::Reset { hop } => RelayRequest::Reset { hop },
    };
    send(config, Request::Relay { request })
}

/// Sends a request and prints the answer: the output as it is, then the messages (on
/// standard error when the verb failed).
fn send(config: &Config, request: Request) -> ExitCode {
    let response = match admin::request(config, request) {
        Ok(response) => response,
        Err(e) => {
            eprintln!("sealgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", response.output);
    for message in &response.messages {
        if response.failed {
            eprintln!("sealgate: {message}");
        } else {
            println!("{message}");
        }
    }
    if response.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
