//! The two listeners, the connection limit, the retry spool's worker, and graceful
//! shutdown.
//!
//! Shutdown: one cancellation token tells every session to stop at its next command
//! boundary (a transaction in flight finishes first) and the spool worker to stop; a
//! task tracker then tells us when every session has ended, or the grace period runs
//! out.

pub mod admission;
mod chores;
pub mod reload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::admission::{Admission, Refusal, Ticket};
use self::chores::{DnssecWatch, purge_periodically};
use crate::config::Config;
use crate::dns::KeyLookup;
use crate::gateway::Gateway;
use crate::gateway::plan::{KeyFinder, NoResolver, Planner};
use crate::gateway::transform::Transform;
use crate::keys::harvest::{Harvester, Rules as HarvestRules};
use crate::keys::secrets::Sealer;
use crate::keys::{KeyStore, admin};
use crate::mail::Direction;
use crate::org::OrgStore;
use crate::org::activity::Activity;
use crate::policy::{self, Live};
use crate::relay::Relays;
use crate::smtp::reply;
use crate::smtp::session::{End, Session, Shared};
use crate::spool::{Spool, SpoolError};
use crate::store::{self, DbError};
use crate::transfer::TransferStore;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address is taken or not ours. The admin's to fix.
    #[error("cannot listen on {addr} for {direction} mail: {source}")]
    Bind {
        direction: Direction,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] DbError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyStoreError),
    #[error(transparent)]
    Secrets(#[from] crate::keys::secrets::SecretError),
    #[error(transparent)]
    Org(#[from] crate::org::OrgStoreError),
    #[error(transparent)]
    Transfer(#[from] crate::transfer::TransferError),
    #[error(transparent)]
    Shared(#[from] crate::store::postgres::PgError),
    /// The `[metrics] listen` address is taken or not ours, or the recorder cannot be
    /// installed. The admin's to fix.
    #[error("cannot serve metrics on {addr}: {reason}")]
    Metrics { addr: SocketAddr, reason: String },
    /// The admin socket cannot be created (permissions, path too long for a socket).
    #[error("cannot create the admin socket {path}: {source}")]
    Admin {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The rule files in `policy_dir` have errors; each line is `path:line: message`.
    #[error("the policy cannot be loaded:\n{0}")]
    Policy(String),
    /// `[tls]` files that were valid at `check` time are not any more.
    #[error("[tls]: {0}")]
    Tls(String),
    /// The DNS resolver that `next_hop = "mx"` needs cannot be set up (the system's
    /// resolver config is unreadable).
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
}

/// A bound, ready gateway. [`Server::run`] serves until shutdown.
pub struct Server {
    shared: Arc<Shared>,
    inbound: TcpListener,
    outbound: TcpListener,
    db: sled::Db,
    /// The key cache, also served to the CLI on the admin socket.
    keys: Arc<dyn KeyStore>,
    /// Seals SCKM secrets imported through the admin socket.
    sealer: Arc<Sealer>,
    /// The organization's keys, their certifications and users' activity.
    org: OrgStore,
    /// The transport identity and the trusted peers, for key transfer.
    transfer: TransferStore,
    /// This process as a member of a cluster, with a heartbeat to write.
    membership: Option<crate::cluster::Membership>,
    /// The admin socket, bound with the listeners so that `sealgate keys` reaches the
    /// server as soon as it has started.
    admin: tokio::net::UnixListener,
    /// Reloads the policy on SIGHUP and when its files change.
    reloader: Arc<reload::Reloader>,
    /// The shared store of a cluster, for the health check.
    pg: Option<Arc<crate::store::postgres::Postgres>>,
    /// The `[metrics] listen` listener and the recorder it renders.
    metrics: Option<(TcpListener, metrics_exporter_prometheus::PrometheusHandle)>,
    /// With key lookup on: probes whether the resolver validates DNSSEC.
    dnssec: Option<DnssecWatch>,
}

impl Server {
    /// Binds both listeners, loads the policy and opens the data directory; recipients
    /// get what the policy's verdicts say.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let bind = |direction: Direction| {
            let addr = config.listener(direction).listen;
            async move {
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind {
                        direction,
                        addr,
                        source,
                    })
            }
        };
        let loaded = policy::load::load_dir(&config.policy_dir);
        let errors: Vec<String> = loaded.errors().map(ToString::to_string).collect();
        for warning in loaded.warnings() {
            tracing::warn!("{warning}");
        }
        let Some(policy) = loaded.policy else {
            return Err(StartError::Policy(errors.join("\n")));
        };
        let live = Arc::new(Live::new(policy));
        let inbound = bind(Direction::Inbound).await?;
        let outbound = bind(Direction::Outbound).await?;
        if let Some(warning) = store::exposure(&config.data_dir) {
            tracing::warn!("{warning}");
        }
        store::private_dir(&config.data_dir).map_err(|e| DbError::Open {
            path: config.data_dir.clone(),
            source: sled::Error::Io(e),
        })?;
        let db = store::open(&config.data_dir)?;
        let sealer = Arc::new(Sealer::open(&config.data_dir)?);
        let shared = crate::store::postgres::shared(&config.store, Some(&sealer))?;
        let keys = crate::keys::store::open_configured(&config, &db, shared.clone())?;
        // In a cluster, this process is a member with a heartbeat, and the spool is the
        // members' shared one.
        let membership = match &shared {
            None => None,
            Some(pg) => Some(crate::cluster::Membership::join(
                pg.clone(),
                &config.hostname,
                &crate::cluster::policy_hash(&config.policy_dir),
                config.store.member_timeout.0,
            )?),
        };
        let spool = match (&shared, &membership) {
            (Some(pg), Some(member)) => Spool::new(
                crate::spool::Storage {
                    local: crate::spool::sled::SledSpool::open(&db)?,
                    shared: Some(crate::spool::postgres::PgSpool::new(
                        pg.clone(),
                        member.id().to_string(),
                        config.store.member_timeout.0,
                    )),
                },
                config.spool.clone(),
            ),
            _ => Spool::open(&db, config.spool.clone())?,
        };
        let org = OrgStore::open_configured(&db, shared.clone())?;
        let transfer = TransferStore::open_configured(&db, shared.clone())?;
        let admin = admin::bind(&config.data_dir).map_err(|source| StartError::Admin {
            path: config.data_dir.join(admin::SOCKET),
            source,
        })?;
        let admin_sealer = sealer.clone();
        let metrics = match config.metrics.listen {
            None => None,
            Some(addr) => {
                let failed = |reason: String| StartError::Metrics { addr, reason };
                let handle = crate::telemetry::install().map_err(failed)?;
                let listener = crate::telemetry::http::bind(addr)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                Some((listener, handle))
            }
        };
        let config = Arc::new(config);
        let transform = Arc::new(Transform {
            keys: keys.clone(),
            sealer: sealer.clone(),
            config: config.clone(),
            org: org.clone(),
            prepared: Default::default(),
        });
        let tls = match &config.tls {
            None => None,
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(
                crate::tls::server_config(files).map_err(StartError::Tls)?,
            )),
        };
        // One set of circuit breakers for both directions: a next hop that failed for
        // one direction is resting for the other too.
        let relays = Relays::new(
            config.inbound.next_hop.clone(),
            config.outbound.next_hop.clone(),
            &config.relay,
            &config.hostname,
        );
        // MX delivery asks `[lookup] nameservers` (or the system's) for each recipient
        // domain's MX hosts.
        let relays = if config.outbound.next_hop == crate::config::NextHop::Mx {
            relays.with_resolver(crate::dns::DnsResolver::new(&config.lookup)?)
        } else {
            relays
        };
        let reloader = Arc::new(reload::Reloader::new(
            live.clone(),
            config.policy_dir.clone(),
        ));
        let mut dnssec = None;
        let finder: Option<Arc<dyn KeyFinder>> = config.lookup.keys.then(|| {
            let cache: Arc<dyn KeyStore> = keys.clone();
            match KeyLookup::new(&config.lookup, config.keys.lookup_ttl.0, cache) {
                Ok(lookup) => {
                    dnssec = Some(DnssecWatch {
                        resolver: lookup.resolver().clone(),
                        status: lookup.dnssec(),
                        described: crate::dns::resolver::describe(&config.lookup),
                    });
                    Arc::new(lookup) as Arc<dyn KeyFinder>
                }
                Err(e) => {
                    tracing::error!(error = %e, "no DNS resolver: key lookups fail, and rules that require encryption defer");
                    Arc::new(NoResolver(e.to_string()))
                }
            }
        });
        let gateway = Gateway {
            planner: Planner {
                policy: live,
                keys: keys.clone(),
                config: config.clone(),
                finder,
            },
            transform,
            relays,
            spool,
            hostname: config.hostname.clone(),
            activity: Activity::new(org.clone(), keys.clone(), config.internal_domains.clone()),
            autocrypt: crate::org::autocrypt::Autocrypt {
                keys: keys.clone(),
                org: org.clone(),
                config: config.clone(),
            },
            harvester: Harvester::start(
                keys.clone(),
                HarvestRules {
                    internal: config.internal_domains.clone(),
                    trusted_authserv_ids: config.inbound.trusted_authserv_ids.clone(),
                    smime_trust: config.keys.smime_trust.clone(),
                },
            ),
        };
        Ok(Server {
            shared: Arc::new(Shared {
                config,
                gateway: Arc::new(gateway),
                tls,
                shutdown: CancellationToken::new(),
            }),
            inbound,
            outbound,
            db,
            keys,
            sealer: admin_sealer,
            org,
            transfer,
            membership,
            admin,
            reloader,
            pg: shared,
            metrics,
            dnssec,
        })
    }

    /// The address a listener is bound to (useful with port 0).
    pub fn local_addr(&self, direction: Direction) -> SocketAddr {
        let listener = match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        };
        listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Reloads the policy when asked (SIGHUP); the file watcher uses it too.
    pub fn reloader(&self) -> Arc<reload::Reloader> {
        self.reloader.clone()
    }

    /// The retry spool, for inspection.
    pub fn spool(&self) -> &Spool {
        &self.shared.gateway.spool
    }

    /// Serves until `shutdown` completes, then lets transactions in flight finish within
    /// `[limits] shutdown_grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            shared,
            inbound,
            outbound,
            db,
            keys,
            sealer,
            org,
            transfer,
            membership,
            admin,
            reloader,
            pg,
            metrics,
            dnssec,
        } = self;
        let config = shared.config.clone();
        let tracker = TaskTracker::new();

        tracing::info!(
            inbound = %inbound.local_addr().map_or("?".into(), |a| a.to_string()),
            inbound_next_hop = %config.inbound.next_hop,
            outbound = %outbound.local_addr().map_or("?".into(), |a| a.to_string()),
            outbound_next_hop = %config.outbound.next_hop,
            spooled = shared.gateway.spool.len(),
            tls = config.tls.is_some(),
            // /metrics and /healthz, when [metrics] listen is set.
            metrics = %metrics.as_ref().map_or("off".into(), |(listener, _)| {
                listener.local_addr().map_or("?".into(), |a| a.to_string())
            }),
            "sealgate is serving"
        );
        tracker.spawn(shared.gateway.spool.clone().run(
            shared.gateway.relays.clone(),
            config.hostname.clone(),
            shared.shutdown.clone(),
        ));
        tracker.spawn(purge_periodically(
            keys.clone(),
            membership.clone(),
            shared.shutdown.clone(),
        ));
        if let Some(member) = membership.clone() {
            tracker.spawn(member.run(config.policy_dir.clone(), shared.shutdown.clone()));
        }
        tracker.spawn(reloader.watch(shared.shutdown.clone()));
        if let Some(dnssec) = dnssec {
            tracker.spawn(dnssec.run(shared.shutdown.clone()));
        }
        tracker.spawn(crate::org::renew::periodically(
            org.clone(),
            keys.clone(),
            sealer.clone(),
            config.clone(),
            membership,
            shared.shutdown.clone(),
        ));
        let served = admin::Served {
            keys,
            sealer,
            org,
            transfer,
            config: config.clone(),
            spool: shared.gateway.spool.clone(),
            relays: shared.gateway.relays.clone(),
        };
        tracker.spawn(admin::serve(admin, served, shared.shutdown.clone()));
        if let Some((listener, handle)) = metrics {
            let observed = crate::telemetry::http::Observed {
                handle,
                spool: shared.gateway.spool.clone(),
                relays: shared.gateway.relays.clone(),
                db: db.clone(),
                shared: pg,
                shutdown: shared.shutdown.clone(),
            };
            tracker.spawn(crate::telemetry::http::serve(listener, observed));
        }
        for (listener, direction) in [
            (inbound, Direction::Inbound),
            (outbound, Direction::Outbound),
        ] {
            tracker.spawn(accept_loop(
                listener,
                direction,
                shared.clone(),
                // Each listener its own slots: a flood on one never locks the other out.
                Admission::new(
                    config.limits.max_connections.get(),
                    config.limits.max_connections_per_client.get(),
                ),
                tracker.clone(),
            ));
        }

        shutdown.await;
        tracing::info!("shutting down: no new connections; waiting for transactions in flight");
        shared.shutdown.cancel();
        tracker.close();
        let grace = config.limits.shutdown_grace.0;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(grace = ?grace, "sessions still running after the grace period; closing them");
        }
        if let Err(e) = db.flush_async().await {
            tracing::error!(error = %e, "cannot flush the database");
        }
        tracing::info!("shut down");
    }
}

async fn accept_loop(
    listener: TcpListener,
    direction: Direction,
    shared: Arc<Shared>,
    admission: Arc<Admission>,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%direction, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        match admission.admit(peer.ip()) {
            Ok(ticket) => {
                tracker.spawn(connection(stream, peer, direction, shared, ticket));
            }
            Err(Refusal::ListenerFull) => {
                tracing::warn!(%direction, %peer, "connection limit of the listener reached (max_connections)");
                tracker.spawn(turn_away(stream, reply::TOO_MANY_CONNECTIONS));
            }
            Err(Refusal::ClientFull) => {
                tracing::warn!(
                    %direction,
                    %peer,
                    held = admission.held_by(peer.ip()),
                    "too many connections from one client (max_connections_per_client)"
                );
                tracker.spawn(turn_away(stream, reply::TOO_MANY_FROM_CLIENT));
            }
        }
    }
}

/// Sends one reply and closes, without letting a slow client hold us.
async fn turn_away(mut stream: TcpStream, reply: reply::Reply) {
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&reply.to_wire())).await;
    let _ = stream.shutdown().await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    direction: Direction,
    shared: Arc<Shared>,
    _ticket: Ticket,
) {
    let _open = OpenConnection::new(direction);
    let _ = stream.set_nodelay(true);
    if !shared.config.client_allowed(direction, peer.ip()) {
        tracing::warn!(%direction, %peer, "client not in allowed_clients");
        turn_away(stream, reply::CLIENT_DENIED).await;
        return;
    }
    tracing::debug!(%direction, %peer, "connection");
    let mut session = Session::new(stream, &shared, direction, peer, None);
    session.greet();
    let End::StartTls(stream) = session.run().await else {
        return;
    };
    let Some(acceptor) = &shared.tls else { return };
    let handshake =
        tokio::time::timeout(shared.config.idle_timeout(), acceptor.accept(stream)).await;
    match handshake {
        Ok(Ok(tls)) => {
            let (_, connection) = tls.get_ref();
            let agreed = format!(
                "{} {}",
                connection
                    .protocol_version()
                    .map_or("TLS".into(), |v| format!("{v:?}")),
                connection
                    .negotiated_cipher_suite()
                    .map_or("?".into(), |s| format!("{:?}", s.suite()))
            );
            // A fresh session: RFC 3207 requires forgetting everything from before TLS.
            let _ = Session::new(tls, &shared, direction, peer, Some(agreed))
                .run()
                .await;
        }
        Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
    }
}

/// Counts a connection as open on its listener for as long as it lives.
struct OpenConnection(Direction);

impl OpenConnection {
    fn new(direction: Direction) -> OpenConnection {
        crate::telemetry::connections(direction, 1.0);
        OpenConnection(direction)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        crate::telemetry::connections(self.0, -1.0);
    }
}
