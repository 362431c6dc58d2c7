//! OpenPGP with sequoia-openpgp: encrypt a MIME entity to recipients' certs, decrypt one
//! with SCKM keys, and check and unlock an SCKM key file at import.
//!
//! Pure functions, bytes in and bytes out. Nothing here signs: the gateway holds no
//! signing secret (SCKM), and [`import_sckm`] refuses any file that would give it one.
//!
//! Two policies are at work, and the difference matters:
//! - encryption, and SCKM import in the first place, use sequoia's `StandardPolicy`
//!   unchanged, so a weak or legacy key is never encrypted to;
//! - decryption and legacy SCKM keys use [`legacy_policy`], which also accepts SHA-1
//!   self-signatures, 1024-bit keys and the old ciphers (IDEA, 3DES, CAST5). Reading
//!   mail that was already sent with them weakens nothing, and those keys are our own,
//!   escrowed ones. Messages without integrity protection (SED packets) stay refused.

use std::cell::Cell;
use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::SystemTime;

use openpgp::cert::CertParser;
use openpgp::crypto::{Password, S2K, SessionKey};
use openpgp::packet::key::{PublicParts, SecretKeyMaterial, SecretParts, UnspecifiedRole};
use openpgp::packet::{Key, PKESK, Packet, SKESK};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper,
};
use openpgp::policy::{AsymmetricAlgorithm, Policy, StandardPolicy};
use openpgp::serialize::SerializeInto;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Recipient};
use openpgp::types::{HashAlgorithm, KeyFlags, RevocationStatus, SymmetricAlgorithm};
use openpgp::{Cert, KeyHandle};
use sequoia_openpgp as openpgp;
use time::OffsetDateTime;

use super::{CryptoError, Decrypted, MAX_PLAINTEXT};
use crate::keys::address;
use crate::keys::material::{MAX_CERTS, MAX_KEY_BYTES, Refusal};

/// The most PKESK packets (one per recipient key) that [`decrypt`] tries. Each try may
/// cost a public-key operation per key, so a message listing thousands of recipients
/// must not cost thousands of them. A message whose PKESK for us comes later than this
/// is not opened (`NoKey`).
pub const MAX_PKESKS: usize = 64;

/// How much plaintext sequoia's decryptor holds back before handing data out. Its
/// default (25 MiB) exists to check signatures before releasing anything; we check no
/// signatures, and read to the end (where the MDC or AEAD tag is checked) before
/// returning anything, so a small buffer keeps memory down without weakening anything.
const DECRYPT_BUFFER: usize = 1024 * 1024;

/// The policy for reading mail and for our own legacy keys: sequoia's standard policy,
/// plus SHA-1 signatures, 1024-bit RSA/DSA/ElGamal keys, and IDEA, 3DES and CAST5.
/// Never used to choose keys to encrypt to.
pub fn legacy_policy() -> StandardPolicy<'static> {
    let mut policy = StandardPolicy::new();
    policy.accept_hash(HashAlgorithm::SHA1);
    for algo in [
        AsymmetricAlgorithm::RSA1024,
        AsymmetricAlgorithm::DSA1024,
        AsymmetricAlgorithm::ElGamal1024,
    ] {
        policy.accept_asymmetric_algo(algo);
    }
    // Deprecated for writing, which we never do with them; mail sent with them is read.
    #[allow(deprecated)]
    for algo in [
        SymmetricAlgorithm::IDEA,
        SymmetricAlgorithm::TripleDES,
        SymmetricAlgorithm::CAST5,
    ] {
        policy.accept_symmetric_algo(algo);
    }
    policy
}

// ---------------------------------------------------------------------------------------
// Encryption

/// Encrypts `plaintext` (a complete MIME entity) to every recipient cert at once, to each
/// cert's valid, alive, non-revoked encryption-capable subkeys (transport and storage).
/// Never signs. SEIPDv1 unless every recipient cert advertises SEIPDv2 support in its
/// features, then SEIPDv2 (sequoia's `Encryptor` makes exactly that choice). Returns an
/// ASCII-armored `-----BEGIN PGP MESSAGE-----` block with CRLF line endings.
///
/// A cert that is revoked, expired, invalid under the standard policy (legacy SHA-1
/// keys included) or without a usable encryption subkey is a [`CryptoError::Key`]:
/// encrypting to the others only would silently leave a recipient out.
pub fn encrypt(plaintext: &[u8], recipients: &[Cert]) -> Result<Vec<u8>, CryptoError> {
    if recipients.is_empty() {
        return Err(CryptoError::Key("no recipient keys".into()));
    }
    let policy = StandardPolicy::new();
    let now = SystemTime::now();
    let mut keys: Vec<Recipient> = Vec::new();
    for cert in recipients {
        let fingerprint = cert.fingerprint().to_hex();
        let valid = cert
            .with_policy(&policy, now)
            .map_err(|e| CryptoError::Key(format!("key {fingerprint}: {e}")))?;
        if let RevocationStatus::Revoked(_) = valid.revocation_status() {
            return Err(CryptoError::Key(format!("key {fingerprint} is revoked")));
        }
        if valid.alive().is_err() {
            return Err(CryptoError::Key(format!("key {fingerprint} has expired")));
        }
        let before = keys.len();
        keys.extend(
            valid
                .keys()
                .supported()
                .alive()
                .revoked(false)
                .for_transport_encryption()
                .for_storage_encryption()
                .map(Recipient::from),
        );
        if keys.len() == before {
            return Err(CryptoError::Key(format!(
                "key {fingerprint} has no valid encryption-capable subkey"
            )));
        }
    }

    let mut binary = Vec::with_capacity(plaintext.len() + 1024);
    let message = Message::new(&mut binary);
    let message = Encryptor::for_recipients(message, keys)
        .build()
        .map_err(internal)?;
    let mut literal = LiteralWriter::new(message).build().map_err(internal)?;
    literal.write_all(plaintext).map_err(internal_io)?;
    literal.finalize().map_err(internal)?;
    Ok(armor_message(&binary))
}

/// ASCII armor (RFC 9580 §6.2) with the CRLF line ends mail needs, in one base64 pass.
/// Sequoia's armor writer ends lines with LF, and running it and then converting line
/// ends cost more than the encryption itself (see benches/crypto.rs). The CRC24 footer
/// is written although RFC 9580 no longer asks for it: without it, GnuPG 2.2 reads the
/// END line as more base64 when the last data line is a full one.
fn armor_message(binary: &[u8]) -> Vec<u8> {
    use base64::Engine;
    const LINE: usize = 64;
    const CRC24: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_24_OPENPGP);
    let engine = &base64::engine::general_purpose::STANDARD;
    let encoded = engine.encode(binary);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / LINE * 2 + 80);
    out.extend_from_slice(b"-----BEGIN PGP MESSAGE-----\r\n\r\n");
    for line in encoded.as_bytes().chunks(LINE) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    let checksum = CRC24.checksum(binary).to_be_bytes();
    out.push(b'=');
    out.extend_from_slice(engine.encode(&checksum[1..]).as_bytes());
    out.extend_from_slice(b"\r\n-----END PGP MESSAGE-----\r\n");
    out
}

fn internal(e: anyhow::Error) -> CryptoError {
    CryptoError::Internal(format!("{e:#}"))
}

fn internal_io(e: std::io::Error) -> CryptoError {
    CryptoError::Internal(e.to_string())
}

// ---------------------------------------------------------------------------------------
// Decryption

/// Decrypts an OpenPGP message (armored or binary) with the given TSKs, whose encryption
/// subkeys carry unencrypted secret material. Output over [`MAX_PLAINTEXT`] is
/// [`CryptoError::Malformed`]; see [`decrypt_with_limit`].
pub fn decrypt(message: &[u8], keys: &[Cert]) -> Result<Decrypted, CryptoError> {
    decrypt_with_limit(message, keys, MAX_PLAINTEXT)
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
    // Sequoia does not panic on input as far as anyone knows, but this runs on whatever
    // the internet sends, inside the SMTP session: if it ever does, that is one message
    // that passes undecrypted, not a dead session.
    catch_unwind(AssertUnwindSafe(|| decrypt_inner(message, keys, limit))).unwrap_or_else(|_| {
        Err(CryptoError::Malformed(
            "the OpenPGP parser failed on this message".into(),
        ))
    })
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

fn decrypt_inner(message: &[u8], keys: &[Cert], limit: usize) -> Result<Decrypted, CryptoError> {
    let policy = legacy_policy();
    let stage = Cell::new(Stage::NotReached);
    let helper = Helper {
        keys: decryption_keys(keys, &policy),
        stage: &stage,
        opened: None,
    };
    let builder = DecryptorBuilder::from_bytes(message).map_err(malformed)?;
    let mut decryptor = builder
        .buffer_size(DECRYPT_BUFFER)
        .with_policy(&policy, None, helper)
        .map_err(|e| failure(stage.get(), e))?;

    let mut plaintext = Vec::new();
    let read = (&mut decryptor)
        .take((limit as u64).saturating_add(1))
        .read_to_end(&mut plaintext);
    if let Err(e) = read {
        return Err(CryptoError::Malformed(format!(
            "the encrypted data is corrupt or truncated: {e}"
        )));
    }
    if plaintext.len() > limit {
        return Err(CryptoError::Malformed(format!(
            "the plaintext is over the {limit}-byte limit (compression bomb?)"
        )));
    }
    // Signed-only or plain literal messages go through sequoia's decryptor without ever
    // asking for a key. They are not ours to "decrypt".
    match (stage.get(), decryptor.helper_ref().opened.clone()) {
        (Stage::Opened, Some(fingerprint)) => Ok(Decrypted {
            plaintext,
            fingerprint,
        }),
        _ => Err(CryptoError::Malformed(
            "not an encrypted OpenPGP message".into(),
        )),
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
            });
        }
    }
    keys
}

/// Sequoia's streaming decryptor calls this once per encryption layer.
struct Helper<'a> {
    keys: Vec<DecryptionKey>,
    stage: &'a Cell<Stage>,
    /// The fingerprint of the cert that opened the message.
    opened: Option<String>,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }

    fn check(&mut self, _structure: MessageStructure) -> openpgp::Result<()> {
        // We decrypt; the recipient's client verifies whatever signatures are inside.
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
        let mut failed = Stage::NoKey;
        for pkesk in pkesks.iter().take(MAX_PKESKS) {
            let recipient = pkesk.recipient();
            // A PKESK without a recipient (a hidden recipient, key ID 0) may be for any
            // of our keys.
            let candidates = self.keys.iter().filter(|k| match &recipient {
                Some(handle) => handle.aliases(k.key.key_handle()),
                None => true,
            });
            for candidate in candidates {
                let Ok(mut keypair) = candidate.key.clone().into_keypair() else {
                    continue;
                };
                if let Some((algo, session_key)) = pkesk.decrypt(&mut keypair, sym_algo) {
                    if decrypt(algo, &session_key) {
                        self.stage.set(Stage::Opened);
                        self.opened = Some(candidate.cert.fingerprint().to_hex());
                        return Ok(Some(candidate.cert.clone()));
                    }
                    failed = match algo {
                        Some(algo) if !algo.is_supported() => Stage::Unsupported(algo),
                        _ => Stage::Broken,
                    };
                }
            }
        }
        self.stage.set(failed);
        Err(anyhow::anyhow!("none of the keys opens this message"))
    }
}

/// What a key may be used for: its key flags, or, for old keys without that
/// subpacket, whatever its algorithm can do (RFC 4880 §5.2.3.21).
struct Purpose {
    encrypt: bool,
    /// Sign, certify or authenticate: anything a gateway must never be able to do.
    sign: bool,
}

fn purpose(key: &Key<PublicParts, UnspecifiedRole>, flags: Option<KeyFlags>) -> Purpose {
    match flags {
        Some(flags) => Purpose {
            encrypt: flags.for_transport_encryption() || flags.for_storage_encryption(),
            sign: flags.for_signing() || flags.for_certification() || flags.for_authentication(),
        },
        None => Purpose {
            encrypt: key.pk_algo().for_encryption(),
            sign: key.pk_algo().for_signing(),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Stored keys

/// Reads TSKs back (binary or armored), as [`serialize_tsk`] wrote them, for decryption.
/// This is our own stored material, so it is not size-bounded.
pub fn parse_tsks(bytes: &[u8]) -> Result<Vec<Cert>, CryptoError> {
    let parser = CertParser::from_bytes(bytes)
        .map_err(|e| CryptoError::Key(format!("not an OpenPGP key: {e}")))?;
    let certs = parser
        .collect::<openpgp::Result<Vec<Cert>>>()
        .map_err(|e| CryptoError::Key(format!("malformed OpenPGP key: {e}")))?;
    if certs.is_empty() {
        return Err(CryptoError::Key("no OpenPGP key in it".into()));
    }
    Ok(certs)
}

/// The binary cert including its secret key material, to be sealed at rest.
pub fn serialize_tsk(cert: &Cert) -> Vec<u8> {
    // Serializing into memory fails only on packets sequoia cannot write, and
    // import_sckm() refuses a key whose serialization fails. Should it happen anyway,
    // the empty result fails loudly in parse_tsks() rather than panicking here.
    cert.as_tsk().to_vec().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// SCKM import

/// An OpenPGP SCKM key ready to store: the cert with secret material only on
/// encryption-capable subkeys, that material unencrypted (the caller seals it at rest).
#[derive(Debug, Clone)]
pub struct SckmKey {
    /// The cert; its only secrets are the unlocked encryption subkeys.
    pub cert: Cert,
    /// Primary fingerprint, upper hex.
    pub fingerprint: String,
    /// The e-mail addresses of its valid user IDs, normalized, sorted, without duplicates.
    pub addresses: Vec<String>,
    /// Valid only under [`legacy_policy`] (SHA-1 self-signatures, 1024-bit keys): for
    /// decryption only, never to encrypt to.
    pub legacy: bool,
    /// Things the admin should know at import (legacy, expired, revoked).
    pub warnings: Vec<String>,
    /// Creation time of the primary key.
    pub key_created: OffsetDateTime,
    /// When the primary key expires, if it does.
    pub key_expires: Option<OffsetDateTime>,
}

/// Parses an SCKM import file (armored or binary; may hold several TSKs), and refuses
/// the whole file, naming the key and the reason, if any key in it:
/// - holds the secret of its primary key (a primary key can always certify and sign; a
///   GnuPG stub, S2K 101 as `gpg --export-secret-subkeys ENCSUBKEY!` writes, holds no
///   secret and is fine);
/// - holds a secret on a subkey that can sign, certify or authenticate, or on one that
///   is not an encryption subkey;
/// - holds no secret encryption subkey;
/// - has passphrase-protected secrets and `passphrase` is `None`, or the passphrase
///   does not unlock them.
///
/// With a passphrase, the encryption subkeys' secrets are unlocked in the returned cert.
/// Keys valid only under [`legacy_policy`] (PGP Desktop 9/10, GnuPG 1.4) are accepted
/// with `legacy = true` and a warning. Expired and revoked keys are accepted with a
/// warning: they still open old mail.
pub fn import_sckm(
    bytes: &[u8],
    passphrase: Option<&str>,
    now: OffsetDateTime,
) -> Result<Vec<SckmKey>, Refusal> {
    if bytes.len() > MAX_KEY_BYTES {
        return Err(Refusal(format!(
            "key file of {} bytes is over the {MAX_KEY_BYTES}-byte limit",
            bytes.len()
        )));
    }
    let parser = CertParser::from_bytes(bytes)
        .map_err(|e| Refusal(format!("not an OpenPGP key file: {e}")))?;
    let mut certs = Vec::new();
    for cert in parser {
        if certs.len() == MAX_CERTS {
            return Err(Refusal(format!(
                "more than {MAX_CERTS} keys in one file; import them in smaller files"
            )));
        }
        certs.push(cert.map_err(|e| Refusal(format!("malformed OpenPGP key: {e}")))?);
    }
    if certs.is_empty() {
        return Err(Refusal("no OpenPGP key in the file".into()));
    }
    let now = SystemTime::from(now);
    certs
        .into_iter()
        .map(|cert| import_one(cert, passphrase, now))
        .collect()
}

/// Where a key's secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secret {
    /// Public key only.
    Absent,
    /// A GnuPG stub (S2K 101: gnu-dummy or divert-to-card): no secret in the file.
    Stub,
    /// A secret, unencrypted.
    Clear,
    /// A secret under a passphrase.
    Protected,
}

fn secret_of<P: openpgp::packet::key::KeyParts, R: openpgp::packet::key::KeyRole>(
    key: &Key<P, R>,
) -> Secret {
    match key.optional_secret() {
        None => Secret::Absent,
        Some(SecretKeyMaterial::Unencrypted(_)) => Secret::Clear,
        Some(SecretKeyMaterial::Encrypted(e)) => match e.s2k() {
            S2K::Private { tag: 101, .. } => Secret::Stub,
            _ => Secret::Protected,
        },
    }
}

fn import_one(cert: Cert, passphrase: Option<&str>, now: SystemTime) -> Result<SckmKey, Refusal> {
    let fpr = cert.fingerprint().to_hex();
    if matches!(
        secret_of(cert.primary_key().key()),
        Secret::Clear | Secret::Protected
    ) {
        return Err(Refusal(format!(
            "key {fpr}: the file holds the secret of the primary key, which can certify and \
             sign; SCKM keeps signing keys with the user. Export only the encryption \
             subkey: gpg --export-secret-subkeys ENCSUBKEYID!"
        )));
    }
    let secret_subkeys: Vec<_> = cert
        .keys()
        .subkeys()
        .filter(|ka| matches!(secret_of(ka.key()), Secret::Clear | Secret::Protected))
        .map(|ka| ka.key().fingerprint())
        .collect();
    if secret_subkeys.is_empty() {
        return Err(Refusal(format!(
            "key {fpr} holds no secret encryption subkey; export it with \
             gpg --export-secret-subkeys ENCSUBKEYID!"
        )));
    }

    // Standard first; the legacy policy only when the standard one will not do.
    let standard = StandardPolicy::new();
    let legacy_policy = legacy_policy();
    let (policy, legacy): (&dyn Policy, bool) =
        match check_validity(&cert, &secret_subkeys, &standard, now) {
            Ok(()) => (&standard, false),
            Err(standard_reason) => {
                match check_validity(&cert, &secret_subkeys, &legacy_policy, now) {
                    Ok(()) => (&legacy_policy, true),
                    Err(_) => return Err(Refusal(format!("key {fpr}: {standard_reason}"))),
                }
            }
        };
    let valid = cert
        .with_policy(policy, now)
        .map_err(|e| Refusal(format!("key {fpr}: {e}")))?;

    // First what the secrets are for, so that a signing secret is named as such even
    // when the file's secrets are also locked.
    let mut secret_keys = Vec::new();
    for ka in valid.keys().subkeys() {
        let secret = secret_of(ka.key());
        if !matches!(secret, Secret::Clear | Secret::Protected) {
            continue;
        }
        let sub = ka.key().fingerprint().to_hex();
        let purpose = purpose(
            ka.key().parts_as_public().role_as_unspecified(),
            ka.key_flags(),
        );
        if purpose.sign {
            return Err(Refusal(format!(
                "key {fpr}: the file holds the secret of subkey {sub}, which can sign, \
                 certify or authenticate; SCKM keeps signing keys with the user"
            )));
        }
        if !purpose.encrypt {
            return Err(Refusal(format!(
                "key {fpr}: the file holds the secret of subkey {sub}, which is not an \
                 encryption subkey"
            )));
        }
        let key = ka
            .key()
            .clone()
            .parts_into_secret()
            .map_err(|e| Refusal(format!("key {fpr}: subkey {sub}: {e}")))?;
        secret_keys.push((sub, secret, key));
    }
    // A key we cannot decrypt with would be listed as able to decrypt, and never would.
    if let Some((sub, _, key)) = secret_keys
        .iter()
        .find(|(_, _, k)| !k.pk_algo().is_supported())
    {
        return Err(Refusal(format!(
            "key {fpr}: subkey {sub} uses {}, which this build cannot decrypt with",
            key.pk_algo()
        )));
    }

    let mut unlocked = Vec::new();
    for (sub, secret, key) in secret_keys {
        let key = match (secret, passphrase) {
            (Secret::Protected, None) => {
                return Err(Refusal(format!(
                    "key {fpr}: the secret of subkey {sub} is protected by a passphrase; \
                     import it with --passphrase-file FILE"
                )));
            }
            (Secret::Protected, Some(passphrase)) => key
                .decrypt_secret(&Password::from(passphrase))
                .map_err(|_| {
                    // Sequoia reports a wrong passphrase and an unreadable secret alike,
                    // on purpose: no oracle.
                    Refusal(format!(
                        "key {fpr}: the passphrase does not unlock the secret of subkey \
                         {sub}: wrong passphrase, or secret material that cannot be read \
                         (as in exports by early GnuPG 2.1 of ECC keys; exporting the key \
                         again with a current GnuPG helps)"
                    ))
                })?,
            _ => key,
        };
        unlocked.push(Packet::SecretSubkey(key));
    }

    let mut addresses: Vec<String> = valid
        .userids()
        .revoked(false)
        .filter_map(|ua| {
            ua.userid()
                .email()
                .ok()
                .flatten()
                .and_then(address::normalize)
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        return Err(Refusal(format!(
            "key {fpr} has no valid user ID with an e-mail address"
        )));
    }

    let mut warnings = Vec::new();
    if legacy {
        warnings.push(format!(
            "key {fpr} is a legacy key (SHA-1 self-signatures or a 1024-bit key, as PGP \
             Desktop 9/10 and GnuPG 1.4 made them): kept for decryption, never used to \
             encrypt"
        ));
    }
    if let RevocationStatus::Revoked(_) = valid.revocation_status() {
        warnings.push(format!("key {fpr} is revoked: it only opens old mail"));
    }
    if valid.alive().is_err() {
        warnings.push(format!("key {fpr} has expired: it only opens old mail"));
    }
    let key_created = OffsetDateTime::from(cert.primary_key().key().creation_time());
    let key_expires = valid
        .primary_key()
        .key_expiration_time()
        .map(OffsetDateTime::from);

    // Packets inserted take precedence over the ones in the cert: the stripped cert
    // gets back exactly the unlocked encryption subkeys, and no stubs.
    let (cert, _) = cert
        .clone()
        .strip_secret_key_material()
        .insert_packets(unlocked)
        .map_err(|e| Refusal(format!("key {fpr}: {e}")))?;
    // What the store keeps is this serialization: make sure it can be made now, so that
    // serialize_tsk() cannot fail later.
    cert.as_tsk()
        .to_vec()
        .map_err(|e| Refusal(format!("key {fpr} cannot be serialized: {e}")))?;
    Ok(SckmKey {
        cert,
        fingerprint: fpr,
        addresses,
        legacy,
        warnings,
        key_created,
        key_expires,
    })
}

/// Whether the cert, and every subkey whose secret it holds, is valid under `policy`.
fn check_validity(
    cert: &Cert,
    secret_subkeys: &[openpgp::Fingerprint],
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<(), String> {
    let valid = cert
        .with_policy(policy, now)
        .map_err(|e| format!("no valid self-signature: {e}"))?;
    for fingerprint in secret_subkeys {
        let bound = valid
            .keys()
            .subkeys()
            .any(|ka| &ka.key().fingerprint() == fingerprint);
        if !bound {
            return Err(format!(
                "subkey {} has no valid binding signature",
                fingerprint.to_hex()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;
    use std::process::{Command, Output, Stdio};

    use openpgp::armor;
    use openpgp::cert::CertBuilder;
    use openpgp::parse::Parse;
    use openpgp::serialize::stream::Compressor;
    use openpgp::types::{CompressionAlgorithm, CompressionLevel, Features};
    use openpgp::{PacketPile, packet::Tag};

    use super::*;

    const MIME: &[u8] = b"Content-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe vom Gateway.\r\n";

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

    // -----------------------------------------------------------------------------------
    // The corpus: real clients' messages (see testdata/corpus/openpgp/LICENSE-NOTES.md).

    fn corpus(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/corpus/openpgp")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The armored OpenPGP message in a file: the whole file, or for an .eml the
    /// `BEGIN PGP MESSAGE` block in it (PGP/MIME's second part).
    fn corpus_message(name: &str) -> Vec<u8> {
        const END: &str = "-----END PGP MESSAGE-----";
        let text = String::from_utf8(corpus(name)).unwrap();
        let begin = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
        let end = text[begin..].find(END).unwrap() + begin + END.len();
        text.as_bytes()[begin..end].to_vec()
    }

    /// A corpus TSK with its subkeys' secrets unlocked: what decrypt() takes. The
    /// primary's secret stays locked; decrypt() has no use for it.
    fn unlocked(cert: &Cert, passphrase: &str) -> Cert {
        let password = Password::from(passphrase);
        let mut packets = Vec::new();
        for ka in cert.keys().subkeys().secret() {
            let mut key = ka.key().clone();
            if key.secret().is_encrypted() {
                key = key
                    .decrypt_secret(&password)
                    .unwrap_or_else(|e| panic!("{}: {e}", ka.key().fingerprint()));
            }
            packets.push(Packet::SecretSubkey(key));
        }
        cert.clone().insert_packets(packets).unwrap().0
    }

    /// The SCKM form of a corpus TSK, as a user would export it: the subkeys' secrets
    /// only, still under their passphrase.
    fn sckm_export(cert: &Cert) -> Vec<u8> {
        let primary = cert.fingerprint();
        cert.as_tsk()
            .set_filter(move |k| k.fingerprint() != primary)
            .to_vec()
            .unwrap()
    }

    /// (key file, passphrase, whether decrypt() gets its full TSK, and how import_sckm
    /// takes its SCKM form: Some(legacy?), or None when it is refused).
    const CORPUS_KEYS: &[(&str, &str, bool, Option<bool>)] = &[
        // GnuPG 1.4.11 made it: SHA-1 self-signatures, CAST5-protected secrets.
        ("gnupg-v1-4-11-001-decrypt.asc", "test", true, Some(true)),
        // RSA-1024, SHA-1 self-signatures, and the user ID "rsa-rsa-default" names no
        // address: no user to import it for. decrypt() still opens its message.
        ("gnupg-v1-001-decrypt.asc", "test", true, None),
        // GnuPG 2.1.5 wrote its ECC secret scalars as non-minimal MPIs (264 bits, a
        // leading zero byte), which sequoia refuses once unlocked ("Malformed MPI"),
        // though gpg reads them. So this export cannot be used as it is...
        ("gnupg-v2-1-5-001-decrypt.asc", "test", false, None),
        // ...but `gpg --export-secret-subkeys ENC!` of it by GnuPG 2.2.40 (a derived
        // file) can: what an admin would do.
        (
            "gnupg-v2-1-5-001-decrypt.sckm-reexport.asc",
            "test",
            true,
            Some(false),
        ),
        ("openkeychain-001-decrypt.asc", "q", true, Some(false)),
        ("e2e-001-decrypt.asc", "", true, Some(false)),
        ("bob@openpgp.example.sec.asc", "", true, Some(false)),
        ("alice@autocrypt.example.sec.asc", "", true, Some(false)),
        ("bob@autocrypt.example.sec.asc", "", true, Some(false)),
        ("carol@autocrypt.example.sec.asc", "", true, Some(false)),
    ];

    /// (message, key file, what the plaintext is or starts with).
    /// The key of the Google End-to-End interop set's RSA messages.
    const RSARSA: &str = "gnupg-v1-4-11-001-decrypt.asc";
    const SUSHEEP: &[u8] = b"susheep\n";
    const GOSSIP: &[u8] = b"Autocrypt-Gossip: addr=bob@autocrypt.example";

    /// (message, key file, what the plaintext is or starts with). PGP 10.0's IDEA
    /// message, pgp-10-0-007.asc, is tested on its own below.
    const CORPUS_MESSAGES: &[(&str, &str, &[u8])] = &[
        ("pgp-10-0-001.asc", RSARSA, SUSHEEP), // 3DES
        ("pgp-10-0-002.asc", RSARSA, SUSHEEP), // AES-128
        ("pgp-10-0-003.asc", RSARSA, SUSHEEP), // AES-192
        ("pgp-10-0-004.asc", RSARSA, SUSHEEP), // AES-192
        ("pgp-10-0-005.asc", RSARSA, SUSHEEP), // AES-256
        ("pgp-10-0-006.asc", RSARSA, SUSHEEP), // CAST5
        ("gnupg-v1-4-11-001.asc", RSARSA, SUSHEEP),
        ("gnupg-v2-0-17-001.asc", RSARSA, SUSHEEP),
        ("gnupg-v2-10-001.asc", RSARSA, SUSHEEP),
        ("openpgp-001.asc", RSARSA, b"susheep"),
        ("gnupg-v1-001.asc", "gnupg-v1-001-decrypt.asc", b"hello"),
        (
            "gnupg-v2-1-5-001.asc",
            "gnupg-v2-1-5-001-decrypt.sckm-reexport.asc",
            b"hello\n",
        ),
        (
            "openkeychain-001.asc",
            "openkeychain-001-decrypt.asc",
            b"Hello",
        ),
        ("e2e-001.asc", "e2e-001-decrypt.asc", b"hello"),
        (
            "camellia128-001.asc",
            "bob@openpgp.example.sec.asc",
            b"Hello World :)",
        ),
        (
            "example-draft.eml",
            "alice@autocrypt.example.sec.asc",
            GOSSIP,
        ),
        (
            "example-gossip.eml",
            "bob@autocrypt.example.sec.asc",
            GOSSIP,
        ),
        (
            "example-gossip.eml",
            "carol@autocrypt.example.sec.asc",
            GOSSIP,
        ),
    ];

    #[test]
    fn corpus_messages_decrypt_with_full_and_sckm_keys() {
        let mut full = std::collections::HashMap::new();
        let mut sckm = std::collections::HashMap::new();
        for &(file, passphrase, use_full, legacy) in CORPUS_KEYS {
            let cert = Cert::from_bytes(&corpus(file)).unwrap();
            if use_full {
                full.insert(file, unlocked(&cert, passphrase));
            }
            let passphrase = Some(passphrase).filter(|p| !p.is_empty());
            let imported = import_sckm(&sckm_export(&cert), passphrase, now());
            match (legacy, imported) {
                (Some(legacy), Ok(mut imported)) => {
                    assert_eq!(imported.len(), 1);
                    let key = imported.remove(0);
                    assert_eq!(key.legacy, legacy, "{file}: {:?}", key.warnings);
                    sckm.insert(file, key);
                }
                (None, Err(_)) => {}
                (_, result) => panic!("{file}: {result:?}"),
            }
        }

        let mut failures = Vec::new();
        for &(message, key, expected) in CORPUS_MESSAGES {
            let ciphertext = corpus_message(message);
            let primary = Cert::from_bytes(&corpus(key))
                .unwrap()
                .fingerprint()
                .to_hex();
            let kinds = [
                ("full", full.get(key)),
                ("sckm", sckm.get(key).map(|k| &k.cert)),
            ];
            for (kind, cert) in kinds.into_iter().filter_map(|(k, c)| Some((k, c?))) {
                match decrypt(&ciphertext, std::slice::from_ref(cert)) {
                    Ok(d) if d.plaintext.starts_with(expected) && d.fingerprint == primary => {}
                    Ok(d) => failures.push(format!(
                        "{message} ({kind} {key}): got {:?}",
                        String::from_utf8_lossy(&d.plaintext[..d.plaintext.len().min(60)])
                    )),
                    Err(e) => failures.push(format!("{message} ({kind} {key}): {e}")),
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");

        // PGP 10's IDEA message: the PKESK opens, but Debian's OpenSSL is built without
        // IDEA, so the crypto-openssl backend cannot run the cipher (gpg can: libgcrypt
        // has it). A clear error, not a crash.
        let idea = decrypt(&corpus_message("pgp-10-0-007.asc"), &[full[RSARSA].clone()]);
        #[allow(deprecated)]
        let idea_supported = SymmetricAlgorithm::IDEA.is_supported();
        if idea_supported {
            assert_eq!(idea.unwrap().plaintext, b"susheep\n");
        } else {
            match idea {
                Err(CryptoError::Malformed(reason)) => assert!(reason.contains("IDEA"), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
        // The GnuPG 2.1.5 export as it is: refused, with a hint.
        let original = Cert::from_bytes(&corpus("gnupg-v2-1-5-001-decrypt.asc")).unwrap();
        let reason = import_sckm(&sckm_export(&original), Some("test"), now())
            .unwrap_err()
            .0;
        assert!(reason.contains("current GnuPG"), "{reason}");

        // A legacy key decrypts, and is never encrypted to.
        assert!(matches!(
            encrypt(MIME, std::slice::from_ref(&sckm[RSARSA].cert)),
            Err(CryptoError::Key(_))
        ));
        assert!(sckm[RSARSA].warnings.iter().any(|w| w.contains("legacy")));

        // The expired Autocrypt keys import with a warning that says so.
        assert!(
            sckm["alice@autocrypt.example.sec.asc"]
                .warnings
                .iter()
                .any(|w| w.contains("expired"))
        );
        // The Autocrypt Setup Message is encrypted to a setup code (an SKESK), not to
        // a key: not for the gateway to open.
        let setup = corpus_message("example-setup-message.eml");
        assert!(matches!(
            decrypt(&setup, &[full["alice@autocrypt.example.sec.asc"].clone()]),
            Err(CryptoError::NoKey)
        ));
        // A key that is not a recipient.
        assert!(matches!(
            decrypt(
                &corpus_message("example-draft.eml"),
                &[full["bob@autocrypt.example.sec.asc"].clone()]
            ),
            Err(CryptoError::NoKey)
        ));
    }

    // -----------------------------------------------------------------------------------
    // SEIPD version, bounds and hostile input, with keys sequoia makes (fast).

    fn sequoia_key(uid: &str, features: Option<Features>) -> Cert {
        let mut builder = CertBuilder::new()
            .add_userid(uid)
            .add_transport_encryption_subkey();
        if let Some(features) = features {
            builder = builder.set_features(features).unwrap();
        }
        builder.generate().unwrap().0
    }

    #[test]
    fn seipd_v2_only_when_every_recipient_supports_it() {
        let modern = sequoia_key("a <a@example.org>", None);
        let modern2 = sequoia_key("b <b@example.org>", None);
        let old = sequoia_key("c <c@example.org>", Some(Features::empty().set_seipdv1()));

        let both_modern = encrypt(MIME, &[modern.clone(), modern2.clone()]).unwrap();
        assert_eq!(seipd_versions(&both_modern), vec![2]);
        let mixed = encrypt(MIME, &[modern.clone(), old.clone()]).unwrap();
        assert_eq!(seipd_versions(&mixed), vec![1]);

        for (message, key) in [(&both_modern, &modern2), (&mixed, &old), (&mixed, &modern)] {
            let decrypted = decrypt(message, std::slice::from_ref(key)).unwrap();
            assert_eq!(decrypted.plaintext, MIME);
            assert_eq!(decrypted.fingerprint, key.fingerprint().to_hex());
        }

        // No recipients, or one without an encryption subkey: an error, not a message
        // that leaves someone out.
        assert!(matches!(encrypt(MIME, &[]), Err(CryptoError::Key(_))));
        let signing_only = CertBuilder::new()
            .add_userid("d <d@example.org>")
            .add_signing_subkey()
            .generate()
            .unwrap()
            .0;
        assert!(matches!(
            encrypt(MIME, &[modern, signing_only]),
            Err(CryptoError::Key(_))
        ));
    }

    /// GnuPG 2.2 must read our armor whatever the length of its last base64 line:
    /// without a CRC24 footer, a full last line made it read the END line as base64
    /// (found by benches/crypto.rs).
    #[test]
    fn gpg_reads_our_armor_whatever_its_last_line() {
        let gpg = Gpg::new();
        gpg.generate(
            "A <armor@example.org>",
            "ed25519",
            &[("cv25519", "encr")],
            "",
        );
        let public = gpg.ok(&["--export", "armor@example.org"], b"");
        let cert = Cert::from_bytes(&public).unwrap();
        let mut full_last_line = 0;
        for size in 0..96 {
            let plaintext = vec![b'x'; 500 + size];
            let armored = encrypt(&plaintext, std::slice::from_ref(&cert)).unwrap();
            let text = String::from_utf8(armored.clone()).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            // The lines end: ..., last base64 line, "=CRC24", "-----END ...".
            if lines[lines.len() - 3].len() == 64 {
                full_last_line += 1;
            }
            assert_eq!(gpg.ok(&["--decrypt"], &armored), plaintext, "size {size}");
        }
        assert!(full_last_line > 0, "no size produced a full last line");
    }

    fn dearmor(armored: &[u8]) -> Vec<u8> {
        let mut binary = Vec::new();
        armor::Reader::from_bytes(
            armored,
            armor::ReaderMode::Tolerant(Some(armor::Kind::Message)),
        )
        .read_to_end(&mut binary)
        .unwrap();
        binary
    }

    fn is_malformed(result: Result<Decrypted, CryptoError>) -> bool {
        matches!(result, Err(CryptoError::Malformed(_)))
    }

    #[test]
    fn hostile_input_is_malformed_never_a_panic() {
        let v2 = sequoia_key("m <m@example.org>", None);
        let v1 = sequoia_key("n <n@example.org>", Some(Features::empty().set_seipdv1()));
        let keys = [v1.clone(), v2.clone()];

        for junk in [
            &b""[..],
            b"hello",
            &[0xff; 64],
            &[0x84, 0xff, 0xff, 0xff, 0xff, 0x03],
            b"-----BEGIN PGP MESSAGE-----\r\n\r\nbm90IGEgbWVzc2FnZQ==\r\n-----END PGP MESSAGE-----\r\n",
            b"-----BEGIN PGP MESSAGE-----\r\n\r\n!!!! ????\r\n-----END PGP MESSAGE-----\r\n",
        ] {
            assert!(is_malformed(decrypt(junk, &keys)), "{junk:?}");
        }

        for key in [&v1, &v2] {
            let armored = encrypt(MIME, std::slice::from_ref(key)).unwrap();
            let binary = dearmor(&armored);
            assert_eq!(decrypt(&binary, &keys).unwrap().plaintext, MIME);
            for len in (0..binary.len()).step_by(3) {
                assert!(is_malformed(decrypt(&binary[..len], &keys)), "cut at {len}");
            }
            // A cut armor fails, unless only the footer line was cut off: then the
            // whole, integrity-protected message is there, and opening it is right.
            let footer = armored.len() - b"-----END PGP MESSAGE-----\r\n".len();
            for len in (0..armored.len()).step_by(17) {
                match decrypt(&armored[..len], &keys) {
                    Err(_) => {}
                    Ok(opened) => {
                        assert!(len >= footer, "armor cut at {len} opened");
                        assert_eq!(opened.plaintext, MIME);
                    }
                }
            }
            // Tampering with the encrypted data is caught (MDC or AEAD tag).
            for i in (binary.len() - 40..binary.len()).step_by(3) {
                let mut tampered = binary.clone();
                tampered[i] ^= 0x01;
                assert!(is_malformed(decrypt(&tampered, &keys)), "flip at {i}");
            }
        }

        // Not encrypted at all: a bare literal data packet.
        let mut plain = Vec::new();
        let message = Message::new(&mut plain);
        let mut literal = LiteralWriter::new(message).build().unwrap();
        literal.write_all(MIME).unwrap();
        literal.finalize().unwrap();
        assert!(is_malformed(decrypt(&plain, &keys)));

        // Encrypted to a password only, or to someone else: not ours to open.
        let mut symmetric = Vec::new();
        let message = Message::new(&mut symmetric);
        let message = Encryptor::with_passwords(message, Some("secret"))
            .build()
            .unwrap();
        let mut literal = LiteralWriter::new(message).build().unwrap();
        literal.write_all(MIME).unwrap();
        literal.finalize().unwrap();
        assert!(matches!(
            decrypt(&symmetric, &keys),
            Err(CryptoError::NoKey)
        ));
        let other = sequoia_key("o <o@example.org>", None);
        let for_other = encrypt(MIME, &[other]).unwrap();
        assert!(matches!(
            decrypt(&for_other, &keys),
            Err(CryptoError::NoKey)
        ));
    }

    #[test]
    fn compression_bomb_is_malformed() {
        let key = sequoia_key("z <z@example.org>", None);
        let policy = StandardPolicy::new();
        let mut bomb = Vec::new();
        let message = Message::new(&mut bomb);
        let message = Encryptor::for_recipients(
            message,
            key.keys()
                .with_policy(&policy, None)
                .for_transport_encryption()
                .map(Recipient::from),
        )
        .build()
        .unwrap();
        let message = Compressor::new(message)
            .algo(CompressionAlgorithm::Zlib)
            .level(CompressionLevel::best())
            .build()
            .unwrap();
        let mut literal = LiteralWriter::new(message).build().unwrap();
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..8 {
            literal.write_all(&zeros).unwrap();
        }
        literal.finalize().unwrap();
        assert!(bomb.len() < 64 * 1024, "8 MiB of zeros compress well");

        let keys = [key];
        let result = decrypt_with_limit(&bomb, &keys, 1024 * 1024);
        assert!(is_malformed(result), "over the limit");
        let opened = decrypt_with_limit(&bomb, &keys, 8 * 1024 * 1024).unwrap();
        assert_eq!(opened.plaintext.len(), 8 * 1024 * 1024);
    }

    #[test]
    fn only_the_first_64_pkesks_are_tried() {
        let ours = sequoia_key("r <r@example.org>", Some(Features::empty().set_seipdv1()));
        let other = sequoia_key("x <x@example.org>", Some(Features::empty().set_seipdv1()));
        let pile =
            PacketPile::from_bytes(&encrypt(MIME, std::slice::from_ref(&ours)).unwrap()).unwrap();
        let others_pkesk = PacketPile::from_bytes(&encrypt(MIME, &[other]).unwrap())
            .unwrap()
            .children()
            .find(|p| p.tag() == Tag::PKESK)
            .unwrap()
            .clone();

        // `before` PKESKs for someone else, then ours, then the encrypted data.
        let message_with = |before: usize| {
            let mut packets: Vec<Packet> = vec![others_pkesk.clone(); before];
            packets.extend(pile.children().cloned());
            PacketPile::from(packets).to_vec().unwrap()
        };
        let keys = [ours];
        assert_eq!(
            decrypt(&message_with(MAX_PKESKS - 1), &keys)
                .unwrap()
                .plaintext,
            MIME
        );
        assert!(matches!(
            decrypt(&message_with(MAX_PKESKS), &keys),
            Err(CryptoError::NoKey)
        ));
    }
}
