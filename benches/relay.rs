//! The relay benchmark: what putting sealgate in line costs, compared with talking to the
//! next hop directly, and how much memory the gateway holds while it works.
//!
//! Everything talks to one in-process SMTP sink (`tests/support/sink.rs`) on loopback:
//!
//! 1. throughput: small messages, many parallel sessions, one connection per message,
//!    straight to the sink and through an in-process gateway's outbound listener;
//! 2. one large message, both ways;
//! 3. the real `sealgate` binary as a child process: its memory with hundreds of open
//!    sessions, then while it relays the large message (from `/proc/<pid>/status`);
//!    then part 1's throughput once more, with the gateway's own CPU time per message;
//! 4. the same child on the paths it exists for, each beside the direct baseline in the
//!    same run: PGP-encrypted outbound to a cv25519 key and decrypted inbound with an
//!    RSA-3072 SCKM key, at 4 KiB and 100 KiB, with the gateway's CPU per message (the
//!    median of three runs); and the peak memory each path adds for one 25 MiB message.
//!
//! The CPU figures matter on a small machine: client, sink and gateway share its cores,
//! so what the gateway spends is taken from the other two.
//!
//! `cargo bench --bench relay` passes `--bench` and gets the full run. Without it (as
//! `cargo test --all-targets` runs it) the same code runs at a tiny scale, so that CI
//! proves the benchmark still works without paying for it.
//!
//! The SMTP client and the throughput loop are in `benches/common/`, shared with the
//! store benchmark.

#[path = "common/mod.rs"]
mod common;
#[path = "relay/paths.rs"]
mod paths;
#[path = "../tests/support/sink.rs"]
mod sink;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealgate::config::Config;
use sealgate::mail::Direction;
use sealgate::server::Server;

use common::{Client, Cpu, RCPT, Run, dot_stuff, message, throughput, timed, transaction, verdict};
use sink::Sink;

const MIB: usize = 1024 * 1024;

/// How much work one run does.
struct Scale {
    /// Messages in each throughput run.
    messages: usize,
    /// The throughput runs alternate between direct and gateway in this many rounds, so
    /// that both see the same background load and the same sockets in TIME_WAIT.
    rounds: usize,
    /// Sessions sending them in parallel.
    sessions: usize,
    /// Size of each of those messages.
    message_size: usize,
    /// Size of the large message.
    large_size: usize,
    /// Times the large message is sent each way, alternating; the best time counts.
    large_runs: usize,
    /// Sessions held open against the child process for the memory figure.
    idle_sessions: usize,
    /// Messages in each run of part 4 at 4 KiB (a quarter of it at 100 KiB).
    path_messages: usize,
    /// Runs of each path in part 4, alternating direct and gateway; the median counts.
    path_rounds: usize,
}

/// What the issue asks for.
const BENCH: Scale = Scale {
    messages: 4000,
    rounds: 4,
    sessions: 20,
    message_size: 4 * 1024,
    large_size: 25 * MIB,
    large_runs: 3,
    idle_sessions: 500,
    path_messages: 2000,
    path_rounds: 3,
};

/// Enough to run every code path in a couple of seconds.
const SMOKE: Scale = Scale {
    messages: 40,
    rounds: 1,
    sessions: 4,
    message_size: 4 * 1024,
    large_size: MIB,
    large_runs: 1,
    idle_sessions: 20,
    path_messages: 8,
    path_rounds: 1,
};

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let scale = if bench { &BENCH } else { &SMOKE };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let workers = runtime.metrics().num_workers();
    println!(
        "sealgate relay benchmark ({})",
        if bench {
            "full run"
        } else {
            "smoke run: no --bench argument, tiny scale; use `cargo bench --bench relay`"
        }
    );
    println!(
        "machine: {} CPUs; client, sink and in-process gateway share one tokio runtime with {workers} worker threads",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    runtime.block_on(run(scale));
}

async fn run(scale: &Scale) {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config::parse(
        &gateway_config(&dir.path().join("in-process"), "0", "0", sink.addr, 1000),
        Path::new("bench.toml"),
    )
    .expect("bench config");
    let server = Server::bind(config).await.expect("bind the gateway");
    let gateway = server.local_addr(Direction::Outbound);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    println!(
        "next hop: in-process sink at {}; \
         gateway for 1 and 2: in-process (Server::bind), outbound listener {gateway}",
        sink.addr
    );
    // Every transaction the sink should have taken, checked at the end.
    let mut expected = 0;

    // 1. Throughput.
    let small = Arc::new(dot_stuff(&message(scale.message_size)));
    println!();
    println!(
        "1. throughput: {} messages of {} bytes each way, {} parallel sessions, one connection per \
         message (connect, EHLO, MAIL, RCPT, DATA, QUIT; no pipelining); direct and gateway take \
         turns in {} rounds",
        scale.messages, scale.message_size, scale.sessions, scale.rounds
    );
    let warm_up = scale.sessions * 5;
    for addr in [sink.addr, gateway] {
        throughput(addr, RCPT, warm_up, scale.sessions, &small, "self").await;
        expected += warm_up;
    }
    let (mut direct, mut through) = (Run::default(), Run::default());
    let per_round = scale.messages / scale.rounds;
    for _ in 0..scale.rounds {
        direct.add(throughput(sink.addr, RCPT, per_round, scale.sessions, &small, "self").await);
        through.add(throughput(gateway, RCPT, per_round, scale.sessions, &small, "self").await);
        expected += 2 * per_round;
    }
    direct.print("direct ");
    through.print("gateway");
    let ratio = through.rate() / direct.rate();
    println!(
        "   ratio gateway/direct: {ratio:.2} (target >= 0.80: {})",
        verdict(ratio >= 0.8)
    );
    println!("   CPU of the whole bench process (client, sink, gateway) per message:");
    direct.print_cpu("direct ");
    through.print_cpu("gateway");

    // 2. The large message, in-process.
    let large = message(scale.large_size);
    let large_stuffed = dot_stuff(&large);
    println!();
    println!(
        "2. one message of {} MiB ({} bytes), best of {} (MB = 10^6 bytes)",
        scale.large_size / MIB,
        scale.large_size,
        scale.large_runs
    );
    let (mut direct_time, mut gateway_time) = (Duration::MAX, Duration::MAX);
    for _ in 0..scale.large_runs {
        direct_time = direct_time.min(timed(transaction(sink.addr, RCPT, &large_stuffed)).await);
        gateway_time = gateway_time.min(timed(transaction(gateway, RCPT, &large_stuffed)).await);
        expected += 2;
    }
    let mb_per_s = |d: Duration| scale.large_size as f64 / d.as_secs_f64() / 1e6;
    println!(
        "   direct : {:8.3} s = {:7.1} MB/s",
        direct_time.as_secs_f64(),
        mb_per_s(direct_time)
    );
    println!(
        "   gateway: {:8.3} s = {:7.1} MB/s",
        gateway_time.as_secs_f64(),
        mb_per_s(gateway_time)
    );
    println!(
        "   ratio gateway/direct (MB/s): {:.2}",
        direct_time.as_secs_f64() / gateway_time.as_secs_f64()
    );

    // 3. Memory, in a process of its own.
    println!();
    expected += separate_process(
        scale,
        &sink,
        dir.path(),
        &large_stuffed,
        &small,
        direct.rate(),
    )
    .await;

    let _ = stop.send(());
    server.await.expect("in-process gateway task");
    let received = sink.received();
    assert_eq!(
        received.len(),
        expected,
        "the sink did not get every message"
    );
    // Through the gateway, a message gains a Received: header in front and nothing else.
    let large_ones: Vec<_> = received
        .iter()
        .filter(|r| r.data.len() >= large.len() && r.recipients == [common::RCPT])
        .collect();
    // Part 2's, part 3's, and part 4's plain memory row.
    assert_eq!(large_ones.len(), 2 * scale.large_runs + 2);
    assert!(
        large_ones.iter().all(|r| r.data.ends_with(&large)),
        "a large message was changed on its way"
    );
    println!();
    println!("all {expected} transactions arrived at the sink intact");
}

/// A gateway config whose both directions relay to `next_hop`.
fn gateway_config(
    data_dir: &Path,
    inbound_port: &str,
    outbound_port: &str,
    next_hop: SocketAddr,
    max_connections: usize,
) -> String {
    format!(
        r#"
data_dir = "{data}"
internal_domains = ["example.com"]
hostname = "gw.bench"

[inbound]
listen = "127.0.0.1:{inbound_port}"
next_hop = "{next_hop}"

[outbound]
listen = "127.0.0.1:{outbound_port}"
next_hop = "{next_hop}"
allowed_clients = ["127.0.0.0/8"]

[limits]
max_connections = {max_connections}
# Every session of the load comes from 127.0.0.1.
max_connections_per_client = {max_connections}

# The proxy path alone: keys looked up in DNS cost what the resolver costs, and that is
# what benches/lookup.rs measures.
[lookup]
keys = false
"#,
        data = data_dir.display()
    )
}

/// Parts 3 and 4: the real binary in its own process, so that its memory and CPU time
/// are its own. Returns how many transactions the sink got.
async fn separate_process(
    scale: &Scale,
    sink: &Sink,
    dir: &Path,
    large_stuffed: &[u8],
    small: &Arc<Vec<u8>>,
    direct_rate: f64,
) -> usize {
    let [inbound, outbound] = free_ports();
    let config_path = dir.join("child.toml");
    std::fs::write(
        &config_path,
        gateway_config(
            &dir.join("child"),
            &inbound.to_string(),
            &outbound.to_string(),
            sink.addr,
            scale.idle_sessions + 100,
        ),
    )
    .expect("write the child's config");
    let keys = paths::Keys::make(dir, &config_path);
    let addr = SocketAddr::from(([127, 0, 0, 1], outbound));
    let child = ChildGateway::start(&config_path, addr).await;
    let pid = child.pid.clone();
    println!(
        "3. the sealgate binary as a separate process (pid {pid}, SEALGATE_LOG=warn), \
         outbound listener {addr}, same sink: memory, then throughput again"
    );
    let started = Status::read(&pid);
    println!(
        "   after start:                      VmRSS {:6.1} MiB, VmHWM {:6.1} MiB",
        mib(started.rss),
        mib(started.hwm)
    );

    let mut sessions = Vec::with_capacity(scale.idle_sessions);
    for _ in 0..scale.idle_sessions {
        let mut client = Client::connect(addr).await.expect("open an idle session");
        client
            .command("EHLO client.bench\r\n", 250)
            .await
            .expect("EHLO on an idle session");
        sessions.push(client);
    }
    let idle = Status::read(&pid);
    println!(
        "   with {:4} sessions open (EHLO'd): VmRSS {:6.1} MiB, VmHWM {:6.1} MiB \
         (target: peak < 64 MiB: {}); {:.1} KiB per session",
        scale.idle_sessions,
        mib(idle.rss),
        mib(idle.hwm),
        verdict(idle.hwm < 64 * MIB as u64),
        idle.rss.saturating_sub(started.rss) as f64 / 1024.0 / scale.idle_sessions as f64,
    );

    // Restart the high-water mark from the current RSS (Linux >= 4.0), so that the peak
    // after the message is the message's doing only.
    let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let before = Status::read(&pid);
    let cpu_before = Cpu::of(&pid);
    let elapsed = timed(transaction(addr, RCPT, large_stuffed)).await;
    let cpu = cpu_before.zip(Cpu::of(&pid)).map(|(a, b)| b.since(&a));
    let after = Status::read(&pid);
    let increase = after.hwm.saturating_sub(before.hwm);
    let ratio = increase as f64 / scale.large_size as f64;
    println!(
        "   one {} MiB message, sessions still open: {:.3} s ({:.1} MB/s), gateway CPU {}",
        scale.large_size / MIB,
        elapsed.as_secs_f64(),
        scale.large_size as f64 / elapsed.as_secs_f64() / 1e6,
        cpu.map_or("n/a".into(), |c| format!(
            "{} ms",
            (c.user + c.system).as_millis()
        )),
    );
    println!(
        "   VmHWM before {:6.1} MiB{}, after {:6.1} MiB: increase {:6.1} MiB = {ratio:.2} x the message \
         (target <= 2: {})",
        mib(before.hwm),
        if reset {
            " (reset to VmRSS)"
        } else {
            " (could not reset)"
        },
        mib(after.hwm),
        mib(increase),
        verdict(ratio <= 2.0),
    );

    // Throughput once more, with the gateway's CPU time on its own: this is what tells
    // the gateway's cost apart from the client's and the sink's.
    drop(sessions);
    println!("   throughput as in part 1, through this process, in one round:");
    let through = throughput(addr, RCPT, scale.messages, scale.sessions, small, &pid).await;
    through.print("gateway");
    println!(
        "   ratio to part 1's direct rate: {:.2}",
        through.rate() / direct_rate
    );
    through.print_cpu("CPU of the gateway process alone per message");

    println!();
    let inbound = SocketAddr::from(([127, 0, 0, 1], inbound));
    let in_part_4 = paths::run(
        scale.path_messages,
        scale.path_rounds,
        sink,
        addr,
        inbound,
        &pid,
        &keys,
    )
    .await;

    let stopped = child.stop().await;
    println!(
        "   SIGTERM: exited cleanly in {:.0} ms",
        stopped.as_secs_f64() * 1e3
    );

    let in_memory_rows = paths::memory(scale.large_size, &config_path, addr, inbound, &keys).await;
    1 + scale.messages + in_part_4 + in_memory_rows
}

/// The sealgate binary serving a config in a process of its own.
pub struct ChildGateway {
    child: tokio::process::Child,
    pub pid: String,
}

impl ChildGateway {
    /// Starts it and waits until `outbound` greets.
    pub async fn start(config: &Path, outbound: SocketAddr) -> ChildGateway {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sealgate"))
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env("SEALGATE_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            // If the benchmark panics, the gateway must not outlive it.
            .kill_on_drop(true)
            .spawn()
            .expect("start the sealgate binary");
        let pid = child.id().expect("child pid").to_string();
        wait_until_serving(&mut child, outbound).await;
        ChildGateway { child, pid }
    }

    /// Stops it with SIGTERM: how long it took to exit, which it must do cleanly.
    pub async fn stop(mut self) -> Duration {
        let asked = Instant::now();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &self.pid])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM {}: {kill}", self.pid);
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the gateway stops within 60 s of SIGTERM")
            .expect("wait for the gateway");
        assert!(status.success(), "the gateway exited with {status}");
        asked.elapsed()
    }
}

/// Waits for the child's outbound listener to greet, or panics if it exits or takes too
/// long.
async fn wait_until_serving(child: &mut tokio::process::Child, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Ok(client)) =
            tokio::time::timeout(Duration::from_secs(5), Client::connect(addr)).await
        {
            drop(client);
            return;
        }
        if let Some(status) = child.try_wait().expect("poll the child") {
            panic!("sealgate exited before serving: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "sealgate is not serving on {addr} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two loopback ports that were free a moment ago. The child binds them itself, so there
/// is a small race; nothing else on a benchmark machine should be grabbing ports.
fn free_ports() -> [u16; 2] {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let (a, b) = (bind(), bind());
    [a, b].map(|l| l.local_addr().expect("bound address").port())
}

/// The memory figures of `/proc/<pid>/status`, in bytes.
struct Status {
    /// VmRSS: resident now.
    rss: u64,
    /// VmHWM: the peak resident size.
    hwm: u64,
}

impl Status {
    fn read(pid: &str) -> Status {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        };
        Status {
            rss: field("VmRSS:"),
            hwm: field("VmHWM:"),
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}
