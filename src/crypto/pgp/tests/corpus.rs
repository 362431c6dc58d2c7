//! The corpus: real clients' messages (see testdata/corpus/openpgp/LICENSE-NOTES.md),
//! opened with the full keys and with the SCKM form an admin would import.

use super::*;

pub(super) fn corpus(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/corpus/openpgp")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The armored OpenPGP message in a file: the whole file, or for an .eml the
/// `BEGIN PGP MESSAGE` block in it (PGP/MIME's second part).
pub(super) fn corpus_message(name: &str) -> Vec<u8> {
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
