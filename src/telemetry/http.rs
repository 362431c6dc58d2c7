//! The `[metrics] listen` HTTP listener: `GET /metrics` (Prometheus text) and
//! `GET /healthz` (200 while the gateway serves and its store opens, 503 otherwise),
//! served by hyper. Anything else gets 404; a method other than GET or HEAD, 405.
//!
//! What it tells is not secret but not public either (how much mail flows, which next
//! hops fail): bind it to loopback or a management network.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::relay::Relays;
use crate::relay::breaker::Status;
use crate::spool::Spool;
use crate::store::postgres::Postgres;

/// How long a health check may wait for the shared store before it counts as down.
const STORE_CHECK: Duration = Duration::from_secs(2);
/// How long a client may take over its request: a scraper sends one line and a few
/// headers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the listener reports on.
#[derive(Clone)]
pub struct Observed {
    pub handle: PrometheusHandle,
    pub spool: Spool,
    pub relays: Relays,
    pub db: sled::Db,
    pub shared: Option<Arc<Postgres>>,
    /// Cancelled when the gateway shuts down: it no longer serves.
    pub shutdown: CancellationToken,
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, observed: Observed) {
    let shutdown = observed.shutdown.clone();
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let observed = observed.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let observed = observed.clone();
                async move { Ok::<_, Infallible>(answer(&observed, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(REQUEST_TIMEOUT)
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 3, connection).await;
        });
    }
}

async fn answer(observed: &Observed, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            refresh(observed).await;
            let mut response = text(StatusCode::OK, observed.handle.render());
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        "/healthz" => match health(observed).await {
            Ok(()) => text(StatusCode::OK, "ok\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "/metrics or /healthz\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// The gauges that describe a state rather than count events, read as they are now.
async fn refresh(observed: &Observed) {
    for (next_hop, status) in observed.relays.breakers().statuses() {
        super::next_hop_resting(&next_hop, !matches!(status, Status::Available));
    }
    let spool = observed.spool.clone();
    // The shared spool is read with a blocking call: off the runtime's threads.
    let entries = tokio::task::spawn_blocking(move || spool.entries())
        .await
        .unwrap_or_default();
    let now = crate::spool::now_ms() / 1000;
    let oldest = entries
        .iter()
        .map(|(_, entry)| now.saturating_sub(entry.arrived))
        .max()
        .unwrap_or(0);
    super::spool(entries.len(), Duration::from_secs(oldest));
    observed.handle.run_upkeep();
}

/// Whether the gateway serves and its store answers; why not, otherwise.
async fn health(observed: &Observed) -> Result<(), String> {
    if observed.shutdown.is_cancelled() {
        return Err("shutting down".into());
    }
    observed
        .db
        .get(b"\0healthz")
        .map_err(|e| format!("the database does not answer: {e}"))?;
    if let Some(pg) = &observed.shared {
        match tokio::time::timeout(STORE_CHECK, pg.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("the shared store does not answer: {e}")),
            Err(_) => return Err("the shared store does not answer in time".into()),
        }
    }
    Ok(())
}

/// Binds the listener, so that a taken port stops the start-up with a clear error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
