//! The OpenPGP mail real clients send, decrypted inbound for an SCKM user through a real
//! gateway, each against the other side's real tool:
//! - the LibrePGP AEAD packet (tag 20) from `rnp --aead=ocb|eax` (RNP 0.16, as in
//!   Thunderbird), and tampered copies of it, which arrive as they were sent;
//! - RFC 9580 SEIPDv2 (OCB, GCM) to a v6 key, written by sequoia;
//! - signed and encrypted in one message (`gpg -s -e`): PGP/MIME becomes RFC 3156
//!   `multipart/signed` that `gpg --verify` verifies on the bytes python's `email`
//!   extracts, or, where a detached signature would not verify, the entity with the
//!   signed message attached; inline PGP keeps the signed message in the text;
//! - a Subject hidden inside without the `protected-headers` marker;
//! - logs that say "decrypted" only when something was, with the transaction's id on
//!   every line about the message.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sequoia_openpgp as openpgp;
use support::keys::{GpgHome, autocrypt_header, crlf, pgp_mime, run_tool};
use support::{Client, Gateway, Received, Sink, log};

const USER: &str = "user@example.com";
const SENDER: &str = "alice@example.org";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A gateway holding `user@example.com`'s SCKM key (Ed25519, Cv25519 encryption
/// subkey, made by gpg), and Alice, who has the user's public key and a signing key of
/// her own.
struct Setup {
    sink: Sink,
    _dir: tempfile::TempDir,
    gw: Gateway,
    user: GpgHome,
    /// The user's primary fingerprint: what `X-Sealgate-Decrypted` names.
    user_fpr: String,
    alice: GpgHome,
    /// A GnuPG home with only Alice's public key: the recipient's client, verifying.
    verifier: GpgHome,
}

impl Setup {
    async fn new() -> Setup {
        let sink = Sink::start().await;
        let (dir, gw) = support::gateway_to(&sink, "").await;
        let user = GpgHome::new();
        let (user_fpr, subkey) =
            user.make_key("User <user@example.com>", "ed25519", "cv25519", "encr");
        support::import(
            &gw,
            true,
            &[&user.file("sckm.asc", &user.sckm_export(&subkey))],
            None,
        );
        let alice = GpgHome::new();
        alice.run(
            &[
                "--quick-gen-key",
                "Alice <alice@example.org>",
                "ed25519",
                "sign,cert",
                "never",
            ],
            None,
        );
        alice.run(&["--import"], Some(&user.run(&["--export", USER], None)));
        let verifier = GpgHome::new();
        verifier.run(&["--import"], Some(&alice.run(&["--export", SENDER], None)));
        Setup {
            sink,
            _dir: dir,
            gw,
            user,
            user_fpr,
            alice,
            verifier,
        }
    }

    /// Sends `message` inbound to the user; returns the copy the next hop got and the
    /// transaction's id (from the 250 reply).
    async fn send(&self, message: &[u8]) -> (Received, String) {
        let before = self.sink.received().len();
        let mut client = Client::connect(self.gw.inbound).await;
        let reply = client.send_mail(SENDER, &[USER], message).await;
        assert_eq!(reply.code, 250, "{reply:?}");
        client.quit().await;
        let id = reply.text.rsplit(' ').next().unwrap().to_string();
        let got = self.sink.received()[before..].to_vec();
        assert_eq!(got.len(), 1, "{got:?}");
        (got[0].clone(), id)
    }

    /// Alice's `gpg --armor -s -e` (with `extra` options) of `plaintext` to the user.
    fn sign_and_encrypt(&self, plaintext: &[u8], extra: &[&str]) -> Vec<u8> {
        let mut args = vec![
            "--armor",
            "--trust-model",
            "always",
            "-u",
            SENDER,
            "-s",
            "-e",
            "-r",
            USER,
        ];
        args.extend_from_slice(extra);
        self.alice.run(&args, Some(plaintext))
    }

    /// `gpg --verify` in the verifier's home: whether it says "Good signature" from
    /// Alice, and what it said.
    fn verify(&self, args: &[&str]) -> (bool, String) {
        let output = self
            .verifier
            .command()
            .args(["--verify"])
            .args(args)
            .output()
            .unwrap();
        let said = text(&output.stderr);
        (
            output.status.success() && said.contains("Good signature from \"Alice"),
            said,
        )
    }
}

impl Setup {
    /// `gpg --decrypt` of a signed (not encrypted) message in the verifier's home, who
    /// has no key of the user's: what gpg said, and the signed data.
    fn open_signed(&self, armored: &str) -> (String, Vec<u8>) {
        let output = support::keys::tool_output(
            self.verifier.command().arg("--decrypt"),
            Some(armored.as_bytes()),
        );
        (text(&output.stderr), output.stdout)
    }
}

fn marker(copy: &str) -> &str {
    copy.lines()
        .find(|l| l.starts_with("X-Sealgate-Decrypted: "))
        .unwrap_or("no X-Sealgate-Decrypted")
}

// ---------------------------------------------------------------------------------------
// AEAD

/// `rnp --encrypt --aead=MODE --armor` of `plaintext` to the user, with RNP's own
/// keyring holding the user's public key (from gpg).
fn rnp_encrypt(user: &GpgHome, mode: &str, plaintext: &[u8]) -> Vec<u8> {
    rnp(user, None, mode, plaintext)
}

/// `rnp [--sign -u SIGNER] --encrypt --aead=MODE --armor` of `plaintext` to the user;
/// `signer` is a GnuPG home whose (unprotected) secret key for Alice RNP imports.
fn rnp(user: &GpgHome, signer: Option<&GpgHome>, mode: &str, plaintext: &[u8]) -> Vec<u8> {
    let home = tempfile::tempdir().unwrap();
    let rnp_home = home.path().join("rnp");
    std::fs::create_dir(&rnp_home).unwrap();
    let mut keys = vec![user.run(&["--export", USER], None)];
    if let Some(signer) = signer {
        keys.push(signer.run(&["--export-secret-keys", SENDER], None));
    }
    for (i, key) in keys.iter().enumerate() {
        let file = home.path().join(format!("key{i}.pgp"));
        std::fs::write(&file, key).unwrap();
        run_tool(
            Command::new("rnpkeys")
                .arg("--homedir")
                .arg(&rnp_home)
                .arg("--import")
                .arg(&file),
            None,
        );
    }
    let input = home.path().join("entity");
    std::fs::write(&input, plaintext).unwrap();
    let mut command = Command::new("rnp");
    command.arg("--homedir").arg(&rnp_home);
    if signer.is_some() {
        command.args(["--sign", "-u", SENDER, "--password", ""]);
    }
    run_tool(
        command
            .args([
                "--encrypt",
                "-r",
                USER,
                &format!("--aead={mode}"),
                "--armor",
                "--output",
                "-",
            ])
            .arg(&input),
        None,
    )
}

/// RNP signs and encrypts in one (as Thunderbird does), into the AEAD packet: the
/// packets inside it go through sequoia like any others, and the signature is kept.
#[tokio::test]
async fn rnp_signed_and_aead_encrypted_keeps_a_signature_gpg_verifies() {
    let s = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    let entity =
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nSigned by RNP, sealed with OCB.\r\n";
    let armored = rnp(&s.user, Some(&s.alice), "ocb", entity);
    assert!(text(&s.user.run(&["--list-packets"], Some(&armored))).contains("tag=20"));
    let (copy, _) = s
        .send(&pgp_mime(SENDER, USER, "rnp-signed@example.org", &armored))
        .await;
    let copy_text = text(&copy.data);
    assert!(
        marker(&copy_text).ends_with("; signature=present (not verified by sealgate)"),
        "{copy_text}"
    );
    let parsed = python_reads(&copy.data, dir.path());
    assert_eq!(parsed["type"], "multipart/signed", "{copy_text}");
    let data = dir.path().join("first-raw.txt");
    assert_eq!(std::fs::read(&data).unwrap(), entity);
    let (good, said) = s.verify(&[
        dir.path().join("signature.asc").to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    assert!(good, "{said}");
    s.gw.stop().await;
}

#[tokio::test]
async fn librepgp_aead_from_rnp_is_decrypted_and_tampered_copies_arrive_as_sent() {
    let s = Setup::new().await;
    for mode in ["ocb", "eax"] {
        let entity =
            format!("Content-Type: text/plain; charset=utf-8\r\n\r\nSent by RNP with {mode}.\r\n");
        let armored = rnp_encrypt(&s.user, mode, entity.as_bytes());
        // What RNP wrote is the tag-20 packet in that mode, as gpg itself reads it.
        let packets = text(&s.user.run(&["--list-packets"], Some(&armored)));
        let octet = if mode == "eax" { "aead=1" } else { "aead=2" };
        assert!(
            packets.contains("tag=20") && packets.contains(octet),
            "{packets}"
        );

        let message = pgp_mime(SENDER, USER, &format!("{mode}@example.org"), &armored);
        let (copy, _) = s.send(&message).await;
        let copy = text(&copy.data);
        assert_eq!(
            marker(&copy),
            format!("X-Sealgate-Decrypted: pgp; key={}", s.user_fpr),
            "{copy}"
        );
        assert!(
            copy.contains(&format!("\r\n\r\nSent by RNP with {mode}.\r\n")),
            "{copy}"
        );
        assert!(!copy.contains("BEGIN PGP MESSAGE"), "{copy}");

        // One base64 character changed in the middle of the armor: the packet does not
        // authenticate, and the message goes on as it came.
        let armored = text(&armored);
        let lines: Vec<&str> = armored.lines().collect();
        let middle = lines.len() / 2;
        let flipped: String = lines[middle]
            .char_indices()
            .map(|(i, c)| {
                if i == 10 {
                    if c == 'A' { 'B' } else { 'A' }
                } else {
                    c
                }
            })
            .collect();
        let tampered = armored.replacen(lines[middle], &flipped, 1);
        let message = pgp_mime(
            SENDER,
            USER,
            &format!("{mode}-tampered@example.org"),
            tampered.as_bytes(),
        );
        let (copy, _) = s.send(&message).await;
        assert_eq!(support::split_received(&copy.data).1, message, "{mode}");
    }
    s.gw.stop().await;
}

/// SEIPDv2 (RFC 9580) to a v6 key, as sequoia writes it (sealgate's own encryptor
/// writes it to certs that advertise it): OCB, GCM and EAX open.
#[tokio::test]
async fn seipd_v2_to_a_v6_sckm_key_is_decrypted() {
    use openpgp::cert::CertBuilder;
    use openpgp::policy::StandardPolicy;
    use openpgp::serialize::Serialize;
    use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message};
    use openpgp::types::AEADAlgorithm;
    use std::io::Write;

    let sink = Sink::start().await;
    let (dir, gw) = support::gateway_to(&sink, "").await;
    let (cert, _) = CertBuilder::new()
        .set_profile(openpgp::Profile::RFC9580)
        .unwrap()
        .add_userid("V6 <v6@example.com>")
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    let primary = cert.fingerprint();
    let mut sckm = Vec::new();
    cert.as_tsk()
        .set_filter(move |k| k.fingerprint() != primary)
        .armored()
        .serialize(&mut sckm)
        .unwrap();
    let file = dir.path().join("v6.asc");
    std::fs::write(&file, &sckm).unwrap();
    support::import(&gw, true, &[&file], None);

    let policy = StandardPolicy::new();
    for aead in [AEADAlgorithm::OCB, AEADAlgorithm::GCM, AEADAlgorithm::EAX] {
        let entity = format!("Content-Type: text/plain\r\n\r\nSEIPDv2 with {aead}.\r\n");
        let mut armored = Vec::new();
        let message = Armorer::new(Message::new(&mut armored)).build().unwrap();
        let recipients = cert
            .keys()
            .with_policy(&policy, None)
            .for_transport_encryption();
        // Sequoia writes OCB for EAX here (see `as_eax`).
        let written = if aead == AEADAlgorithm::EAX {
            AEADAlgorithm::OCB
        } else {
            aead
        };
        let message = Encryptor::for_recipients(message, recipients)
            .aead_algo(written)
            .build()
            .unwrap();
        let mut literal = LiteralWriter::new(message).build().unwrap();
        literal.write_all(entity.as_bytes()).unwrap();
        literal.finalize().unwrap();
        if aead == AEADAlgorithm::EAX {
            armored = as_eax(&armored, &cert, entity.as_bytes());
        }

        let mail = pgp_mime(SENDER, "v6@example.com", "v6@example.org", &armored);
        let mut client = Client::connect(gw.inbound).await;
        let reply = client.send_mail(SENDER, &["v6@example.com"], &mail).await;
        assert_eq!(reply.code, 250, "{reply:?}");
        client.quit().await;
        let copy = text(&sink.received().last().unwrap().data);
        assert_eq!(
            marker(&copy),
            format!(
                "X-Sealgate-Decrypted: pgp; key={}",
                cert.fingerprint().to_hex()
            ),
            "{aead}: {copy}"
        );
        assert!(copy.contains(&format!("SEIPDv2 with {aead}.")), "{copy}");
    }
    gw.stop().await;
}

/// `armored`, a SEIPDv2 message sequoia wrote to `cert`, with its encrypted data written
/// again in EAX around `entity`: the same PKESKs and session key, RFC 9580's framing
/// (§5.13.2) around RustCrypto's EAX, in 64-octet chunks so that there are several. This
/// build's sequoia cannot write EAX (the OpenSSL backend lacks it) and no tool here
/// writes SEIPDv2 EAX; the gateway's reading of the framing is checked against RFC
/// 9580's own EAX sample in its unit tests.
fn as_eax(armored: &[u8], cert: &openpgp::Cert, entity: &[u8]) -> Vec<u8> {
    use eax::aead::{AeadInPlace, KeyInit, generic_array::GenericArray};
    use openpgp::packet::{Literal, Packet, SEIP};
    use openpgp::parse::Parse;
    use openpgp::serialize::SerializeInto;
    use openpgp::types::{DataFormat, SymmetricAlgorithm};

    let pile = openpgp::PacketPile::from_bytes(armored).unwrap();
    let mut out = Vec::new();
    let mut session = None;
    let mut cipher = None;
    for packet in pile.children() {
        match packet {
            Packet::PKESK(pkesk) => {
                out.extend(packet.to_vec().unwrap());
                for key in cert.keys().unencrypted_secret() {
                    let mut pair = key.key().clone().into_keypair().unwrap();
                    if let Some((_, key)) = pkesk.decrypt(&mut pair, None) {
                        session = Some(key);
                    }
                }
            }
            Packet::SEIP(SEIP::V2(seip)) => cipher = Some(seip.symmetric_algo()),
            _ => {}
        }
    }
    let (session, cipher) = (session.unwrap(), cipher.unwrap());
    assert_eq!(cipher, SymmetricAlgorithm::AES256);
    let mut literal = Literal::new(DataFormat::Binary);
    literal.set_body(entity.to_vec());
    let inner = Packet::from(literal).to_vec().unwrap();

    let (chunk_octet, salt) = (0u8, [7u8; 32]);
    let info = [0xD2, 2, u8::from(cipher), 1, chunk_octet];
    let mut okm = [0u8; 32 + 8];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), &session)
        .expand(&info, &mut okm)
        .unwrap();
    let eax = eax::Eax::<aes::Aes256>::new_from_slice(&okm[..32]).unwrap();
    let nonce = |index: u64| {
        let mut nonce = okm[32..].to_vec();
        nonce.extend_from_slice(&index.to_be_bytes());
        nonce
    };
    let mut body = vec![2, u8::from(cipher), 1, chunk_octet];
    body.extend_from_slice(&salt);
    let mut index = 0;
    for chunk in inner.chunks(64) {
        let mut buffer = chunk.to_vec();
        let tag = eax
            .encrypt_in_place_detached(GenericArray::from_slice(&nonce(index)), &info, &mut buffer)
            .unwrap();
        body.extend(buffer);
        body.extend(tag);
        index += 1;
    }
    let mut final_ad = info.to_vec();
    final_ad.extend_from_slice(&(inner.len() as u64).to_be_bytes());
    let tag = eax
        .encrypt_in_place_detached(GenericArray::from_slice(&nonce(index)), &final_ad, &mut [])
        .unwrap();
    body.extend(tag);

    out.extend([0xC0 | 18, 0xFF]);
    out.extend((body.len() as u32).to_be_bytes());
    out.extend(body);
    let mut armored = Vec::new();
    let mut writer =
        openpgp::armor::Writer::new(&mut armored, openpgp::armor::Kind::Message).unwrap();
    std::io::Write::write_all(&mut writer, &out).unwrap();
    writer.finalize().unwrap();
    armored
}

// ---------------------------------------------------------------------------------------
// Signed and encrypted

/// What python's `email` makes of a delivered multipart/signed, as a client reads it:
/// the type and parameters, the signature part, and the first part twice: re-serialised
/// by `email` (CRLF), and cut out of the raw bytes at the boundaries (RFC 2046).
fn python_reads(copy: &[u8], dir: &Path) -> serde_json::Value {
    let eml = dir.join("delivered.eml");
    std::fs::write(&eml, copy).unwrap();
    let script = r#"
import email, email.policy, json, sys
raw = open(sys.argv[1], 'rb').read()
msg = email.message_from_bytes(raw, policy=email.policy.default)
out = {'type': msg.get_content_type(), 'protocol': msg.get_param('protocol'),
       'micalg': msg.get_param('micalg')}
if msg.get_content_type() == 'multipart/signed':
    first, sig = msg.get_payload()
    out['sig_type'] = sig.get_content_type()
    open(sys.argv[2] + '/signature.asc', 'wb').write(sig.get_payload(decode=True))
    open(sys.argv[2] + '/first-email.txt', 'wb').write(first.as_bytes(policy=email.policy.SMTP))
    b = ('--' + msg.get_boundary()).encode()
    start = raw.index(b + b'\r\n') + len(b) + 2
    end = raw.index(b'\r\n' + b, start)
    open(sys.argv[2] + '/first-raw.txt', 'wb').write(raw[start:end])
print(json.dumps(out))
"#;
    let out = run_tool(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&eml)
            .arg(dir),
        None,
    );
    serde_json::from_slice(&out).unwrap()
}

#[tokio::test]
async fn signed_and_encrypted_pgp_mime_becomes_multipart_signed_that_gpg_verifies() {
    let s = Setup::new().await;
    let dir = tempfile::tempdir().unwrap();
    // Thunderbird and Enigmail sign the entity with CRLF line ends (binary signature);
    // `--textmode` makes a text signature, here over LF text.
    let crlf_entity = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSigned and sealed.\r\nTrailing space \r\n";
    let lf_entity = b"Content-Type: text/plain; charset=utf-8\n\nSigned in text mode.\n";
    for (what, entity, extra) in [
        ("binary signature over CRLF", &crlf_entity[..], &[][..]),
        (
            "text signature over LF",
            &lf_entity[..],
            &["--textmode"][..],
        ),
    ] {
        let armored = s.sign_and_encrypt(entity, extra);
        let message = pgp_mime(SENDER, USER, "signed@example.org", &armored);
        let (copy, _) = s.send(&message).await;
        let copy_text = text(&copy.data);
        assert_eq!(
            marker(&copy_text),
            format!(
                "X-Sealgate-Decrypted: pgp; key={}; signature=present (not verified by sealgate)",
                s.user_fpr
            ),
            "{what}: {copy_text}"
        );
        let parsed = python_reads(&copy.data, dir.path());
        assert_eq!(parsed["type"], "multipart/signed", "{what}: {copy_text}");
        assert_eq!(parsed["protocol"], "application/pgp-signature", "{what}");
        assert_eq!(
            parsed["micalg"], "pgp-sha512",
            "{what}: gpg's default for Ed25519"
        );
        assert_eq!(parsed["sig_type"], "application/pgp-signature", "{what}");
        let signature = dir.path().join("signature.asc");
        for first in ["first-raw.txt", "first-email.txt"] {
            let data = dir.path().join(first);
            assert_eq!(
                std::fs::read(&data).unwrap(),
                crlf(entity),
                "{what}: {first}"
            );
            let (good, said) = s.verify(&[signature.to_str().unwrap(), data.to_str().unwrap()]);
            assert!(good, "{what}: {first}: {said}");
        }
    }
    s.gw.stop().await;
}

/// A binary signature over LF text (`gpg -s -e` of a file saved with LF line ends):
/// the entity travels with CRLF, so a detached signature would not verify. The entity
/// is delivered as ever, and the signed original is attached, verifiable as it is.
#[tokio::test]
async fn binary_signature_over_lf_text_keeps_the_signed_message_attached() {
    let s = Setup::new().await;
    let entity = b"Content-Type: text/plain\n\nLF line ends.\n";
    let message = pgp_mime(
        SENDER,
        USER,
        "lf@example.org",
        &s.sign_and_encrypt(entity, &[]),
    );
    let (copy, _) = s.send(&message).await;
    let copy = text(&copy.data);
    assert!(
        marker(&copy).ends_with("; signature=present (not verified by sealgate)"),
        "{copy}"
    );
    assert!(copy.contains("Content-Type: multipart/mixed;"), "{copy}");
    assert!(
        copy.contains("\r\nContent-Type: text/plain\r\n\r\nLF line ends.\r\n"),
        "{copy}"
    );
    let attachment = &copy[copy.find("filename=\"signed-message.asc\"").expect(&copy)..];
    let start = attachment.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end = attachment.find("-----END PGP MESSAGE-----").unwrap() + 25;
    let (said, data) = s.open_signed(&attachment[start..end]);
    assert!(said.contains("Good signature from \"Alice"), "{said}");
    assert_eq!(data, entity, "the signed data, byte for byte");
    s.gw.stop().await;
}

#[tokio::test]
async fn signed_and_encrypted_inline_pgp_keeps_the_signed_message() {
    let s = Setup::new().await;
    let armored = s.sign_and_encrypt(b"Hello inline.\n", &[]);
    let mut message = format!(
        "From: {SENDER}\r\nTo: {USER}\r\nSubject: inline\r\nMessage-ID: <inline@example.org>\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\nAbove.\r\n"
    )
    .into_bytes();
    message.extend_from_slice(&crlf(&armored));
    message.extend_from_slice(b"Below.\r\n");
    let (copy, _) = s.send(&message).await;
    let copy = text(&copy.data);
    assert!(
        marker(&copy).ends_with("; signature=present (not verified by sealgate)"),
        "{copy}"
    );
    assert!(
        copy.contains("Above.\r\n-----BEGIN PGP MESSAGE-----"),
        "{copy}"
    );
    assert!(
        copy.contains("-----END PGP MESSAGE-----\r\nBelow.\r\n"),
        "{copy}"
    );
    let start = copy.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end = copy.find("-----END PGP MESSAGE-----").unwrap() + 25;
    let block = &copy[start..end];
    // Signed only now: the verifier, who has no key of the user's, reads and verifies it.
    let (said, data) = s.open_signed(block);
    assert!(said.contains("Good signature from \"Alice"), "{said}");
    assert_eq!(data, b"Hello inline.\n");
    s.gw.stop().await;
}

/// Real signed-and-encrypted messages: Thunderbird's (RNP: a binary signature over the
/// CRLF entity) becomes multipart/signed; the Autocrypt protected-headers vector
/// (GnuPG: a binary signature over LF text) gets the signed message attached. Both verify with
/// the signer's public key, and the protected Subject is restored.
#[tokio::test]
async fn real_clients_signed_and_encrypted_messages_keep_a_verifiable_signature() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/corpus/openpgp");
    let path = |name: &str| corpus.join(name).to_str().unwrap().to_string();
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = support::config_text(&dir.path().join("data"), &sink.addr.to_string(), "")
        .replace(
            "internal_domains = [\"example.com\"]",
            "internal_domains = [\"openpgp.example\"]",
        );
    let gw = support::start(&config).await;
    for (key, address) in [
        (
            "alice@openpgp.example-0xf231550c4f47e38e-secret.asc",
            "alice@openpgp.example",
        ),
        ("bob@openpgp.example.sec.asc", "bob@openpgp.example"),
    ] {
        let home = GpgHome::new();
        home.run(&["--import", &path(key)], None);
        let subkey = home.fingerprints(address)[1].clone();
        support::import(
            &gw,
            true,
            &[&home.file("sckm.asc", &home.sckm_export(&subkey))],
            None,
        );
    }
    let verifier = GpgHome::new();
    verifier.run(&["--import", &path("alice@openpgp.example.pub.asc")], None);
    verifier.run(
        &[
            "--import",
            &path("bob@openpgp.example-0xfbfcc82a015e7330-pub.asc"),
        ],
        None,
    );

    for (file, to, signer, subject, detached) in [
        (
            "signed-encrypted-autocrypt-gossip.eml",
            "alice@openpgp.example",
            "Bob Babbage",
            "Compose Signed Encrypted Message",
            true,
        ),
        (
            "pgpmime-sign+enc.eml",
            "bob@openpgp.example",
            "Alice Lovelace",
            "BarCorp contract signed, let's go!",
            false,
        ),
    ] {
        let message = crlf(&std::fs::read(corpus.join(file)).unwrap());
        let mut client = Client::connect(gw.inbound).await;
        let reply = client
            .send_mail("sender@example.org", &[to], &message)
            .await;
        assert_eq!(reply.code, 250, "{reply:?}");
        client.quit().await;
        let copy = sink.received().last().unwrap().data.clone();
        let copy_text = text(&copy);
        assert!(
            marker(&copy_text).ends_with("; signature=present (not verified by sealgate)"),
            "{file}: {copy_text}"
        );
        assert!(
            copy_text.contains(&format!("\r\nSubject: {subject}\r\n"))
                && !copy_text.contains("Subject: ...\r\n"),
            "{file}: {copy_text}"
        );
        let said = if detached {
            let parsed = python_reads(&copy, dir.path());
            assert_eq!(parsed["type"], "multipart/signed", "{file}: {copy_text}");
            assert_eq!(parsed["micalg"], "pgp-sha256", "{file}");
            let output = verifier
                .command()
                .arg("--verify")
                .arg(dir.path().join("signature.asc"))
                .arg(dir.path().join("first-raw.txt"))
                .output()
                .unwrap();
            assert!(output.status.success(), "{file}: {}", text(&output.stderr));
            text(&output.stderr)
        } else {
            let start = copy_text
                .find("-----BEGIN PGP MESSAGE-----")
                .expect(&copy_text);
            let end = copy_text.find("-----END PGP MESSAGE-----").unwrap() + 25;
            let output = support::keys::tool_output(
                verifier.command().arg("--decrypt"),
                Some(&copy_text.as_bytes()[start..end]),
            );
            assert!(
                text(&output.stdout).contains(&format!("Subject: {subject}")),
                "{file}: the signed entity"
            );
            text(&output.stderr)
        };
        assert!(
            said.contains(&format!("Good signature from \"{signer}")),
            "{file}: {said}"
        );
    }
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------
// Protected headers without the marker

#[tokio::test]
async fn inner_subject_without_the_protected_headers_marker_replaces_a_placeholder() {
    let s = Setup::new().await;
    let entity =
        b"Content-Type: text/plain; charset=utf-8\r\nSubject: The real subject\r\n\r\nBody.\r\n";
    let armored = s.user.encrypt_to(USER, entity);
    let message = text(&pgp_mime(SENDER, USER, "hidden@example.org", &armored))
        .replace("Subject: ...\r\n", "Subject: Encrypted Message\r\n");
    let (copy, _) = s.send(message.as_bytes()).await;
    let copy = text(&copy.data);
    assert!(copy.contains("Subject: The real subject\r\n"), "{copy}");
    assert!(!copy.contains("Encrypted Message"), "{copy}");
    assert_eq!(copy.matches("Subject:").count(), 1, "{copy}");
    s.gw.stop().await;
}

// ---------------------------------------------------------------------------------------
// What the log says

/// The `transaction` line of transaction `id`.
async fn transaction_line(id: &str) -> String {
    let id = format!("id={id}");
    log::wait_for(
        |l| l.contains(" transaction ") && l.contains(&id),
        Duration::from_secs(10),
    )
    .await
}

/// Guards the bug where the log said `action=decrypted` for mail that was not
/// decrypted (plain, signed only, or not opening), and the line that said so carried
/// no message id. The transaction line now says what was done per recipient.
#[tokio::test]
async fn policy_log_line_said_decrypted_for_mail_that_was_not() {
    let s = Setup::new().await;

    let plain =
        format!("From: {SENDER}\r\nTo: {USER}\r\nSubject: plain\r\n\r\nNothing secret.\r\n");
    let (_, id) = s.send(plain.as_bytes()).await;
    let line = transaction_line(&id).await;
    assert!(
        line.contains("> not decrypted (not encrypted) rule="),
        "{line}"
    );

    // Encrypted to someone else's key: it does not open.
    let other = GpgHome::new();
    other.make_key("Other <other@example.com>", "ed25519", "cv25519", "encr");
    let armored = other.encrypt_to(
        "other@example.com",
        b"Content-Type: text/plain\r\n\r\nx\r\n",
    );
    let (_, id) = s
        .send(&pgp_mime(SENDER, USER, "other@example.org", &armored))
        .await;
    let line = transaction_line(&id).await;
    assert!(line.contains("> not decrypted ("), "{line}");
    assert!(!line.contains("> decrypted"), "{line}");
    let why = log::wait_for(
        |l| l.contains("not decrypted: delivered as it arrived") && l.contains(&id),
        Duration::from_secs(10),
    )
    .await;
    assert!(why.contains("error="), "{why}");

    let armored = s
        .user
        .encrypt_to(USER, b"Content-Type: text/plain\r\n\r\nsecret\r\n");
    let (_, id) = s
        .send(&pgp_mime(SENDER, USER, "ok@example.org", &armored))
        .await;
    let line = transaction_line(&id).await;
    assert!(line.contains("> decrypted pgp key="), "{line}");
    let decrypted = log::wait_for(
        |l| l.contains(" decrypted ") && l.contains(&id),
        Duration::from_secs(10),
    )
    .await;
    assert!(decrypted.contains(&s.user_fpr), "{decrypted}");

    // Harvesting runs in the background, after the reply; its lines name the
    // transaction too.
    let key = s.alice.run(&["--export", SENDER], None);
    let mail = format!(
        "From: {SENDER}\r\nTo: {USER}\r\nSubject: my key\r\n{}\r\n\r\nMy key.\r\n",
        autocrypt_header(SENDER, &key)
    );
    let (_, id) = s.send(mail.as_bytes()).await;
    log::wait_for(
        // Alice's key here signs only: it is refused, and the line says so.
        |l| l.contains("sealgate::keys::harvest") && l.contains(&format!("id={id}")),
        Duration::from_secs(10),
    )
    .await;
    s.gw.stop().await;
}
