//! SEIPD version choice, armor that GnuPG reads, and bounds against hostile input, with
//! keys sequoia makes (fast).

use super::*;

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
