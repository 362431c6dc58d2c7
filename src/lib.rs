//! sealgate: an SMTP encryption gateway. MTAs route mail through it; it hands each
//! message to the next hop and answers the client only once the next hop has answered.
//!
//! # Layout
//!
//! Data moves one way: session, then envelope and message, then the policy's verdict
//! for each recipient, then the transform that carries it out, then relay, then the
//! reply to the client.
//!
//! - [`config`]: `sealgate.toml` and the built-in defaults, validated; errors name
//!   `path:line`. [`units`] parses the sizes and durations in it.
//! - [`server`]: the two listeners, the connection limit, graceful shutdown.
//! - [`smtp`]: the protocol only. [`smtp::reply`] defines every reply text,
//!   [`smtp::conn`] frames lines and DATA, [`smtp::session`] is the state machine.
//! - [`envelope`]: who, to whom, which direction; [`message`]: the bytes, with the
//!   `Received:` header sealgate adds.
//! - [`policy`]: the rule files in `policy_dir` (loading with `path:line` errors, lint
//!   warnings, evaluation of a chain, verdicts, `policy explain`); [`plan`]: one
//!   transaction's policy, taken at MAIL, asked at each RCPT and again after DATA, with
//!   the key lookups it starts at RCPT and collects after DATA; [`reload`]: SIGHUP and
//!   file changes swap in a new policy, whole or not at all.
//! - [`classify`]: the seam that groups recipients by treatment; [`treatment`] carries
//!   out each recipient's verdict (encrypt, decrypt, pass, refuse), [`marks`] puts the
//!   rules' tags and the `X-Sealgate` field on a copy, and [`mime`] wraps and unwraps
//!   PGP/MIME and S/MIME around [`crypto`]'s bytes.
//! - [`gateway`]: one transaction's fan-out to the next hop and the client's reply.
//! - [`relay`]: the next hop, as an SMTP server, a folder of `.eml` files, or the MX
//!   hosts of each recipient domain (`relay/mx.rs`, opportunistic STARTTLS); the
//!   circuit breaker that rests a failed next hop or MX host address
//!   ([`relay::breaker`]), shared by both directions.
//! - [`spool`]: the durable retry spool and its worker; [`dsn`] builds the DSNs it sends.
//! - [`keys`]: the key cache (sled), harvesting keys from inbound mail, and the
//!   operations behind `sealgate keys ...` with the admin socket that reaches a running
//!   server. [`crypto`] encrypts and decrypts OpenPGP and S/MIME (never signs), and
//!   reads the BER real clients send.
//! - [`dns`]: key lookup in DNSSEC-validated OPENPGPKEY and SMIMEA records, with the
//!   negative cache ([`dns::keys`]); MX hosts with the implicit and null MX
//!   ([`dns::mx`]); the resolvers built from `[lookup]` ([`dns::resolver`]).
//! - [`reach`]: whether the next hops and the DNS resolver answer, for `sealgate
//!   check` and the start-up log.
//! - [`store`]: the sled database under `data_dir`; [`tls`]: STARTTLS certificates for
//!   the listeners, and the opportunistic client towards MX hosts.

pub mod classify;
pub mod config;
pub mod crypto;
pub mod dns;
pub mod dsn;
pub mod envelope;
pub mod gateway;
pub mod keys;
pub mod marks;
pub mod message;
pub mod mime;
pub mod plan;
pub mod policy;
pub mod reach;
pub mod relay;
pub mod reload;
pub mod server;
pub mod smtp;
pub mod spool;
pub mod store;
pub mod tls;
pub mod treatment;
pub mod units;
