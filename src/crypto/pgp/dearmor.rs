//! ASCII armor read as a stream, from a message in pieces (the chunks it arrived in):
//! the binary is decoded a block at a time as sequoia reads it, so a large message is
//! never held whole in binary besides its armored form.
//!
//! Plain armor only; anything else is left to sequoia's reader, which forgives more,
//! slowly (it goes byte by byte: it was 80 % of decrypting a 100 KiB message with a
//! cv25519 key; see benches/crypto.rs). Plain is: optional blank lines or text before
//! the BEGIN line, armor headers (`Key: value`) and an empty line, base64 lines, an
//! optional checksum line, and the END line; LF or CRLF, with spaces or tabs at a
//! line's end. The checksum is not checked: RFC 9580 says not to reject a message over
//! it, and the encrypted data carries its own integrity check (MDC or AEAD), which
//! sequoia checks.
//!
//! Whether the armor is plain is known only at its END line, so a large one is read
//! twice: once to decide (and to learn the binary's length, [`Armor::of`]), then for
//! the decryption. A small one's binary is kept from the first pass. Deciding first means that a message whose armor turns out not to be
//! plain costs no decryption before sequoia's reader takes it, as when the whole binary
//! was decoded first.

use std::borrow::Cow;
use std::io::Read;

use base64::Engine;

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";

/// Base64 decoded at a time: large enough that a call's overhead is nothing, small
/// enough that the buffers are nothing next to the message.
const BLOCK: usize = 32 * 1024;

/// A line that runs across two pieces is put together in a buffer; one longer than
/// this is not (the message is then read whole, see [`Armor::Unsure`]). Armor lines
/// are 64 characters; only a hostile or very odd message has such a line.
const MAX_JOINED_LINE: usize = 64 * 1024;

/// The padding mode the armor's base64 is read with: RFC 9580 writes padding, but a
/// message without it is as readable.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// A binary up to this size is kept from the pass that decides ([`Armor::of`]) and
/// read from there: decoding the armor a second time was a twentieth of decrypting
/// 100 KiB with an RSA-3072 key (perf), and below this size the copy is nothing next
/// to the message. A larger one is decoded again as it is read, never held whole.
const KEEP_DECODED: usize = 1024 * 1024;

/// What a message in pieces is, as far as reading its armor goes.
pub enum Armor<'a> {
    /// Plain armor: [`Armor::reader`] reads its `len` bytes of binary.
    Plain { pieces: &'a [&'a [u8]], len: usize },
    /// Plain armor of a binary up to [`KEEP_DECODED`], decoded.
    Decoded(Vec<u8>),
    /// Not plain armor (binary, or armor of a form only sequoia's reader takes): the
    /// pieces as they are.
    Other(&'a [&'a [u8]]),
    /// A line runs across pieces and is longer than [`MAX_JOINED_LINE`]: the answer
    /// needs the message in one piece.
    Unsure,
}

impl<'a> Armor<'a> {
    /// Reads the armor of `pieces` once, to the END line, keeping the binary only when
    /// it is small.
    pub fn of(pieces: &'a [&'a [u8]]) -> Armor<'a> {
        Armor::keeping(pieces, KEEP_DECODED)
    }

    /// [`Armor::of`], keeping a binary of up to `keep` bytes.
    fn keeping(pieces: &'a [&'a [u8]], keep: usize) -> Armor<'a> {
        let mut reader = Dearmored::new(pieces);
        let mut len = 0;
        let mut kept = (keep > 0).then(Vec::new);
        loop {
            match reader.fill() {
                Ok(()) if reader.out.is_empty() => {
                    return match kept {
                        Some(binary) => Armor::Decoded(binary),
                        None => Armor::Plain { pieces, len },
                    };
                }
                Ok(()) => {
                    len += reader.out.len();
                    kept = kept.filter(|_| len <= keep).map(|mut binary| {
                        binary.extend_from_slice(&reader.out);
                        binary
                    });
                }
                Err(Failure::Unsure) => return Armor::Unsure,
                Err(Failure::NotPlain) => return Armor::Other(pieces),
            }
        }
    }

    /// The binary (plain armor decoded), or the pieces as they are.
    pub fn reader(&self) -> Box<dyn Read + Send + Sync + '_> {
        match self {
            Armor::Plain { pieces, .. } => Box::new(Dearmored::new(pieces)),
            Armor::Decoded(binary) => Box::new(&binary[..]),
            Armor::Other(pieces) => Box::new(Joined { pieces, at: 0 }),
            Armor::Unsure => Box::new(std::io::empty()),
        }
    }

    /// How large the binary is, or about (at most the input's size).
    pub fn binary_len(&self) -> usize {
        match self {
            Armor::Plain { len, .. } => *len,
            Armor::Decoded(binary) => binary.len(),
            Armor::Other(pieces) => pieces.iter().map(|p| p.len()).sum(),
            Armor::Unsure => 0,
        }
    }
}

/// The pieces read one after the other.
struct Joined<'a> {
    pieces: &'a [&'a [u8]],
    /// How much of the first piece has been read.
    at: usize,
}

impl Read for Joined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some((first, rest)) = self.pieces.split_first() {
            let n = (&first[self.at..]).read(buf)?;
            self.at += n;
            if self.at == first.len() {
                self.pieces = rest;
                self.at = 0;
            }
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
        }
        Ok(0)
    }
}

/// Why the armor was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Not plain armor.
    NotPlain,
    /// A line across pieces too long to join.
    Unsure,
}

/// Where in the armor the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the BEGIN line.
    Before,
    /// In the armor headers, before the empty line.
    Headers,
    /// In the base64 lines.
    Data,
    /// After the checksum line: the END line must follow.
    Checksum,
    /// Past the END line.
    Done,
}

/// The binary of plain armor, decoded as it is read.
struct Dearmored<'a> {
    lines: Lines<'a>,
    stage: Stage,
    /// The rest of the data line being decoded (a long one is decoded a block at a
    /// time).
    line: Cow<'a, [u8]>,
    /// How much of `line` has been decoded.
    line_at: usize,
    /// Base64 characters not yet decoded: fewer than a quad, or a block's worth.
    base64: Vec<u8>,
    /// Whether `base64` starts at the quad with the first `=`: no more data may come
    /// but the rest of that quad.
    padded: bool,
    /// Decoded, not yet read.
    out: Vec<u8>,
    read: usize,
    failed: Option<Failure>,
}

impl<'a> Dearmored<'a> {
    fn new(pieces: &'a [&'a [u8]]) -> Dearmored<'a> {
        Dearmored {
            lines: Lines::new(pieces),
            stage: Stage::Before,
            line: Cow::Borrowed(&[]),
            line_at: 0,
            base64: Vec::with_capacity(BLOCK + 4),
            padded: false,
            out: Vec::with_capacity(BLOCK),
            read: 0,
            failed: None,
        }
    }

    /// Decodes the next block into `out`; `out` stays empty at the end.
    fn fill(&mut self) -> Result<(), Failure> {
        self.out.clear();
        self.read = 0;
        while self.out.is_empty() && self.stage != Stage::Done {
            if self.line_at < self.line.len() {
                let line = std::mem::take(&mut self.line);
                let end = line.len().min(self.line_at + BLOCK);
                let pushed = self.push(&line[self.line_at..end]);
                self.line = line;
                self.line_at = end;
                pushed?;
                continue;
            }
            let line = self.lines.next().ok_or(Failure::NotPlain)??;
            self.take_line(line)?;
        }
        Ok(())
    }

    /// One line of the armor, by the stage it is in.
    fn take_line(&mut self, line: Cow<'a, [u8]>) -> Result<(), Failure> {
        let trimmed = line.trim_ascii_end();
        match self.stage {
            Stage::Before => {
                // The first BEGIN must start its line and be alone on it.
                if memchr::memmem::find(trimmed, BEGIN).is_some() {
                    if trimmed != BEGIN {
                        return Err(Failure::NotPlain);
                    }
                    self.stage = Stage::Headers;
                }
            }
            Stage::Headers if trimmed.is_empty() => self.stage = Stage::Data,
            Stage::Headers => {
                // `Key: value`.
                let colon = memchr::memchr(b':', trimmed).ok_or(Failure::NotPlain)?;
                if colon == 0 || trimmed.get(colon + 1) != Some(&b' ') {
                    return Err(Failure::NotPlain);
                }
            }
            Stage::Data if trimmed == END => self.finish()?,
            Stage::Data if trimmed.first() == Some(&b'=') && trimmed.len() == 5 => {
                self.stage = Stage::Checksum;
            }
            Stage::Data => {
                let len = trimmed.len();
                self.line = match line {
                    Cow::Borrowed(line) => Cow::Borrowed(&line[..len]),
                    Cow::Owned(mut line) => {
                        line.truncate(len);
                        Cow::Owned(line)
                    }
                };
                self.line_at = 0;
            }
            Stage::Checksum if trimmed == END => self.finish()?,
            Stage::Checksum => return Err(Failure::NotPlain),
            Stage::Done => {}
        }
        Ok(())
    }

    /// Takes base64 characters in; decodes every whole block of them.
    ///
    /// Decoding in pieces gives what decoding all at once would: every piece but the
    /// last is whole quads with no `=`, and the last is what follows. A `=` can only be
    /// in the last quad of the whole (the base64 crate refuses padding anywhere else),
    /// so from the quad with the first `=` on at most four characters may come.
    fn push(&mut self, data: &[u8]) -> Result<(), Failure> {
        let before = self.base64.len();
        self.base64.extend_from_slice(data);
        if !self.padded {
            // Only what came is looked at: there is no `=` in what was there before.
            if let Some(at) = memchr::memchr(b'=', data) {
                let quad = (before + at) / 4 * 4;
                self.decode(quad)?;
                self.padded = true;
            } else if self.base64.len() >= BLOCK {
                self.decode(self.base64.len() / 4 * 4)?;
            }
        }
        if self.padded && self.base64.len() > 4 {
            return Err(Failure::NotPlain);
        }
        Ok(())
    }

    /// Decodes the first `len` base64 characters into `out`.
    fn decode(&mut self, len: usize) -> Result<(), Failure> {
        BASE64
            .decode_vec(&self.base64[..len], &mut self.out)
            .map_err(|_| Failure::NotPlain)?;
        self.base64.drain(..len);
        Ok(())
    }

    /// The END line: what is left is decoded.
    fn finish(&mut self) -> Result<(), Failure> {
        self.decode(self.base64.len())?;
        self.stage = Stage::Done;
        Ok(())
    }
}

impl Read for Dearmored<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(failure) = self.failed {
            return Err(failure.into());
        }
        if self.read == self.out.len()
            && let Err(failure) = self.fill()
        {
            self.failed = Some(failure);
            return Err(failure.into());
        }
        let n = (&self.out[self.read..]).read(buf)?;
        self.read += n;
        Ok(n)
    }
}

impl From<Failure> for std::io::Error {
    fn from(failure: Failure) -> std::io::Error {
        let what = match failure {
            Failure::NotPlain => "not plain ASCII armor",
            Failure::Unsure => "an armor line too long to join across pieces",
        };
        std::io::Error::new(std::io::ErrorKind::InvalidData, what)
    }
}

/// The lines of a message in pieces, split at LF as `[u8]::split` does: borrowed where
/// a line lies in one piece, joined where it runs across pieces.
struct Lines<'a> {
    pieces: &'a [&'a [u8]],
    /// Where the next line starts in the first piece.
    at: usize,
    /// Whether the last line (after the last LF, maybe empty) has been given.
    ended: bool,
}

impl<'a> Lines<'a> {
    fn new(pieces: &'a [&'a [u8]]) -> Lines<'a> {
        Lines {
            pieces,
            at: 0,
            ended: false,
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Result<Cow<'a, [u8]>, Failure>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let mut joined: Option<Vec<u8>> = None;
        loop {
            let Some((&first, rest)) = self.pieces.split_first() else {
                // The last line, which ended with the last piece.
                self.ended = true;
                return Some(Ok(Cow::Owned(joined.unwrap_or_default())));
            };
            let start = &first[self.at..];
            let line = match (memchr::memchr(b'\n', start), joined.take()) {
                (Some(lf), None) => {
                    self.at += lf + 1;
                    Cow::Borrowed(&start[..lf])
                }
                (Some(lf), Some(mut line)) => {
                    self.at += lf + 1;
                    line.extend_from_slice(&start[..lf]);
                    Cow::Owned(line)
                }
                (None, None) if rest.is_empty() => {
                    // The last line, in the last piece.
                    self.ended = true;
                    Cow::Borrowed(start)
                }
                (None, line) => {
                    let mut line = line.unwrap_or_default();
                    line.extend_from_slice(start);
                    if line.len() > MAX_JOINED_LINE {
                        return Some(Err(Failure::Unsure));
                    }
                    joined = Some(line);
                    self.pieces = rest;
                    self.at = 0;
                    continue;
                }
            };
            if matches!(line, Cow::Owned(_)) && line.len() > MAX_JOINED_LINE {
                return Some(Err(Failure::Unsure));
            }
            return Some(Ok(line));
        }
    }
}

/// The binary of `message` when it is plain armor, else `message` itself.
#[cfg(test)]
pub fn dearmor_message(message: &[u8]) -> Cow<'_, [u8]> {
    let pieces = [message];
    match Armor::of(&pieces) {
        Armor::Decoded(binary) => Cow::Owned(binary),
        armor @ Armor::Plain { .. } => {
            let mut binary = Vec::new();
            armor.reader().read_to_end(&mut binary).expect("read once");
            Cow::Owned(binary)
        }
        _ => Cow::Borrowed(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::pgp::armor::armor_message;

    /// How the armor was read before it was read as a stream, all at once: what the
    /// reader must agree with.
    fn decode_whole(message: &[u8]) -> Option<Vec<u8>> {
        let begin = memchr::memmem::find(message, BEGIN)?;
        if begin > 0 && message[begin - 1] != b'\n' {
            return None;
        }
        let mut lines = message[begin..]
            .split(|&b| b == b'\n')
            .map(|l| l.trim_ascii_end());
        if lines.next()? != BEGIN {
            return None;
        }
        for line in lines.by_ref() {
            if line.is_empty() {
                break;
            }
            let colon = memchr::memchr(b':', line)?;
            if colon == 0 || line.get(colon + 1) != Some(&b' ') {
                return None;
            }
        }
        let mut data = Vec::new();
        loop {
            let line = lines.next()?;
            if line == END {
                break;
            }
            if line.first() == Some(&b'=') && line.len() == 5 {
                if lines.next()? != END {
                    return None;
                }
                break;
            }
            data.extend_from_slice(line);
        }
        BASE64.decode(&data).ok()
    }

    /// What the reader makes of `message` cut into `pieces`: the binary, or `None` when
    /// it is no plain armor, or `Unsure`. A binary is read both ways, kept from the
    /// first pass and decoded again as it is read, and the two must agree.
    fn read(pieces: &[&[u8]]) -> Result<Option<Vec<u8>>, ()> {
        let armor = Armor::keeping(pieces, 0);
        match armor {
            Armor::Plain { len, .. } => {
                let mut binary = Vec::new();
                armor.reader().read_to_end(&mut binary).unwrap();
                assert_eq!(binary.len(), len);
                let Armor::Decoded(kept) = Armor::keeping(pieces, usize::MAX) else {
                    panic!("plain armor kept is not decoded");
                };
                assert_eq!(kept, binary, "kept from the first pass");
                Ok(Some(binary))
            }
            Armor::Decoded(_) => unreachable!("nothing is kept with a limit of 0"),
            Armor::Other(other) => {
                assert_eq!(other, pieces);
                let mut joined = Vec::new();
                armor.reader().read_to_end(&mut joined).unwrap();
                assert_eq!(joined, pieces.concat(), "passed through as it is");
                Ok(None)
            }
            Armor::Unsure => Err(()),
        }
    }

    /// Every way of cutting `message` in two and in three agrees with reading it whole.
    fn agrees_at_every_cut(message: &[u8]) {
        let whole = decode_whole(message);
        assert_eq!(
            read(&[message]),
            Ok(whole.clone()),
            "whole: {:?}",
            String::from_utf8_lossy(message)
        );
        for a in 0..=message.len() {
            let (x, rest) = message.split_at(a);
            assert_eq!(read(&[x, rest]), Ok(whole.clone()), "cut at {a}");
            for b in (0..=rest.len()).step_by(7) {
                let (y, z) = rest.split_at(b);
                assert_eq!(read(&[x, y, z]), Ok(whole.clone()), "cut at {a}, {b}");
            }
        }
        assert_eq!(
            read(&[message, b"", b""]),
            Ok(whole.clone()),
            "empty pieces"
        );
    }

    #[test]
    fn armor_reads_back_across_every_cut() {
        for len in [0, 1, 2, 3, 47, 48, 49, 100] {
            let binary: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let armored = armor_message(&binary);
            assert_eq!(decode_whole(&armored), Some(binary.clone()));
            agrees_at_every_cut(&armored);
            let lf: Vec<u8> = armored.iter().copied().filter(|&b| b != b'\r').collect();
            agrees_at_every_cut(&lf);
        }
    }

    #[test]
    fn odd_armor_is_judged_as_when_read_whole() {
        for odd in [
            &b"\x85binary"[..],
            b"",
            b"Some text first\r\n-----BEGIN PGP MESSAGE-----\r\nVersion: GnuPG v2\r\nComment: hi\r\n\r\nAAEC \r\nAwQ=\t\r\n=abcd\r\n-----END PGP MESSAGE-----\r\n",
            b"-----BEGIN PGP MESSAGE-----\r\nnot a header\r\n\r\nAAEC\r\n-----END PGP MESSAGE-----\r\n",
            b"-----BEGIN PGP MESSAGE-----\r\n\r\nAA!C\r\n-----END PGP MESSAGE-----\r\n",
            b"-----BEGIN PGP MESSAGE-----\r\n\r\nAAEC\r\n",
            b"x-----BEGIN PGP MESSAGE-----\r\n\r\nAAEC\r\n-----END PGP MESSAGE-----\r\n",
            b"-----BEGIN PGP MESSAGE-----\r\n\r\nAAEC\r\n=abcd\r\nAAEC\r\n-----END PGP MESSAGE-----\r\n",
            b"-----BEGIN PGP MESSAGE-----\n\nAA\n==\n-----END PGP MESSAGE-----",
            b"-----BEGIN PGP MESSAGE-----\n\nAA==\nAAAA\n-----END PGP MESSAGE-----\n",
            b"-----BEGIN PGP MESSAGE-----\n\nAAA\n-----END PGP MESSAGE-----\n",
            b"-----BEGIN PGP MESSAGE-----\n\nAAAAA\n-----END PGP MESSAGE-----\n",
            b"-----BEGIN PGP MESSAGE-----\n\nAB\n-----END PGP MESSAGE-----\n",
            b"-----BEGIN PGP MESSAGE-----\n\nAA B\n-----END PGP MESSAGE-----\n",
            b"-----BEGIN PGP MESSAGE----- x\n\nAAAA\n-----END PGP MESSAGE-----\n",
            b"-----BEGIN PGP MESSAGE-----\nKey:value\n\nAAAA\n-----END PGP MESSAGE-----\n",
            b"-----BEGIN PGP MESSAGE-----\n:x y\n\nAAAA\n-----END PGP MESSAGE-----\n",
            b"-----BEGIN PGP MESSAGE-----\n\nAAAA\n=abcde\n-----END PGP MESSAGE-----\n",
            b"-----BEGIN PGP MESSAGE-----\n\nAAAA\n-----END PGP MESSAGE-----  \r\ntrailing text",
        ] {
            agrees_at_every_cut(odd);
        }
    }

    /// Base64 read in pieces says what base64 read whole says, padding and all: every
    /// string of up to eight characters of `A`, `Q`, `/` and `=`, in armor.
    #[test]
    fn base64_in_pieces_is_base64_whole() {
        let alphabet = [b'A', b'Q', b'/', b'='];
        for len in 0..=8u32 {
            for n in 0..4usize.pow(len) {
                let data: Vec<u8> = (0..len).map(|i| alphabet[n / 4usize.pow(i) % 4]).collect();
                // One character a line: every split a quad can have.
                let mut message = b"-----BEGIN PGP MESSAGE-----\n\n".to_vec();
                for &c in &data {
                    message.extend_from_slice(&[c, b'\n']);
                }
                message.extend_from_slice(b"-----END PGP MESSAGE-----\n");
                assert_eq!(
                    read(&[&message]),
                    Ok(BASE64.decode(&data).ok()),
                    "{}",
                    String::from_utf8_lossy(&data)
                );
            }
        }
    }

    #[test]
    fn a_long_line_is_decoded_a_block_at_a_time() {
        let binary: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut message = b"-----BEGIN PGP MESSAGE-----\n\n".to_vec();
        message.extend_from_slice(BASE64.encode(&binary).as_bytes());
        message.extend_from_slice(b"\n-----END PGP MESSAGE-----\n");
        assert_eq!(read(&[&message]), Ok(Some(binary.clone())));
        // Across pieces, a line that long is not joined.
        let (a, b) = message.split_at(100_000);
        assert_eq!(read(&[a, b]), Err(()));
        // The blocks of a long line that was joined.
        let short = &message[..MAX_JOINED_LINE - 1000];
        let mut message = short.to_vec();
        let keep = (short.len() - 29) / 4 * 4;
        message.truncate(29 + keep);
        message.extend_from_slice(b"\n-----END PGP MESSAGE-----\n");
        let (a, b) = message.split_at(50);
        assert_eq!(read(&[a, b]), Ok(decode_whole(&message)));
        assert!(decode_whole(&message).is_some());
    }
}
