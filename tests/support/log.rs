//! The log of the gateways a test binary runs, kept in memory: where the gateway does
//! something a client cannot see (a policy change it refused to load), the log line is
//! the event a test waits for. `SEALGATE_LOG` sets the filter (`sealgate=info` when
//! unset) and also shows the lines in a failing test's output.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;

/// Everything logged so far, one event per line.
struct Captured {
    text: Mutex<String>,
    /// Bumped after each line, so that a waiting test looks again.
    lines: watch::Sender<u64>,
    /// Whether the lines also go to the test's output (`SEALGATE_LOG` is set).
    echo: bool,
}

/// `None` when another subscriber was installed first: nothing can be captured then.
static CAPTURED: OnceLock<Option<&'static Captured>> = OnceLock::new();

/// Installs the capturing subscriber for the whole test binary, once.
pub fn install() {
    CAPTURED.get_or_init(|| {
        let filter = std::env::var("SEALGATE_LOG").ok();
        let captured: &'static Captured = Box::leak(Box::new(Captured {
            text: Mutex::default(),
            lines: watch::Sender::default(),
            echo: filter.is_some(),
        }));
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter.as_deref().unwrap_or("sealgate=info"))
            .with_ansi(false)
            .with_writer(move || Writer(captured))
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .ok()
            .map(|()| captured)
    });
}

/// Waits until a line that `wanted` accepts has been logged, and returns it; panics
/// after `limit`.
pub async fn wait_for(wanted: impl Fn(&str) -> bool, limit: Duration) -> String {
    install();
    let captured = CAPTURED
        .get()
        .copied()
        .flatten()
        .expect("the log is captured (no other tracing subscriber was installed first)");
    let mut lines = captured.lines.subscribe();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        lines.borrow_and_update();
        let text = captured.text.lock().unwrap().clone();
        if let Some(line) = text.lines().find(|line| wanted(line)) {
            return line.to_string();
        }
        let next = tokio::time::timeout_at(deadline, lines.changed()).await;
        assert!(
            next.is_ok(),
            "no such line logged within {limit:?}; the log has:\n{text}"
        );
    }
}

struct Writer(&'static Captured);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        if self.0.echo {
            // print!, not stderr: the test harness shows it only for a failing test.
            print!("{text}");
        }
        self.0.text.lock().unwrap().push_str(&text);
        self.0.lines.send_modify(|n| *n += 1);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
