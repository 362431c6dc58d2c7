//! `sealgate cluster status`, `sealgate store migrate`, and what `check` says of the
//! shared store. These read and write the shared store directly: they work on any
//! member, whether or not `serve` runs there.

use std::process::ExitCode;

use clap::Subcommand;
use sealgate::config::{Backend, Config};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The members, their last heartbeat, version and policy hash, and the spool depth.
    Status,
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy this gateway's key cache and secrets into the shared store, and move its
    /// spooled copies there (stop `serve` first).
    Migrate {
        #[arg(long, value_name = "sled")]
        from: String,
        #[arg(long, value_name = "postgres")]
        to: String,
    },
}

pub fn run(config: &Config, command: ClusterCommand) -> ExitCode {
    match command {
        ClusterCommand::Status => cluster_status(config),
    }
}

pub fn store(config: &Config, command: StoreCommand) -> ExitCode {
    let StoreCommand::Migrate { from, to } = command;
    if from != "sled" || to != "postgres" {
        eprintln!(
            "sealgate: store migrate goes --from sled --to postgres (the [store] in the config)"
        );
        return ExitCode::FAILURE;
    }
    match sealgate::store::migrate::sled_to_postgres(config) {
        Ok(report) => {
            println!(
                "copied {} key cache entries ({} with SCKM secrets); kept {} the shared store had; moved {} spooled copies",
                report.entries, report.secrets, report.kept, report.spooled
            );
            if report.org_records > 0 {
                println!(
                    "copied the organization's keys ({} records)",
                    report.org_records
                );
            }
            if report.org_kept {
                println!(
                    "warning: the cluster has an organization key already; this gateway's was not copied"
                );
            }
            if report.transfer {
                println!("copied the transport certificate and the trusted peers");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sealgate: store migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `cluster status`: read from the shared store itself, so that it works on any member
/// (or a machine that only has the config), whether or not `serve` runs.
fn cluster_status(config: &Config) -> ExitCode {
    use sealgate::store::postgres::Postgres;
    if config.store.backend != Backend::Postgres {
        eprintln!(
            "sealgate: not in a cluster: [store] backend = \"sled\" keeps everything on this machine"
        );
        return ExitCode::FAILURE;
    }
    let status = Postgres::open(&config.store)
        .and_then(|pg| sealgate::cluster::status(&pg, config.store.member_timeout.0));
    let (members, depth) = match status {
        Ok(status) => status,
        Err(e) => {
            eprintln!("sealgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    println!("MEMBER\tVERSION\tPOLICY\tSTARTED\tLAST HEARTBEAT\tSTATE");
    for member in &members {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            member.id,
            member.version,
            member.policy_hash,
            rfc3339(member.started),
            rfc3339(member.heartbeat),
            if member.alive { "alive" } else { "dead" }
        );
    }
    let live: std::collections::BTreeSet<&str> = members
        .iter()
        .filter(|m| m.alive)
        .map(|m| m.policy_hash.as_str())
        .collect();
    if live.len() > 1 {
        println!(
            "warning: the live members run different policies ({} hashes)",
            live.len()
        );
    }
    println!("spool: {depth} copies");
    ExitCode::SUCCESS
}

/// Whether the shared store answers, and its schema version; `check` only looks.
pub fn store_state(config: &Config) -> String {
    use sealgate::store::postgres::{Postgres, SCHEMA_VERSION};
    let version = Postgres::open(&config.store).and_then(|pg| pg.schema_version());
    match version {
        Ok(0) => format!(
            "[store] postgres: answers; no schema yet (the first serve makes version {SCHEMA_VERSION})"
        ),
        Ok(version) if version == SCHEMA_VERSION => {
            format!("[store] postgres: answers; schema version {version}")
        }
        Ok(version) => format!(
            "[store] postgres: warning: schema version {version}, this sealgate's is {SCHEMA_VERSION} (serve migrates an older one, refuses a newer one)"
        ),
        Err(e) => format!("[store] postgres: warning: {e}"),
    }
}
