//! The decrypt path of inbound mail: the input is an encrypted message as it arrives.
//!
//! As the transform does it: which kind of encryption (PGP/MIME, inline PGP, S/MIME),
//! the ciphertext cut out of the MIME structure (found in the message's chunks, and
//! checked against reading the message whole), decryption with the corpus keys
//! (OpenPGP: RSA, Cv25519, ECDH P-256, with legacy ciphers; S/MIME: RSA and EC), and
//! the decrypted message put together from the outer header and the plaintext, with
//! the OpenPGP signatures that were inside kept.
//!
//! The message is taken as DATA hands it on, its line ends made CRLF: a bare CR or LF
//! never reaches the decrypt path, and the next hop would read one as a line end where
//! sealgate did not (a false finding, once).
//!
//! Mutated ciphertext seldom decrypts, so an input may also carry its plaintext: after
//! a line `--sealgate-fuzz-plaintext--`, the rest is taken as what the message decrypted
//! to, and the message is put together with it for each kind.
//!
//! Besides not panicking: the decrypted message carries our `X-Sealgate-Decrypted`
//! field as a header field of its own (as `mime::Cut` reads it), and, when the sender
//! put none in the outer header, the next hop reads that one field of ours and no
//! other (one inside the plaintext is a forgery and must go).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sealgate::crypto::{pgp, smime};
use sealgate::mail::decrypted::{self, KeptSignature};
use sealgate::mail::message::Message;
use sealgate::mail::mime::{self, Cut, Encrypted};
use sealgate::mail::payload::Payload;
use sealgate_fuzz::{PGP_TSKS, SMIME_SCKM, marks_in};

/// The corpus TSKs' decryption keys, made ready once as the gateway keeps them.
static PGP_KEYS: std::sync::LazyLock<pgp::SecretKeys> =
    std::sync::LazyLock::new(|| pgp::SecretKeys::new(&PGP_TSKS));

const PLAINTEXT: &[u8] = b"\r\n--sealgate-fuzz-plaintext--\r\n";
const MARKER: &str = "pgp; key=0123456789ABCDEF";

/// Puts the decrypted message together as the transform does, with the signatures that
/// were inside when there were any, and checks it.
fn check_decrypted(raw: &[u8], kind: Encrypted, plaintext: &[u8], signed: Option<&pgp::Signed>) {
    let kept = signed.map(|s| KeptSignature {
        detached: &s.detached,
        micalg: &s.micalg,
        detached_over_crlf: s.detached_over_crlf,
        message: &s.message,
    });
    let Some((out, _)) = decrypted::decrypted(raw, kind, plaintext, MARKER, kept) else {
        return;
    };
    let Some(cut) = Cut::new(&out) else {
        panic!("the decrypted message does not parse");
    };
    let ours: Vec<&[u8]> = cut.fields_where(|name| name == "x-sealgate-decrypted");
    // With a signature kept, the field says so after the marker.
    let line = format!("X-Sealgate-Decrypted: {MARKER}");
    let ours_whole = |field: &&[u8]| field.starts_with(line.as_bytes()) && field.ends_with(b"\r\n");
    let Some(field) = ours.iter().find(|f| ours_whole(f)) else {
        panic!(
            "our field is not a field of its own: {:?}",
            ours.iter()
                .map(|f| String::from_utf8_lossy(f))
                .collect::<Vec<_>>()
        );
    };
    // Fields of ours in the outer header are strip_ours's business, before this.
    if marks_in(raw).is_empty() {
        let marks = marks_in(&out);
        assert!(
            marks == [&field[..field.len() - 2]],
            "fields of ours the next hop reads: {:?}",
            marks
                .iter()
                .map(|f| String::from_utf8_lossy(f))
                .collect::<Vec<_>>()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    sealgate_fuzz::tolerate_caught_panics();
    let split = data.windows(PLAINTEXT.len()).position(|w| w == PLAINTEXT);
    if let Some(at) = split {
        let (raw, plaintext) = (&data[..at + 2], &data[at + PLAINTEXT.len()..]);
        // The message as DATA hands it on; the plaintext is whatever it decrypted to.
        let raw = mime::crlf(raw);
        for kind in [Encrypted::PgpMime, Encrypted::InlinePgp, Encrypted::Smime] {
            check_decrypted(&raw, kind, plaintext, None);
        }
        return;
    }

    // Every message the transform sees has come through DATA, which makes each bare CR
    // and bare LF a CRLF (smtp::data); mime::crlf does the same.
    let data = &mime::crlf(data)[..];
    // As the transform finds it: in the chunks the message arrived in (small ones
    // here, so that the block runs across many), and the same as when read whole.
    let message = Message::from_chunks(data.chunks(61).map(Bytes::copy_from_slice).collect());
    let payload = Payload::of(&message);
    let kind = mime::encrypted(data);
    assert_eq!(payload.kind(), kind, "the kind, found in chunks");
    let Some(kind) = kind else {
        return;
    };
    let ciphertext = payload.ciphertext();
    assert_eq!(
        ciphertext.as_ref().map(|pieces| pieces.concat()),
        mime::ciphertext(data, kind).map(|c| c.into_owned()),
        "the ciphertext, found in chunks"
    );
    let Some(ciphertext) = ciphertext else {
        return;
    };
    let opened = match kind {
        Encrypted::PgpMime | Encrypted::InlinePgp => {
            pgp::open(&ciphertext, &PGP_KEYS).map(|o| (o.decrypted, o.signed))
        }
        Encrypted::Smime => smime::decrypt(&ciphertext.concat(), &SMIME_SCKM).map(|d| (d, None)),
    };
    if let Ok((opened, signed)) = opened {
        check_decrypted(data, kind, &opened.plaintext, signed.as_ref());
    }
});
