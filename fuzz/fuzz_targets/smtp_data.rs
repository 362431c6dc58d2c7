//! The DATA codec ([`DataDecoder`]) on its own: the input is what a client sends after
//! `354`, cut into reads of arbitrary sizes.
//!
//! The first byte says how to cut the rest; the codec must give the same result however
//! the input arrives, byte by byte or whole. Beyond not panicking, it must keep the
//! promises the relay builds on: the message has only CRLF line ends, DATA ends exactly
//! at the first `<CR><LF>.<CR><LF>` (so no client can end it where a next hop would not,
//! the SMTP smuggling of 2023), and the message, stuffed and ended again the way the
//! relay sends it, reads back as itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::smtp::data::DataDecoder;
use sealgate_fuzz::assert_crlf;

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    message: Vec<u8>,
    /// Where the message ended, if it did.
    consumed: Option<usize>,
    bare_line_ends: usize,
}

/// Decodes `input` in reads of the sizes `step` gives for read 0, 1, 2, ...
fn decode(input: &[u8], step: impl Fn(usize) -> usize) -> Decoded {
    let mut decoder = DataDecoder::default();
    let mut message = Vec::new();
    let mut at = 0;
    let mut read = 0;
    while at < input.len() {
        let piece = &input[at..(at + step(read).max(1)).min(input.len())];
        read += 1;
        if let Some(used) = decoder.decode(piece, &mut message) {
            assert!(used <= piece.len(), "consumed more than it was given");
            return Decoded {
                message,
                consumed: Some(at + used),
                bare_line_ends: decoder.bare_line_ends(),
            };
        }
        at += piece.len();
    }
    Decoded {
        message,
        consumed: None,
        bare_line_ends: decoder.bare_line_ends(),
    }
}

/// Where RFC 5321 §4.1.1.4 ends DATA: after the first `<CR><LF>.<CR><LF>`, or after
/// `.<CR><LF>` at the very start (DATA's own line end is the CRLF before it).
fn rfc_end(input: &[u8]) -> Option<usize> {
    if input.starts_with(b".\r\n") {
        return Some(3);
    }
    input
        .windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|at| at + 5)
}

/// The message as the relay sends it: a dot added to every line that starts with one,
/// and the terminating dot line.
fn stuffed(message: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(message.len() + 8);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            wire.push(b'.');
        }
        wire.push(b);
        line_start = b == b'\n';
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, |_| input.len());
    assert_eq!(decode(input, |_| 1), whole, "byte by byte");
    let (short, long) = (usize::from(shape & 7) + 1, usize::from(shape >> 3) + 1);
    let alternating = decode(input, |read| if read % 2 == 0 { short } else { long });
    assert_eq!(alternating, whole, "in reads of {short} and {long}");

    assert_crlf(&whole.message, "the decoded message");
    assert_eq!(
        whole.consumed,
        rfc_end(input),
        "DATA must end at the first CRLF.CRLF and nowhere else"
    );
    if whole.consumed.is_some() {
        let wire = stuffed(&whole.message);
        let again = decode(&wire, |_| wire.len());
        assert_eq!(again.message, whole.message, "stuffed and read again");
        assert_eq!(again.consumed, Some(wire.len()));
        assert_eq!(again.bare_line_ends, 0);
    }
});
