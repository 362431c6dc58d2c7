//! Reloading the policy: on SIGHUP and whenever a file in `policy_dir` changes. The new
//! policy is loaded and validated in full before it replaces the one in force; a
//! policy with any error is never loaded, and the errors are logged, each as
//! `path:line: message`. Transactions already running keep the policy they started
//! with ([`crate::gateway::plan`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::policy::{Live, load};

/// Editors write a file in several steps (truncate, write, rename): changes are
/// gathered for this long before one reload.
const SETTLE: Duration = Duration::from_millis(250);

pub struct Reloader {
    live: Arc<Live>,
    dir: PathBuf,
    /// The file watch, set up when the reloader is made (so no change after start-up
    /// is missed), and taken by [`Reloader::watch`].
    watching: Mutex<Option<Watching>>,
}

struct Watching {
    _watcher: notify::RecommendedWatcher,
    changes: mpsc::Receiver<()>,
}

impl Reloader {
    /// Starts watching `dir`. A folder that does not exist, or a platform without file
    /// events, leaves only SIGHUP to trigger reloads; that is logged.
    pub fn new(live: Arc<Live>, dir: PathBuf) -> Reloader {
        let (tx, changes) = mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                // Full means a reload is already pending, which will see this change.
                let _ = tx.try_send(());
            }
        })
        .and_then(|mut watcher| {
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
            Ok(watcher)
        });
        let watching = match watcher {
            Ok(watcher) => Some(Watching {
                _watcher: watcher,
                changes,
            }),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch policy_dir for changes; reload with SIGHUP");
                None
            }
        };
        Reloader {
            live,
            dir,
            watching: Mutex::new(watching),
        }
    }

    /// Loads `policy_dir` and puts it in force if it has no error. Returns whether it
    /// did.
    pub fn reload(&self, why: &str) -> bool {
        let loaded = load::load_dir(&self.dir);
        for warning in loaded.warnings() {
            tracing::warn!("{warning}");
        }
        match loaded.policy {
            Some(policy) => {
                let rules = policy.inbound.rules.len() + policy.outbound.rules.len();
                self.live.replace(policy);
                tracing::info!(dir = %self.dir.display(), why, rules, "policy reloaded");
                true
            }
            None => {
                for error in loaded.errors() {
                    tracing::error!("{error}");
                }
                tracing::error!(
                    dir = %self.dir.display(),
                    why,
                    "policy NOT reloaded: it has errors; the rules in force stay"
                );
                false
            }
        }
    }

    /// Reloads after each burst of changes in `policy_dir`, until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let taken = self.watching.lock().expect("not poisoned").take();
        let Some(Watching {
            _watcher,
            mut changes,
        }) = taken
        else {
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = changes.recv() => if changed.is_none() { return },
            }
            tokio::time::sleep(SETTLE).await;
            while changes.try_recv().is_ok() {}
            let this = self.clone();
            let _ =
                tokio::task::spawn_blocking(move || this.reload("a file in policy_dir changed"))
                    .await;
        }
    }
}
