//! The `sealgate` binary as admins run it: a process with a temp config, `sealgate keys`
//! to completion under a time limit, and `sealgate serve` in the background until its
//! admin socket is up.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sealgate::keys::admin;
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sealgate");

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// Sends a signal ("-TERM", "-KILL") to one process we started.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// Runs `command` to completion with no stdin, collecting stdout and stderr; kills it
/// and panics if it is still running after `limit`.
pub fn run_with_timeout(command: &mut Command, limit: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("wait for sealgate"),
        Err(_) => {
            signal(pid, "-KILL");
            panic!("{command:?} did not finish within {limit:?}");
        }
    }
}

/// A temp dir with a config file, `sealgate.toml`, whose data_dir is `data/` inside it.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    /// How long one `sealgate keys` may take.
    keys_limit: Duration,
}

impl Setup {
    /// Writes `config(dir)` as the config; it must put data_dir at `dir/data`. Each
    /// `sealgate keys` run may take `keys_limit` at most.
    pub fn new(config: impl FnOnce(&Path) -> String, keys_limit: Duration) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let path = dir.path().join("sealgate.toml");
        std::fs::write(&path, config(dir.path())).unwrap();
        Setup {
            dir,
            config: path,
            data_dir,
            keys_limit,
        }
    }

    /// Writes a file into the temp dir and returns its path.
    pub fn file(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Runs `sealgate keys ARGS --config F` in the temp dir to completion.
    pub fn keys(&self, args: &[&str]) -> Output {
        self.sealgate("keys", args)
    }

    /// Runs `sealgate VERB ARGS --config F` in the temp dir to completion.
    pub fn sealgate(&self, verb: &str, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new(BIN)
                .arg(verb)
                .args(args)
                .arg("--config")
                .arg(&self.config)
                .current_dir(self.dir.path()),
            self.keys_limit,
        )
    }

    /// Runs `sealgate VERB ARGS`; asserts the exit code.
    pub fn sealgate_expect(&self, verb: &str, args: &[&str], code: i32) -> Output {
        let out = self.sealgate(verb, args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "sealgate {verb} {args:?}\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }

    /// Runs `sealgate keys ARGS`; asserts the exit code.
    pub fn keys_expect(&self, args: &[&str], code: i32) -> Output {
        self.sealgate_expect("keys", args, code)
    }

    /// `keys list --json`, parsed: it must be one JSON array.
    pub fn list_json(&self) -> Vec<Value> {
        let out = self.keys_expect(&["list", "--json"], 0);
        match serde_json::from_slice(&out.stdout) {
            Ok(Value::Array(entries)) => entries,
            other => panic!("keys list --json printed {other:?}: {}", text(&out.stdout)),
        }
    }
}

/// The entries of `entries` (from `keys list --json`) for `address`.
pub fn entries_for<'a>(entries: &'a [Value], address: &str) -> Vec<&'a Value> {
    entries.iter().filter(|e| e["address"] == address).collect()
}

/// The one element of `entries` for `address`.
pub fn entry<'a>(entries: &'a [Value], address: &str) -> &'a Value {
    let found = entries_for(entries, address);
    assert_eq!(found.len(), 1, "{address} in {entries:#?}");
    found[0]
}

/// A `sealgate serve` child with its stderr in `serve.log`; killed if the test ends
/// without stopping it.
pub struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    /// Starts `sealgate serve --config F` in the setup's temp dir and returns once its
    /// admin socket is there (20 s at most).
    pub fn start(setup: &Setup) -> Serve {
        let log = setup.dir.path().join("serve.log");
        let child = Command::new(BIN)
            .args(["serve", "--config", path_str(&setup.config)])
            .current_dir(setup.dir.path())
            .env("SEALGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn sealgate serve");
        let mut serve = Serve { child, log };
        // The admin socket is the last thing the server sets up.
        let socket = setup.data_dir.join(admin::SOCKET);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Some(status) = serve.child.try_wait().unwrap() {
                panic!("sealgate serve exited with {status}: {}", serve.log());
            }
            assert!(
                Instant::now() < deadline,
                "no admin socket within 20 s: {}",
                serve.log()
            );
            // Polled: a file appearing sends no event we could wait on cheaply.
            std::thread::sleep(Duration::from_millis(20));
        }
        serve
    }

    /// The address of the `inbound` or `outbound` listener, from the "sealgate is
    /// serving" line (10 s at most: it follows the admin socket at once).
    pub fn addr(&self, direction: &str) -> std::net::SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(addr) = serving_addr(&self.log(), direction) {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no serving line within 10 s: {}",
                self.log()
            );
            // Polled: the line is written by another process.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash: nothing runs on the way out. Returns once it is gone.
    pub fn kill9(&mut self) {
        signal(self.child.id(), "-KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit code (20 s at most).
    pub fn sigterm(&mut self) -> Option<i32> {
        signal(self.child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "still running 20 s after SIGTERM: {}",
                self.log()
            );
            // Polled: std's Child has no wait with a time limit.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address a listener of `sealgate serve` is bound to, from its "sealgate is
/// serving" log line (`inbound=127.0.0.1:PORT`); `None` until that line is logged.
pub fn serving_addr(log: &str, direction: &str) -> Option<std::net::SocketAddr> {
    let line = log.lines().find(|l| l.contains("sealgate is serving"))?;
    let key = format!(" {direction}=");
    let at = line.find(&key)? + key.len();
    line[at..].split_whitespace().next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// A gateway that writes what it relays into folders

/// A temp dir with a config file: data in `data/`, inbound mail written to `in/` and
/// outbound mail to `out/` (`dir:` next hops), listeners on ports the system picks
/// (`serve` logs them: [`Serve::addr`]).
pub struct Mailroom {
    pub cli: Setup,
}

/// The shared part: the temp dir, the config, `sealgate keys`.
impl std::ops::Deref for Mailroom {
    type Target = Setup;

    fn deref(&self) -> &Setup {
        &self.cli
    }
}

impl Mailroom {
    pub fn new() -> Mailroom {
        Mailroom::with("")
    }

    /// [`Mailroom::new`] with `extra` appended to the config (more sections).
    pub fn with(extra: &str) -> Mailroom {
        let cli = Setup::new(
            |dir| {
                format!(
                    r#"
data_dir = "{data}"
internal_domains = ["example.com"]
hostname = "gw.test"

[inbound]
listen = "127.0.0.1:0"
next_hop = "dir:{inbox}"

[outbound]
listen = "127.0.0.1:0"
next_hop = "dir:{outbox}"
allowed_clients = ["127.0.0.0/8"]
{extra}
"#,
                    data = dir.join("data").display(),
                    inbox = dir.join("in").display(),
                    outbox = dir.join("out").display(),
                )
            },
            Duration::from_secs(60),
        );
        Mailroom { cli }
    }

    /// The human `keys list`.
    pub fn list_table(&self) -> String {
        text(&self.keys_expect(&["list"], 0).stdout)
    }

    /// The `.eml` files written so far into `in/` or `out/`, oldest name first.
    pub fn delivered(&self, folder: &str) -> Vec<Vec<u8>> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join(folder)) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        paths.sort();
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    /// The one message in `folder` whose header names `message_id`.
    pub fn delivered_with(&self, folder: &str, message_id: &str) -> String {
        let wanted = format!("Message-ID: <{message_id}>");
        let found: Vec<String> = self
            .delivered(folder)
            .iter()
            .map(|m| text(m))
            .filter(|m| m.contains(&wanted))
            .collect();
        assert_eq!(found.len(), 1, "{message_id} in {folder}/");
        found.into_iter().next().unwrap()
    }

    /// Waits until `keys list --json` shows `check` true of the entries (20 s at most).
    pub fn wait_for_list(&self, serve: &Serve, check: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let entries = self.list_json();
            if check(&entries) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not within 20 s: {entries:#?}\n{}",
                serve.log()
            );
            // Polled: harvesting runs in the background and tells no one when it is done.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The line of the human `keys list` that shows `fingerprint`.
pub fn table_line<'a>(table: &'a str, fingerprint: &str) -> &'a str {
    let lines: Vec<&str> = table.lines().filter(|l| l.contains(fingerprint)).collect();
    assert_eq!(lines.len(), 1, "{fingerprint}:\n{table}");
    lines[0]
}

/// Sends `message` to `addr` and asserts 250.
pub async fn send(addr: std::net::SocketAddr, from: &str, to: &[&str], message: &[u8]) {
    let mut client = super::Client::connect(addr).await;
    let reply = client.send_mail(from, to, message).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    client.quit().await;
}
