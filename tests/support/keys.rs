//! Keys and signed mail made at test time with the real tools: OpenPGP certs from
//! `gpg`, S/MIME certificates and signatures from `openssl`, and (because `openssl req`
//! cannot backdate a certificate) expired ones from rcgen, still signed with `openssl`.
//!
//! The one way to run such a tool is [`run_tool`] (or [`tool_output`] for its stderr);
//! the one GnuPG home is [`GpgHome`]. Nothing here keeps a process running: a
//! [`GpgHome`] stops gpg's agent when it is dropped, and every file lives in a temp dir.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use base64::Engine;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// Runs a tool to completion and returns its stdout; panics with its stderr on failure.
/// See [`tool_output`].
pub fn run_tool(command: &mut Command, stdin: Option<&[u8]>) -> Vec<u8> {
    tool_output(command, stdin).stdout
}

/// Runs a tool to completion, with `stdin` as its input (or no input at all), and
/// returns what it wrote; panics with its stderr unless it succeeded.
///
/// The input is fed from a thread of its own: with a large message, the tool fills
/// its stdout pipe before it has read all of its input, and writing it all first
/// would deadlock.
pub fn tool_output(command: &mut Command, stdin: Option<&[u8]>) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let feeder = stdin.map(|input| {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            use std::io::Write;
            // A tool that exits without reading it all closes the pipe: its exit
            // status, checked below, says whether that was a failure.
            let _ = pipe.write_all(&input);
        })
    });
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for {command:?}: {e}"));
    if let Some(feeder) = feeder {
        feeder.join().expect("stdin feeder thread");
    }
    assert!(
        output.status.success(),
        "{command:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `openssl ARGS` with no input; returns stdout, asserts success.
pub fn openssl(args: &[&str]) -> Vec<u8> {
    run_tool(Command::new("openssl").args(args), None)
}

/// A GnuPG home in a temp dir that lives as long as the value.
///
/// Every command runs as `gpg --homedir HOME --batch --yes --pinentry-mode loopback
/// --passphrase PASSPHRASE ...`: keys made here are protected by the passphrase (none
/// for [`GpgHome::new`]), and exports and decryption use it. Dropping the value stops
/// the daemons gpg started for this home, gpg-agent among them.
pub struct GpgHome {
    home: tempfile::TempDir,
    passphrase: String,
}

impl GpgHome {
    /// A home whose keys have no passphrase.
    pub fn new() -> GpgHome {
        GpgHome::with_passphrase("")
    }

    /// A home whose commands all run with `passphrase`.
    pub fn with_passphrase(passphrase: &str) -> GpgHome {
        GpgHome {
            home: tempfile::tempdir().expect("temp dir"),
            passphrase: passphrase.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        self.home.path()
    }

    /// `gpg` with this home and the options above, ready for more arguments.
    pub fn command(&self) -> Command {
        let mut command = Command::new("gpg");
        command.arg("--homedir").arg(self.home.path()).args([
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            &self.passphrase,
        ]);
        command
    }

    /// Runs `gpg ARGS` (see [`run_tool`]); returns stdout and asserts success.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        run_tool(self.command().args(args), stdin)
    }

    /// Runs `gpg ARGS` (see [`tool_output`]); returns stdout and stderr and asserts
    /// success.
    pub fn output(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        tool_output(self.command().args(args), stdin)
    }

    /// A key for `uid`: a primary of `primary_algo` that can sign and certify, and one
    /// subkey of `sub_algo` with `sub_usage` ("encr" or "sign"), neither expiring.
    /// Returns the primary and subkey fingerprints.
    pub fn make_key(
        &self,
        uid: &str,
        primary_algo: &str,
        sub_algo: &str,
        sub_usage: &str,
    ) -> (String, String) {
        self.run(
            &["--quick-gen-key", uid, primary_algo, "sign,cert", "never"],
            None,
        );
        let primary = self.fingerprints(uid)[0].clone();
        self.run(
            &["--quick-add-key", &primary, sub_algo, sub_usage, "never"],
            None,
        );
        let fingerprints = self.fingerprints(uid);
        assert_eq!(fingerprints.len(), 2, "{fingerprints:?}");
        (fingerprints[0].clone(), fingerprints[1].clone())
    }

    /// The fingerprints of the keys `--with-colons --list-keys KEY` lists, primary
    /// first then its subkeys, as gpg prints them (upper-case hex).
    pub fn fingerprints(&self, key: &str) -> Vec<String> {
        let listing = self.run(&["--with-colons", "--list-keys", key], None);
        String::from_utf8_lossy(&listing)
            .lines()
            .filter(|line| line.starts_with("fpr:"))
            .map(|line| line.split(':').nth(9).expect("fpr field 10").to_string())
            .collect()
    }

    /// `gpg --armor --export-secret-subkeys SUBKEY!`: the SCKM form of a key.
    pub fn sckm_export(&self, subkey: &str) -> Vec<u8> {
        self.run(
            &["--armor", "--export-secret-subkeys", &format!("{subkey}!")],
            None,
        )
    }

    /// Encrypts `plaintext` to `recipient`, armored, trusting its key as it is.
    pub fn encrypt_to(&self, recipient: &str, plaintext: &[u8]) -> Vec<u8> {
        self.run(
            &[
                "--armor",
                "--trust-model",
                "always",
                "--encrypt",
                "-r",
                recipient,
            ],
            Some(plaintext),
        )
    }

    /// Writes a file into the home and returns its path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.home.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "all"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// LF line ends to CRLF, as an MTA would send them; CRLF stays CRLF.
pub fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// `armored` (an armored PGP message, LF or CRLF) wrapped as PGP/MIME the way a mail
/// client sends it (CRLF): `From: from`, `To: to`, `Subject: ...` and the Message-ID.
pub fn pgp_mime(from: &str, to: &str, message_id: &str, armored: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: ...\r\nMessage-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --b1\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(&crlf(armored));
    out.extend_from_slice(b"\r\n--b1--\r\n");
    out
}

/// Upper-case hex.
pub fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// An OpenPGP cert made by `gpg --quick-gen-key ... default default never`: a signing
/// primary key and an encryption subkey.
#[derive(Debug, Clone)]
pub struct PgpKey {
    /// The user ID it was made with ("Bob <bob@example.org>").
    pub uid: String,
    /// The primary key's fingerprint, upper-case hex, as gpg prints it.
    pub fingerprint: String,
    /// `gpg --export` (binary).
    pub binary: Vec<u8>,
    /// `gpg --armor --export`.
    pub armored: String,
    /// `gpg --armor --export-secret-keys`: the same cert with its secret keys.
    pub secret_armored: String,
}

impl PgpKey {
    /// Makes a fresh cert for `uid` in a throwaway GnuPG home.
    pub fn generate(uid: &str) -> PgpKey {
        let gpg = GpgHome::new();
        gpg.run(
            &["--quick-gen-key", uid, "default", "default", "never"],
            None,
        );
        let binary = gpg.run(&["--export", uid], None);
        let armored = gpg.run(&["--armor", "--export", uid], None);
        let secret = gpg.run(&["--armor", "--export-secret-keys", uid], None);
        let fingerprint = gpg
            .fingerprints(uid)
            .first()
            .expect("gpg lists a fingerprint")
            .to_ascii_uppercase();
        // Key generation started an agent for this home; dropping it stops the agent.
        drop(gpg);
        assert!(!binary.is_empty(), "gpg exported nothing for {uid}");
        PgpKey {
            uid: uid.to_string(),
            fingerprint,
            binary,
            armored: String::from_utf8(armored).expect("armor is ASCII"),
            secret_armored: String::from_utf8(secret).expect("armor is ASCII"),
        }
    }

    /// The Autocrypt header field for this key (folded, CRLF, without a final CRLF).
    pub fn autocrypt_header(&self, addr: &str) -> String {
        autocrypt_header(addr, &self.binary)
    }
}

/// An `Autocrypt:` header field with `keydata` = base64 of `key`, folded into lines of
/// 76 characters (CRLF, without a final CRLF).
pub fn autocrypt_header(addr: &str, key: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(key);
    let mut header = format!("Autocrypt: addr={addr}; prefer-encrypt=mutual; keydata=");
    for chunk in encoded.as_bytes().chunks(76) {
        header.push_str("\r\n ");
        header.push_str(std::str::from_utf8(chunk).unwrap());
    }
    header
}

/// One cert per user ID, made once per test binary (gpg key generation takes a while).
pub fn pgp_key(uid: &'static str) -> PgpKey {
    static KEYS: OnceLock<std::sync::Mutex<Vec<PgpKey>>> = OnceLock::new();
    let keys = KEYS.get_or_init(Default::default);
    // Held while generating, so that two tests asking for one uid get one key.
    let mut keys = keys.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(key) = keys.iter().find(|k| k.uid == uid) {
        return key.clone();
    }
    let key = PgpKey::generate(uid);
    keys.push(key.clone());
    key
}

/// An X.509 certificate with its private key in a temp dir, ready for `openssl smime`.
pub struct SmimeCert {
    dir: tempfile::TempDir,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The certificate, PEM.
    pub pem: Vec<u8>,
}

impl SmimeCert {
    /// A self-signed RSA-2048 certificate and its unencrypted key from `openssl req`,
    /// valid for 30 days from now, for `email` (rfc822Name SAN and emailAddress), with
    /// the given keyUsage ("digitalSignature,keyEncipherment" for an encryption
    /// certificate). The tests' one way to make an S/MIME certificate with openssl.
    pub fn openssl(email: &str, key_usage: &str) -> SmimeCert {
        SmimeCert::openssl_req(email, key_usage, &["-newkey", "rsa:2048"])
    }

    /// The same with an EC key on `curve` ("P-256", "P-384") and keyUsage keyAgreement:
    /// an S/MIME encryption certificate for ECDH.
    pub fn openssl_ec(email: &str, curve: &str) -> SmimeCert {
        let curve = format!("ec_paramgen_curve:{curve}");
        SmimeCert::openssl_req(
            email,
            "digitalSignature,keyAgreement",
            &["-newkey", "ec", "-pkeyopt", &curve],
        )
    }

    /// `openssl req -x509 NEWKEY...` for `email` with `key_usage`, valid for 30 days.
    fn openssl_req(email: &str, key_usage: &str, newkey: &[&str]) -> SmimeCert {
        let dir = tempfile::tempdir().expect("temp dir");
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        run_tool(
            Command::new("openssl")
                .args(["req", "-x509"])
                .args(newkey)
                .args(["-nodes", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .args(["-days", "30", "-subj"])
                .arg(format!("/CN=Test User/emailAddress={email}"))
                .arg("-addext")
                .arg(format!("subjectAltName=email:{email}"))
                .arg("-addext")
                .arg(format!("keyUsage={key_usage}")),
            None,
        );
        SmimeCert::from_dir(dir)
    }

    /// A self-signed RSA certificate for `email` (rfc822Name SAN) with keyUsage
    /// digitalSignature and keyEncipherment, valid from `not_before` to `not_after`,
    /// made by rcgen: `openssl req` 3.0 cannot put a validity period in the past.
    pub fn rcgen(email: &str, not_before: OffsetDateTime, not_after: OffsetDateTime) -> SmimeCert {
        use rcgen::{CertificateParams, DnType, KeyPair, KeyUsagePurpose, SanType};
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("key.pem");
        // ring signs with RSA keys but cannot make them; openssl can.
        run_tool(
            Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                ])
                .arg(&key),
            None,
        );
        let key_pair =
            KeyPair::from_pem(&std::fs::read_to_string(&key).unwrap()).expect("rcgen reads it");
        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Test User");
        params.subject_alt_names = vec![SanType::Rfc822Name(
            email.try_into().expect("an IA5 address"),
        )];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params.self_signed(&key_pair).expect("rcgen signs");
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        SmimeCert::from_dir(dir)
    }

    fn from_dir(dir: tempfile::TempDir) -> SmimeCert {
        let pem = std::fs::read(dir.path().join("cert.pem")).unwrap();
        let der = run_tool(
            Command::new("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(dir.path().join("cert.pem")),
            None,
        );
        SmimeCert { dir, der, pem }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// Writes the certificate and its key into one PEM file, the way an admin hands an
    /// SCKM key to `keys import-sckm`, and returns its path.
    pub fn sckm_bundle(&self) -> PathBuf {
        let path = self.dir.path().join("bundle.pem");
        let mut bundle = self.pem.clone();
        bundle.extend(std::fs::read(self.key_path()).unwrap());
        std::fs::write(&path, bundle).unwrap();
        path
    }

    /// Writes the DER form next to the PEM and returns its path.
    pub fn der_path(&self) -> PathBuf {
        let path = self.dir.path().join("cert.der");
        std::fs::write(&path, &self.der).unwrap();
        path
    }

    /// Upper-case hex SHA-256 of the DER certificate: its fingerprint in the key cache.
    pub fn fingerprint(&self) -> String {
        hex_upper(&Sha256::digest(&self.der))
    }

    /// A whole signed message from `openssl smime -sign` (CRLF): `From: from`,
    /// `To: user@example.com`, a Message-ID, and `entity` (a MIME entity) as the signed
    /// content, in the given form.
    pub fn sign(&self, from: &str, message_id: &str, entity: &[u8], form: Form) -> Vec<u8> {
        let input = self.dir.path().join(format!("entity-{}.txt", unique()));
        std::fs::write(&input, entity).unwrap();
        let mut command = Command::new("openssl");
        command
            .args(["smime", "-sign", "-in"])
            .arg(&input)
            .arg("-signer")
            .arg(self.cert_path())
            .arg("-inkey")
            .arg(self.key_path())
            .args([
                "-from",
                from,
                "-to",
                "user@example.com",
                "-subject",
                "signed",
            ]);
        match form {
            Form::Detached => {}
            Form::Opaque => {
                command.arg("-nodetach");
            }
            Form::OpaqueBer => {
                command.args(["-nodetach", "-stream"]);
            }
        }
        let signed = run_tool(&mut command, None);
        let mut message = format!("Message-ID: <{message_id}>\r\n").into_bytes();
        message.extend_from_slice(&crlf(&signed));
        message
    }
}

impl SmimeCert {
    /// A whole multipart/signed message (CRLF), laid out as [`SmimeCert::sign`]'s
    /// detached form, whose signed sMIMECapabilities attribute lists `capabilities`:
    /// how a client that reads AES-GCM signs. `openssl cms -sign` writes a fixed list
    /// without AES-GCM, so the SignedData is built with the cms crate and signed with
    /// this certificate's RSA key (PKCS#1 v1.5, SHA-256); `openssl cms -verify` checks
    /// the message before it is returned.
    pub fn sign_with_capabilities(
        &self,
        from: &str,
        message_id: &str,
        entity: &[u8],
        capabilities: &[const_oid::ObjectIdentifier],
    ) -> Vec<u8> {
        use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
        use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
        use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
        use const_oid::db::rfc5911;
        use der::{Any, Decode, Encode};
        use rsa::pkcs8::DecodePrivateKey;
        use x509_cert::spki::AlgorithmIdentifierOwned;

        let cert = x509_cert::Certificate::from_der(&self.der).unwrap();
        let key_pem = std::fs::read_to_string(self.key_path()).unwrap();
        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(
            rsa::RsaPrivateKey::from_pkcs8_pem(&key_pem).expect("an RSA key"),
        );
        // Detached: the content is the MIME entity, outside the SignedData.
        let content = EncapsulatedContentInfo {
            econtent_type: rfc5911::ID_DATA,
            econtent: None,
        };
        let digest = Sha256::digest(entity);
        let sha256 = AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ID_SHA_256,
            parameters: None,
        };
        let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        });
        let mut signer_info =
            SignerInfoBuilder::new(&signer, sid, sha256.clone(), &content, Some(&digest)).unwrap();
        let listed: Vec<AlgorithmIdentifierOwned> = capabilities
            .iter()
            .map(|&oid| AlgorithmIdentifierOwned {
                oid,
                parameters: None,
            })
            .collect();
        signer_info
            .add_signed_attribute(x509_cert::attr::Attribute {
                oid: rfc5911::SMIME_CAPABILITIES,
                values: der::asn1::SetOfVec::try_from(vec![Any::encode_from(&listed).unwrap()])
                    .unwrap(),
            })
            .unwrap();
        let signature = SignedDataBuilder::new(&content)
            .add_digest_algorithm(sha256)
            .unwrap()
            .add_certificate(CertificateChoices::Certificate(cert))
            .unwrap()
            .add_signer_info::<_, rsa::pkcs1v15::Signature>(signer_info)
            .unwrap()
            .build()
            .unwrap()
            .to_der()
            .unwrap();

        let mut message = format!(
            "Message-ID: <{message_id}>\r\nFrom: {from}\r\nTo: user@example.com\r\n\
             Subject: signed\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n\
             \tmicalg=\"sha-256\"; boundary=\"----SIG\"\r\n\r\n\
             This is an S/MIME signed message\r\n\r\n------SIG\r\n"
        )
        .into_bytes();
        message.extend_from_slice(entity);
        message.extend_from_slice(
            b"\r\n------SIG\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
              Content-Transfer-Encoding: base64\r\n\
              Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n",
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(signature);
        for line in encoded.as_bytes().chunks(64) {
            message.extend_from_slice(line);
            message.extend_from_slice(b"\r\n");
        }
        message.extend_from_slice(b"\r\n------SIG--\r\n");

        // The other side's tool must accept it as a good signature over the entity.
        let file = self.dir.path().join(format!("signed-{}.eml", unique()));
        std::fs::write(&file, &message).unwrap();
        let verified = run_tool(
            Command::new("openssl")
                .args(["cms", "-verify", "-noverify", "-in"])
                .arg(&file),
            None,
        );
        assert_eq!(
            crlf(&verified),
            entity,
            "openssl verifies it over the entity"
        );
        message
    }
}

/// How `openssl smime -sign` packs a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// multipart/signed with an application/x-pkcs7-signature part.
    Detached,
    /// application/x-pkcs7-mime; smime-type=signed-data, DER (`-nodetach`).
    Opaque,
    /// The same in indefinite-length BER (`-nodetach -stream`), as mail clients send it.
    OpaqueBer,
}

/// A number no other call in this process gets.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The signed content the S/MIME tests use.
pub const ENTITY: &[u8] = b"Content-Type: text/plain\r\n\r\nhello\r\n";

/// A plain message (CRLF) with the given extra header fields (each without CRLF) and
/// body (CRLF), with `From: from`, `To: user@example.com` and a Message-ID.
pub fn plain_mail(from: &str, message_id: &str, headers: &[&str], body: &str) -> Vec<u8> {
    let mut message = format!(
        "From: {from}\r\nTo: user@example.com\r\nSubject: keys\r\nMessage-ID: <{message_id}>\r\n"
    );
    for header in headers {
        message.push_str(header);
        message.push_str("\r\n");
    }
    message.push_str("\r\n");
    message.push_str(body);
    crlf(message.as_bytes())
}
