//! `sealgate relay status` and `relay reset [HOP]`: the next hops the circuit breaker
//! rests, under the admin's hand. After a smart host is fixed, mail need not wait for
//! the rest to end: `relay reset` lets the next transaction through at once.
//!
//! The breakers live in the running gateway's memory, so these verbs only mean
//! something through its admin socket.

use serde::{Deserialize, Serialize};

use super::Relays;
use super::breaker::Status;
use crate::config::{Config, NextHop};
use crate::keys::admin::Answer;
use crate::mail::Direction;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum RelayRequest {
    Status,
    /// Ends the rest of one next hop ("host:port", or an MX host's "ip:port"), or of
    /// all.
    Reset {
        hop: Option<String>,
    },
}

/// Why a verb failed (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum RelayAdminError {
    /// The admin named a next hop sealgate has not sent mail to.
    #[error("{0} is not a next hop this gateway has used (sealgate relay status lists them)")]
    Unknown(String),
}

/// What the verbs say when no gateway runs: there is no breaker to look at.
pub fn not_running(request: &RelayRequest) -> Answer {
    let what = match request {
        RelayRequest::Status => "nothing rests",
        RelayRequest::Reset { .. } => "nothing to reset",
    };
    Answer {
        messages: vec![format!(
            "sealgate is not running here: the circuit breakers live in the running gateway; {what}"
        )],
        output: String::new(),
    }
}

pub fn execute(
    relays: &Relays,
    config: &Config,
    request: RelayRequest,
) -> Result<Answer, RelayAdminError> {
    match request {
        RelayRequest::Status => Ok(Answer {
            messages: Vec::new(),
            output: status(relays, config),
        }),
        RelayRequest::Reset { hop } => {
            let reset = relays
                .breakers()
                .reset(hop.as_deref())
                .ok_or_else(|| RelayAdminError::Unknown(hop.clone().unwrap_or_default()))?;
            tracing::info!(next_hops = ?reset, "relay: rests ended by the admin");
            let message = match (&hop, reset.is_empty()) {
                (Some(hop), true) => format!("{hop} was not resting"),
                (None, true) => "nothing was resting".to_string(),
                (_, false) => format!("available again: {}", reset.join(", ")),
            };
            Ok(Answer {
                messages: vec![message],
                output: String::new(),
            })
        }
    }
}

/// One line per next hop: the configured SMTP next hops always, MX host addresses
/// while they rest.
fn status(relays: &Relays, config: &Config) -> String {
    let configured = |name: &str| -> Vec<&'static str> {
        [Direction::Inbound, Direction::Outbound]
            .into_iter()
            .filter(|d| matches!(&config.listener(*d).next_hop, NextHop::Smtp(a) if a == name))
            .map(|d| match d {
                Direction::Inbound => "inbound next hop",
                Direction::Outbound => "outbound next hop",
            })
            .collect()
    };
    let statuses = relays.breakers().statuses();
    let mut lines = Vec::new();
    // Configured next hops that have not carried mail yet have no breaker: available.
    for direction in [Direction::Inbound, Direction::Outbound] {
        if let NextHop::Smtp(name) = &config.listener(direction).next_hop
            && !statuses.iter().any(|(n, _)| n == name)
            && !lines.iter().any(|l: &String| l.starts_with(name.as_str()))
        {
            lines.push(format!(
                "{name} ({}): available",
                configured(name).join(", ")
            ));
        }
    }
    let mut resting = 0;
    for (name, status) in &statuses {
        let role = configured(name);
        let role = if role.is_empty() {
            "MX host".to_string()
        } else {
            role.join(", ")
        };
        let state = match status {
            Status::Available if role == "MX host" => continue,
            Status::Available => "available".to_string(),
            Status::Probing => {
                resting += 1;
                "being probed (one transaction tries it; the others get 451)".to_string()
            }
            Status::Resting(rest) => {
                resting += 1;
                let secs = rest.left.as_secs();
                format!("resting, {}m{:02}s left", secs / 60, secs % 60)
            }
        };
        lines.push(format!("{name} ({role}): {state}"));
    }
    for direction in [Direction::Inbound, Direction::Outbound] {
        match &config.listener(direction).next_hop {
            NextHop::Dir(path) => lines.push(format!(
                "dir:{} ({direction} next hop): a folder, never rests",
                path.display()
            )),
            NextHop::Mx => lines.push(format!(
                "mx ({direction} next hop): each MX host address has its own breaker"
            )),
            NextHop::Smtp(_) => {}
        }
    }
    if resting == 0 {
        lines.push("nothing rests".into());
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}
