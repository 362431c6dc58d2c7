//! Where log lines go and which are written: standard error, as text or JSON (`[log]
//! format`), filtered by `SEALGATE_LOG`, else `RUST_LOG`, else `info` for `serve` and
//! `warn` for the verbs that answer on the terminal.
//!
//! A bare level in `SEALGATE_LOG` ("info", "debug") is sealgate's own level: the
//! crates it uses stay at `warn` unless a directive names them
//! (`SEALGATE_LOG=info,hickory_proto=debug`). At info, hickory would add kilobytes of
//! DNS packet dumps to every key lookup. `RUST_LOG` keeps its usual meaning, where a
//! bare level is every crate's.

use sealgate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// The filter of the crates sealgate uses, unless a directive names them. hickory logs
/// every failed question at WARN, at length; sealgate says what a failed lookup means
/// itself.
const DEPENDENCIES: &[&str] = &[
    "warn",
    "hickory_proto=error",
    "hickory_resolver=error",
    "hickory_net=error",
];

pub fn install(format: LogFormat, default_level: &str) {
    let filter = filter(
        std::env::var("SEALGATE_LOG").ok().as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
        default_level,
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line; the event's fields at the top level beside
        // "timestamp", "level", "target" and "message", so that shippers need no
        // unnesting.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// The filter from `SEALGATE_LOG` or `RUST_LOG`. Whatever they say, the storage engine
/// stays at `warn`: at debug and trace, sled prints what it writes, byte by byte, and
/// that includes decrypted mail waiting in the spool. No level may log message content
/// or secrets.
fn filter(sealgate_log: Option<&str>, rust_log: Option<&str>, default_level: &str) -> EnvFilter {
    let text = match (sealgate_log.filter(|s| !s.trim().is_empty()), rust_log) {
        (Some(ours), _) => ours_with_dependencies(ours),
        (None, Some(rust)) if !rust.trim().is_empty() => rust.to_string(),
        _ => ours_with_dependencies(default_level),
    };
    let filter = EnvFilter::try_new(&text).unwrap_or_else(|e| {
        eprintln!(
            "sealgate: the log filter {text:?} is not valid ({e}); logging at {default_level}"
        );
        EnvFilter::new(ours_with_dependencies(default_level))
    });
    filter.add_directive("sled=warn".parse().expect("a valid directive"))
}

/// `SEALGATE_LOG`'s directives, a bare level made sealgate's, after the dependencies'
/// defaults for the crates the directives do not name.
fn ours_with_dependencies(directives: &str) -> String {
    let directives: Vec<String> = directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            if d.contains('=') || d.contains('[') {
                d.to_string()
            } else {
                format!("sealgate={d}")
            }
        })
        .collect();
    let named = |target: &str| {
        directives
            .iter()
            .any(|d| d.starts_with(&format!("{target}=")))
    };
    let mut all: Vec<String> = DEPENDENCIES
        .iter()
        .filter(|d| d.split_once('=').is_none_or(|(target, _)| !named(target)))
        .map(|d| d.to_string())
        .collect();
    all.extend(directives);
    all.join(",")
}

#[cfg(test)]
mod tests {
    use super::ours_with_dependencies;

    #[test]
    fn a_bare_level_is_sealgate_s_and_dependencies_stay_quiet() {
        assert_eq!(
            ours_with_dependencies("info"),
            "warn,hickory_proto=error,hickory_resolver=error,hickory_net=error,sealgate=info"
        );
        assert_eq!(
            ours_with_dependencies("debug, hickory_proto=debug"),
            "warn,hickory_resolver=error,hickory_net=error,sealgate=debug,hickory_proto=debug"
        );
    }
}
