//! `crypto::quiet_error_backtraces`, which the binary calls first thing: under
//! `RUST_BACKTRACE=1`, sequoia's errors (anyhow errors) captured a backtrace each, and
//! the `harvest` fuzz target timed out on a 200 KB message of broken key blocks (0.7 s
//! of CPU; 0.04 s without the backtraces). Its own test binary without the test harness
//! (`harness = false`): the environment is set once, before any other thread starts,
//! and std reads it once.

use std::backtrace::{Backtrace, BacktraceStatus};

use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;

fn main() {
    // SAFETY: single-threaded; nothing has captured a backtrace yet.
    unsafe {
        std::env::set_var("RUST_BACKTRACE", "1");
        // An admin who asks for library backtraces by name gets them.
        std::env::set_var("RUST_LIB_BACKTRACE", "1");
        sealgate::crypto::quiet_error_backtraces();
        assert_eq!(std::env::var("RUST_LIB_BACKTRACE").as_deref(), Ok("1"));
        // Otherwise they are off.
        std::env::remove_var("RUST_LIB_BACKTRACE");
        sealgate::crypto::quiet_error_backtraces();
    }
    assert_eq!(std::env::var("RUST_LIB_BACKTRACE").as_deref(), Ok("0"));
    assert_eq!(Backtrace::capture().status(), BacktraceStatus::Disabled);
    let error = Cert::from_bytes(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxsBNBF\n")
        .expect_err("not a key");
    assert_ne!(error.backtrace().status(), BacktraceStatus::Captured);
    println!("error_backtraces: library errors capture no backtrace under RUST_BACKTRACE=1");
}
