//! ASCII armor (RFC 9580 §6.2) written around OpenPGP messages, done here rather than by
//! sequoia's armor writer: it goes byte by byte, and costs more than the cryptography it
//! wraps (so did its reader, which [`super::dearmor`] replaces). Base64 is base64-simd's,
//! the checksum the `crc` crate's.

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";

/// Armored `binary`, as [`ArmorWriter`] writes it.
#[cfg(test)]
pub fn armor_message(binary: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(binary.len() / 3 * 4 + binary.len() / 24 + 96);
    let mut writer = ArmorWriter::new(&mut out);
    writer.add(binary);
    writer.finish();
    out
}

/// Bytes per armor line: 64 base64 characters.
const LINE_BYTES: usize = 48;

/// ASCII armor (RFC 9580 §6.2) with the CRLF line ends mail needs, written into `out` as
/// the binary comes, so that a large message is never held twice (binary and armored).
/// Sequoia's armor writer ends lines with LF, and running it and then converting line
/// ends cost more than the encryption itself (see benches/crypto.rs). The CRC24 footer
/// is written although RFC 9580 no longer asks for it: without it, GnuPG 2.2 reads the
/// END line as more base64 when the last data line is a full one.
pub struct ArmorWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Fewer than [`LINE_BYTES`] bytes not yet written: the start of the next line.
    pending: Vec<u8>,
    /// Whole lines in base64, before they are laid out.
    scratch: Vec<u8>,
    crc: crc::Digest<'static, u32, crc::Table<16>>,
}

/// Lines encoded at a time.
const BATCH_LINES: usize = 256;

/// Slice-by-16: the bytewise table cost more than the base64 encoding.
static CRC24: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_24_OPENPGP);

impl<'a> ArmorWriter<'a> {
    /// Writes the BEGIN line (and the empty line: no armor headers) into `out`.
    pub fn new(out: &'a mut Vec<u8>) -> ArmorWriter<'a> {
        out.extend_from_slice(BEGIN);
        out.extend_from_slice(b"\r\n\r\n");
        ArmorWriter {
            out,
            pending: Vec::with_capacity(LINE_BYTES),
            scratch: Vec::new(),
            crc: CRC24.digest(),
        }
    }

    /// Armors `binary`: every whole line at once, the rest kept for the next call.
    pub fn add(&mut self, mut binary: &[u8]) {
        self.crc.update(binary);
        if !self.pending.is_empty() {
            let take = binary.len().min(LINE_BYTES - self.pending.len());
            self.pending.extend_from_slice(&binary[..take]);
            binary = &binary[take..];
            if self.pending.len() < LINE_BYTES {
                return;
            }
            let line = std::mem::take(&mut self.pending);
            self.line(&line);
            self.pending = line;
            self.pending.clear();
        }
        let whole = binary.len() / LINE_BYTES * LINE_BYTES;
        // The whole lines are encoded at once (SIMD works on long runs), then laid out
        // line by line.
        for batch in binary[..whole].chunks(BATCH_LINES * LINE_BYTES) {
            self.scratch.clear();
            push_base64(&mut self.scratch, batch);
            self.out.reserve(self.scratch.len() / 64 * 66);
            for line in self.scratch.chunks(64) {
                self.out.extend_from_slice(line);
                self.out.extend_from_slice(b"\r\n");
            }
        }
        self.pending.extend_from_slice(&binary[whole..]);
    }

    fn line(&mut self, bytes: &[u8]) {
        push_base64(self.out, bytes);
        self.out.extend_from_slice(b"\r\n");
    }

    /// The last line, the checksum and the END line.
    pub fn finish(mut self) {
        if !self.pending.is_empty() {
            let last = std::mem::take(&mut self.pending);
            self.line(&last);
        }
        let ArmorWriter { out, crc, .. } = self;
        let checksum = crc.finalize().to_be_bytes();
        out.push(b'=');
        push_base64(out, &checksum[1..]);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(END);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `bytes` in base64, padded: base64-simd's SIMD encoder, where the `base64`
/// crate's scalar one was 9 % of the gateway's CPU for a 100 KiB encrypted message
/// (perf).
fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let at = out.len();
    let engine = base64_simd::STANDARD;
    out.resize(at + engine.encoded_length(bytes.len()), 0);
    let written = engine.encode(bytes, base64_simd::Out::from_slice(&mut out[at..]));
    debug_assert_eq!(written.len(), out.len() - at);
}

impl std::io::Write for ArmorWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.add(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::armor_message;
    use crate::crypto::pgp::dearmor::dearmor_message;

    #[test]
    fn what_is_armored_reads_back_in_every_line_ending_and_length() {
        for len in [0, 1, 2, 3, 47, 48, 49, 95, 96, 97, 1000] {
            let binary: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let armored = armor_message(&binary);
            assert_eq!(dearmor_message(&armored), binary, "{len} CRLF");
            let lf: Vec<u8> = armored.iter().copied().filter(|&b| b != b'\r').collect();
            assert_eq!(dearmor_message(&lf), binary, "{len} LF");
        }
    }

    #[test]
    fn armor_written_in_pieces_is_armor_written_at_once() {
        use std::io::Write;
        let binary: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
        let whole = armor_message(&binary);
        for piece in [1, 7, 47, 48, 49, 100, 999] {
            let mut out = Vec::new();
            let mut writer = super::ArmorWriter::new(&mut out);
            for chunk in binary.chunks(piece) {
                writer.write_all(chunk).unwrap();
            }
            writer.finish();
            assert_eq!(out, whole, "pieces of {piece}");
        }
        let text = String::from_utf8(whole).unwrap();
        assert!(text.starts_with("-----BEGIN PGP MESSAGE-----\r\n\r\n"));
        assert!(text.ends_with("\r\n-----END PGP MESSAGE-----\r\n"));
        assert!(text.lines().all(|l| l.len() <= 64));
    }

    #[test]
    fn headers_text_before_and_trailing_spaces_are_read() {
        let armored = b"Some text first\r\n-----BEGIN PGP MESSAGE-----\r\nVersion: GnuPG v2\r\nComment: hi\r\n\r\nAAEC \r\nAwQ=\t\r\n=abcd\r\n-----END PGP MESSAGE-----\r\n";
        assert_eq!(&*dearmor_message(armored), &[0, 1, 2, 3, 4]);
    }

    #[test]
    fn anything_else_is_left_to_sequoia_as_it_is() {
        for odd in [
            &b"\x85binary"[..],
            b"-----BEGIN PGP MESSAGE-----\r\nnot a header\r\n\r\nAAEC\r\n-----END PGP MESSAGE-----\r\n",
            b"-----BEGIN PGP MESSAGE-----\r\n\r\nAA!C\r\n-----END PGP MESSAGE-----\r\n",
            b"-----BEGIN PGP MESSAGE-----\r\n\r\nAAEC\r\n",
            b"x-----BEGIN PGP MESSAGE-----\r\n\r\nAAEC\r\n-----END PGP MESSAGE-----\r\n",
            b"-----BEGIN PGP MESSAGE-----\r\n\r\nAAEC\r\n=abcd\r\nAAEC\r\n-----END PGP MESSAGE-----\r\n",
        ] {
            assert_eq!(&*dearmor_message(odd), odd, "{}", String::from_utf8_lossy(odd));
        }
    }
}
