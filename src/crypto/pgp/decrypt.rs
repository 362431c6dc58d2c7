//! Decryption with stored keys: at most [`MAX_PKESKS`] tries, a bounded plaintext, and
//! a failure sorted into whose fault it is (malformed message or no key of ours).
//!
//! Sequoia reads every container but two: the LibrePGP AEAD packet (tag 20), and
//! SEIPDv2 in EAX mode (which the OpenSSL backend lacks). [`super::aed`] opens those with
//! the session key our key recovers from the PKESK; what is inside goes back to sequoia. Either way the signatures inside are kept, not checked
//! ([`super::signatures`]).

use std::cell::Cell;
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};

use openpgp::crypto::{Decryptor, SessionKey};
use openpgp::packet::key::{SecretParts, UnspecifiedRole};
use openpgp::packet::{Key, PKESK, Packet, SEIP, SKESK, Tag};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationError,
    VerificationHelper,
};
use openpgp::parse::{PacketParser, PacketParserResult, Parse};
use openpgp::policy::Policy;
use openpgp::types::{AEADAlgorithm, SymmetricAlgorithm};
use openpgp::{Cert, KeyHandle};
use sequoia_openpgp as openpgp;

use super::aed::{Aed, Seipd2Header};
use super::dearmor::Armor;
use super::policy::{legacy_policy, purpose};
use super::signatures::{self, Signed};
use crate::crypto::{CryptoError, Decrypted, MAX_PLAINTEXT};

/// The most PKESK packets (one per recipient key) that [`decrypt`] tries. Each try may
/// cost a public-key operation per key, so a message listing thousands of recipients
/// must not cost thousands of them. A message whose PKESK for us comes later than this
/// is not opened (`NoKey`).
pub const MAX_PKESKS: usize = 64;

/// How much plaintext sequoia's decryptor holds back before handing data out. Its
/// default (25 MiB) exists to check signatures before releasing anything; we check no
/// signatures, and read to the end (where the MDC or AEAD tag is checked) before
/// returning anything, so a small buffer keeps memory down without weakening anything.
/// At 1 MiB, sequoia's readers held about 11 MiB besides a 25 MiB plaintext; at 64 KiB
/// (read in [`READ_SIZE`] steps), 1.4 MiB, and no slower.
const DECRYPT_BUFFER: usize = 64 * 1024;

/// A decrypted OpenPGP message and the signatures it carried.
#[derive(Debug)]
pub struct Opened {
    pub decrypted: Decrypted,
    /// The signatures inside, kept (never verified here) so that the recipient's client
    /// can verify them; `None` for a message that was not signed.
    pub signed: Option<Signed>,
}

/// The decryption keys of some TSKs, found and made ready once: the keys the legacy
/// policy accepts for encryption with unencrypted secrets, and for RSA the OpenSSL key
/// in CRT form. A gateway that keeps these per SCKM user does not parse, validate and
/// rebuild the key for every message (about 0.7 ms of an RSA-3072 decryption).
pub struct SecretKeys {
    keys: Vec<DecryptionKey>,
}

impl SecretKeys {
    /// The decryption keys in `tsks`; none is an error only when a message comes.
    pub fn new(tsks: &[Cert]) -> SecretKeys {
        SecretKeys {
            keys: decryption_keys(tsks, &legacy_policy()),
        }
    }
}

/// Decrypts an OpenPGP message (armored or binary) with the given TSKs, whose encryption
/// subkeys carry unencrypted secret material. Output over [`MAX_PLAINTEXT`] is
/// [`CryptoError::Malformed`]; see [`open_with_limit`]. The signatures inside are
/// dropped: see [`open`] to keep them.
pub fn decrypt(message: &[u8], keys: &[Cert]) -> Result<Decrypted, CryptoError> {
    open_with_limit(&[message], &SecretKeys::new(keys), MAX_PLAINTEXT)
        .map(|opened| opened.decrypted)
}

/// [`decrypt`], keeping the signatures, with keys made ready by [`SecretKeys::new`],
/// for a message in pieces (as it lies in the chunks of the mail it came in): the
/// pieces are read in order, never joined.
pub fn open(message: &[&[u8]], keys: &SecretKeys) -> Result<Opened, CryptoError> {
    open_with_limit(message, keys, MAX_PLAINTEXT)
}

/// [`open`] with the plaintext limit given (see [`decrypt_with_limit`]).
pub fn open_with_limit(
    message: &[&[u8]],
    keys: &SecretKeys,
    limit: usize,
) -> Result<Opened, CryptoError> {
    // This runs on whatever the internet sends, inside the SMTP session: a panic in
    // sequoia is one message that passes undecrypted, not a dead session. sequoia-openpgp
    // 2.4.2 has one that any sender can reach (found by fuzz/, the decrypt target): a
    // message that ends inside a SEIPDv1 packet less than the block size plus 24 bytes
    // in, once a key of ours has opened the session key (an unwrap at parse.rs:6367;
    // tests/fuzz_regressions.rs).
    catch_unwind(AssertUnwindSafe(|| open_inner(message, keys, limit))).unwrap_or_else(|_| {
        Err(CryptoError::Malformed(
            "the OpenPGP parser failed on this message".into(),
        ))
    })
}

/// [`decrypt`] with the plaintext limit given: more than `limit` bytes of output (a
/// compression bomb, say) is [`CryptoError::Malformed`], after reading at most
/// `limit + 1` bytes of it.
///
/// At most [`MAX_PKESKS`] PKESKs are looked at. Truncated, tampered or garbage input,
/// input that is not encrypted at all, and unsupported algorithms are `Malformed`; a
/// message none of `keys` can open (including one encrypted only to a password) is
/// [`CryptoError::NoKey`]. Signatures inside are neither verified nor required: the
/// recipient's client verifies them. `Decrypted::fingerprint` is the fingerprint of the
/// cert whose subkey opened the message.
pub fn decrypt_with_limit(
    message: &[u8],
    keys: &[Cert],
    limit: usize,
) -> Result<Decrypted, CryptoError> {
    open_with_limit(&[message], &SecretKeys::new(keys), limit).map(|opened| opened.decrypted)
}

/// How far the decryption helper got; read after a failure to tell whose fault it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No encryption container was reached (yet).
    NotReached,
    /// No key decrypted any PKESK we looked at.
    NoKey,
    /// One of our keys decrypted a session key, but it does not open the encrypted data:
    /// the container is truncated or corrupt.
    Broken,
    /// One of our keys decrypted a session key for a cipher we cannot run.
    Unsupported(SymmetricAlgorithm),
    /// A key opened it.
    Opened,
}

fn open_inner(message: &[&[u8]], keys: &SecretKeys, limit: usize) -> Result<Opened, CryptoError> {
    // Plain armor is decoded as it is read, by each pass below: the binary is never
    // held whole.
    let armor = match Armor::of(message) {
        Armor::Unsure => return open_inner(&[&message.concat()], keys, limit),
        armor => armor,
    };
    let policy = legacy_policy();
    let keys = &keys.keys;
    match container(armor.reader()) {
        Container::Aed { pkesks, body } => {
            open_aed(&pkesks, &Aed::parse(&body)?, keys, &policy, limit)
        }
        Container::Seipd2 {
            pkesks,
            header,
            body,
        } => open_aed(&pkesks, &Aed::seipd2(&header, &body)?, keys, &policy, limit),
        Container::Other { unsupported_aead } => {
            let stage = Cell::new(Stage::NotReached);
            let helper = Helper::new(keys, &stage);
            let read = read(armor.reader(), armor.binary_len(), helper, &policy, limit);
            let (plaintext, helper) = read.map_err(|e| match (e, unsupported_aead) {
                // SEIPDv2 in a mode this build cannot run (EAX, with the OpenSSL
                // backend): our key opened the session key, the container cannot be.
                (Failure::Setup(_), Some(aead)) if stage.get() == Stage::Broken => {
                    CryptoError::Malformed(format!("unsupported AEAD algorithm {aead} (SEIPDv2)"))
                }
                (Failure::Setup(e), _) => failure(stage.get(), e),
                (Failure::Read(e), _) => e,
            })?;
            // Signed-only or plain literal messages go through sequoia's decryptor without
            // ever asking for a key. They are not ours to "decrypt".
            match (stage.get(), helper.opened) {
                (Stage::Opened, Some(fingerprint)) => Ok(Opened {
                    signed: signatures::keep(helper.signatures, &plaintext)?,
                    decrypted: Decrypted {
                        plaintext,
                        fingerprint,
                    },
                }),
                _ => Err(CryptoError::Malformed(
                    "not an encrypted OpenPGP message".into(),
                )),
            }
        }
    }
}

/// The encryption container at the top of a message, as far as the choice of reader
/// goes.
enum Container {
    /// A LibrePGP AEAD packet, with the PKESKs before it.
    Aed { pkesks: Vec<PKESK>, body: Vec<u8> },
    /// A SEIPDv2 packet in EAX mode, which this build's sequoia cannot run: its header
    /// and its encrypted data, with the PKESKs before it.
    Seipd2 {
        pkesks: Vec<PKESK>,
        header: Seipd2Header,
        body: Vec<u8>,
    },
    /// Anything else: sequoia reads it (and finds whatever is wrong with it). For
    /// SEIPDv2, the AEAD algorithm when this build cannot run it.
    Other {
        unsupported_aead: Option<AEADAlgorithm>,
    },
}

/// Looks at the packets before the encrypted data, and at its header; reads no further
/// but for the two containers sequoia does not read. Whatever does not parse here is
/// left for sequoia to report.
fn container<'a>(message: impl Read + Send + Sync + 'a) -> Container {
    let other = Container::Other {
        unsupported_aead: None,
    };
    let Ok(mut ppr) = PacketParser::from_reader(message) else {
        return other;
    };
    let mut pkesks = Vec::new();
    while let PacketParserResult::Some(mut pp) = ppr {
        match &pp.packet {
            Packet::PKESK(pkesk) => pkesks.push(pkesk.clone()),
            Packet::SKESK(_) | Packet::Marker(_) => {}
            Packet::Unknown(unknown) if unknown.tag() == Tag::AED => {
                return match pp.buffer_unread_content() {
                    Ok(body) => Container::Aed {
                        pkesks,
                        body: body.to_vec(),
                    },
                    Err(_) => other,
                };
            }
            // EAX, with the OpenSSL backend: the framing is ours, as for AED.
            Packet::SEIP(SEIP::V2(seip))
                if !seip.aead().is_supported() && seip.aead() == AEADAlgorithm::EAX =>
            {
                let header = Seipd2Header {
                    cipher: seip.symmetric_algo(),
                    mode: u8::from(seip.aead()),
                    chunk_size: seip.chunk_size(),
                    salt: *seip.salt(),
                };
                return match pp.buffer_unread_content() {
                    Ok(body) => Container::Seipd2 {
                        pkesks,
                        header,
                        body: body.to_vec(),
                    },
                    Err(_) => other,
                };
            }
            Packet::SEIP(SEIP::V2(seip)) if !seip.aead().is_supported() => {
                return Container::Other {
                    unsupported_aead: Some(seip.aead()),
                };
            }
            _ => return other,
        }
        ppr = match pp.next() {
            Ok((_, next)) => next,
            Err(_) => return other,
        };
    }
    other
}

/// Opens a LibrePGP AEAD packet or an EAX SEIPDv2 packet: the session key from the
/// first PKESK one of our keys opens, then the chunks, then the packets inside through
/// sequoia.
fn open_aed(
    pkesks: &[PKESK],
    aed: &Aed,
    keys: &[DecryptionKey],
    policy: &dyn Policy,
    limit: usize,
) -> Result<Opened, CryptoError> {
    let mut session_key = None;
    let stage = session_keys(pkesks, keys, None, &mut |algo, key, candidate| {
        // A v3 PKESK names the cipher; it must be the packet's.
        if algo.is_some_and(|algo| algo != aed.cipher) {
            return false;
        }
        session_key = Some((key.clone(), candidate.cert.fingerprint().to_hex()));
        true
    });
    let Some((key, fingerprint)) = session_key else {
        return Err(match stage {
            Stage::NoKey => CryptoError::NoKey,
            _ => CryptoError::Malformed(format!(
                "AEAD packet: the session key is not for its cipher {}",
                aed.cipher
            )),
        });
    };
    // The inner packets can be no more than the plaintext (plus a little framing;
    // compression can only make more, and that is bounded below).
    let inner = aed.decrypt(&key, limit.saturating_add(64 * 1024))?;
    // Nothing inside is encrypted again: the helper gets no keys.
    let stage = Cell::new(Stage::NotReached);
    let (plaintext, helper) = read(
        &inner[..],
        inner.len(),
        Helper::new(&[], &stage),
        policy,
        limit,
    )
    .map_err(|e| match e {
        Failure::Setup(e) => CryptoError::Malformed(format!(
            "the packets inside the AEAD packet do not form a message: {e:#}"
        )),
        Failure::Read(e) => e,
    })?;
    Ok(Opened {
        signed: signatures::keep(helper.signatures, &plaintext)?,
        decrypted: Decrypted {
            plaintext,
            fingerprint,
        },
    })
}

/// How [`read`] failed.
enum Failure {
    /// Before any data: sequoia's setup (which is where the session key is tried).
    Setup(anyhow::Error),
    /// While reading the data, or it was too much.
    Read(CryptoError),
}

/// Reads `message` through sequoia's streaming decryptor: the plaintext, at most
/// `limit` bytes of it, and the helper as the decryptor left it. `size` is about how
/// large the message is: the plaintext is rarely larger (only when compressed).
fn read<'a, 'm>(
    message: impl Read + Send + Sync + 'm,
    size: usize,
    helper: Helper<'a>,
    policy: &dyn Policy,
    limit: usize,
) -> Result<(Vec<u8>, Helper<'a>), Failure> {
    let builder = DecryptorBuilder::from_reader(message).map_err(Failure::Setup)?;
    let mut decryptor = builder
        .buffer_size(DECRYPT_BUFFER)
        .with_policy(policy, None, helper)
        .map_err(Failure::Setup)?;
    // Room for all of it at once: grown by doubling, it would be reallocated (and
    // copied) a dozen times, and end with up to twice its size allocated.
    let mut plaintext = Vec::with_capacity(size.min(limit.saturating_add(1)));
    if let Err(e) = read_bounded(&mut decryptor, &mut plaintext, limit.saturating_add(1)) {
        return Err(Failure::Read(CryptoError::Malformed(format!(
            "the encrypted data is corrupt or truncated: {e}"
        ))));
    }
    if plaintext.len() > limit {
        return Err(Failure::Read(CryptoError::Malformed(format!(
            "the plaintext is over the {limit}-byte limit (compression bomb?)"
        ))));
    }
    Ok((plaintext, decryptor.into_helper()))
}

/// How much is asked of the decryptor at a time. `read_to_end` asks for all the room
/// the plaintext has left (megabytes, once it is reserved), and sequoia's readers then
/// buffer about that much: with [`DECRYPT_BUFFER`] at 64 KiB, a 25 MiB plaintext cost
/// 98 MiB more than itself that way, and 1.4 MiB read in these steps.
const READ_SIZE: usize = 64 * 1024;

/// Reads `reader` to its end into `out`, or until `out` holds `max` bytes, asking for at
/// most [`READ_SIZE`] bytes at a time.
fn read_bounded(reader: &mut impl Read, out: &mut Vec<u8>, max: usize) -> std::io::Result<()> {
    loop {
        let len = out.len();
        if len >= max {
            return Ok(());
        }
        // Zeroed, then written over: the pages are touched once either way.
        out.resize(len + READ_SIZE.min(max - len), 0);
        match reader.read(&mut out[len..]) {
            Ok(0) => {
                out.truncate(len);
                return Ok(());
            }
            Ok(n) => out.truncate(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => out.truncate(len),
            Err(e) => {
                out.truncate(len);
                return Err(e);
            }
        }
    }
}

fn malformed(e: anyhow::Error) -> CryptoError {
    CryptoError::Malformed(format!("{e:#}"))
}

fn failure(stage: Stage, e: anyhow::Error) -> CryptoError {
    match stage {
        Stage::NoKey => CryptoError::NoKey,
        Stage::Broken => CryptoError::Malformed(format!(
            "the session key does not open the encrypted data (corrupt or truncated): {e:#}"
        )),
        Stage::Unsupported(algo) => {
            CryptoError::Malformed(format!("unsupported symmetric algorithm {algo}"))
        }
        Stage::NotReached | Stage::Opened => malformed(e),
    }
}

/// An encryption-capable key with unencrypted secret material, and the cert it is in.
struct DecryptionKey {
    cert: Cert,
    key: Key<SecretParts, UnspecifiedRole>,
    /// For RSA and Curve25519, the key as OpenSSL takes it, made once.
    #[cfg(feature = "crypto-openssl")]
    openssl: Option<OpensslKey>,
}

/// A decryption key set up in OpenSSL once, where sequoia's backend would set it up
/// for every PKESK ([`super::rsa`], [`super::cv25519`]).
#[cfg(feature = "crypto-openssl")]
#[derive(Clone)]
enum OpensslKey {
    Rsa(super::rsa::CrtRsa),
    Cv25519(super::cv25519::Cv25519),
}

#[cfg(feature = "crypto-openssl")]
impl OpensslKey {
    fn new(key: &Key<SecretParts, UnspecifiedRole>) -> Option<OpensslKey> {
        super::rsa::CrtRsa::new(key)
            .map(OpensslKey::Rsa)
            .or_else(|| super::cv25519::Cv25519::new(key).map(OpensslKey::Cv25519))
    }

    /// A decryptor of its own (decrypting takes `&mut`); it shares OpenSSL's key.
    fn decryptor(&self) -> Box<dyn Decryptor> {
        match self.clone() {
            OpensslKey::Rsa(key) => Box::new(key),
            OpensslKey::Cv25519(key) => Box::new(key),
        }
    }
}

/// Every decryption key in `certs`. Expired and revoked keys stay in: an SCKM key that
/// was reset or has run out must still open the mail sent to it before.
fn decryption_keys(certs: &[Cert], policy: &dyn Policy) -> Vec<DecryptionKey> {
    let mut keys = Vec::new();
    for cert in certs {
        for ka in cert
            .keys()
            .with_policy(policy, None)
            .unencrypted_secret()
            .filter(|ka| purpose(ka.key().parts_as_public(), ka.key_flags()).encrypt)
        {
            keys.push(DecryptionKey {
                cert: cert.clone(),
                key: ka.key().clone(),
                #[cfg(feature = "crypto-openssl")]
                openssl: OpensslKey::new(ka.key()),
            });
        }
    }
    keys
}

/// Tries the first [`MAX_PKESKS`] PKESKs with our keys, and hands each session key one
/// opens to `accept` (with the cipher the PKESK names, if it does) until it takes one.
/// The stage it ends in: `Opened`, or why nothing was.
fn session_keys(
    pkesks: &[PKESK],
    keys: &[DecryptionKey],
    sym_algo: Option<SymmetricAlgorithm>,
    accept: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey, &DecryptionKey) -> bool,
) -> Stage {
    let mut failed = Stage::NoKey;
    for pkesk in pkesks.iter().take(MAX_PKESKS) {
        let recipient = pkesk.recipient();
        // A PKESK without a recipient (a hidden recipient, key ID 0) may be for any of
        // our keys.
        let candidates = keys.iter().filter(|k| match &recipient {
            Some(handle) => handle.aliases(k.key.key_handle()),
            None => true,
        });
        for candidate in candidates {
            let Some(mut decryptor) = decryptor(candidate) else {
                continue;
            };
            if let Some((algo, session_key)) = pkesk.decrypt(&mut *decryptor, sym_algo) {
                if accept(algo, &session_key, candidate) {
                    return Stage::Opened;
                }
                failed = match algo {
                    Some(algo) if !algo.is_supported() => Stage::Unsupported(algo),
                    _ => Stage::Broken,
                };
            }
        }
    }
    failed
}

/// What decrypts a PKESK with `key`: for RSA and Curve25519, OpenSSL with the key set
/// up once ([`super::rsa`], [`super::cv25519`]), else sequoia's keypair.
fn decryptor(key: &DecryptionKey) -> Option<Box<dyn Decryptor>> {
    #[cfg(feature = "crypto-openssl")]
    if let Some(key) = &key.openssl {
        return Some(key.decryptor());
    }
    Some(Box::new(key.key.clone().into_keypair().ok()?))
}

/// Sequoia's streaming decryptor calls this once per encryption layer, and once the
/// message is read, with its structure.
struct Helper<'a> {
    keys: &'a [DecryptionKey],
    stage: &'a Cell<Stage>,
    /// The fingerprint of the cert that opened the message.
    opened: Option<String>,
    /// The signature packets of the message, as they came.
    signatures: Vec<Packet>,
}

impl<'a> Helper<'a> {
    fn new(keys: &'a [DecryptionKey], stage: &'a Cell<Stage>) -> Helper<'a> {
        Helper {
            keys,
            stage,
            opened: None,
            signatures: Vec::new(),
        }
    }
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        // We decrypt; the recipient's client verifies the signatures. With no certs
        // given, each result is "missing key", and carries the signature to keep.
        for layer in structure {
            let MessageLayer::SignatureGroup { results } = layer else {
                continue;
            };
            for result in results {
                let packet = match result {
                    Ok(good) => Packet::Signature(good.sig.clone()),
                    Err(VerificationError::MissingKey { sig })
                    | Err(VerificationError::UnboundKey { sig, .. })
                    | Err(VerificationError::BadKey { sig, .. })
                    | Err(VerificationError::BadSignature { sig, .. })
                    | Err(VerificationError::MalformedSignature { sig, .. }) => {
                        Packet::Signature(sig.clone())
                    }
                    Err(VerificationError::UnknownSignature { sig }) => {
                        Packet::Unknown(sig.clone())
                    }
                    // The enum is non-exhaustive; a kind sequoia adds later is kept
                    // by nobody, and so said nowhere: better to notice in a test.
                    Err(_) => continue,
                };
                self.signatures.push(packet);
            }
        }
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        let mut opened = None;
        let stage = session_keys(pkesks, self.keys, sym_algo, &mut |algo, key, candidate| {
            let ok = decrypt(algo, key);
            if ok {
                opened = Some(candidate.cert.clone());
            }
            ok
        });
        self.stage.set(stage);
        match opened {
            Some(cert) => {
                self.opened = Some(cert.fingerprint().to_hex());
                Ok(Some(cert))
            }
            None => Err(anyhow::anyhow!("none of the keys opens this message")),
        }
    }
}
