//! Where an encrypted message's ciphertext lies, found without joining the chunks the
//! message arrived in when that can be done: a large message is then held once, not
//! twice, while it is decrypted.
//!
//! mail-parser needs the message in one piece. For PGP/MIME, nearly all of which is the
//! armored block of its second part, it is given the message with the inside of that
//! block cut out (a few KiB); what it says about that text holds for the whole message,
//! and the ciphertext is the part it names, with the block's inside put back from the
//! chunks where it lies. Anything else (inline PGP, S/MIME, a block that is not found
//! verbatim, or whose inside mail-parser could read differently) is joined and read
//! whole, as before.

use std::borrow::Cow;
use std::ops::Range;

use mail_parser::MimeHeaders;

use super::message::Message;
use super::mime::{self, Encrypted, PGP_BEGIN, PGP_END};

/// An encrypted message's kind and ciphertext, as [`mime::payload`] finds them in the
/// message.
pub struct Payload<'m> {
    /// What mail-parser read: the message, or the message without the inside of its
    /// armored block (see [`Payload::text`]).
    text: Vec<u8>,
    kind: Option<Encrypted>,
    ciphertext: Place<'m>,
}

/// Where the ciphertext is.
enum Place<'m> {
    /// Nowhere: not encrypted, or unreadable.
    Nowhere,
    /// In `text`, as it lies.
    Within(Range<usize>),
    /// Decoded (a base64 part; inline PGP's text).
    Decoded(Vec<u8>),
    /// In `text` from `start` to `end`, with the message's `inside` put back at `cut`.
    Cut {
        start: usize,
        cut: usize,
        end: usize,
        inside: Vec<&'m [u8]>,
    },
}

impl<'m> Payload<'m> {
    pub fn of(message: &'m Message) -> Payload<'m> {
        cut_out(message).unwrap_or_else(|| Payload::whole(message.to_vec()))
    }

    /// The message in one piece, read as it is.
    fn whole(text: Vec<u8>) -> Payload<'m> {
        let (kind, ciphertext) = match mime::payload(&text) {
            None => (None, Place::Nowhere),
            Some((kind, None)) => (Some(kind), Place::Nowhere),
            // mail-parser may lend a slice that is not in the text (the decrypt fuzz
            // target found one): that one is copied.
            Some((kind, Some(Cow::Borrowed(within)))) => match range_in(&text, within) {
                Some(range) => (Some(kind), Place::Within(range)),
                None => (Some(kind), Place::Decoded(within.to_vec())),
            },
            Some((kind, Some(Cow::Owned(decoded)))) => (Some(kind), Place::Decoded(decoded)),
        };
        Payload {
            text,
            kind,
            ciphertext,
        }
    }

    /// How the message is encrypted, if it is.
    pub fn kind(&self) -> Option<Encrypted> {
        self.kind
    }

    /// The message as [`super::decrypted`] needs it: for PGP/MIME and S/MIME, which it
    /// reads the header of only, the message may lack the inside of its armored block.
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// The ciphertext in pieces, in order.
    pub fn ciphertext(&self) -> Option<Vec<&[u8]>> {
        match &self.ciphertext {
            Place::Nowhere => None,
            Place::Within(range) => Some(vec![&self.text[range.clone()]]),
            Place::Decoded(decoded) => Some(vec![decoded]),
            Place::Cut {
                start,
                cut,
                end,
                inside,
            } => {
                let mut pieces = Vec::with_capacity(inside.len() + 2);
                pieces.push(&self.text[*start..*cut]);
                pieces.extend(inside.iter().copied());
                pieces.push(&self.text[*cut..*end]);
                Some(pieces)
            }
        }
    }
}

/// Where `inner` lies in `outer`; `None` when it is not a slice of it.
fn range_in(outer: &[u8], inner: &[u8]) -> Option<Range<usize>> {
    let start = (inner.as_ptr() as usize).wrapping_sub(outer.as_ptr() as usize);
    (start <= outer.len() && inner.len() <= outer.len() - start).then(|| start..start + inner.len())
}

/// PGP/MIME with its armored block's inside cut out, when what mail-parser says of the
/// rest holds for the whole message.
///
/// It does when the inside cannot change how mail-parser reads the message: it ends at
/// the line before the END line and has no `-` at a line's start (so it holds neither
/// the END line nor a boundary line), no `--` anywhere (mail-parser 0.11 takes a
/// boundary wherever `--` and the boundary are, not only at a line's start), nothing
/// but ASCII (so a text part is valid UTF-8, and borrowed, with it or without it), and
/// the boundary has no line end in it (so no match starts before the cut and ends in
/// it). The rest is mail-parser's to judge, on the text without the inside: the message
/// must be PGP/MIME there too, and its ciphertext must run, as it lies, from before the
/// cut to after it.
fn cut_out(message: &Message) -> Option<Payload<'_>> {
    let head = message.header_block(usize::MAX);
    let body = head.len() + 2;
    if body > message.len() {
        return None;
    }
    // The header decides whether this is worth trying.
    let headers = crate::mail::parser::parser().parse_headers(&head)?;
    if mime::encrypted_in(&headers) != Some(Encrypted::PgpMime) {
        return None;
    }
    let boundary = headers.content_type()?.attribute("boundary")?;
    if boundary.contains(['\r', '\n']) {
        return None;
    }
    let chunks = Chunks(message.chunks()?);
    // The BEGIN line, at a line's start in the body; the inside from the next line on.
    let begin = chunks.find(format!("\n{PGP_BEGIN}").as_bytes(), body - 1)?;
    let cut = chunks.find(b"\n", begin + 1 + PGP_BEGIN.len())? + 1;
    let end_line = chunks.find(b"\n-", cut - 1)? + 1;
    if chunks.copy(end_line..end_line + PGP_END.len()) != PGP_END.as_bytes() {
        return None;
    }
    let inside = cut..end_line;
    if chunks.find_in(b"--", inside.clone()).is_some() || !chunks.is_ascii(inside.clone()) {
        return None;
    }
    let mut text = chunks.copy(0..cut);
    text.extend_from_slice(&chunks.copy(end_line..message.len()));
    let payload = Payload::whole(text);
    match payload.ciphertext {
        Place::Within(Range { start, end })
            if payload.kind == Some(Encrypted::PgpMime) && start < cut && cut < end =>
        {
            Some(Payload {
                ciphertext: Place::Cut {
                    start,
                    cut,
                    end,
                    inside: chunks.pieces(inside),
                },
                ..payload
            })
        }
        _ => None,
    }
}

/// A message's chunks, read as the one sequence of bytes they are.
/// Whether `needle` is anywhere in `message`, across its chunks too.
pub(super) fn contains(message: &Message, needle: &[u8]) -> bool {
    match message.chunks() {
        Some(chunks) => Chunks(chunks).find(needle, 0).is_some(),
        None => memchr::memmem::find(&message.to_vec(), needle).is_some(),
    }
}

struct Chunks<'m>(&'m [bytes::Bytes]);

impl<'m> Chunks<'m> {
    /// The chunks with where each starts.
    fn spans(&self) -> impl Iterator<Item = (usize, &'m [u8])> {
        self.0.iter().scan(0, |at, chunk| {
            let start = *at;
            *at += chunk.len();
            Some((start, &chunk[..]))
        })
    }

    /// Where `needle` first occurs at or after `from`.
    fn find(&self, needle: &[u8], from: usize) -> Option<usize> {
        self.find_in(needle, from..usize::MAX)
    }

    /// Where `needle` first occurs within `range`, across chunks too.
    fn find_in(&self, needle: &[u8], range: Range<usize>) -> Option<usize> {
        let finder = memchr::memmem::Finder::new(needle);
        let keep = needle.len().saturating_sub(1);
        // The last bytes before the chunk at hand, for a needle across chunks, and
        // where they start.
        let mut tail: Vec<u8> = Vec::with_capacity(2 * keep);
        let mut tail_start = 0;
        for (start, chunk) in self.spans() {
            if start + chunk.len() <= range.start {
                continue;
            }
            if start >= range.end {
                break;
            }
            let from = range.start.saturating_sub(start);
            let to = chunk.len().min(range.end - start);
            let (start, chunk) = (start + from, &chunk[from..to]);
            if !tail.is_empty() {
                let mut seam = tail.clone();
                seam.extend_from_slice(&chunk[..chunk.len().min(keep)]);
                if let Some(at) = finder.find(&seam) {
                    return Some(tail_start + at);
                }
            }
            if let Some(at) = finder.find(chunk) {
                return Some(start + at);
            }
            tail.extend_from_slice(&chunk[chunk.len().saturating_sub(keep)..]);
            tail.drain(..tail.len().saturating_sub(keep));
            tail_start = start + chunk.len() - tail.len();
        }
        None
    }

    /// The bytes in `range`, borrowed where they lie.
    fn pieces(&self, range: Range<usize>) -> Vec<&'m [u8]> {
        self.spans()
            .filter_map(|(start, chunk)| {
                let from = range.start.max(start);
                let to = range.end.min(start + chunk.len());
                (from < to).then(|| &chunk[from - start..to - start])
            })
            .collect()
    }

    /// The bytes in `range`, copied.
    fn copy(&self, range: Range<usize>) -> Vec<u8> {
        self.pieces(range).concat()
    }

    fn is_ascii(&self, range: Range<usize>) -> bool {
        self.pieces(range).iter().all(|piece| piece.is_ascii())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// What reading the message whole finds: the kind and the ciphertext.
    fn whole(raw: &[u8]) -> (Option<Encrypted>, Option<Vec<u8>>) {
        let kind = mime::encrypted(raw);
        let ciphertext = kind.and_then(|kind| mime::ciphertext(raw, kind));
        (kind, ciphertext.map(Cow::into_owned))
    }

    fn found(message: &Message) -> (Option<Encrypted>, Option<Vec<u8>>, bool) {
        let payload = Payload::of(message);
        let cut = matches!(payload.ciphertext, Place::Cut { .. });
        (
            payload.kind(),
            payload.ciphertext().map(|pieces| pieces.concat()),
            cut,
        )
    }

    /// `raw` in chunks cut at every place, and in three at many pairs of places:
    /// the same kind and ciphertext as read whole; whether the ciphertext was found in
    /// place.
    fn agrees_in_chunks(raw: &[u8]) -> bool {
        let expected = whole(raw);
        let (kind, ciphertext, cut) = found(&Message::new(raw.to_vec()));
        assert_eq!((kind, ciphertext), expected.clone(), "one chunk");
        for a in 0..=raw.len() {
            let (x, rest) = raw.split_at(a);
            let step = if a % 11 == 0 { 17 } else { rest.len().max(1) };
            for b in (0..=rest.len()).step_by(step) {
                let (y, z) = rest.split_at(b);
                let message = Message::from_chunks(
                    [x, y, z]
                        .iter()
                        .map(|c| Bytes::copy_from_slice(c))
                        .collect(),
                );
                let (kind, ciphertext, cut_too) = found(&message);
                assert_eq!((kind, ciphertext), expected.clone(), "cut at {a}, {b}");
                assert_eq!(
                    mime::encrypted_message(&message),
                    expected.0,
                    "the kind, read from the chunks, cut at {a}, {b}"
                );
                assert_eq!(cut_too, cut, "cut at {a}, {b}");
            }
        }
        cut
    }

    const ARMORED: &[u8] = b"-----BEGIN PGP MESSAGE-----\r\nComment: GPGTools - https://gpgtools.org\r\n\r\nhQEMA1qq1Ha3/w2B\r\nAQf/aaaa\r\n=abcd\r\n-----END PGP MESSAGE-----\r\n";

    fn pgp_mime(armored: &[u8]) -> Vec<u8> {
        crate::mail::wrap::pgp_mime(
            b"From: a@example.org\r\nTo: b@example.com\r\nSubject: x\r\n\r\nbody\r\n",
            armored,
            false,
        )
        .unwrap()
    }

    #[test]
    fn pgp_mime_is_found_in_place_at_every_cut() {
        assert!(agrees_in_chunks(&pgp_mime(ARMORED)));
        // LF line ends (never from DATA, which makes them CRLF): read whole.
        let lf: Vec<u8> = pgp_mime(ARMORED)
            .into_iter()
            .filter(|&b| b != b'\r')
            .collect();
        agrees_in_chunks(&lf);
        // The END line's line end belongs to the boundary.
        let tight = String::from_utf8(pgp_mime(ARMORED)).unwrap().replace(
            "-----END PGP MESSAGE-----\r\n\r\n",
            "-----END PGP MESSAGE-----\r\n",
        );
        assert!(agrees_in_chunks(tight.as_bytes()));
    }

    #[test]
    fn anything_else_is_read_whole_with_the_same_answer() {
        let text = String::from_utf8(pgp_mime(ARMORED)).unwrap();
        let boundary = text
            .split("boundary=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        for (odd, why) in [
            (
                text.replace("hQEMA1qq1Ha3/w2B", &format!("--{boundary}\r\n")),
                "a boundary inside the block",
            ),
            (
                text.replace("hQEMA1qq1Ha3/w2B", &format!("a--{boundary}")),
                "a boundary in a line of the block",
            ),
            (text.replace("AQf/aaaa", "AQf/a\u{e9}aa"), "not ASCII"),
            (
                text.replace("AQf/aaaa\r\n", "AQf/aaaa\r\n-x\r\n"),
                "a line that starts with -",
            ),
            (
                text.replace("Content-Disposition: inline; filename=\"encrypted.asc\"\r\n", "Content-Transfer-Encoding: quoted-printable\r\n"),
                "an encoded part",
            ),
            (text.replace("-----END PGP MESSAGE-----", "-----END PGP MESSAGE"), "no END line"),
            (
                text.replace("multipart/encrypted", "multipart/mixed"),
                "not PGP/MIME",
            ),
            (
                text.replace("This is an OpenPGP/MIME", "-----BEGIN PGP MESSAGE-----\r\n\r\nAAAA\r\n-----END PGP MESSAGE-----\r\nThis is an OpenPGP/MIME"),
                "another block first",
            ),
            (
                text.replace("\r\n\r\nThis is an OpenPGP/MIME", "\r\n"),
                "no empty line before the block",
            ),
        ] {
            assert!(!agrees_in_chunks(odd.as_bytes()), "{why}");
        }
        for inline in [
            &b"From: a@example.org\r\nSubject: x\r\n\r\nhi\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nabc\r\n-----END PGP MESSAGE-----\r\nbye\r\n"[..],
            b"From: a@example.org\r\n\r\nplain\r\n",
            b"no header at all",
            b"",
        ] {
            assert!(!agrees_in_chunks(inline));
        }
        // Inline PGP in a base64-encoded text: the armor line shows only once decoded.
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(ARMORED);
        let text = format!(
            "From: a@example.org\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"
        );
        assert_eq!(whole(text.as_bytes()).0, Some(Encrypted::InlinePgp));
        assert!(!agrees_in_chunks(text.as_bytes()));
    }

    /// A base64-encoded second part holds no armor line as it lies: read whole.
    #[test]
    fn a_base64_part_is_decoded_as_before() {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(ARMORED);
        let text = String::from_utf8(pgp_mime(b"@@")).unwrap().replace(
            "filename=\"encrypted.asc\"\r\n\r\n@@",
            &format!(
                "filename=\"encrypted.asc\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}"
            ),
        );
        assert!(!agrees_in_chunks(text.as_bytes()));
        let (_, ciphertext) = whole(text.as_bytes());
        assert_eq!(ciphertext.as_deref(), Some(ARMORED));
    }
}
