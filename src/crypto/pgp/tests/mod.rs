//! Checked against GnuPG itself (a throwaway home per test), against real clients'
//! messages in the corpus under `testdata/corpus/openpgp/`, and, for the SEIPD version,
//! the bounds and hostile input, with keys sequoia makes.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use openpgp::armor;
use openpgp::cert::CertBuilder;
use openpgp::crypto::Password;
use openpgp::packet::Packet;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::SerializeInto;
use openpgp::serialize::stream::{Compressor, Encryptor, LiteralWriter, Message, Recipient};
use openpgp::types::{CompressionAlgorithm, CompressionLevel, Features, SymmetricAlgorithm};
use openpgp::{Cert, PacketPile, packet::Tag};
use sequoia_openpgp as openpgp;
use time::OffsetDateTime;

use super::*;
use crate::crypto::{CryptoError, Decrypted};

const MIME: &[u8] = b"Content-Type: text/plain; charset=utf-8\r\n\
    Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe vom Gateway.\r\n";

/// The secret encryption subkey of a new cert of `suite`, as the decryptors take it.
pub(super) fn encryption_subkey(
    suite: openpgp::cert::CipherSuite,
) -> openpgp::packet::Key<openpgp::packet::key::SecretParts, openpgp::packet::key::UnspecifiedRole>
{
    let (cert, _) = CertBuilder::new()
        .set_cipher_suite(suite)
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    let subkey = cert.keys().subkeys().secret().next().unwrap();
    subkey.key().clone().role_into_unspecified()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A throwaway GnuPG home; its agent is killed when the test ends, passing or not.
struct Gpg {
    home: tempfile::TempDir,
}

/// A key gpg made: the primary fingerprint and each subkey's fingerprint and
/// capabilities (`e`, `s`, ...).
struct GpgKey {
    primary: String,
    subkeys: Vec<(String, String)>,
}

impl GpgKey {
    fn subkey(&self, capability: &str) -> String {
        let (fpr, _) = self
            .subkeys
            .iter()
            .find(|(_, caps)| caps.contains(capability))
            .expect("a subkey with that capability");
        format!("{fpr}!")
    }
}

impl Gpg {
    fn new() -> Gpg {
        // The agent's socket lives in the home: keep the path short.
        let home = tempfile::Builder::new()
            .prefix("sg-gpg")
            .tempdir_in("/tmp")
            .unwrap();
        Gpg { home }
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args([
                "--batch",
                "--no-tty",
                "--yes",
                "--pinentry-mode",
                "loopback",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gpg runs");
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || input.write_all(&data));
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        output
    }

    fn ok(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let output = self.run(args, stdin);
        assert!(
            output.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// `gpg --quick-gen-key UID PRIMARY cert never`, then one `--quick-add-key` per
    /// (algorithm, usage) in `subkeys`, all under `passphrase` ('' for none).
    fn generate(
        &self,
        uid: &str,
        primary: &str,
        subkeys: &[(&str, &str)],
        passphrase: &str,
    ) -> GpgKey {
        let pw = ["--passphrase", passphrase];
        self.ok(
            &[&pw[..], &["--quick-gen-key", uid, primary, "cert", "never"]].concat(),
            b"",
        );
        let primary = self.list(uid).primary;
        for (algo, usage) in subkeys {
            self.ok(
                &[
                    &pw[..],
                    &["--quick-add-key", &primary, algo, usage, "never"],
                ]
                .concat(),
                b"",
            );
        }
        self.list(uid)
    }

    fn list(&self, uid: &str) -> GpgKey {
        let listing = self.ok(&["--with-colons", "--list-keys", uid], b"");
        let listing = String::from_utf8(listing).unwrap();
        let mut primary = None;
        let mut subkeys = Vec::new();
        let mut record = ("", "");
        for line in listing.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            match fields[0] {
                "pub" | "sub" => record = (fields[0], fields[11]),
                "fpr" if record.0 == "pub" && primary.is_none() => {
                    primary = Some(fields[9].to_string())
                }
                "fpr" if record.0 == "sub" => {
                    subkeys.push((fields[9].to_string(), record.1.to_string()))
                }
                _ => {}
            }
        }
        GpgKey {
            primary: primary.expect("a primary key"),
            subkeys,
        }
    }

    /// `--export-secret-subkeys` or `--export-secret-keys` of `what`.
    fn export_secret(&self, command: &str, what: &str, passphrase: &str) -> Vec<u8> {
        self.ok(&["--passphrase", passphrase, command, what], b"")
    }

    fn encrypt_to(&self, recipient: &str, plaintext: &[u8], armor: bool) -> Vec<u8> {
        let mut args = vec!["--trust-model", "always", "--encrypt", "-r", recipient];
        if armor {
            args.insert(0, "--armor");
        }
        self.ok(&args, plaintext)
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

/// The versions of the top-level SEIPD packets in a message.
fn seipd_versions(message: &[u8]) -> Vec<u8> {
    PacketPile::from_bytes(message)
        .unwrap()
        .children()
        .filter(|p| p.tag() == Tag::SEIP)
        .filter_map(|p| p.version())
        .collect()
}

/// The secret keys of `cert` with their secrets: (fingerprint, unencrypted?).
fn secrets(cert: &Cert) -> Vec<(String, bool)> {
    cert.keys()
        .secret()
        .map(|ka| {
            let clear = !ka.key().secret().is_encrypted();
            (ka.key().fingerprint().to_hex(), clear)
        })
        .collect()
}

fn interop_with_gpg(primary_algo: &str, encryption_algo: &str) {
    let gpg = Gpg::new();
    let key = gpg.generate(
        "U <u@example.org>",
        primary_algo,
        &[(encryption_algo, "encr")],
        "",
    );
    let public = Cert::from_bytes(&gpg.ok(&["--export", &key.primary], b"")).unwrap();

    // Ours, opened by gpg: the plaintext back, and no signature anywhere.
    let armored = encrypt(MIME, &[public]).unwrap();
    assert!(armored.starts_with(b"-----BEGIN PGP MESSAGE-----\r\n"));
    assert!(armored.ends_with(b"-----END PGP MESSAGE-----\r\n"));
    assert!(
        armored
            .iter()
            .enumerate()
            .all(|(i, &b)| b != b'\n' || (i > 0 && armored[i - 1] == b'\r')),
        "CRLF line endings only"
    );
    // GnuPG 2.2 keys advertise no SEIPDv2.
    assert_eq!(seipd_versions(&armored), vec![1]);
    let output = gpg.run(&["--status-fd", "2", "--decrypt"], &armored);
    let status = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "gpg --decrypt: {status}");
    assert_eq!(output.stdout, MIME);
    assert!(status.contains("DECRYPTION_OKAY"), "{status}");
    let signature_lines: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("[GNUPG:]") && l.contains("SIG"))
        .collect();
    assert!(signature_lines.is_empty(), "{signature_lines:?}");

    // gpg's, opened by us with the SCKM key `--export-secret-subkeys ENC!` makes.
    let export = gpg.export_secret("--export-secret-subkeys", &key.subkey("e"), "");
    let imported = import_sckm(&export, None, now()).unwrap();
    assert_eq!(imported.len(), 1);
    let sckm = &imported[0];
    assert_eq!(sckm.fingerprint, key.primary);
    assert_eq!(sckm.addresses, vec!["u@example.org".to_string()]);
    assert!(!sckm.legacy);
    assert!(sckm.warnings.is_empty(), "{:?}", sckm.warnings);
    assert_eq!(sckm.key_expires, None);
    let encryption_subkey = key.subkey("e").trim_end_matches('!').to_string();
    assert_eq!(secrets(&sckm.cert), vec![(encryption_subkey, true)]);

    // Through the store's serialization, binary and armored gpg output.
    let stored = parse_tsks(&serialize_tsk(&sckm.cert)).unwrap();
    for armor in [false, true] {
        let message = gpg.encrypt_to("u@example.org", MIME, armor);
        let decrypted = decrypt(&message, &stored).unwrap();
        assert_eq!(decrypted.plaintext, MIME);
        assert_eq!(decrypted.fingerprint, key.primary);
    }
    // And our own message, with the same key.
    let ours = encrypt(b"round trip", std::slice::from_ref(&sckm.cert)).unwrap();
    assert_eq!(decrypt(&ours, &stored).unwrap().plaintext, b"round trip");
}

#[test]
fn rsa3072_interop_with_gpg() {
    interop_with_gpg("rsa3072", "rsa3072");
}

#[test]
fn cv25519_interop_with_gpg() {
    interop_with_gpg("ed25519", "cv25519");
}

#[test]
fn import_sckm_refuses_signing_secrets() {
    let gpg = Gpg::new();
    let key = gpg.generate(
        "S <s@example.org>",
        "ed25519",
        &[("cv25519", "encr"), ("ed25519", "sign")],
        "",
    );
    let sign = key.subkey("s");
    let refusal = |bytes: &[u8]| import_sckm(bytes, None, now()).unwrap_err().0;

    let full = gpg.export_secret("--export-secret-keys", &key.primary, "");
    let reason = refusal(&full);
    assert!(reason.contains(&key.primary), "{reason}");
    assert!(reason.contains("primary key"), "{reason}");

    // Every subkey's secret: the signing subkey's too.
    let all_subkeys = gpg.export_secret("--export-secret-subkeys", &key.primary, "");
    let reason = refusal(&all_subkeys);
    assert!(reason.contains("can sign"), "{reason}");
    assert!(reason.contains(sign.trim_end_matches('!')), "{reason}");
    let reason = refusal(&gpg.export_secret("--export-secret-subkeys", &sign, ""));
    assert!(reason.contains("can sign"), "{reason}");

    let public = gpg.ok(&["--export", &key.primary], b"");
    let reason = refusal(&public);
    assert!(reason.contains("no secret encryption subkey"), "{reason}");

    let encryption_only = gpg.export_secret("--export-secret-subkeys", &key.subkey("e"), "");
    let imported = import_sckm(&encryption_only, None, now()).unwrap();
    assert_eq!(imported[0].addresses, vec!["s@example.org".to_string()]);

    // One bad key refuses the whole file.
    let mut file = encryption_only.clone();
    file.extend_from_slice(&all_subkeys);
    assert!(refusal(&file).contains("can sign"));

    assert!(import_sckm(b"not a key", None, now()).is_err());
    assert!(import_sckm(&[0x99; 300], None, now()).is_err());
}

#[test]
fn import_sckm_unlocks_protected_secrets() {
    let gpg = Gpg::new();
    let key = gpg.generate("P <p@example.org>", "ed25519", &[("cv25519", "encr")], "pw");
    let export = gpg.export_secret("--export-secret-subkeys", &key.subkey("e"), "pw");
    assert!(
        secrets(&Cert::from_bytes(&export).unwrap())
            .iter()
            .any(|(_, clear)| !clear),
        "gpg exports the subkey protected"
    );

    let reason = import_sckm(&export, None, now()).unwrap_err().0;
    assert!(reason.contains("--passphrase-file"), "{reason}");
    assert!(reason.contains(&key.primary), "{reason}");
    let reason = import_sckm(&export, Some("wrong"), now()).unwrap_err().0;
    assert!(reason.contains("passphrase does not unlock"), "{reason}");

    let imported = import_sckm(&export, Some("pw"), now()).unwrap();
    let stored = parse_tsks(&serialize_tsk(&imported[0].cert)).unwrap();
    assert!(secrets(&stored[0]).iter().all(|(_, clear)| *clear));
    let message = gpg.encrypt_to("p@example.org", MIME, true);
    assert_eq!(decrypt(&message, &stored).unwrap().plaintext, MIME);
}

mod aead;
mod bounds;
mod corpus;
