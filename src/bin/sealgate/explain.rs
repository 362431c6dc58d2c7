//! `sealgate policy explain`: reads the message and the recipients' keys (from a
//! running server through its admin socket, or from the database), and prints what
//! the policy in `policy_dir` would do. Nothing is sent.

use std::path::Path;
use std::process::ExitCode;

use sealgate::config::Config;
use sealgate::keys::admin;
use sealgate::mail::Direction;
use sealgate::mail::message::Message;
use sealgate::policy::explain::{self, Recipient};
use sealgate::policy::{Content, Needs, load};

pub fn run(
    config: &Config,
    direction: Direction,
    from: &str,
    to: &[String],
    message: &Path,
    json: bool,
) -> ExitCode {
    let loaded = load::load_dir(&config.policy_dir);
    let Some(policy) = loaded.policy else {
        for error in loaded.errors() {
            eprintln!("{error}");
        }
        return ExitCode::FAILURE;
    };
    let raw = match std::fs::read(message) {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("sealgate: cannot read {}: {e}", message.display());
            return ExitCode::FAILURE;
        }
    };
    // Files saved by mail clients often have bare LF line ends; SMTP has CRLF.
    let raw = sealgate::mail::mime::crlf(&raw).into_owned();
    let all = Needs {
        headers: true,
        structure: true,
    };
    let content = Content::read(&Message::new(raw), all);
    // Every recipient's entries in one request: each request without a running server
    // opens the database, and sled lets go of its lock a moment after it is closed.
    let request = admin::Request::Find {
        addresses: to.to_vec(),
    };
    let entries = match admin::request(config, request) {
        Ok(response) if !response.failed => response.entries,
        Ok(response) => {
            eprintln!("sealgate: {}", response.messages.join("; "));
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("sealgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let recipients: Vec<Recipient> = to
        .iter()
        .map(|address| {
            let normalized = sealgate::keys::address::normalize(address);
            Recipient {
                address: address.clone(),
                internal: config.internal_domains.is_internal(address),
                entries: entries
                    .iter()
                    .filter(|e| Some(&e.address) == normalized.as_ref())
                    .cloned()
                    .collect(),
            }
        })
        .collect();
    let explanations = explain::explain(
        &policy,
        direction,
        from,
        &recipients,
        &content,
        &explain::Settings {
            allowed: config.allowed_keys(),
            authenticated_encryption: config.crypto.smime_authenticated_encryption,
            lookup_keys: config.lookup.keys,
            now: time::OffsetDateTime::now_utc(),
        },
    );
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&explanations).expect("explanations serialize")
        );
    } else {
        print!("{}", explain::render(&explanations));
    }
    ExitCode::SUCCESS
}
