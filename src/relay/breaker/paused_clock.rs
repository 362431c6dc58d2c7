//! The breaker on tokio's own clock, paused: what a transaction sees as time passes.

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
