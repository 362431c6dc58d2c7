//! What the fuzz targets share: the fixed keys and times they run with, a scratch folder
//! per process, and the invariants more than one target checks.
//!
//! Everything here is made once per process, never per input: libFuzzer runs millions
//! of inputs, and a key parsed or a database opened per input would be most of the time
//! spent. The keys are the corpus keys in `testdata/corpus/`, built in, so the seed
//! messages (which are encrypted to them) decrypt and the fuzzer starts deep inside.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use sealgate::crypto::smime::{self, SmimeKey};
use sequoia_openpgp::Cert;
use sequoia_openpgp::crypto::Password;
use sequoia_openpgp::packet::Packet;
use time::OffsetDateTime;
use time::macros::datetime;

/// The "now" of harvesting and key import. Fixed, so that a finding replays the same
/// way tomorrow; chosen so that most corpus keys are valid (the Autocrypt keys expire
/// on 2021-01-21, the RFC 9216 certificates start in 2019/2020).
pub const NOW: OffsetDateTime = datetime!(2020-12-01 00:00 UTC);
/// A second instant for key checks: the certificates of the NSS corpus are recent.
pub const LATER: OffsetDateTime = datetime!(2027-06-01 00:00 UTC);

macro_rules! corpus {
    ($path:literal) => {
        include_bytes!(concat!("../../testdata/corpus/", $path)).as_slice()
    };
}

/// The OpenPGP keys the decrypt target opens messages with: (TSK, passphrase).
const PGP_KEYS: &[(&[u8], &str)] = &[
    // draft-bre Bob (RSA-3072): camellia128-001.asc, and the PGP/MIME of the shared corpus.
    (corpus!("openpgp/bob@openpgp.example.sec.asc"), ""),
    // The Autocrypt Alice (the draft-bre Alice key material, Cv25519) and Bob.
    (corpus!("openpgp/alice@autocrypt.example.sec.asc"), ""),
    (corpus!("openpgp/bob@autocrypt.example.sec.asc"), ""),
    // RSA, GnuPG 1.4.11: the PGP 10.0 and GnuPG messages.
    (corpus!("openpgp/gnupg-v1-4-11-001-decrypt.asc"), "test"),
    // ECDH P-256 (Google End-to-End).
    (corpus!("openpgp/e2e-001-decrypt.asc"), ""),
];

/// The corpus TSKs with their subkeys' secrets unlocked: what `pgp::decrypt` takes.
pub static PGP_TSKS: LazyLock<Vec<Cert>> = LazyLock::new(|| {
    PGP_KEYS
        .iter()
        .flat_map(|(bytes, passphrase)| {
            sealgate::crypto::pgp::parse_tsks(bytes)
                .expect("a corpus key parses")
                .into_iter()
                .map(|cert| unlocked(cert, passphrase))
        })
        .collect()
});

fn unlocked(cert: Cert, passphrase: &str) -> Cert {
    let password = Password::from(passphrase);
    let mut packets = Vec::new();
    for ka in cert.keys().subkeys().secret() {
        let key = ka.key().clone();
        if key.secret().is_encrypted() {
            let key = key
                .decrypt_secret(&password)
                .expect("the corpus passphrase unlocks the corpus key");
            packets.push(Packet::SecretSubkey(key));
        }
    }
    cert.insert_packets(packets)
        .expect("unlocked subkeys fit")
        .0
}

/// The S/MIME keys (certificate, PKCS#8 key) the cms and decrypt targets open
/// messages with: RSA (PKCS#1 v1.5 and OAEP) and EC P-384.
const SMIME_KEYS: &[(&[u8], &[u8])] = &[
    (
        corpus!("smime/thunderbird-nss-smime/derived/Bob.cert.pem"),
        corpus!("smime/thunderbird-nss-smime/derived/Bob.key.pem"),
    ),
    (
        corpus!("smime/thunderbird-smime-interop/derived/Fran.cert.pem"),
        corpus!("smime/thunderbird-smime-interop/derived/Fran.key.pem"),
    ),
    (
        corpus!("smime/thunderbird-smime-interop/derived/Fran-ec.cert.pem"),
        corpus!("smime/thunderbird-smime-interop/derived/Fran-ec.key.pem"),
    ),
    (
        corpus!("smime/rfc9216-lamps-examples-cms/lamps-bob.encrypt.crt"),
        corpus!("smime/rfc9216-lamps-examples-cms/lamps-bob.decrypt.p8.pem"),
    ),
    (
        corpus!("smime/autocrypt-protected-headers/derived/bob.cert.pem"),
        corpus!("smime/autocrypt-protected-headers/derived/bob.key.pem"),
    ),
];

pub static SMIME_SCKM: LazyLock<Vec<SmimeKey>> = LazyLock::new(|| {
    SMIME_KEYS
        .iter()
        .flat_map(|(cert, key)| {
            smime::import_sckm(&[*cert, *key].concat(), None).expect("a corpus key imports")
        })
        .collect()
});

/// A folder of this process's own for a database and delivered files: in /dev/shm when
/// there is one (the dir: next hop fsyncs every message). libFuzzer ends with `exit()`,
/// so nothing is cleaned up on the way out; the folders of processes that are gone are
/// removed here instead.
pub fn scratch(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix("sealgate-fuzz-"))
        else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = base.join(format!("sealgate-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the scratch folder can be made");
    dir
}

/// Panics unless every CR in `bytes` starts a CRLF and every LF ends one: the form of
/// every message sealgate holds and hands on.
pub fn assert_crlf(bytes: &[u8], what: &str) {
    let around = |i: usize| {
        String::from_utf8_lossy(&bytes[i.saturating_sub(80)..(i + 40).min(bytes.len())])
            .into_owned()
    };
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\r' && bytes.get(i + 1) != Some(&b'\n') {
            panic!("{what}: bare CR at {i}: {:?}", around(i));
        }
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            panic!("{what}: bare LF at {i}: {:?}", around(i));
        }
    }
}

/// The header lines of a message as a next hop reads them: a CRLF, a bare CR and a bare
/// LF each end a line (the relay sends the bare ones as CRLF), and the first empty line
/// ends the header. mail-parser, which sealgate reads headers with, may see them
/// differently; what counts is what the recipient's side sees.
pub fn next_hop_header(message: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut at = 0;
    while at < message.len() {
        let b = message[at];
        if b != b'\r' && b != b'\n' {
            at += 1;
            continue;
        }
        if at == start {
            break;
        }
        lines.push(&message[start..at]);
        at += if message[at..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        start = at;
    }
    lines
}

/// The header lines that are fields of sealgate's (`X-Sealgate*`): a field name (printable
/// ASCII up to the colon, spaces before it allowed as RFC 5322's obsolete syntax does)
/// that starts with `X-Sealgate`.
pub fn marks_in(message: &[u8]) -> Vec<&[u8]> {
    next_hop_header(message)
        .into_iter()
        .filter(|line| {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return false;
            };
            let name = line[..colon].trim_ascii_end();
            name.len() >= 10
                && name[..10].eq_ignore_ascii_case(b"x-sealgate")
                && name.iter().all(|b| b.is_ascii_graphic())
        })
        .collect()
}

/// Lets a panic that sealgate catches go on to its `catch_unwind`, as in the gateway,
/// instead of ending the run (libFuzzer's hook aborts on every panic, caught or not):
/// one raised in sequoia (or its buffered_reader) under `crypto::pgp::decrypt`, which
/// turns it into a malformed message. sequoia-openpgp 2.4.2 has one such panic that any
/// sender can trigger (a message that ends inside a SEIPDv1 packet less than its block
/// size plus 24 bytes in: parse.rs:6367; tests/fuzz_regressions.rs). Each tolerated
/// panic is reported on stderr. Any other panic still ends the run.
pub fn tolerate_caught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_dependency = info.location().is_some_and(|l| {
                l.file().contains("/sequoia-openpgp-") || l.file().contains("/buffered-reader-")
            });
            if in_dependency {
                let trace = std::backtrace::Backtrace::force_capture().to_string();
                if trace.contains("src/crypto/pgp/decrypt.rs") {
                    eprintln!("tolerated (caught by crypto::pgp::decrypt): {info}");
                    return;
                }
            }
            abort(info);
        }));
    });
}
