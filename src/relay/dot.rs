//! Dot-stuffing for DATA: the message as it goes on the wire, a chunk at a time, with
//! no copy of the whole. A pure codec, without I/O.

use crate::crypto::pgp::armor;
use crate::mail::message::Part;

/// Dot-stuffing (RFC 5321 §4.5.2) and line-end repair, one chunk at a time.
///
/// A bare LF and a bare CR each go out as CRLF: a next hop that takes either one for
/// a line end must never find a line, or a line that starts with a dot, that we did
/// not stuff. Messages from clients are already normalised when they arrive
/// ([`crate::smtp::data`]); this also covers what sealgate makes itself (decrypted
/// content, DSNs).
#[derive(Default)]
pub struct DotStuffer {
    /// The last byte written was not the end of a line.
    mid_line: bool,
    /// A CR was read and not yet written: CRLF if an LF follows, else a bare CR.
    pending_cr: bool,
}

impl DotStuffer {
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while let Some(&first) = data.first() {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.mid_line = false;
                if first == b'\n' {
                    data = &data[1..];
                    continue;
                }
            }
            if !self.mid_line && first == b'.' {
                out.push(b'.');
            }
            match memchr::memchr2(b'\r', b'\n', data) {
                Some(at) => {
                    out.extend_from_slice(&data[..at]);
                    if data[at] == b'\r' {
                        self.pending_cr = true;
                        self.mid_line = true;
                    } else {
                        out.extend_from_slice(b"\r\n");
                        self.mid_line = false;
                    }
                    data = &data[at + 1..];
                }
                None => {
                    out.extend_from_slice(data);
                    self.mid_line = true;
                    data = &[];
                }
            }
        }
    }

    /// [`DotStuffer::push`] for a part of a message. Armor goes straight into `out`:
    /// its lines are base64 and CRLF, so none starts with a dot or has a bare CR or LF,
    /// and stuffing them would only copy them once more and look through each for line
    /// ends (3 % of the gateway's CPU for a 100 KiB encrypted message). It starts at a
    /// line start, after the BEGIN lines; were it ever not to, it is stuffed like text.
    pub fn push_part(&mut self, part: Part<'_>, out: &mut Vec<u8>) {
        match part {
            Part::Text(text) => self.push(text, out),
            Part::Armor(binary) if !self.mid_line && !self.pending_cr => {
                armor::push_lines(out, binary);
            }
            Part::Armor(_) => self.push(&part.wire(), out),
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || self.mid_line {
            out.extend_from_slice(b"\r\n");
        }
        self.pending_cr = false;
        self.mid_line = false;
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::DotStuffer;
    use crate::mail::message::Message;

    fn stuff(chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = DotStuffer::default();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn stuffs_dots_and_repairs_line_ends() {
        assert_eq!(stuff(&[b"a\r\n.b\r\n"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(stuff(&[b".\r\n"]), b"..\r\n.\r\n");
        assert_eq!(stuff(&[b"a\r", b"\n.", b"b"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(stuff(&[b"a\nb\n"]), b"a\r\nb\r\n.\r\n");
        assert_eq!(stuff(&[b"a\n.\n"]), b"a\r\n..\r\n.\r\n");
        assert_eq!(stuff(&[b""]), b".\r\n");
        // A bare CR is a line end too, and the dot after it is stuffed.
        assert_eq!(stuff(&[b"a\r.\rb"]), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(stuff(&[b"a\r", b".\r\r\n"]), b"a\r\n..\r\n\r\n.\r\n");
        assert_eq!(stuff(&[b"a\r"]), b"a\r\n.\r\n");
    }

    /// What the next hop gets for `message`: its parts cut at `size`, as the client
    /// writes them.
    fn stuff_parts(message: &Message, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = DotStuffer::default();
        for part in message.parts() {
            for piece in part.split(size) {
                s.push_part(piece, &mut out);
            }
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn armor_written_straight_out_is_what_stuffing_its_lines_gives() {
        let binary: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        // A head with a dot to stuff and a bare LF to repair, and one that does not end
        // its last line, so that the armor does not start at a line start.
        for (head, starts) in [
            (
                &b".Hidden: x\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n"[..],
                &b"..Hidden: x\r\n\r\n-----BEGIN"[..],
            ),
            (b"Subject: x\r\n\r\n.", b"Subject: x\r\n\r\n.."),
        ] {
            let message = Message::armored(head.to_vec(), binary.clone(), b".\r\n".to_vec());
            let mut expected = Vec::new();
            let mut s = DotStuffer::default();
            for piece in message.pieces() {
                s.push(&piece, &mut expected);
            }
            s.finish(&mut expected);
            assert!(expected.starts_with(starts));
            assert!(expected.ends_with(b"\r\n..\r\n.\r\n"));
            for size in [1, 65, 66, 67, 1000, 64 * 1024] {
                assert_eq!(stuff_parts(&message, size), expected, "pieces of {size}");
            }
        }
    }
}
