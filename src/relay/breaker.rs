//! The circuit breaker in front of a next hop, so that the gateway does not pile
//! connections onto a server that is down.
//!
//! When a next hop as a whole fails (the connection is refused, times out or is dropped,
//! or the server says 421), it is left alone for a while: new transactions get
//! `451 4.4.1 ... try again in N minutes` at once, without a connection attempt. The
//! first failure rests it only for `[relay] first_probe`, because a restart or a
//! network blip is the common case; when the probe after that fails too, it rests for
//! `[relay] retry_after`. Once a rest is over, exactly one transaction at a time probes
//! (the half-open state) while the others keep getting 451, and the probe's result
//! decides. Any success makes the next hop available again.
//!
//! A [`Breaker`] guards one next hop, named by a string: "host:port" for a smart host,
//! and the host address of each MX for MX delivery. [`Breakers`] holds them by that name.
//!
//! All times are `tokio::time::Instant`, so that tests can pause the clock (tokio's
//! `test-util`). The state machine itself takes the time as an argument, and its unit
//! tests name every instant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RelayConfig;

/// The circuit breaker of one next hop.
#[derive(Debug)]
pub struct Breaker {
    /// The next hop this breaker guards, for the log.
    next_hop: String,
    /// How long a next hop rests after its first failure.
    first_probe: Duration,
    /// How long it rests after a failed probe.
    retry_after: Duration,
    /// Behind a std mutex: it is only held for a few instructions, never across an await.
    state: Mutex<State>,
}

/// Why a transaction may not go to the next hop now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resting {
    /// Until the next hop may be tried again; zero while a probe is in flight.
    pub left: Duration,
}

impl Resting {
    /// The time left in whole minutes, rounded up and never 0: a client told "in 0
    /// minutes" would come straight back.
    pub fn minutes(&self) -> u64 {
        minutes(self.left)
    }
}

/// What a breaker's next hop looks like now, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Transactions go through; if a rest has just ended, the next one probes.
    Available,
    /// Transactions get 451 until the rest is over.
    Resting(Resting),
    /// One transaction is probing; the others get 451.
    Probing,
}

/// Leave to talk to the next hop, from [`Breaker::admit`]. Tell it how the next hop
/// did; a pass dropped without a verdict (the transaction was cancelled) lets the
/// next transaction probe instead.
#[must_use = "the breaker must learn how the next hop did"]
#[derive(Debug)]
pub struct Pass<'a> {
    breaker: &'a Breaker,
    /// Set when this transaction is the probe of a resting next hop.
    probe: Option<u64>,
    /// Set once the verdict is given, so that `Drop` leaves the state alone.
    settled: bool,
}

impl Breaker {
    pub fn new(next_hop: &str, config: &RelayConfig) -> Breaker {
        Breaker {
            next_hop: next_hop.to_string(),
            first_probe: config.first_probe.0,
            retry_after: config.retry_after.0,
            state: Mutex::default(),
        }
    }

    /// The next hop this breaker guards.
    pub fn next_hop(&self) -> &str {
        &self.next_hop
    }

    /// Whether a transaction may go to the next hop now. When a rest has just ended,
    /// the caller's transaction becomes the one probe.
    pub fn admit(&self) -> Result<Pass<'_>, Resting> {
        let probe = self.lock().admit(Instant::now())?;
        if probe.is_some() {
            tracing::info!(next_hop = %self.next_hop, "probing a next hop that was unavailable");
        }
        Ok(Pass {
            breaker: self,
            probe,
            settled: false,
        })
    }

    /// Why the next hop may not be tried now, if it may not; takes no pass. For
    /// callers that would rather skip their work than be refused (the spool's retrier).
    pub fn resting(&self) -> Option<Resting> {
        match self.status() {
            Status::Available => None,
            Status::Resting(resting) => Some(resting),
            Status::Probing => Some(Resting {
                left: Duration::ZERO,
            }),
        }
    }

    pub fn status(&self) -> Status {
        self.lock().status(Instant::now())
    }

    /// Ends a rest now (`sealgate relay reset`): the admin knows the next hop is back.
    /// Returns whether it rested or was being probed.
    pub fn reset(&self) -> bool {
        let was_marked = self.lock().succeed();
        if was_marked {
            tracing::info!(next_hop = %self.next_hop, "next hop available again (reset by the admin)");
        }
        was_marked
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a plain value, whole at every moment: a panic elsewhere while
        // the lock was held cannot have left it half changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Pass<'_> {
    /// Whether this transaction is the probe of a next hop that was resting.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// The next hop answered (whatever it said about the message): it is available.
    pub fn succeeded(mut self) {
        self.settled = true;
        if self.breaker.lock().succeed() {
            tracing::info!(next_hop = %self.breaker.next_hop, "next hop available again");
        }
    }

    /// The next hop as a whole failed; `reason` goes into the log.
    pub fn failed(mut self, reason: &str) {
        self.settled = true;
        let breaker = self.breaker;
        let rests = (breaker.first_probe, breaker.retry_after);
        if let Some(rest) = breaker.lock().fail(self.probe, rests, Instant::now()) {
            tracing::warn!(
                next_hop = %breaker.next_hop,
                minutes = minutes(rest),
                reason,
                "next hop marked unavailable"
            );
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if let (false, Some(probe)) = (self.settled, self.probe) {
            self.breaker.lock().abandon(probe, Instant::now());
        }
    }
}

/// The state machine of a breaker, on a clock it is given: plain data, so that its
/// tests can name every instant.
#[derive(Debug, Clone, Copy, Default)]
struct State {
    phase: Phase,
    /// Numbers the probes, so that a probe's verdict is only taken while it is still
    /// the probe the breaker is waiting for.
    probes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    /// Transactions go through.
    #[default]
    Available,
    /// Failed; left alone until then.
    Resting { until: Instant },
    /// The rest is over and this probe is finding out whether the next hop is back.
    Probing { probe: u64 },
}

impl State {
    /// `Ok(Some(probe))` when the caller's transaction is to probe.
    fn admit(&mut self, now: Instant) -> Result<Option<u64>, Resting> {
        match self.phase {
            Phase::Available => Ok(None),
            Phase::Resting { until } if now < until => Err(Resting { left: until - now }),
            Phase::Resting { .. } => {
                self.probes += 1;
                self.phase = Phase::Probing { probe: self.probes };
                Ok(Some(self.probes))
            }
            Phase::Probing { .. } => Err(Resting {
                left: Duration::ZERO,
            }),
        }
    }

    fn status(&self, now: Instant) -> Status {
        match self.phase {
            Phase::Resting { until } if now < until => {
                Status::Resting(Resting { left: until - now })
            }
            Phase::Available | Phase::Resting { .. } => Status::Available,
            Phase::Probing { .. } => Status::Probing,
        }
    }

    /// Returns whether the next hop was marked until now.
    fn succeed(&mut self) -> bool {
        let was_marked = self.phase != Phase::Available;
        self.phase = Phase::Available;
        was_marked
    }

    /// Returns the rest, if this failure marks the next hop. `rests` is (first_probe,
    /// retry_after).
    fn fail(
        &mut self,
        probe: Option<u64>,
        (first_probe, retry_after): (Duration, Duration),
        now: Instant,
    ) -> Option<Duration> {
        let rest = match self.phase {
            Phase::Available => first_probe,
            Phase::Probing { probe: current } if probe == Some(current) => retry_after,
            // A transaction that began before the next hop was marked: its failure
            // tells nothing new, and must not stretch the rest or cut a probe short.
            Phase::Resting { .. } | Phase::Probing { .. } => return None,
        };
        self.phase = Phase::Resting { until: now + rest };
        Some(rest)
    }

    /// A probe that ended without a verdict: the next transaction probes again.
    fn abandon(&mut self, probe: u64, now: Instant) {
        if self.phase == (Phase::Probing { probe }) {
            self.phase = Phase::Resting { until: now };
        }
    }
}

/// The breakers of many next hops, by name ("host:port"). A next hop gets its breaker
/// on first use. Names only come from the config and, with MX delivery, from the MX
/// hosts mail went to, so the map stays small.
#[derive(Debug)]
pub struct Breakers {
    config: RelayConfig,
    by_next_hop: Mutex<HashMap<String, Arc<Breaker>>>,
}

impl Breakers {
    pub fn new(config: &RelayConfig) -> Breakers {
        Breakers {
            config: config.clone(),
            by_next_hop: Mutex::default(),
        }
    }

    /// The breaker of `next_hop`.
    pub fn get(&self, next_hop: &str) -> Arc<Breaker> {
        let mut map = self
            .by_next_hop
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(breaker) = map.get(next_hop) {
            return breaker.clone();
        }
        let breaker = Arc::new(Breaker::new(next_hop, &self.config));
        map.insert(next_hop.to_string(), breaker.clone());
        breaker
    }
}

impl Breakers {
    /// Every next hop with a breaker, by name, and its status.
    pub fn statuses(&self) -> Vec<(String, Status)> {
        let breakers: Vec<Arc<Breaker>> = self
            .by_next_hop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut statuses: Vec<(String, Status)> = breakers
            .iter()
            .map(|b| (b.next_hop.clone(), b.status()))
            .collect();
        statuses.sort_by(|a, b| a.0.cmp(&b.0));
        statuses
    }

    /// Ends the rest of `next_hop`, or of every next hop; returns those that rested.
    /// `None` when `next_hop` has no breaker (sealgate never sent it mail).
    pub fn reset(&self, next_hop: Option<&str>) -> Option<Vec<String>> {
        let breakers: Vec<Arc<Breaker>> = {
            let map = self
                .by_next_hop
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match next_hop {
                Some(name) => vec![map.get(name)?.clone()],
                None => map.values().cloned().collect(),
            }
        };
        let mut reset: Vec<String> = breakers
            .iter()
            .filter(|b| b.reset())
            .map(|b| b.next_hop.clone())
            .collect();
        reset.sort();
        Some(reset)
    }
}

/// `left` in whole minutes, rounded up, at least 1.
fn minutes(left: Duration) -> u64 {
    let minutes = left.as_nanos().div_ceil(Duration::from_secs(60).as_nanos());
    u64::try_from(minutes).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod paused_clock;
