//! Dot-stuffing for DATA: the message as it goes on the wire, a chunk at a time, with
//! no copy of the whole. A pure codec, without I/O.

/// Dot-stuffing (RFC 5321 §4.5.2) and line-end repair, one chunk at a time.
#[derive(Default)]
pub struct DotStuffer {
    /// The last byte written was not the end of a line.
    mid_line: bool,
    /// The last byte written was a CR.
    after_cr: bool,
}

impl DotStuffer {
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() {
            if !self.mid_line && data[0] == b'.' {
                out.push(b'.');
            }
            match memchr::memchr(b'\n', data) {
                Some(pos) => {
                    let line = &data[..pos];
                    out.extend_from_slice(line);
                    let has_cr = match line.last() {
                        Some(&last) => last == b'\r',
                        None => self.after_cr,
                    };
                    // A bare LF becomes CRLF: the next hop must never see a line end
                    // that it might read differently from us.
                    out.extend_from_slice(if has_cr { b"\n" } else { b"\r\n" });
                    self.mid_line = false;
                    self.after_cr = false;
                    data = &data[pos + 1..];
                }
                None => {
                    out.extend_from_slice(data);
                    self.mid_line = true;
                    self.after_cr = data.last() == Some(&b'\r');
                    data = &[];
                }
            }
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.mid_line {
            out.extend_from_slice(if self.after_cr { b"\n" } else { b"\r\n" });
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::DotStuffer;

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
    }
}
