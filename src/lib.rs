//! sealgate: an SMTP encryption gateway. MTAs route mail through it; it hands each
//! message to the next hop and answers the client only once the next hop has answered.
//!
//! # Layout
//!
//! One folder per step, in the order a message takes through them: a session, then
//! the envelope and message, then the policy's verdict for each recipient, then the
//! transform that carries it out, then the relay, then the reply to the client.
//!
//! - [`server`]: the two listeners, the connection limit, graceful shutdown, and
//!   reloading the policy on SIGHUP and file changes ([`server::reload`]).
//! - [`smtp`]: the protocol only. [`smtp::reply`] defines every reply text,
//!   [`smtp::conn`] frames lines and DATA, [`smtp::session`] is the state machine.
//! - [`mail`]: the values every step shares, with no I/O: [`mail::Direction`], the
//!   [`mail::envelope`], the [`mail::message`] with the `Received:` field sealgate adds,
//!   and the MIME structure of encrypted mail ([`mail::mime`]).
//! - [`policy`]: the rule files in `policy_dir` (loading with `path:line` errors, lint
//!   warnings, evaluation of a chain, verdicts, `policy explain`). Pure: no I/O.
//! - [`gateway`]: one accepted transaction, in the order it runs: [`gateway::plan`]
//!   asks the policy at each RCPT and after DATA (starting and collecting key
//!   lookups), [`gateway::transform`] carries out each recipient's verdict (encrypt,
//!   decrypt, pass, refuse) and groups recipients by the copy they get,
//!   [`gateway::marks`] puts the rules' tags and the `X-Sealgate` field on a copy, and
//!   [`gateway`] itself hands the copies to the relay and makes the client's reply.
//! - [`relay`]: the next hop, as an SMTP server, a folder of `.eml` files, or the MX
//!   hosts of each recipient domain (opportunistic STARTTLS); the circuit breaker that
//!   rests a failed next hop or MX host address ([`relay::breaker`]).
//! - [`spool`]: the durable retry spool for copies the next hop did not take, its
//!   worker, and the DSNs it sends ([`spool::dsn`]).
//! - [`keys`]: the key cache, harvesting keys from inbound mail, and the operations
//!   behind `sealgate keys ...` with the admin socket that reaches a running server.
//! - [`org`]: the organization's own keys: the Organization key that certifies internal
//!   users' keys, the Organization certificate ([`org::ca`]) that issues their S/MIME
//!   certificates, the renewal job, and publishing (DANE, WKD).
//! - [`transfer`]: moving keys between gateways: this gateway's transport identity, the
//!   trusted peers, and bundles wrapped to a peer and signed by us (the only thing
//!   sealgate signs besides the org's certifications: never mail).
//! - [`crypto`]: OpenPGP and S/MIME encryption and decryption (never signing), and the
//!   BER real clients send.
//! - [`dns`]: key lookup in DNSSEC-validated OPENPGPKEY and SMIMEA records, with the
//!   negative cache; MX hosts with the implicit and null MX; the resolvers.
//! - [`config`]: `sealgate.toml` and the built-in defaults, validated; errors name
//!   `path:line`. [`config::units`] parses the sizes and durations in it.
//! - [`store`]: the sled database under `data_dir`, and in a cluster the shared
//!   PostgreSQL store ([`store::postgres`]: pool, migrations, the KEK check;
//!   [`store::records`]: small trees kept in either; [`store::migrate`]).
//!   [`cluster`]: membership of a cluster, heartbeats, who does the chores.
//! - [`tls`]: STARTTLS certificates for the listeners, and the opportunistic client
//!   towards MX hosts.
//!
//! The binary (`src/bin/sealgate/`) parses the command line and runs a verb; it holds
//! what only the command line needs: `policy explain`'s front end, the `keys list`
//! table, and the reachability probes of `check`.

pub mod cluster;
pub mod config;
pub mod crypto;
pub mod dns;
pub mod gateway;
pub mod keys;
pub mod mail;
pub mod org;
pub mod policy;
pub mod relay;
pub mod server;
pub mod smtp;
pub mod spool;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod transfer;
