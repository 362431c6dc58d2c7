//! AEAD: the LibrePGP AEAD packet (tag 20) as RNP writes it, in OCB and EAX, checked
//! against tampering; Thunderbird's sample of it and of a message without integrity
//! protection; and RFC 9580's SEIPDv2 in the modes the OpenSSL backend runs (OCB, GCM)
//! and, with our framing, the one it does not (EAX), on RFC 9580's own sample.

use openpgp::types::AEADAlgorithm;

use super::*;
use crate::crypto::pgp::aed::{Aed, Seipd2Header};

/// A GnuPG key (Ed25519, Cv25519 encryption subkey, no passphrase) known to an RNP home
/// too: (gpg home, rnp home, the TSK of the encryption subkey, primary fingerprint).
fn gpg_and_rnp(uid: &str) -> (Gpg, tempfile::TempDir, Cert, String) {
    let gpg = Gpg::new();
    let key = gpg.generate(uid, "ed25519", &[("cv25519", "encr")], "");
    let tsk = Cert::from_bytes(&gpg.export_secret("--export-secret-subkeys", &key.subkey("e"), ""))
        .unwrap();
    let rnp = tempfile::Builder::new()
        .prefix("sg-rnp")
        .tempdir_in("/tmp")
        .unwrap();
    let public = rnp.path().join("public.pgp");
    std::fs::write(&public, gpg.ok(&["--export", &key.primary], b"")).unwrap();
    let output = Command::new("rnpkeys")
        .arg("--homedir")
        .arg(rnp.path())
        .arg("--import")
        .arg(&public)
        .output()
        .expect("rnpkeys runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (gpg, rnp, tsk, key.primary)
}

/// `rnp --encrypt --aead=MODE` of `plaintext` to `recipient`, binary; `compress` false
/// adds `-z 0`.
fn rnp_encrypt(
    rnp: &Path,
    recipient: &str,
    mode: &str,
    plaintext: &[u8],
    compress: bool,
) -> Vec<u8> {
    let input = rnp.join("plaintext");
    std::fs::write(&input, plaintext).unwrap();
    let mut command = Command::new("rnp");
    command.arg("--homedir").arg(rnp).args([
        "--encrypt",
        "-r",
        recipient,
        &format!("--aead={mode}"),
    ]);
    if !compress {
        command.args(["-z", "0"]);
    }
    let output = command
        .args(["--output", "-"])
        .arg(&input)
        .output()
        .expect("rnp runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Whether the message's second top-level packet is tag 20 with `mode` (1 EAX, 2 OCB).
fn is_aed(message: &[u8], mode: u8) -> bool {
    let pile = PacketPile::from_bytes(message).unwrap();
    let packets: Vec<&Packet> = pile.children().collect();
    matches!(packets.as_slice(), [Packet::PKESK(_), Packet::Unknown(u)]
        if u.tag() == Tag::AED && u.body().get(2) == Some(&mode))
}

#[test]
fn rnp_aead_ocb_and_eax_decrypt_and_refuse_every_flipped_byte() {
    let (_gpg, rnp, tsk, primary) = gpg_and_rnp("A <aead@example.org>");
    let keys = [tsk];
    // Over two of RNP's 256 KiB chunks, so that a middle chunk, the last short one and
    // the final tag are all there to tamper with.
    let big: Vec<u8> = (0..600 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    for (mode, octet) in [("ocb", 2), ("eax", 1)] {
        for (plaintext, compress) in [(MIME, true), (&big[..], false)] {
            let message = rnp_encrypt(rnp.path(), "aead@example.org", mode, plaintext, compress);
            assert!(is_aed(&message, octet), "{mode}: not an AED packet");
            let opened = decrypt(&message, &keys).unwrap_or_else(|e| panic!("{mode}: {e}"));
            assert_eq!(opened.plaintext, plaintext, "{mode}");
            assert_eq!(opened.fingerprint, primary);
        }

        let message = rnp_encrypt(rnp.path(), "aead@example.org", mode, &big, false);
        let pkesk_len = PacketPile::from_bytes(&message)
            .unwrap()
            .children()
            .next()
            .unwrap()
            .to_vec()
            .unwrap()
            .len();
        // Everywhere in the AED packet: its header, each chunk's ciphertext and tag,
        // the partial body length octets, the final tag.
        let mut positions: Vec<usize> = (pkesk_len..message.len()).step_by(4999).collect();
        positions.extend(message.len() - 48..message.len());
        for i in positions {
            let mut tampered = message.clone();
            tampered[i] ^= 0x01;
            match decrypt(&tampered, &keys) {
                Err(CryptoError::Malformed(_)) => {}
                other => panic!("{mode}: flip at {i} of {}: {other:?}", message.len()),
            }
        }
        // Cut at a chunk boundary (the first chunk and its tag, then the final tag of
        // a one-chunk message): the final tag's count of octets catches it.
        assert!(matches!(
            decrypt(&message[..message.len() / 2], &keys),
            Err(CryptoError::Malformed(_))
        ));
    }
}

#[test]
fn thunderbird_aead_opens_and_a_message_without_integrity_protection_is_refused() {
    let bob = Cert::from_bytes(&corpus::corpus("bob@openpgp.example.sec.asc")).unwrap();
    let aead = corpus::corpus_message("rc-openpgp-aead.eml");
    let opened = decrypt(&aead, std::slice::from_ref(&bob)).unwrap();
    assert!(
        String::from_utf8_lossy(&opened.plaintext).contains("Content-Type:"),
        "{:?}",
        String::from_utf8_lossy(&opened.plaintext)
    );
    assert_eq!(opened.fingerprint, bob.fingerprint().to_hex());

    // SED (CAST5, no MDC): refused, never read without integrity protection.
    let nomdc = corpus::corpus_message("rc-openpgp-nomdc.eml");
    assert!(matches!(
        decrypt(&nomdc, std::slice::from_ref(&bob)),
        Err(CryptoError::Malformed(_))
    ));
}

/// A v6 key as sequoia makes it: it advertises SEIPDv2.
fn v6_key() -> Cert {
    CertBuilder::new()
        .set_profile(openpgp::Profile::RFC9580)
        .unwrap()
        .add_userid("v6 <v6@example.org>")
        .add_transport_encryption_subkey()
        .generate()
        .unwrap()
        .0
}

/// `plaintext` encrypted to `cert` by sequoia with `aead`.
fn seipd_v2(cert: &Cert, aead: AEADAlgorithm, plaintext: &[u8]) -> Vec<u8> {
    let policy = StandardPolicy::new();
    let recipients = cert
        .keys()
        .with_policy(&policy, None)
        .for_transport_encryption();
    let mut out = Vec::new();
    let message = Message::new(&mut out);
    let message = Encryptor::for_recipients(message, recipients)
        .aead_algo(aead)
        .build()
        .unwrap();
    let mut literal = LiteralWriter::new(message).build().unwrap();
    literal.write_all(plaintext).unwrap();
    literal.finalize().unwrap();
    out
}

#[test]
fn seipd_v2_ocb_and_gcm_decrypt() {
    let key = v6_key();
    for aead in [AEADAlgorithm::OCB, AEADAlgorithm::GCM] {
        let message = seipd_v2(&key, aead, MIME);
        assert_eq!(seipd_versions(&message), vec![2], "{aead}");
        let opened = decrypt(&message, std::slice::from_ref(&key)).unwrap();
        assert_eq!(opened.plaintext, MIME, "{aead}");
    }
    // RFC 9580's own sample: X25519, AES-128-OCB.
    let key = Cert::from_bytes(&corpus::corpus("rfc9580-A.4-v6-secret-key.asc")).unwrap();
    let message = corpus::corpus("rfc9580-A.8-x25519-aead-ocb-message.asc");
    let opened = decrypt(&message, std::slice::from_ref(&key)).unwrap();
    assert_eq!(opened.plaintext, b"Hello, world!");
}

/// RFC 9580 A.9's SEIPDv2 AES-128-EAX packet and its session key (A.9.2; the v6 SKESK
/// before it wraps that key with a password, which the gateway never uses).
fn rfc9580_eax_sample() -> (Vec<u8>, Seipd2Header, Vec<u8>) {
    const SESSION_KEY: [u8; 16] = [
        0x38, 0x81, 0xba, 0xfe, 0x98, 0x54, 0x12, 0x45, 0x9b, 0x86, 0xc3, 0x6f, 0x98, 0xcb, 0x9a,
        0x5e,
    ];
    let message = corpus::corpus("rfc9580-A.9-eax-skesk-message.asc");
    let mut ppr = openpgp::parse::PacketParser::from_bytes(&message).unwrap();
    while let openpgp::parse::PacketParserResult::Some(mut pp) = ppr {
        if let Packet::SEIP(openpgp::packet::SEIP::V2(seip)) = &pp.packet {
            assert_eq!(seip.aead(), AEADAlgorithm::EAX);
            let header = Seipd2Header {
                cipher: seip.symmetric_algo(),
                mode: u8::from(seip.aead()),
                chunk_size: seip.chunk_size(),
                salt: *seip.salt(),
            };
            let body = pp.buffer_unread_content().unwrap().to_vec();
            return (body, header, SESSION_KEY.to_vec());
        }
        ppr = pp.next().unwrap().1;
    }
    panic!("no SEIPDv2 packet in the sample");
}

#[test]
fn seipd_v2_eax_opens_rfc_9580s_sample_and_refuses_every_flipped_byte() {
    let (body, header, session_key) = rfc9580_eax_sample();
    let open = |body: &[u8]| Aed::seipd2(&header, body)?.decrypt(&session_key, 1 << 20);
    let inner = open(&body).unwrap();
    let pile = PacketPile::from_bytes(&inner[..]).unwrap();
    let literal = pile
        .children()
        .find_map(|p| match p {
            Packet::Literal(l) => Some(l.body().to_vec()),
            _ => None,
        })
        .expect("a literal packet inside");
    assert_eq!(literal, b"Hello, world!");

    for at in 0..body.len() {
        let mut tampered = body.clone();
        tampered[at] ^= 0x01;
        assert!(
            matches!(open(&tampered), Err(CryptoError::Malformed(_))),
            "flipped byte {at} opened"
        );
    }
    for cut in [1, 16, body.len() / 2] {
        assert!(matches!(
            open(&body[..body.len() - cut]),
            Err(CryptoError::Malformed(_))
        ));
    }
    assert!(matches!(
        Aed::seipd2(&header, &body)
            .unwrap()
            .decrypt(&[0; 16], 1 << 20),
        Err(CryptoError::Malformed(_))
    ));
}
