//! Messages and keys from real clients (see testdata/corpus/smime/LICENSE-NOTES.md):
//! each one we open must decrypt exactly as `openssl cms -decrypt` does.

use super::*;

/// An SCKM key from a PEM certificate file and a PEM key file in the corpus.
fn corpus_key(cert: &str, key: &str) -> SmimeKey {
    let file = [read(&corpus(cert)), read(&corpus(key))].concat();
    import_sckm(&file, None)
        .unwrap_or_else(|e| panic!("{cert}: {e}"))
        .remove(0)
}

/// The CMS bytes of a corpus file: a bare .p7m, or the body of a .eml/.env.
fn corpus_message(path: &str) -> Vec<u8> {
    let bytes = read(&corpus(path));
    if path.ends_with(".p7m") {
        bytes
    } else {
        mime_body(&bytes)
    }
}

/// What `openssl cms -decrypt` makes of a corpus message: the reference we must match.
fn openssl_opens(path: &str, cert: &str, key: &str) -> Vec<u8> {
    let format = if path.ends_with(".p7m") {
        "DER"
    } else {
        "SMIME"
    };
    openssl(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &[
            "cms",
            "-decrypt",
            "-binary",
            "-inform",
            format,
            "-in",
            corpus(path).to_str().unwrap(),
            "-recip",
            corpus(cert).to_str().unwrap(),
            "-inkey",
            corpus(key).to_str().unwrap(),
        ],
    )
}

const NSS_BOB: (&str, &str) = (
    "thunderbird-nss-smime/derived/Bob.cert.pem",
    "thunderbird-nss-smime/derived/Bob.key.pem",
);
const FRAN: (&str, &str) = (
    "thunderbird-smime-interop/derived/Fran.cert.pem",
    "thunderbird-smime-interop/derived/Fran.key.pem",
);
const FRAN_EC: (&str, &str) = (
    "thunderbird-smime-interop/derived/Fran-ec.cert.pem",
    "thunderbird-smime-interop/derived/Fran-ec.key.pem",
);
const LAMPS_BOB: (&str, &str) = (
    "rfc9216-lamps-examples-cms/lamps-bob.encrypt.crt",
    "rfc9216-lamps-examples-cms/lamps-bob.decrypt.p8.pem",
);
const DRAFT_BOB: (&str, &str) = (
    "autocrypt-protected-headers/derived/bob.cert.pem",
    "autocrypt-protected-headers/derived/bob.key.pem",
);

#[test]
fn corpus_messages_from_real_clients_decrypt_like_openssl() {
    let opens: &[(&str, (&str, &str))] = &[
        // NSS (Thunderbird's S/MIME engine): indefinite-length BER, AES-128, PKCS#1 v1.5.
        ("thunderbird-nss-smime/alice.env.eml", NSS_BOB),
        (
            "thunderbird-nss-smime/alice.dsig.SHA256.multipart.env.eml",
            NSS_BOB,
        ),
        (
            "thunderbird-nss-smime/alice.sig.SHA256.opaque.env.eml",
            NSS_BOB,
        ),
        // OpenSSL: RSA-OAEP (SHA-1, label, SHA-256, SHA-256 MGF1; 3DES and AES) and
        // ECDH on P-384 (SHA-256 and SHA-512 KDFs).
        ("thunderbird-smime-interop/fran-oaep_ossl.env", FRAN),
        // rsa 0.9 (the crypto-rust build) takes OAEP labels as UTF-8 only.
        #[cfg(feature = "crypto-openssl")]
        ("thunderbird-smime-interop/fran-oaep-label_ossl.env", FRAN),
        (
            "thunderbird-smime-interop/fran-oaep-sha256hash_ossl.env",
            FRAN,
        ),
        (
            "thunderbird-smime-interop/fran-oaep-sha256hash-sha256mgf_ossl.env",
            FRAN,
        ),
        (
            "thunderbird-smime-interop/fran-ec_ossl-aes128-sha256.env",
            FRAN_EC,
        ),
        (
            "thunderbird-smime-interop/fran-ec_ossl-aes256-sha512.env",
            FRAN_EC,
        ),
        // IETF samples: RSA-OAEP, and a message to Bob (RSA) and Dana (X25519).
        (
            "rfc9216-lamps-examples-cms/encryptedForBobRSAOaep.p7m",
            LAMPS_BOB,
        ),
        (
            "rfc9216-lamps-examples-cms/encryptedForBobAndDana.p7m",
            LAMPS_BOB,
        ),
        // Header-protection samples: 3DES and AES-128 around signed-data.
        ("autocrypt-protected-headers/smime-sign+enc.eml", DRAFT_BOB),
        (
            "autocrypt-protected-headers/smime-sign+enc+legacy-disp.eml",
            DRAFT_BOB,
        ),
        (
            "autocrypt-protected-headers/smime-enc+legacy-disp.eml",
            DRAFT_BOB,
        ),
        (
            "rfc9788-header-protection-vectors/smime-enc-signed.eml",
            LAMPS_BOB,
        ),
        (
            "rfc9788-header-protection-vectors/smime-enc-signed-injected-strong-legacy.eml",
            LAMPS_BOB,
        ),
    ];
    for (path, (cert, key)) in opens {
        let opened = decrypt(&corpus_message(path), &[corpus_key(cert, key)])
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(opened.plaintext, openssl_opens(path, cert, key), "{path}");
        let cert_der = Certificate::load_pem_chain(&read(&corpus(cert))).unwrap()[0]
            .to_der()
            .unwrap();
        assert_eq!(opened.fingerprint, material::x509_fingerprint(&cert_der));
    }

    // The ones we cannot open, each for a real reason, as clean errors.
    let bob = corpus_key(LAMPS_BOB.0, LAMPS_BOB.1);
    let refused: &[(&str, &str)] = &[
        // AuthEnvelopedData is read, but its content is AES-GCM or nothing: no
        // ChaCha20-Poly1305 (RFC 8103).
        (
            "rfc9216-lamps-examples-cms/authEnvelopedForBobChaCha20Poly1305.p7m",
            "unsupported authenticated content encryption algorithm 1.2.840.113549.1.9.16.3.18",
        ),
        // Signed outside, encrypted inside: the caller opens the signature first.
        (
            "thunderbird-nss-smime/alice.env.sig.SHA256.opaque.eml",
            "signed-data",
        ),
    ];
    for (path, reason) in refused {
        assert_malformed(
            decrypt(&corpus_message(path), std::slice::from_ref(&bob)),
            reason,
        );
    }
    // AES-GCM, but only to Dana, whose X25519 key we cannot hold (see below): it is
    // read as far as its RecipientInfos, and none is ours.
    assert!(matches!(
        decrypt(
            &corpus_message("rfc9216-lamps-examples-cms/authEnvelopedForDanaX25519HKDF.p7m"),
            std::slice::from_ref(&bob)
        ),
        Err(CryptoError::NoKey)
    ));
    #[cfg(not(feature = "crypto-openssl"))]
    assert_malformed(
        decrypt(
            &corpus_message("thunderbird-smime-interop/fran-oaep-label_ossl.env"),
            &[corpus_key(FRAN.0, FRAN.1)],
        ),
        "not UTF-8",
    );
    // Dana's key is X25519: refused at import, so it never reaches decrypt.
    let reason = refusal(import_sckm(
        &[
            read(&corpus("rfc9216-lamps-examples-cms/lamps-dana.encrypt.crt")),
            read(&corpus(
                "rfc9216-lamps-examples-cms/lamps-dana.decrypt.p8.pem",
            )),
        ]
        .concat(),
        None,
    ));
    assert!(reason.contains("not supported"), "{reason}");
    // A message for someone else is NoKey, not an error about the message.
    assert!(matches!(
        decrypt(
            &corpus_message("thunderbird-nss-smime/alice.env.eml"),
            std::slice::from_ref(&bob)
        ),
        Err(CryptoError::NoKey)
    ));
}

#[cfg(feature = "crypto-openssl")]
#[test]
fn corpus_pkcs12_files_import_and_decrypt() {
    let cases = [
        (
            "thunderbird-nss-smime/Bob.p12",
            "nss",
            "thunderbird-nss-smime/alice.env.eml",
        ),
        (
            "thunderbird-smime-interop/Fran.p12",
            "nss",
            "thunderbird-smime-interop/fran-oaep_ossl.env",
        ),
        (
            "thunderbird-smime-interop/Fran-ec.p12",
            "nss",
            "thunderbird-smime-interop/fran-ec_ossl-aes256-sha512.env",
        ),
        // PEM-armoured ("-----BEGIN PKCS12-----").
        (
            "autocrypt-protected-headers/bob.p12",
            "bob",
            "autocrypt-protected-headers/smime-enc+legacy-disp.eml",
        ),
    ];
    for (p12, pass, message) in cases {
        let keys =
            import_sckm(&read(&corpus(p12)), Some(pass)).unwrap_or_else(|e| panic!("{p12}: {e}"));
        assert_eq!(keys.len(), 1, "{p12}");
        decrypt(&corpus_message(message), &keys).unwrap_or_else(|e| panic!("{message}: {e}"));
        assert!(refusal(import_sckm(&read(&corpus(p12)), None)).contains("--passphrase-file"));
    }
}
