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
