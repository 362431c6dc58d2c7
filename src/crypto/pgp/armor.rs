//! ASCII armor (RFC 9580 §6.2) written around OpenPGP messages, done here rather than by
//! sequoia's armor writer: it goes byte by byte, and costs more than the cryptography it
//! wraps (so did its reader, which [`super::dearmor`] replaces). Base64 is base64-simd's,
//! the checksum crc-fast's.

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
pub const LINE_BYTES: usize = 48;

/// The BEGIN line, and the empty line that says there are no armor headers.
pub const BEGIN_LINES: &[u8] = b"-----BEGIN PGP MESSAGE-----\r\n\r\n";

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
    crc: Crc24,
}

/// Lines encoded at a time.
const BATCH_LINES: usize = 256;

/// CRC-24/OPENPGP (RFC 9580 §6.1.1) in crc-fast, whose carry-less multiplication does
/// 100 KiB in 2 µs where the `crc` crate's slice-by-16 table took 28 µs (4 % of the
/// gateway's CPU for a 100 KiB SEIPDv1 message, perf). crc-fast has no 24-bit width:
/// a CRC read most significant bit first is the same in a wider register whose
/// polynomial and initial value are shifted up by the difference, the result shifted
/// down again ([`crc24`]). The test below holds it to the catalogue's check value and
/// to RFC 9580's bit-by-bit reference.
static CRC24: std::sync::LazyLock<crc_fast::CrcParams> = std::sync::LazyLock::new(|| {
    crc_fast::CrcParams::new(
        "CRC-24/OPENPGP, 8 bits up",
        32,
        0x86_4CFB << 8,
        0xB7_04CE << 8,
        false,
        0,
        0x21_CF02 << 8,
    )
});

type Crc24 = crc_fast::Digest;

fn crc24_digest() -> Crc24 {
    crc_fast::Digest::new_with_params(*CRC24)
}

/// The CRC-24 in the low three bytes.
fn crc24(digest: &Crc24) -> u32 {
    (digest.finalize() >> 8) as u32
}

impl<'a> ArmorWriter<'a> {
    /// Writes the BEGIN line (and the empty line: no armor headers) into `out`.
    pub fn new(out: &'a mut Vec<u8>) -> ArmorWriter<'a> {
        out.extend_from_slice(BEGIN_LINES);
        ArmorWriter {
            out,
            pending: Vec::with_capacity(LINE_BYTES),
            crc: crc24_digest(),
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
            push_lines(self.out, &self.pending);
            self.pending.clear();
        }
        let whole = binary.len() / LINE_BYTES * LINE_BYTES;
        push_lines(self.out, &binary[..whole]);
        self.pending.extend_from_slice(&binary[whole..]);
    }

    /// The last line, the checksum and the END line.
    pub fn finish(self) {
        push_lines(self.out, &self.pending);
        self.out.extend_from_slice(&end_lines(self.crc));
    }
}

/// An OpenPGP message in binary, and the checksum its armor will end with: how an
/// encrypted copy is held until it is written out, armored as it goes
/// ([`crate::mail::message::Message::armored`]), so that it is never held armored, a
/// third larger, besides the message it was made from.
pub struct Binary {
    bytes: Vec<u8>,
    crc: Crc24,
}

impl Binary {
    pub fn with_capacity(capacity: usize) -> Binary {
        Binary {
            bytes: Vec::with_capacity(capacity),
            crc: crc24_digest(),
        }
    }

    /// The binary, and the armor's lines after it: the checksum and the END line.
    pub fn finish(self) -> (Vec<u8>, Vec<u8>) {
        (self.bytes, end_lines(self.crc))
    }
}

impl std::io::Write for Binary {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.crc.update(buf);
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The checksum line and the END line.
fn end_lines(crc: Crc24) -> Vec<u8> {
    let checksum = crc24(&crc).to_be_bytes();
    let mut out = b"=".to_vec();
    push_base64(&mut out, &checksum[1..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(END);
    out.extend_from_slice(b"\r\n");
    out
}

/// Appends `binary` as armor's base64 lines, each with its CRLF: lines of
/// [`LINE_BYTES`], the last one shorter when the length is not a multiple of it. The
/// whole lines are encoded a batch at a time (SIMD works on long runs), then laid out
/// line by line.
pub fn push_lines(out: &mut Vec<u8>, binary: &[u8]) {
    let mut scratch = Vec::new();
    out.reserve(lines_len(binary.len()));
    for batch in binary.chunks(BATCH_LINES * LINE_BYTES) {
        scratch.clear();
        push_base64(&mut scratch, batch);
        for line in scratch.chunks(64) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// How long [`push_lines`] makes `len` bytes of binary.
pub const fn lines_len(len: usize) -> usize {
    let whole = len / LINE_BYTES * (64 + 2);
    match len % LINE_BYTES {
        0 => whole,
        rest => whole + rest.div_ceil(3) * 4 + 2,
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

    /// RFC 9580 §6.1.1's reference: bit by bit.
    fn crc24_reference(data: &[u8]) -> u32 {
        let mut crc: u32 = 0xB7_04CE;
        for &byte in data {
            crc ^= u32::from(byte) << 16;
            for _ in 0..8 {
                crc <<= 1;
                if crc & 0x100_0000 != 0 {
                    crc ^= 0x186_4CFB;
                }
            }
        }
        crc & 0xFF_FFFF
    }

    #[test]
    fn the_checksum_is_crc24_in_every_length_and_split() {
        let check = |data: &[u8]| {
            let mut digest = super::crc24_digest();
            digest.update(data);
            super::crc24(&digest)
        };
        assert_eq!(
            check(b"123456789"),
            0x21_CF02,
            "the catalogue's check value"
        );
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in [
            0, 1, 2, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 1000, 5000,
        ] {
            assert_eq!(
                check(&data[..len]),
                crc24_reference(&data[..len]),
                "{len} bytes"
            );
            for piece in [1, 7, 48, 100] {
                let mut digest = super::crc24_digest();
                for chunk in data[..len].chunks(piece) {
                    digest.update(chunk);
                }
                assert_eq!(
                    super::crc24(&digest),
                    crc24_reference(&data[..len]),
                    "{len} in {piece}s"
                );
            }
        }
    }

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
