//! The `sealgate` binary as admins and scripts run it: `check` and `serve`, `--config`
//! on either side of the verb, exit statuses, `path:line:` errors, and a clean SIGTERM.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::Client;
use support::cli::{BIN, run_with_timeout, signal, text};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

const MESSAGE: &[u8] = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nHello from the CLI test.\r\n";

/// Runs `sealgate ARGS` in `dir` to completion (20 s at most).
fn run(dir: &Path, args: &[&str]) -> Output {
    run_with_timeout(
        std::process::Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env("SEALGATE_LOG", "info"),
        Duration::from_secs(20),
    )
}

/// Config text with both listeners on ephemeral ports and the data in `dir`.
fn ephemeral_config(dir: &Path) -> String {
    format!(
        r#"data_dir = "{data}"
hostname = "gw.test"

[inbound]
listen = "127.0.0.1:0"
next_hop = "dir:{inbound}"

[outbound]
listen = "127.0.0.1:0"
next_hop = "dir:{outbound}"
"#,
        data = dir.join("data").display(),
        inbound = dir.join("in").display(),
        outbound = dir.join("out").display(),
    )
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "good.toml", &ephemeral_config(dir.path()));
    let out = run(dir.path(), &["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(config.to_str().unwrap()),
        "{}",
        text(&out.stdout)
    );
    // check only reads: it creates no data_dir.
    assert!(!dir.path().join("data").exists());
}

#[test]
fn check_reports_a_bad_value_as_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "bad.toml",
        "data_dir = \"data\"\n[limits]\nidle_timeout = \"soon\"\n",
    );
    let path = config.to_str().unwrap();
    let out = run(dir.path(), &["check", "--config", path]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("{path}:3: ")), "{stderr}");
    assert!(stderr.contains("soon"), "{stderr}");
}

/// Limits checked after parsing must name their line too, not line 1.
#[test]
fn check_names_the_line_of_a_limit_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("max_errors", "0"),
        ("max_recipients", "0"),
        ("max_connections", "0"),
        ("max_line_length", "100"),
    ] {
        let config = write_config(
            dir.path(),
            "limits.toml",
            &format!("data_dir = \"data\"\n\n[limits]\n{key} = {value}\n"),
        );
        let path = config.to_str().unwrap();
        let out = run(dir.path(), &["check", "--config", path]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(stderr.contains(&format!("{path}:4: ")), "{key}: {stderr}");
    }
}

/// Issue 17: check stopped at the first error, so fixing a file took one run per
/// mistake.
#[test]
fn check_reports_every_config_error_at_once_errors_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "bad.toml",
        "internal_domains = [\"@example.com\", \"user@example.org\", \"*.example.net\"]\n\
         \n[limits]\nidle_timeout = \"soon\"\n\
         \n[inbound]\nlisten = \"nowhere\"\nnext_hop = \"mx\"\n\
         \n[outbound]\nallowed_clients = [\"10.0.0.0/33\", \"bogus\"]\n",
    );
    let path = config.to_str().unwrap();
    let out = run(dir.path(), &["check", "--config", path]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        format!("{path}:1: internal_domains: \"user@example.org\" is an address"),
        format!("{path}:1: internal_domains: \"*.example.net\" is a pattern"),
        format!("{path}:4: "),
        format!("{path}:7: [inbound] listen = \"nowhere\""),
        format!("{path}:8: [inbound] next_hop = \"mx\""),
        format!("{path}:11: [outbound] allowed_clients: \"10.0.0.0/33\""),
        format!("{path}:11: [outbound] allowed_clients: \"bogus\""),
        format!("{path}:1: warning: internal_domains: \"@example.com\" is read as \"example.com\""),
    ];
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, start) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(start.as_str()),
            "{line:?} is not {start:?}:\n{stderr}"
        );
    }
    assert!(lines[2].contains("soon"), "{stderr}");
}

#[test]
fn check_shows_how_an_internal_domain_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "domains.toml",
        &format!(
            "internal_domains = [\" Example.COM. \"]\n{}",
            ephemeral_config(dir.path())
        ),
    );
    let path = config.to_str().unwrap();
    let out = run(dir.path(), &["check", "--config", path]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{path}:1: warning: internal_domains: \" Example.COM. \" is read as \"example.com\""
        )),
        "{stdout}"
    );
}

#[test]
fn config_option_goes_before_or_after_the_verb() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "good.toml", &ephemeral_config(dir.path()));
    let bad = write_config(
        dir.path(),
        "bad.toml",
        "\n[limits]\nidle_timeout = \"0s\"\n",
    );
    for config in [&good, &bad] {
        let path = config.to_str().unwrap();
        let before = run(dir.path(), &["--config", path, "check"]);
        let after = run(dir.path(), &["check", "--config", path]);
        let expected = if config == &good { 0 } else { 1 };
        for out in [&before, &after] {
            assert_eq!(
                out.status.code(),
                Some(expected),
                "{path}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
            let all = text(&out.stdout) + &text(&out.stderr);
            assert!(all.contains(path), "{all}");
        }
    }
}

#[test]
fn check_without_config_uses_the_default_file_or_the_built_in_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("built-in defaults"),
        "{}",
        text(&out.stdout)
    );

    // ./sealgate.toml is read when it exists.
    write_config(
        dir.path(),
        "sealgate.toml",
        "\n\n[keys]\nlookup_ttl = \"5m\"\n",
    );
    let out = run(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("sealgate.toml:4: "), "{stderr}");
}

#[test]
fn serve_with_a_bad_config_exits_1_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "bad.toml",
        "data_dir = \"data\"\n[inbound]\nlisten = \"nowhere\"\n",
    );
    let path = config.to_str().unwrap();
    let out = run(dir.path(), &["serve", "--config", path]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("{path}:3: ")), "{stderr}");
}

#[test]
fn serve_exits_1_when_its_port_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text_config = ephemeral_config(dir.path()).replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{addr}\""),
        1,
    );
    let config = write_config(dir.path(), "taken.toml", &text_config);
    let out = run(dir.path(), &["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&addr.to_string()), "{stderr}");
    drop(taken);
}

/// A `sealgate serve` child whose stderr is collected as it comes.
struct Server {
    child: Child,
    stderr: Arc<Mutex<String>>,
    /// Changes with each line collected, and closes at EOF: what a waiting test wakes
    /// on.
    lines: watch::Receiver<()>,
    /// The task that collects stderr; it ends at EOF, when the process has exited.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    fn spawn(dir: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env("SEALGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sealgate serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let collected = stderr.clone();
        let (more, more_lines) = watch::channel(());
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut all = collected.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
                more.send_replace(());
            }
        });
        Server {
            child,
            stderr,
            lines: more_lines,
            reader: Some(reader),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr has a line containing `needle` (20 s at most).
    async fn wait_for_log(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            self.lines.borrow_and_update();
            if self.stderr().contains(needle) {
                return;
            }
            match tokio::time::timeout_at(deadline, self.lines.changed()).await {
                Ok(Ok(())) => {}
                // EOF: the process has exited.
                Ok(Err(_)) => panic!(
                    "sealgate closed its stderr ({:?}): {}",
                    self.child.try_wait(),
                    self.stderr()
                ),
                Err(_) => panic!("no {needle:?} within 20 s: {}", self.stderr()),
            }
        }
    }

    /// The exit code, waiting 20 s at most.
    async fn exit_code(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("sealgate still running after 20 s: {}", self.stderr()))
            .unwrap();
        // Let the stderr reader take the last lines.
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        status.code()
    }

    /// SIGTERM, then the exit code.
    async fn sigterm(&mut self) -> Option<i32> {
        signal(self.child.id().expect("still running"), "-TERM");
        self.exit_code().await
    }
}

/// The address a listener of a running `serve` is bound to.
async fn listening_on(server: &mut Server, direction: &str) -> std::net::SocketAddr {
    server.wait_for_log("sealgate is serving").await;
    support::cli::serving_addr(&server.stderr(), direction)
        .unwrap_or_else(|| panic!("no {direction} address: {}", server.stderr()))
}

/// The `.eml` files (not the temporary ones) in a delivery folder.
fn delivered(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "eml")
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_built_in_defaults_delivers_into_data_and_stops_on_sigterm() {
    // The built-in defaults but for the listeners, which take ephemeral ports: this test
    // must not depend on 2525 and 2587 being free (someone may be trying the quick start
    // on this machine). The default ports themselves are checked in config's unit tests.
    // The file is ./sealgate.toml, which serve reads without --config.
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "sealgate.toml",
        "[inbound]\nlisten = \"127.0.0.1:0\"\n[outbound]\nlisten = \"127.0.0.1:0\"\n",
    );
    let mut server = Server::spawn(dir.path(), &["serve"]);

    let outbound = listening_on(&mut server, "outbound").await;
    let inbound = listening_on(&mut server, "inbound").await;
    let mut client = Client::connect(outbound).await;
    let reply = client
        .send_mail("alice@example.com", &["bob@example.org"], MESSAGE)
        .await;
    assert_eq!((reply.code, reply.status()), (250, "2.0.0"), "{reply:?}");
    client.quit().await;

    let mut client = Client::connect(inbound).await;
    let reply = client
        .send_mail("carol@example.net", &["user@example.com"], MESSAGE)
        .await;
    assert_eq!((reply.code, reply.status()), (250, "2.0.0"), "{reply:?}");
    // The inbound side is not an open relay, defaults included.
    client
        .cmd_expect("MAIL FROM:<carol@example.net>", 250)
        .await;
    let reply = client.cmd_expect("RCPT TO:<bob@example.org>", 550).await;
    assert_eq!(reply.status(), "5.7.1");
    client.quit().await;

    // A 250 means the file is already there, under its final name.
    for (direction, from, to) in [
        ("outbound", "alice@example.com", "bob@example.org"),
        ("inbound", "carol@example.net", "user@example.com"),
    ] {
        let folder = dir.path().join("data/delivered").join(direction);
        let files = delivered(&folder);
        assert_eq!(files.len(), 1, "{}: {files:?}", folder.display());
        let content = std::fs::read(&files[0]).unwrap();
        let head = format!("X-Envelope-From: <{from}>\r\nX-Envelope-To: <{to}>\r\nReceived: ");
        assert!(
            content.starts_with(head.as_bytes()),
            "{}",
            String::from_utf8_lossy(&content)
        );
        // The shipped policy: inbound mail says what was done and by which rule.
        assert_eq!(
            text(&content).contains("\r\nX-Sealgate: passed; rule=decrypt-sckm\r\n"),
            direction == "inbound",
            "{}",
            text(&content)
        );
        assert!(content.ends_with(MESSAGE), "{}", text(&content));
    }

    assert_eq!(server.sigterm().await, Some(0), "{}", server.stderr());
    // The ports are free again.
    for addr in [inbound, outbound] {
        std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("{addr} still taken after exit: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_serve_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "sealgate.toml", &ephemeral_config(dir.path()));
    let path = config.to_str().unwrap();

    let mut first = Server::spawn(dir.path(), &["serve", "--config", path]);
    first.wait_for_log("sealgate is serving").await;

    let mut second = Server::spawn(dir.path(), &["--config", path, "serve"]);
    assert_eq!(second.exit_code().await, Some(1), "{}", second.stderr());
    let stderr = second.stderr();
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(
        stderr.contains(&dir.path().join("data").display().to_string()),
        "{stderr}"
    );

    // The first one is unharmed and stops cleanly.
    assert_eq!(first.sigterm().await, Some(0), "{}", first.stderr());
}

/// `check` says which next hops and resolvers answer, and a dead next hop is a warning,
/// not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_which_next_hops_and_resolvers_are_reachable() {
    // A root zone, so that the probe's question (the root's NS) has an answer, as from
    // a recursive resolver.
    let dns = support::dns::DnsServer::start(vec![support::dns::Zone::new(".")]).await;
    let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_text = format!(
        "data_dir = \"{data}\"\n[inbound]\nlisten = \"127.0.0.1:0\"\nnext_hop = \"{closed}\"\n\
         [outbound]\nlisten = \"127.0.0.1:0\"\nnext_hop = \"{open}\"\n\
         [lookup]\nnameservers = [\"{dns}\"]\n",
        data = dir.path().join("data").display(),
        open = listening.local_addr().unwrap(),
        dns = dns.addr,
    );
    let config = write_config(dir.path(), "probe.toml", &config_text);
    let path = config.to_str().unwrap().to_string();
    let cwd = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || run(&cwd, &["check", "--config", &path]))
        .await
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "inbound next hop {closed}: warning: not reachable"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "outbound next hop {}: reachable",
            listening.local_addr().unwrap()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("DNS resolver {}: answers", dns.addr)),
        "{stdout}"
    );
    assert!(dns.queries() > 0);
}
