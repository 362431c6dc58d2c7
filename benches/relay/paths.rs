//! Part 4 of the relay benchmark: the paths sealgate exists for, through the child
//! process, each beside the direct baseline in the same run.
//!
//! - plain relay at 4 KiB and 100 KiB, to a recipient without a key;
//! - PGP-encrypted outbound to `pgp@example.org`, whose cv25519 key says it reads
//!   SEIPDv2 (sequoia's keys do), and to `gnupg@example.org`, whose cv25519 key does not
//!   (GnuPG's and Thunderbird's do not), so its mail is SEIPDv1;
//! - decrypted inbound for `user@example.com`, an SCKM user with an RSA-3072 key (the
//!   gateway holds the encryption subkey's secret only).
//!
//! For each: messages per second direct and through the gateway (context only: on a
//! small machine the load generator and the sink share the cores) and the gateway
//! process's own CPU time per message, which is the figure the targets are set on. Each
//! path runs several times, direct and gateway in turn, and the median run's CPU counts:
//! on a shared virtual machine one run's figure moved by up to 40 % from one run of
//! the benchmark to the next, which hid changes of a few per cent. Then the peak memory
//! one 25 MiB message adds on each path, each in a fresh process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use openpgp::cert::{CertBuilder, CipherSuite};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::types::Features;
use sequoia_openpgp as openpgp;

use super::{ChildGateway, Status, mib};
use crate::common::{Cpu, RCPT, Run, dot_stuff, message, throughput, timed, transaction, verdict};
use crate::sink::Sink;

/// The outbound recipient with a cv25519 key that reads SEIPDv2.
const PGP_RCPT: &str = "pgp@example.org";
/// The outbound recipient with a cv25519 key that reads SEIPDv1 only.
const GNUPG_RCPT: &str = "gnupg@example.org";
/// The internal user with an RSA-3072 SCKM key.
const SCKM_USER: &str = "user@example.com";

/// Parallel sessions in each run (as in part 1).
const SESSIONS: usize = 20;

/// The keys, imported into the child's database before it starts.
pub struct Keys {
    /// The SCKM user's public cert, to encrypt the inbound messages to.
    sckm: openpgp::Cert,
}

impl Keys {
    /// Makes the keys and imports them with `sealgate keys import` and `keys
    /// import-sckm`, as an admin would.
    pub fn make(dir: &Path, config: &Path) -> Keys {
        let (pgp, _) = CertBuilder::new()
            .add_userid(format!("<{PGP_RCPT}>"))
            .set_cipher_suite(CipherSuite::Cv25519)
            .add_transport_encryption_subkey()
            .generate()
            .expect("a cv25519 key");
        let (gnupg, _) = CertBuilder::new()
            .add_userid(format!("<{GNUPG_RCPT}>"))
            .set_cipher_suite(CipherSuite::Cv25519)
            .set_features(Features::empty().set_seipdv1())
            .expect("features")
            .add_transport_encryption_subkey()
            .generate()
            .expect("a cv25519 key without SEIPDv2");
        let (user, _) = CertBuilder::new()
            .add_userid(format!("<{SCKM_USER}>"))
            .set_cipher_suite(CipherSuite::RSA3k)
            .add_signing_subkey()
            .add_transport_encryption_subkey()
            .generate()
            .expect("an RSA-3072 key");
        // SCKM: the secret of the encryption subkey only.
        let policy = StandardPolicy::new();
        let encryption: Vec<_> = user
            .keys()
            .subkeys()
            .with_policy(&policy, None)
            .for_transport_encryption()
            .map(|k| k.key().fingerprint())
            .collect();
        let sckm = user
            .as_tsk()
            .set_filter(|k| encryption.contains(&k.fingerprint()))
            .armored()
            .to_vec()
            .expect("serialize the SCKM key");
        let pgp_file = dir.join("pgp.asc");
        let gnupg_file = dir.join("gnupg.asc");
        let sckm_file = dir.join("sckm.asc");
        std::fs::write(&pgp_file, pgp.armored().to_vec().expect("armor")).unwrap();
        std::fs::write(&gnupg_file, gnupg.armored().to_vec().expect("armor")).unwrap();
        std::fs::write(&sckm_file, sckm).unwrap();
        for (verb, file) in [
            ("import", &pgp_file),
            ("import", &gnupg_file),
            ("import-sckm", &sckm_file),
        ] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_sealgate"))
                .arg("--config")
                .arg(config)
                .args(["keys", verb])
                .arg(file)
                .output()
                .expect("run sealgate keys");
            assert!(
                out.status.success(),
                "sealgate keys {verb}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Keys {
            sckm: user.strip_secret_key_material(),
        }
    }

    /// A PGP/MIME message to the SCKM user whose plaintext is [`message`]`(size)`, as
    /// its sender's client would make it.
    fn encrypted_for_user(&self, size: usize) -> Vec<u8> {
        let plain = message(size);
        let body_at = memchr::memmem::find(&plain, b"\r\n\r\n").expect("a header") + 4;
        let mut entity = b"Content-Type: text/plain; charset=us-ascii\r\n\r\n".to_vec();
        entity.extend_from_slice(&plain[body_at..]);
        let armored = sealgate::crypto::pgp::encrypt(&entity, std::slice::from_ref(&self.sckm))
            .expect("encrypt to the SCKM user");
        sealgate::mail::wrap::pgp_mime(&plain, &armored, false).expect("PGP/MIME")
    }
}

/// One path: what is sent, to whom, through which listener.
struct Path4 {
    label: &'static str,
    rcpt: &'static str,
    inbound: bool,
    size: usize,
    stuffed: Arc<Vec<u8>>,
}

pub async fn run(
    messages: usize,
    rounds: usize,
    sink: &Sink,
    outbound: SocketAddr,
    inbound: SocketAddr,
    pid: &str,
    keys: &Keys,
) -> usize {
    const KIB: usize = 1024;
    let plain = |size| Arc::new(dot_stuff(&message(size)));
    let encrypted = |size| Arc::new(dot_stuff(&keys.encrypted_for_user(size)));
    let paths = [
        Path4 {
            label: "plain, 4 KiB",
            rcpt: RCPT,
            inbound: false,
            size: 4 * KIB,
            stuffed: plain(4 * KIB),
        },
        Path4 {
            label: "PGP-encrypted (cv25519, SEIPDv2), 4 KiB",
            rcpt: PGP_RCPT,
            inbound: false,
            size: 4 * KIB,
            stuffed: plain(4 * KIB),
        },
        Path4 {
            label: "PGP-encrypted (cv25519, SEIPDv1), 4 KiB",
            rcpt: GNUPG_RCPT,
            inbound: false,
            size: 4 * KIB,
            stuffed: plain(4 * KIB),
        },
        Path4 {
            label: "plain, 100 KiB",
            rcpt: RCPT,
            inbound: false,
            size: 100 * KIB,
            stuffed: plain(100 * KIB),
        },
        Path4 {
            label: "PGP-encrypted (cv25519, SEIPDv2), 100 KiB",
            rcpt: PGP_RCPT,
            inbound: false,
            size: 100 * KIB,
            stuffed: plain(100 * KIB),
        },
        Path4 {
            label: "PGP-encrypted (cv25519, SEIPDv1), 100 KiB",
            rcpt: GNUPG_RCPT,
            inbound: false,
            size: 100 * KIB,
            stuffed: plain(100 * KIB),
        },
        Path4 {
            label: "decrypted inbound (RSA-3072 SCKM), 100 KiB",
            rcpt: SCKM_USER,
            inbound: true,
            size: 100 * KIB,
            stuffed: encrypted(100 * KIB),
        },
    ];
    println!(
        "4. the encrypted paths, through the child process: {messages} messages at 4 KiB and {} at \
         100 KiB per run, {SESSIONS} sessions; {rounds} run{} of each path, direct then gateway; \
         the gateway's CPU per message is the median run's, each run's in brackets",
        (messages / 4).max(1),
        if rounds == 1 { "" } else { "s" },
    );
    println!(
        "   {:<44} {:>11} {:>11} {:>9}   gateway CPU per message",
        "path", "direct/s", "gateway/s", "of direct"
    );
    let mut delivered = 0;
    for path in &paths {
        let count = if path.size > 4 * KIB {
            (messages / 4).max(1)
        } else {
            messages
        };
        let gateway = if path.inbound { inbound } else { outbound };
        // Warm-up: connections, caches, the first decryption's key unsealing.
        throughput(
            gateway,
            path.rcpt,
            SESSIONS.min(count),
            SESSIONS,
            &path.stuffed,
            pid,
        )
        .await;
        let (mut direct, mut through, mut cpu) = (Run::default(), Run::default(), Vec::new());
        for _ in 0..rounds {
            direct.add(
                throughput(sink.addr, path.rcpt, count, SESSIONS, &path.stuffed, "self").await,
            );
            let run = throughput(gateway, path.rcpt, count, SESSIONS, &path.stuffed, pid).await;
            cpu.extend(run.cpu.as_ref().map(|c| Cpu {
                user: c.user / count as u32,
                system: c.system / count as u32,
            }));
            through.add(run);
        }
        delivered += SESSIONS.min(count) + 2 * count * rounds;
        row(path.label, &direct, &through, &cpu);
    }
    let taken = sink.received();
    let decrypted = taken
        .iter()
        .rev()
        .find(|r| r.recipients == [SCKM_USER])
        .expect("the inbound messages arrived");
    assert!(
        !String::from_utf8_lossy(&decrypted.data).contains("-----BEGIN PGP MESSAGE-----"),
        "the inbound path did not decrypt"
    );
    let encrypted_copy = taken
        .iter()
        .rev()
        .find(|r| r.recipients == [PGP_RCPT] && r.data.len() < 64 * KIB)
        .expect("the PGP path's messages arrived");
    assert!(
        String::from_utf8_lossy(&encrypted_copy.data).contains("multipart/encrypted"),
        "the PGP path did not encrypt"
    );
    let gnupg_copy = taken
        .iter()
        .rev()
        .find(|r| r.recipients == [GNUPG_RCPT])
        .expect("the SEIPDv1 path's messages arrived");
    assert!(
        String::from_utf8_lossy(&gnupg_copy.data).contains("multipart/encrypted"),
        "the SEIPDv1 path did not encrypt"
    );
    println!(
        "   targets, gateway CPU per message: plain 4 KiB <= 70 µs; PGP 4 KiB <= 250 µs; \
         PGP 100 KiB <= 600 µs ({} transactions checked at the sink)",
        delivered
    );

    delivered
}

/// The peak memory one large message adds, per path, each in a fresh child: started,
/// warmed up with one small message of the path (keys cached, the SCKM secret opened),
/// then the large one. In one long-lived process the rows depended on their order (what
/// earlier rows freed was reused, or not). Returns how many transactions the sink got.
pub async fn memory(
    large_size: usize,
    config: &Path,
    outbound: SocketAddr,
    inbound: SocketAddr,
    keys: &Keys,
) -> usize {
    const WARM_UP: usize = 4 * 1024;
    println!(
        "   peak memory one {} MiB message adds, each in a fresh process after one {} KiB \
         message of its path (VmHWM reset to VmRSS before it):",
        large_size / (1024 * 1024),
        WARM_UP / 1024
    );
    let mut delivered = 0;
    for (label, rcpt, inbound_path) in [
        ("plain", RCPT, false),
        ("PGP, SEIPDv2", PGP_RCPT, false),
        ("PGP, SEIPDv1", GNUPG_RCPT, false),
        ("decrypted inbound", SCKM_USER, true),
    ] {
        let stuffed = |size| match inbound_path {
            true => dot_stuff(&keys.encrypted_for_user(size)),
            false => dot_stuff(&message(size)),
        };
        let addr = if inbound_path { inbound } else { outbound };
        let child = ChildGateway::start(config, outbound).await;
        transaction(addr, rcpt, &stuffed(WARM_UP)).await;
        memory_row(
            &child.pid,
            label,
            addr,
            rcpt,
            &stuffed(large_size),
            large_size,
        )
        .await;
        child.stop().await;
        delivered += 2;
    }
    delivered
}

/// A path's line: the rates of all its runs together, and the gateway's CPU per
/// message (`per_run`, one per run; empty without /proc): the median run's, each run's,
/// and the median run's user time, the part that is the gateway's own code rather
/// than the kernel's sockets, and that moves much less between runs.
fn row(label: &str, direct: &Run, through: &Run, per_run: &[Cpu]) {
    let micros = |d: std::time::Duration| format!("{:.0}", d.as_secs_f64() * 1e6);
    let mut sorted: Vec<&Cpu> = per_run.iter().collect();
    sorted.sort_by_key(|c| c.user + c.system);
    let cpu = match sorted.get(sorted.len() / 2) {
        None => "n/a".to_string(),
        Some(median) => {
            let runs: Vec<String> = per_run.iter().map(|c| micros(c.user + c.system)).collect();
            format!(
                "{:>4} µs ({}), user {} µs",
                micros(median.user + median.system),
                runs.join(", "),
                micros(median.user)
            )
        }
    };
    println!(
        "   {label:<44} {:>11.0} {:>11.0} {:>8.2}x   {cpu}",
        direct.rate(),
        through.rate(),
        through.rate() / direct.rate(),
    )
}

/// The increase of the child's peak RSS while it takes one message, against the size
/// of the message's plaintext and of the message itself.
async fn memory_row(
    pid: &str,
    label: &str,
    addr: SocketAddr,
    rcpt: &str,
    stuffed: &[u8],
    size: usize,
) {
    let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let before = Status::read(pid);
    let cpu_before = Cpu::of(pid);
    let elapsed = timed(transaction(addr, rcpt, stuffed)).await;
    let cpu = cpu_before.zip(Cpu::of(pid)).map(|(a, b)| b.since(&a));
    let after = Status::read(pid);
    let increase = after.hwm.saturating_sub(before.hwm);
    let ratio = increase as f64 / size as f64;
    // The message as it came (dot-stuffed, which adds a few bytes), for the inbound
    // path whose message is the armored ciphertext, a third larger than its plaintext.
    let of_received = increase as f64 / stuffed.len() as f64;
    println!(
        "   {label:<20} {:6.1} MiB = {ratio:4.2} x the plaintext, {of_received:4.2} x the message \
         (target <= 2: {}){}; {:.2} s, gateway CPU {}",
        mib(increase),
        verdict(ratio <= 2.0),
        if reset { "" } else { " (VmHWM not reset)" },
        elapsed.as_secs_f64(),
        cpu.map_or("n/a".into(), |c| format!(
            "{} ms",
            (c.user + c.system).as_millis()
        )),
    );
}
