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
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{Breaker, Breakers, Resting, State, Status, minutes};
    use crate::config::RelayConfig;
    use crate::config::units::HumanDuration;

    const MINUTE: Duration = Duration::from_secs(60);
    /// The defaults: a first probe after 1 minute, then 15 minutes between probes.
    const RESTS: (Duration, Duration) = (MINUTE, Duration::from_secs(15 * 60));

    fn resting(state: &mut State, at: Instant) -> u64 {
        state
            .admit(at)
            .expect_err("the next hop is resting")
            .minutes()
    }

    #[test]
    fn minutes_are_rounded_up_and_never_zero() {
        assert_eq!(minutes(Duration::ZERO), 1);
        assert_eq!(minutes(Duration::from_millis(1)), 1);
        assert_eq!(minutes(MINUTE), 1);
        assert_eq!(minutes(MINUTE + Duration::from_nanos(1)), 2);
        assert_eq!(minutes(15 * MINUTE - Duration::from_secs(1)), 15);
        assert_eq!(minutes(15 * MINUTE), 15);
        let left = Duration::from_secs(90);
        assert_eq!(Resting { left }.minutes(), 2);
    }

    #[test]
    fn a_first_failure_rests_the_next_hop_for_first_probe() {
        let t0 = Instant::now();
        let mut state = State::default();
        let pass = state.admit(t0).unwrap();
        assert_eq!(pass, None, "an available next hop needs no probe");
        assert_eq!(state.fail(pass, RESTS, t0), Some(MINUTE));
        assert_eq!(state.status(t0), Status::Resting(Resting { left: MINUTE }));
        assert_eq!(resting(&mut state, t0), 1);
        let almost = t0 + MINUTE - Duration::from_millis(1);
        assert_eq!(resting(&mut state, almost), 1, "never 0 minutes");

        let probe = state.admit(t0 + MINUTE).expect("the rest is over");
        assert!(probe.is_some(), "the first transaction after it probes");
        assert!(state.succeed(), "the mark is cleared");
        assert_eq!(state.status(t0 + MINUTE), Status::Available);
        assert_eq!(state.admit(t0 + MINUTE), Ok(None));
        assert!(!state.succeed(), "nothing to clear");
    }

    #[test]
    fn a_failed_probe_rests_the_next_hop_for_retry_after() {
        let t0 = Instant::now();
        let mut state = State::default();
        state.fail(None, RESTS, t0);
        let t1 = t0 + MINUTE;
        let probe = state.admit(t1).unwrap();
        assert_eq!(state.fail(probe, RESTS, t1), Some(15 * MINUTE));
        assert_eq!(resting(&mut state, t1), 15);
        assert_eq!(
            resting(&mut state, t1 + Duration::from_secs(1)),
            15,
            "14:59 left is 15 minutes"
        );
        assert_eq!(resting(&mut state, t1 + 14 * MINUTE), 1);

        // Every failed probe is followed by another rest of retry_after...
        let t2 = t1 + 15 * MINUTE;
        let probe = state.admit(t2).unwrap();
        assert!(probe.is_some());
        assert_eq!(state.fail(probe, RESTS, t2), Some(15 * MINUTE));
        let t3 = t2 + 15 * MINUTE;
        assert!(state.admit(t3).unwrap().is_some());
        state.succeed();
        // ...and once available, the next failure starts again with the short one.
        assert_eq!(state.fail(None, RESTS, t3), Some(MINUTE));
    }

    #[test]
    fn only_one_transaction_probes_and_its_result_decides() {
        let t0 = Instant::now();
        let mut state = State::default();
        state.fail(None, RESTS, t0);
        let t1 = t0 + 2 * MINUTE;
        let probe = state.admit(t1).unwrap();
        assert!(probe.is_some());
        assert_eq!(state.status(t1), Status::Probing);
        for later in [t1, t1 + MINUTE, t1 + 60 * MINUTE] {
            let refused = state.admit(later).unwrap_err();
            assert_eq!(refused.left, Duration::ZERO);
            assert_eq!(refused.minutes(), 1);
        }
        let t2 = t1 + 3 * MINUTE;
        state.fail(probe, RESTS, t2);
        assert_eq!(
            resting(&mut state, t2),
            15,
            "rested from the probe's failure"
        );
    }

    #[test]
    fn transactions_from_before_the_mark_do_not_change_it() {
        let t0 = Instant::now();
        let mut state = State::default();
        let early = state.admit(t0).unwrap();
        state.fail(None, RESTS, t0);
        let half = t0 + MINUTE / 2;
        // Another failure does not stretch the rest...
        assert_eq!(state.fail(early, RESTS, half), None);
        let left = MINUTE / 2;
        assert_eq!(state.status(half), Status::Resting(Resting { left }));

        let t1 = t0 + MINUTE;
        let probe = state.admit(t1).unwrap();
        // ...a failure that is not the probe's does not decide for it...
        assert_eq!(state.fail(None, RESTS, t1), None);
        assert_eq!(state.status(t1), Status::Probing);
        // ...and a late success clears the mark: the next hop did answer.
        assert!(state.succeed());
        // The old probe's failure is then a first failure again.
        assert_eq!(state.fail(probe, RESTS, t1), Some(MINUTE));
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_transaction_probe() {
        let t0 = Instant::now();
        let mut state = State::default();
        state.fail(None, RESTS, t0);
        let t1 = t0 + MINUTE;
        let first = state.admit(t1).unwrap().unwrap();
        state.abandon(first, t1);
        let second = state.admit(t1).expect("not stuck half-open").unwrap();
        assert_ne!(first, second);
        // The first probe's verdict, should it still come, decides nothing.
        assert_eq!(state.fail(Some(first), RESTS, t1), None);
        assert_eq!(state.status(t1), Status::Probing);
    }

    fn breaker(first_probe: Duration) -> Breaker {
        let config = RelayConfig {
            first_probe: HumanDuration(first_probe),
            ..RelayConfig::default()
        };
        Breaker::new("mx.example.org:25", &config)
    }

    #[test]
    fn a_dropped_probe_pass_does_not_leave_the_breaker_half_open() {
        let breaker = breaker(Duration::ZERO);
        breaker.admit().unwrap().failed("connection refused");
        let probe = breaker.admit().unwrap();
        assert!(probe.is_probe());
        assert_eq!(breaker.resting().map(|r| r.left), Some(Duration::ZERO));
        drop(probe);
        let probe = breaker.admit().expect("the next transaction probes");
        assert!(probe.is_probe());
        probe.succeeded();
        assert_eq!(breaker.status(), Status::Available);
        assert_eq!(breaker.resting(), None);
    }

    #[test]
    fn breakers_keep_one_breaker_per_next_hop() {
        let breakers = Breakers::new(&RelayConfig {
            first_probe: HumanDuration::from_secs(120),
            ..RelayConfig::default()
        });
        let failed = breakers.get("192.0.2.1:25");
        failed.admit().unwrap().failed("connection refused");
        let again = breakers.get("192.0.2.1:25");
        assert_eq!(again.admit().unwrap_err().minutes(), 2);
        assert_eq!(again.next_hop(), "192.0.2.1:25");
        assert_eq!(breakers.get("192.0.2.2:25").status(), Status::Available);
    }

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn marking_probing_and_clearing_are_logged() {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let breaker = breaker(Duration::ZERO);
        breaker.admit().unwrap().failed("connection refused");
        breaker.admit().unwrap().succeeded();

        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for part in [
            "WARN",
            "next hop marked unavailable",
            "next_hop=mx.example.org:25",
            "minutes=1",
            "reason=\"connection refused\"",
        ] {
            assert!(lines[0].contains(part), "{part} missing: {text}");
        }
        assert!(lines[1].contains("probing a next hop"), "{text}");
        assert!(lines[2].contains("next hop available again"), "{text}");
    }
}

/// The breaker on tokio's own clock, paused: what a transaction sees as time passes.
#[cfg(test)]
mod paused_clock {
    use std::time::Duration;

    use super::{Breaker, Status};
    use crate::config::RelayConfig;
    use crate::config::units::HumanDuration;

    #[tokio::test(start_paused = true)]
    async fn the_first_failure_marks_the_hop_until_the_backoff_and_a_good_probe_clear_it() {
        let config = RelayConfig {
            first_probe: HumanDuration::from_secs(60),
            retry_after: HumanDuration::from_secs(15 * 60),
            ..RelayConfig::default()
        };
        let breaker = Breaker::new("mail.example:25", &config);
        breaker
            .admit()
            .expect("available")
            .failed("connection refused");

        // Marked: a new transaction is refused at once, told the minutes left.
        let resting = breaker.admit().expect_err("resting");
        assert_eq!(resting.minutes(), 1);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(breaker.admit().is_err());

        // The first probe fails: left alone for retry_after.
        tokio::time::advance(Duration::from_secs(1)).await;
        breaker
            .admit()
            .expect("the probe")
            .failed("connection refused");
        assert_eq!(breaker.admit().expect_err("resting").minutes(), 15);
        tokio::time::advance(Duration::from_secs(14 * 60 + 1)).await;
        assert_eq!(breaker.admit().expect_err("resting").minutes(), 1);

        // After retry_after, one probe at a time; its success clears the mark.
        tokio::time::advance(Duration::from_secs(60)).await;
        let probe = breaker.admit().expect("the probe");
        assert!(probe.is_probe());
        assert_eq!(breaker.status(), Status::Probing);
        assert!(breaker.admit().is_err(), "others wait for the probe");
        probe.succeeded();
        assert_eq!(breaker.status(), Status::Available);
        let pass = breaker.admit().expect("available again");
        assert!(!pass.is_probe());
        pass.succeeded();
    }
}
