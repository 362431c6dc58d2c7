//! What sealgate counts, and the one place metric names are spelled. Handlers call the
//! functions here; none names a metric itself, so the names an admin's dashboards rely
//! on cannot drift apart.
//!
//! The counters go to the `metrics` facade, which does nothing until [`install`] gives
//! it a Prometheus recorder (`[metrics] listen` set); [`http`] serves what it holds.
//! Names follow Prometheus's conventions: `sealgate_` first, `_total` for counters,
//! `_seconds` for durations, labels in snake case, and label values from small fixed
//! sets (never an address or a message id, which would make a series per message).

pub mod http;

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::mail::Direction;
use crate::smtp::reply::Reply;

const MESSAGES: &str = "sealgate_messages_total";
const RECIPIENTS: &str = "sealgate_recipients_total";
const ENCRYPTIONS: &str = "sealgate_encryptions_total";
const DECRYPTIONS: &str = "sealgate_decryptions_total";
const HARVESTED: &str = "sealgate_harvested_keys_total";
const LOOKUPS: &str = "sealgate_key_lookups_total";
const NEXT_HOP_REPLIES: &str = "sealgate_next_hop_replies_total";
const NEXT_HOP_RESTING: &str = "sealgate_next_hop_resting";
const SPOOL_COPIES: &str = "sealgate_spool_copies";
const SPOOL_OLDEST: &str = "sealgate_spool_oldest_age_seconds";
const CONNECTIONS: &str = "sealgate_connections_open";
const REFUSED: &str = "sealgate_refused_commands_total";
const DATA_REPLY: &str = "sealgate_data_reply_seconds";
const DNSSEC_OK: &str = "sealgate_dns_dnssec_ok";

/// The buckets of [`DATA_REPLY`]: from a plain relay on loopback (milliseconds) to a
/// next hop that takes its time (a minute).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the Prometheus recorder for this process, once; later calls get the same
/// handle. (A process has one recorder: tests that start several gateways share it.)
pub fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DATA_REPLY.into()), LATENCY_BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(
        MESSAGES,
        "Client transactions by direction and the outcome of their DATA (accepted, deferred, rejected)"
    );
    describe_counter!(
        RECIPIENTS,
        "Recipients of accepted-for-processing transactions by direction and what was done for them"
    );
    describe_counter!(ENCRYPTIONS, "Copies encrypted, by format and result");
    describe_counter!(DECRYPTIONS, "Copies decrypted, by format and result");
    describe_counter!(
        HARVESTED,
        "Keys found in inbound mail, by what the key cache made of them"
    );
    describe_counter!(LOOKUPS, "Key lookups in DNS (OPENPGPKEY, SMIMEA) by result");
    describe_counter!(
        NEXT_HOP_REPLIES,
        "Next-hop transactions by the class of their final reply (2xx, 4xx, 5xx)"
    );
    describe_gauge!(
        NEXT_HOP_RESTING,
        "1 while the circuit breaker rests a next hop (no connection is attempted), else 0"
    );
    describe_gauge!(SPOOL_COPIES, "Copies held in the retry spool");
    describe_gauge!(
        SPOOL_OLDEST,
        "Age of the oldest copy in the retry spool (0 when it is empty)"
    );
    describe_gauge!(CONNECTIONS, "SMTP connections open, by listener");
    describe_counter!(
        REFUSED,
        "SMTP commands refused before DATA, by direction and enhanced status code"
    );
    describe_histogram!(
        DATA_REPLY,
        metrics::Unit::Seconds,
        "Time from the end of the client's DATA to sealgate's reply, by direction"
    );
    describe_gauge!(
        DNSSEC_OK,
        "1 when the resolver passes DNSSEC records on (key lookups can validate), else 0"
    );
}

fn direction_label(direction: Direction) -> &'static str {
    match direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

/// What a DATA reply means to the client.
fn outcome_label(reply: &Reply) -> &'static str {
    if reply.is_positive() {
        "accepted"
    } else if reply.is_temporary() {
        "deferred"
    } else {
        "rejected"
    }
}

/// One client transaction answered at DATA, `elapsed` after the final dot.
pub fn message(direction: Direction, reply: &Reply, elapsed: Duration) {
    let direction = direction_label(direction);
    counter!(MESSAGES, "direction" => direction, "outcome" => outcome_label(reply)).increment(1);
    histogram!(DATA_REPLY, "direction" => direction).record(elapsed.as_secs_f64());
}

/// One recipient, and what was done for it: an action label of [`action_label`].
pub fn recipient(direction: Direction, action: &'static str) {
    counter!(RECIPIENTS, "direction" => direction_label(direction), "action" => action)
        .increment(1);
}

/// What the transform reports it did ("encrypted pgp", "not decrypted (...)"), as a
/// label from a fixed set.
pub fn action_label(done: &str) -> &'static str {
    match done {
        "passed" => "passed",
        "rejected" => "rejected",
        "deferred" => "deferred",
        "encrypted pgp" => "encrypted_pgp",
        "encrypted smime" => "encrypted_smime",
        "decrypted pgp" => "decrypted_pgp",
        "decrypted smime" => "decrypted_smime",
        "encryption failed" => "encryption_failed",
        d if d.starts_with("not decrypted") => "not_decrypted",
        _ => "other",
    }
}

/// One copy encrypted (`ok`) or not (encryption failed), in `format` ("pgp", "smime").
pub fn encryption(format: &'static str, ok: bool) {
    counter!(ENCRYPTIONS, "format" => format, "result" => result_label(ok)).increment(1);
}

/// One copy decrypted (`ok`) or not (no key opened it, or it was malformed).
pub fn decryption(format: &'static str, ok: bool) {
    counter!(DECRYPTIONS, "format" => format, "result" => result_label(ok)).increment(1);
}

fn result_label(ok: bool) -> &'static str {
    if ok { "ok" } else { "failed" }
}

/// A key found in inbound mail and what the cache made of it: "added", "updated",
/// "replaced", "pending", "ignored", "revoked", "refused", "error".
pub fn harvested(result: &'static str) {
    counter!(HARVESTED, "result" => result).increment(1);
}

/// A key lookup's result: "found", "not_found", "unavailable".
pub fn lookup(result: &'static str) {
    counter!(LOOKUPS, "result" => result).increment(1);
}

/// A next-hop transaction's final reply.
pub fn next_hop_reply(reply: &Reply) {
    let class = match reply.code {
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    counter!(NEXT_HOP_REPLIES, "class" => class).increment(1);
}

/// Whether the breaker rests `next_hop` now (set when the metrics are scraped). The
/// label holds a next hop's "host:port" or an MX host's "ip:port": few, from the config
/// and the MX records mail went to.
pub fn next_hop_resting(next_hop: &str, resting: bool) {
    gauge!(NEXT_HOP_RESTING, "next_hop" => next_hop.to_string()).set(if resting {
        1.0
    } else {
        0.0
    });
}

/// The retry spool's depth and the age of its oldest copy (set when scraped).
pub fn spool(copies: usize, oldest: Duration) {
    gauge!(SPOOL_COPIES).set(copies as f64);
    gauge!(SPOOL_OLDEST).set(oldest.as_secs_f64());
}

/// A connection opened (`+1`) or closed (`-1`) on a listener.
pub fn connections(direction: Direction, change: f64) {
    gauge!(CONNECTIONS, "listener" => direction_label(direction)).increment(change);
}

/// A command refused before DATA.
pub fn refused(direction: Direction, reply: &Reply) {
    counter!(REFUSED, "direction" => direction_label(direction), "status" => reply.status())
        .increment(1);
}

/// Whether the resolver passes DNSSEC records on.
pub fn dnssec_ok(ok: bool) {
    gauge!(DNSSEC_OK).set(if ok { 1.0 } else { 0.0 });
}
