//! What the server does besides serving, on a timer: the DNSSEC probe of its resolver,
//! and purging expired key cache entries.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::dns::{DnsResolver, DnssecStatus, dnssec};
use crate::keys::KeyStore;

/// The task that probes whether the resolver validates DNSSEC: at start-up, then every
/// [`dnssec::PROBE_EVERY`]. It logs the first finding and every change, and key lookup
/// reads the findings from the status they share.
pub struct DnssecWatch {
    pub resolver: DnsResolver,
    pub status: Arc<DnssecStatus>,
    /// The resolver as the admin configured it, for the log.
    pub described: String,
}

impl DnssecWatch {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut at_start = true;
        loop {
            // Not at bind: a resolver that does not answer must not hold up start-up.
            // Until the first finding, a failed lookup counts as an outage.
            let probe = tokio::select! {
                _ = shutdown.cancelled() => return,
                probe = self.resolver.probe_dnssec() => probe,
            };
            if self.status.record(&probe) || at_start {
                probe.log(&self.described, at_start);
            }
            at_start = false;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(dnssec::PROBE_EVERY) => {}
            }
        }
    }
}

/// How often expired key cache entries are purged (besides at start-up).
const PURGE_EVERY: Duration = Duration::from_secs(60 * 60);

/// Purges expired key cache entries now and then every [`PURGE_EVERY`].
pub async fn purge_periodically(
    keys: Arc<dyn KeyStore>,
    membership: Option<crate::cluster::Membership>,
    shutdown: CancellationToken,
) {
    loop {
        // In a cluster, one member purges: the one that leads.
        let leads = match &membership {
            None => true,
            Some(member) => member.leads().await,
        };
        if leads {
            let store = keys.clone();
            let purged =
                tokio::task::spawn_blocking(move || store.purge(time::OffsetDateTime::now_utc()))
                    .await;
            match purged {
                Ok(Ok(removed)) if !removed.is_empty() => {
                    tracing::info!(removed = removed.len(), "key cache purged");
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "key cache purge failed"),
                Err(e) => tracing::error!(error = %e, "key cache purge task failed"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PURGE_EVERY) => {}
        }
    }
}
