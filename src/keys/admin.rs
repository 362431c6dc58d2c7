//! The operations behind `sealgate keys ...`, and how the CLI reaches them.
//!
//! sled locks its database, so while `serve` runs no other process can open it. The
//! server therefore listens on a Unix socket, `data_dir/admin.sock` (mode 0600, so only
//! the user the gateway runs as may use it). The CLI sends one JSON request line and
//! reads one JSON response line. When no server answers on the socket, the CLI opens
//! the database itself. Either way the same [`execute`] does the work, so the two paths
//! cannot drift apart.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::entry::{KeyEntry, Source};
use super::material::{self, Origin};
use super::revocation::Revocations;
use super::sckm;
use super::secrets::Sealer;
use super::store::{Candidate, KeyStore, Put};
use crate::config::Config;
use crate::org::OrgStore;
use crate::org::admin::OrgContext;
use crate::transfer::TransferStore;
use crate::transfer::admin::TransferContext;

/// The socket's name inside `data_dir`.
pub const SOCKET: &str = "admin.sock";
/// The largest request we read (an import of many keys).
const MAX_REQUEST: u64 = 64 * 1024 * 1024;

/// A file handed to `keys import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct File {
    pub name: String,
    /// The file's bytes, base64 (the request is JSON).
    pub data: String,
}

impl File {
    pub fn read(path: &Path) -> std::io::Result<File> {
        Ok(File {
            name: path.display().to_string(),
            data: base64::engine::general_purpose::STANDARD.encode(std::fs::read(path)?),
        })
    }
}

/// One admin request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Import {
        files: Vec<File>,
    },
    ImportSckm {
        files: Vec<File>,
        passphrase: Option<String>,
    },
    List,
    /// The entries of these addresses (for `policy explain`), in one request: the CLI
    /// opens the database once, not once per address.
    Find {
        addresses: Vec<String>,
    },
    Delete {
        target: String,
    },
    Purge,
    /// `sealgate org ...` and `keys export`.
    Org {
        request: crate::org::admin::OrgRequest,
    },
    /// `sealgate transfer ...`, `keys export --to` and `keys import-bundle`.
    Transfer {
        request: crate::transfer::admin::TransferRequest,
    },
    /// `sealgate spool ...`.
    Spool {
        request: crate::spool::admin::SpoolRequest,
    },
    /// `sealgate relay ...`.
    Relay {
        request: crate::relay::admin::RelayRequest,
    },
}

impl Request {
    /// For the log: never the request itself, which may carry a passphrase.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Import { .. } => "import",
            Request::ImportSckm { .. } => "import-sckm",
            Request::List => "list",
            Request::Find { .. } => "find",
            Request::Delete { .. } => "delete",
            Request::Purge => "purge",
            Request::Org { .. } => "org",
            Request::Transfer { .. } => "transfer",
            Request::Spool { .. } => "spool",
            Request::Relay { .. } => "relay",
        }
    }
}

/// The answer: entries (listed, imported or removed), lines for the admin, and whether
/// the command as a whole failed (exit status 1).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub entries: Vec<KeyEntry>,
    pub messages: Vec<String>,
    pub failed: bool,
    /// What goes to standard output as it is (an exported key, a status report).
    #[serde(default)]
    pub output: String,
}

/// What a verb of `org` or `transfer` gives back: lines for the admin (standard error
/// when it failed), and what goes to standard output as it is (a key, a certificate, a
/// bundle, a report).
#[derive(Debug, Default)]
pub struct Answer {
    pub messages: Vec<String>,
    pub output: String,
}

/// What requests work on.
pub struct Context<'a> {
    pub keys: &'a dyn KeyStore,
    /// Seals and opens secrets; `None` for requests that need none, so that the CLI
    /// does not create a KEK for them.
    pub sealer: Option<&'a Sealer>,
    pub org: &'a OrgStore,
    pub transfer: &'a TransferStore,
    pub config: &'a Config,
}

/// Carries out a request.
pub fn execute(cx: &Context, request: Request, now: OffsetDateTime) -> Response {
    let (store, sealer) = (cx.keys, cx.sealer);
    let mut response = Response::default();
    let failure = |e: super::store::KeyStoreError| Response {
        messages: vec![format!("key store error: {e}")],
        failed: true,
        ..Response::default()
    };
    match request {
        Request::Org { request } => {
            let org = OrgContext {
                store: cx.org,
                keys: cx.keys,
                sealer: cx.sealer,
                config: cx.config,
            };
            return answered(crate::org::admin::execute(&org, request, now));
        }
        Request::Transfer { request } => {
            let transfer = TransferContext {
                store: cx.transfer,
                keys: cx.keys,
                sealer: cx.sealer,
                hostname: &cx.config.hostname,
            };
            return answered(crate::transfer::admin::execute(&transfer, request, now));
        }
        Request::Spool { .. } | Request::Relay { .. } => {
            unreachable!("spool and relay requests are served by serve_running and serve_stopped")
        }
        Request::List => match store.list() {
            Ok(mut entries) => {
                for entry in &mut entries {
                    if let Ok(Some(material)) = store.material(&entry.address, &entry.fingerprint) {
                        entry.details = Some(Box::new(super::describe::describe(entry, &material)));
                    }
                }
                response.entries = entries;
            }
            Err(e) => return failure(e),
        },
        Request::Find { addresses } => {
            for address in addresses {
                let Some(normalized) = super::address::normalize(&address) else {
                    continue;
                };
                match store.find(&normalized) {
                    Ok(entries) => response.entries.extend(entries),
                    Err(e) => return failure(e),
                }
            }
        }
        Request::Purge => match store.purge(now) {
            Ok(removed) => {
                tracing::info!(
                    removed = removed.len(),
                    "keys: expired entries purged by the admin"
                );
                response
                    .messages
                    .push(format!("purged {} expired entries", removed.len()));
                response.entries = removed;
            }
            Err(e) => return failure(e),
        },
        Request::Delete { target } => match store.delete(&target) {
            Ok(removed) if removed.is_empty() => {
                response.messages.push(format!("no entry matches {target}"));
                response.failed = true;
            }
            Ok(removed) => {
                for entry in &removed {
                    tracing::info!(address = %entry.address, fingerprint = %entry.fingerprint, source = entry.source.as_str(), "keys: deleted by the admin");
                }
                response
                    .messages
                    .push(format!("deleted {} entries", removed.len()));
                response.entries = removed;
            }
            Err(e) => return failure(e),
        },
        Request::Import { files } => {
            let origin = Origin {
                source: Source::Admin,
                message_id: None,
                sender: None,
            };
            import(store, files, &mut response, now, true, |bytes| {
                material::import_candidates(bytes, &origin, now).map(|c| (c, Vec::new()))
            });
        }
        Request::ImportSckm { files, passphrase } => {
            let Some(sealer) = sealer else {
                response
                    .messages
                    .push("import-sckm needs the key-encryption key".into());
                response.failed = true;
                return response;
            };
            let held = |fingerprint: &str| store.sealed_secret(fingerprint).ok().flatten();
            import(store, files, &mut response, now, false, |bytes| {
                sckm::candidates(bytes, passphrase.as_deref(), sealer, &held, now)
            });
        }
    }
    response
}

/// The response to a verb that answers with lines for the admin and an output, or fails
/// with one error.
pub fn answered(result: Result<Answer, impl std::fmt::Display>) -> Response {
    match result {
        Ok(Answer { messages, output }) => Response {
            messages,
            output,
            ..Response::default()
        },
        Err(e) => Response {
            messages: vec![e.to_string()],
            failed: true,
            ..Response::default()
        },
    }
}

/// Stores the keys of each file, all of a file or nothing, and reports per key. With
/// `revocations`, a file that holds revocations (a bare OpenPGP revocation certificate,
/// a CRL) marks the cached keys it names instead.
fn import(
    store: &dyn KeyStore,
    files: Vec<File>,
    response: &mut Response,
    now: OffsetDateTime,
    revocations: bool,
    parse: impl Fn(&[u8]) -> Result<(Vec<Candidate>, Vec<String>), material::Refusal>,
) {
    for file in files {
        let bytes = match base64::engine::general_purpose::STANDARD.decode(&file.data) {
            Ok(bytes) => bytes,
            Err(e) => {
                response
                    .messages
                    .push(format!("{}: refused: {e}", file.name));
                response.failed = true;
                continue;
            }
        };
        if let Some(found) = revocations.then(|| Revocations::read(&bytes)).flatten() {
            match found.apply(store) {
                Ok(marked) => {
                    if marked.is_empty() {
                        response
                            .messages
                            .push(format!("{}: no cached key is named in it", file.name));
                    }
                    for entry in &marked {
                        response.messages.push(format!(
                            "{}: {} {} revoked",
                            file.name, entry.address, entry.fingerprint
                        ));
                    }
                    response.entries.extend(marked);
                }
                Err(e) => {
                    response
                        .messages
                        .push(format!("{}: refused: {e}", file.name));
                    response.failed = true;
                }
            }
            continue;
        }
        // Every key is checked before any is stored.
        let (candidates, warnings) = match parse(&bytes) {
            Ok(parsed) => parsed,
            Err(refusal) => {
                response
                    .messages
                    .push(format!("{}: refused: {refusal}", file.name));
                response.failed = true;
                continue;
            }
        };
        for warning in warnings {
            response
                .messages
                .push(format!("{}: warning: {warning}", file.name));
        }
        for candidate in candidates {
            let (address, fingerprint) = (candidate.address.clone(), candidate.fingerprint.clone());
            let what = match store.put(candidate, now) {
                Ok(Put::Added) => "added".to_string(),
                Ok(Put::Refreshed) => "updated".to_string(),
                Ok(Put::Replaced(old)) => format!("added, replacing {}", old.join(", ")),
                Ok(Put::Pending(established)) => format!(
                    "added as pending (not used while {} is established)",
                    established.join(", ")
                ),
                Ok(Put::Ignored(why)) => format!("ignored: {why}"),
                Ok(Put::Revoked) => "revoked".to_string(),
                Err(e) => {
                    response
                        .messages
                        .push(format!("{}: key store error: {e}", file.name));
                    response.failed = true;
                    return;
                }
            };
            tracing::info!(file = %file.name, %address, %fingerprint, result = %what, "keys: imported by the admin");
            response
                .messages
                .push(format!("{}: {address} {fingerprint} {what}", file.name));
            if let Ok(entries) = store.find(&address) {
                response
                    .entries
                    .extend(entries.into_iter().filter(|e| e.fingerprint == fingerprint));
            }
        }
    }
}

/// Binds `data_dir/admin.sock` (mode 0600). Call it only while holding the database
/// lock: a socket file found there is then from a dead process, and is replaced.
pub fn bind(data_dir: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let path = data_dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// What the server's admin socket works on.
#[derive(Clone)]
pub struct Served {
    pub keys: Arc<dyn KeyStore>,
    pub sealer: Arc<Sealer>,
    pub org: OrgStore,
    pub transfer: TransferStore,
    pub config: Arc<Config>,
    pub spool: crate::spool::Spool,
    pub relays: crate::relay::Relays,
}

/// Serves admin requests on `listener` until `shutdown`, then removes the socket file.
pub async fn serve(
    listener: tokio::net::UnixListener,
    served: Served,
    shutdown: CancellationToken,
) {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: accept failed");
                    continue;
                }
            },
        };
        let served = served.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, served).await {
                tracing::warn!(error = %e, "admin socket: request failed");
            }
        });
    }
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
}

async fn answer(stream: tokio::net::UnixStream, served: Served) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    tokio::io::BufReader::new(read.take(MAX_REQUEST))
        .read_until(b'\n', &mut line)
        .await?;
    let response = match serde_json::from_slice::<Request>(&line) {
        Ok(Request::Spool { request }) => {
            tracing::info!(request = "spool", "admin request");
            let cx = crate::spool::admin::SpoolContext {
                spool: &served.spool,
                config: &served.config,
                running: true,
            };
            answered(crate::spool::admin::execute(&cx, request).await)
        }
        Ok(Request::Relay { request }) => {
            tracing::info!(request = "relay", "admin request");
            answered(crate::relay::admin::execute(
                &served.relays,
                &served.config,
                request,
            ))
        }
        Ok(request) => {
            tracing::info!(request = request.name(), "admin request");
            tokio::task::spawn_blocking(move || {
                let cx = Context {
                    keys: served.keys.as_ref(),
                    sealer: Some(&served.sealer),
                    org: &served.org,
                    transfer: &served.transfer,
                    config: &served.config,
                };
                execute(&cx, request, OffsetDateTime::now_utc())
            })
            .await
            .map_err(std::io::Error::other)?
        }
        Err(e) => Response {
            messages: vec![format!("bad admin request: {e}")],
            failed: true,
            ..Response::default()
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await
}

/// Why the CLI could not carry out a request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Store(#[from] crate::store::DbError),
    #[error(transparent)]
    KeyStore(#[from] super::store::KeyStoreError),
    #[error("the running server's admin socket {0} failed: {1}")]
    Socket(PathBuf, std::io::Error),
    #[error("the running server sent a bad answer: {0}")]
    BadAnswer(serde_json::Error),
    #[error(transparent)]
    Secrets(#[from] super::secrets::SecretError),
    #[error(transparent)]
    Org(crate::org::OrgStoreError),
    #[error(transparent)]
    Transfer(#[from] crate::transfer::TransferError),
    #[error(transparent)]
    Spool(crate::spool::SpoolError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs a request for the CLI: through the running server's socket if there is one,
/// else directly on the database in `config.data_dir`.
pub fn request(config: &Config, request: Request) -> Result<Response, ClientError> {
    let data_dir = &config.data_dir;
    let path = data_dir.join(SOCKET);
    match UnixStream::connect(&path) {
        Ok(mut stream) => {
            let socket_error = |e| ClientError::Socket(path.clone(), e);
            let mut line = serde_json::to_vec(&request).expect("a request always serializes");
            line.push(b'\n');
            stream.write_all(&line).map_err(socket_error)?;
            let mut answer = Vec::new();
            BufReader::new(stream)
                .read_until(b'\n', &mut answer)
                .map_err(socket_error)?;
            serde_json::from_slice(&answer).map_err(ClientError::BadAnswer)
        }
        Err(_) => {
            // No server: the database is ours for the moment.
            if let Request::Relay { request } = &request {
                return Ok(answered(Ok::<_, ClientError>(
                    crate::relay::admin::not_running(request),
                )));
            }
            let db = crate::store::open(data_dir)?;
            if let Request::Spool { request } = request {
                return spool_stopped(config, &db, request);
            }

            let sealer = match &request {
                Request::ImportSckm { .. } => Some(Sealer::open(data_dir)?),
                Request::Org { request } if request.needs_secrets() => {
                    Some(Sealer::open(data_dir)?)
                }
                Request::Transfer { request } if request.needs_secrets() => {
                    Some(Sealer::open(data_dir)?)
                }
                _ => None,
            };
            let shared = crate::store::postgres::shared(&config.store, sealer.as_ref())
                .map_err(super::store::KeyStoreError::from)?;
            let org = OrgStore::open_configured(&db, shared.clone()).map_err(ClientError::Org)?;
            let transfer = TransferStore::open_configured(&db, shared.clone())?;
            let store = super::store::open_configured(config, &db, shared)?;
            let cx = Context {
                keys: store.as_ref(),
                sealer: sealer.as_ref(),
                org: &org,
                transfer: &transfer,
                config,
            };
            let response = execute(&cx, request, OffsetDateTime::now_utc());
            db.flush().map_err(super::store::KeyStoreError::from)?;
            Ok(response)
        }
    }
}

/// A `spool` verb on the database of a gateway that does not run.
fn spool_stopped(
    config: &Config,
    db: &sled::Db,
    request: crate::spool::admin::SpoolRequest,
) -> Result<Response, ClientError> {
    use crate::spool::{Spool, Storage, postgres::PgSpool, sled::SledSpool};
    let shared = crate::store::postgres::shared(&config.store, None)
        .map_err(super::store::KeyStoreError::from)?;
    let local = SledSpool::open(db).map_err(ClientError::Spool)?;
    // The CLI claims nothing, so its member name is never written.
    let shared =
        shared.map(|pg| PgSpool::new(pg, "sealgate-cli".into(), config.store.member_timeout.0));
    let spool = Spool::new(Storage { local, shared }, config.spool.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientError::Runtime)?;
    let cx = crate::spool::admin::SpoolContext {
        spool: &spool,
        config,
        running: false,
    };
    let response = answered(runtime.block_on(crate::spool::admin::execute(&cx, request)));
    db.flush().map_err(super::store::KeyStoreError::from)?;
    Ok(response)
}
