//! A private PostgreSQL instance for one test: `initdb` into a temp folder, a loopback
//! port the system picked, started and stopped by the test. Never a server that
//! happens to be running. PostgreSQL refuses to run as root, so when the tests do, the
//! server runs as the `postgres` user that Debian's package creates.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The server programs: Debian keeps them in /usr/lib/postgresql/VERSION/bin, off the
/// PATH; the newest version there, else the PATH.
fn program(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|path| path.exists())
        .collect();
    versions.sort_by_key(|path| {
        path.components()
            .nth(4)
            .and_then(|v| v.as_os_str().to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().unwrap_or_else(|| PathBuf::from(name))
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// A command run as the server's user.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) -> Output {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e} (is Debian's postgresql package installed? script/bootstrap installs it)"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A running private instance. Stopped (immediately) when dropped.
pub struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
}

impl PgServer {
    pub fn start() -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("sealgate-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            run(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let data = dir.path().join("data");
        run(as_server_user(&program("initdb"))
            .args([
                "--auth=trust",
                "--username=sealgate",
                "--encoding=UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data));
        let server = PgServer { dir, port: 0 };
        server.start_on_free_port()
    }

    fn start_on_free_port(mut self) -> PgServer {
        for _ in 0..5 {
            // A port the system picks, given to the server; another process may take it in
            // between, in which case the next one is tried.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            self.port = port;
            if self.pg_ctl_start().status.success() {
                self.create_database("sealgate");
                return self;
            }
        }
        panic!("PostgreSQL did not start: {}", self.log());
    }

    fn pg_ctl_start(&self) -> Output {
        as_server_user(&program("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .arg("-w")
            .arg("-o")
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c fsync=off",
                self.port,
                self.dir.path().display()
            ))
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The URL of database `name` on this instance.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://sealgate@127.0.0.1:{}/{name}", self.port)
    }

    /// The URL of the database the tests use.
    pub fn default_url(&self) -> String {
        self.url("sealgate")
    }

    /// Creates database `name`; returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// Runs `sql` in the tests' database; returns psql's unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        self.psql("sealgate", sql)
    }

    /// Runs `sql` in `database` with psql; returns its unaligned output, trimmed.
    fn psql(&self, database: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let out = run(Command::new(program("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "sealgate",
                "-p",
                &port,
                "-d",
                database,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&self) {
        run(as_server_user(&program("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"]));
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        let out = self.pg_ctl_start();
        assert!(out.status.success(), "restart: {}", self.log());
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = as_server_user(&program("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
