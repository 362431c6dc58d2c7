//! What the relay and store benchmarks share: a lean SMTP client that sends one message
//! per connection, the throughput loop with its latencies and CPU time, and the test
//! message. The client is written here rather than taken from `tests/support/mod.rs`: it
//! must cost as little as possible, so that it is not what gets measured, and it only
//! needs reply codes.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The recipient of every benchmark message unless a run names another.
pub const RCPT: &str = "rcpt@example.org";

/// No single transaction of the benchmark should come anywhere near this; it only keeps
/// a broken gateway from hanging CI.
pub const TRANSACTION_LIMIT: Duration = Duration::from_secs(120);

/// One throughput run, or several added up.
#[derive(Default)]
pub struct Run {
    pub messages: usize,
    pub elapsed: Duration,
    /// Per message, sorted.
    pub latencies: Vec<Duration>,
    /// CPU time the measured process used during the run.
    pub cpu: Option<Cpu>,
}

impl Run {
    pub fn add(&mut self, other: Run) {
        self.cpu = match (self.cpu.take(), other.cpu) {
            (Some(a), Some(b)) => Some(Cpu {
                user: a.user + b.user,
                system: a.system + b.system,
            }),
            (None, cpu) if self.messages == 0 => cpu,
            _ => None,
        };
        self.messages += other.messages;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.latencies.sort();
    }

    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    pub fn print_cpu(&self, name: &str) {
        let micros = |d: Duration| d.as_secs_f64() * 1e6 / self.messages as f64;
        match &self.cpu {
            Some(cpu) => println!(
                "   {name}: {:6.0} µs (user {:4.0} µs, system {:4.0} µs)",
                micros(cpu.user + cpu.system),
                micros(cpu.user),
                micros(cpu.system),
            ),
            None => println!("   {name}: n/a (no /proc)"),
        }
    }

    pub fn percentile(&self, p: usize) -> f64 {
        let i = (self.latencies.len() * p / 100).min(self.latencies.len() - 1);
        self.latencies[i].as_secs_f64() * 1e3
    }

    pub fn print(&self, name: &str) {
        println!(
            "   {name}: {:6} messages in {:7.3} s = {:8.0} msg/s   latency p50 {:6.2} ms, p99 {:6.2} ms",
            self.messages,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.percentile(50),
            self.percentile(99),
        );
    }
}

/// Sends `count` messages from `sessions` parallel workers, each opening a new
/// connection per message, and measures the CPU time of process `pid` meanwhile.
pub async fn throughput(
    addr: SocketAddr,
    rcpt: &'static str,
    count: usize,
    sessions: usize,
    stuffed: &Arc<Vec<u8>>,
    pid: &str,
) -> Run {
    let taken = Arc::new(AtomicUsize::new(0));
    let cpu_before = Cpu::of(pid);
    let started = Instant::now();
    let workers: Vec<_> = (0..sessions)
        .map(|_| {
            let (taken, stuffed) = (taken.clone(), stuffed.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while taken.fetch_add(1, Ordering::Relaxed) < count {
                    let sent = Instant::now();
                    transaction(addr, rcpt, &stuffed).await;
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for worker in workers {
        latencies.extend(worker.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    let cpu = cpu_before.zip(Cpu::of(pid)).map(|(a, b)| b.since(&a));
    latencies.sort();
    Run {
        messages: count,
        elapsed,
        latencies,
        cpu,
    }
}

pub async fn timed(work: impl std::future::Future<Output = ()>) -> Duration {
    let started = Instant::now();
    work.await;
    started.elapsed()
}

/// One connection, one message; panics on any reply but the expected one.
pub async fn transaction(addr: SocketAddr, rcpt: &str, stuffed: &[u8]) {
    let attempt = async {
        let mut client = Client::connect(addr).await?;
        client.send_mail(rcpt, stuffed).await?;
        client.command("QUIT\r\n", 221).await
    };
    match tokio::time::timeout(TRANSACTION_LIMIT, attempt).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("transaction with {addr}: {e}"),
        Err(_) => panic!("transaction with {addr} took longer than {TRANSACTION_LIMIT:?}"),
    }
}

/// A lock-step SMTP client that knows reply codes and nothing else.
pub struct Client {
    stream: BufReader<TcpStream>,
    /// The last reply line read, for error messages.
    line: Vec<u8>,
}

impl Client {
    /// Connects and reads the 220 greeting.
    pub async fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut client = Client {
            stream: BufReader::new(stream),
            line: Vec::with_capacity(128),
        };
        client.expect(220, "greeting").await?;
        Ok(client)
    }

    /// EHLO, MAIL, RCPT, DATA and the message (already dot-stuffed, final dot included).
    pub async fn send_mail(&mut self, rcpt: &str, stuffed: &[u8]) -> io::Result<()> {
        self.command("EHLO client.bench\r\n", 250).await?;
        self.command("MAIL FROM:<bench@example.com>\r\n", 250)
            .await?;
        self.command(&format!("RCPT TO:<{rcpt}>\r\n"), 250).await?;
        self.command("DATA\r\n", 354).await?;
        self.stream.get_mut().write_all(stuffed).await?;
        self.expect(250, "end of DATA").await
    }

    pub async fn command(&mut self, line: &str, want: u16) -> io::Result<()> {
        self.stream.get_mut().write_all(line.as_bytes()).await?;
        self.expect(want, line.trim_end()).await
    }

    /// Reads one reply, which may span several lines, and checks its code.
    async fn expect(&mut self, want: u16, after: &str) -> io::Result<()> {
        loop {
            self.line.clear();
            if self.stream.read_until(b'\n', &mut self.line).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed; expected {want} after {after}"),
                ));
            }
            if self.line.get(3) == Some(&b'-') {
                continue;
            }
            let code = std::str::from_utf8(self.line.get(..3).unwrap_or_default())
                .ok()
                .and_then(|c| c.parse::<u16>().ok());
            return if code == Some(want) {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "expected {want} after {after}, got {:?}",
                    String::from_utf8_lossy(&self.line).trim_end()
                )))
            };
        }
    }
}

/// CPU time a process has used, from `/proc/<pid>/stat`, in 10 ms ticks.
pub struct Cpu {
    pub user: Duration,
    pub system: Duration,
}

impl Cpu {
    /// So far; `None` where there is no `/proc`.
    pub fn of(pid: &str) -> Option<Cpu> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command name, which may itself contain spaces and ')'.
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        // utime and stime are fields 14 and 15; `fields` starts at field 3. USER_HZ is
        // 100 on every Linux ABI; asking for it would need libc for one constant.
        let ticks = |i: usize| {
            Some(Duration::from_millis(
                fields.get(i)?.parse::<u64>().ok()? * 10,
            ))
        };
        Some(Cpu {
            user: ticks(11)?,
            system: ticks(12)?,
        })
    }

    pub fn since(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// A plain-text message of exactly `size` bytes with CRLF line ends. Some lines start
/// with a dot, so that dot-stuffing is exercised both ways.
pub fn message(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(
        b"From: <bench@example.com>\r\nTo: <rcpt@example.org>\r\n\
          Subject: sealgate relay benchmark\r\nMessage-ID: <bench@example.com>\r\n\r\n",
    );
    assert!(size >= out.len() + 2, "a message needs at least its header");
    for line in 0.. {
        // 78 characters and CRLF, as RFC 5322 recommends; the last line takes the rest.
        let room = size - out.len();
        let last = room < 82;
        let len = if last { room - 2 } else { 78 };
        let start = out.len();
        out.extend((0..len).map(|i| b'a' + ((line + i) % 26) as u8));
        if line % 40 == 0 && len > 0 {
            out[start] = b'.';
        }
        out.extend_from_slice(b"\r\n");
        if last {
            break;
        }
    }
    out
}

/// The message as it goes on the wire after DATA: dot-stuffed, with the final dot.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 1000 + 8);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}
