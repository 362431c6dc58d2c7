//! The DATA codec: finds the end of a message and undoes dot-stuffing, one buffer at a
//! time. Bytes only, no I/O, so that it can be fuzzed and tested on its own.
//!
//! Why not smtp-proto's `DataReceiver`: it also ends DATA at `<CR><LF>.<CR><CR><LF>`
//! (and with more CRs), so whatever a client sends after that runs as SMTP commands: a
//! second, smuggled transaction (SMTP smuggling, 2023). RFC 5321 §4.1.1.4 ends DATA at
//! `<CR><LF>.<CR><LF>` and nothing else, which is all this codec accepts.
//!
//! Line ends are normalised on the way in, as Postfix's `smtpd_forbid_bare_newline =
//! normalize` does for a bare LF: a bare LF, and a bare CR, each become CRLF. RFC 5322
//! allows neither in a message, and a next hop that reads either one as a line end
//! must never see a line boundary, or a line that starts with a dot, that we did not
//! see. After this, every line of a message sealgate holds ends in CRLF, and the relay
//! dot-stuffs each line that starts with a dot.

/// Where the codec is in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// Inside a line.
    Text,
    /// Inside a line, after a CR.
    Cr,
    /// A line that so far is a single dot.
    Dot,
    /// A line that so far is a dot and a CR: the end, if an LF follows.
    DotCr,
}

/// Decodes one message's DATA. Feed it the input as it arrives; it says where the
/// message ended.
#[derive(Debug)]
pub struct DataDecoder {
    state: State,
    /// The current line began after a bare CR or LF, not a CRLF: a dot line here is
    /// not the end (`<LF>.<CR><LF>` is a smuggling variant too).
    after_bare: bool,
    /// Bare CRs and bare LFs turned into CRLF so far.
    bare_line_ends: usize,
}

impl Default for DataDecoder {
    fn default() -> Self {
        DataDecoder {
            // DATA starts on a line of its own: a dot first is a dot at a line start.
            state: State::LineStart,
            after_bare: false,
            bare_line_ends: 0,
        }
    }
}

impl DataDecoder {
    /// Decodes `input` into `out` (dot-unstuffed, line ends CRLF). Returns
    /// `Some(consumed)` once the terminating `<CR><LF>.<CR><LF>` is read: the bytes
    /// after `consumed` are the client's next commands. `None` means all of `input`
    /// was taken and the message goes on.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Text => {
                    // The common case: copy the run up to the next CR or LF at once.
                    let rest = &input[i..];
                    match memchr::memchr2(b'\r', b'\n', rest) {
                        None => {
                            out.extend_from_slice(rest);
                            return None;
                        }
                        Some(at) => {
                            out.extend_from_slice(&rest[..at]);
                            i += at + 1;
                            if rest[at] == b'\r' {
                                self.state = State::Cr;
                            } else {
                                self.bare_line_end(out);
                            }
                        }
                    }
                }
                State::Cr => {
                    if input[i] == b'\n' {
                        i += 1;
                        out.extend_from_slice(b"\r\n");
                        self.state = State::LineStart;
                        self.after_bare = false;
                    } else {
                        // A bare CR; the byte after it starts the next line.
                        self.bare_line_end(out);
                    }
                }
                State::LineStart => {
                    if input[i] == b'.' {
                        i += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::Text;
                    }
                }
                State::Dot => match input[i] {
                    b'\r' => {
                        i += 1;
                        self.state = State::DotCr;
                    }
                    b'\n' => {
                        // `<LF>.<LF>` is not the end. The dot is kept, as content, and
                        // the relay stuffs it again.
                        i += 1;
                        out.push(b'.');
                        self.bare_line_end(out);
                    }
                    // A stuffed dot: the first one goes (RFC 5321 §4.5.2).
                    _ => self.state = State::Text,
                },
                State::DotCr => {
                    if input[i] == b'\n' {
                        if !self.after_bare {
                            return Some(i + 1);
                        }
                        // A dot line after a bare line end: content, kept as it is.
                        i += 1;
                        out.extend_from_slice(b".\r\n");
                        self.state = State::LineStart;
                        self.after_bare = false;
                        continue;
                    }
                    // `.<CR>` and then anything but LF (`.<CR><CR><LF>` among them):
                    // not the end. The line is a dot and a bare CR.
                    out.push(b'.');
                    self.bare_line_end(out);
                }
            }
        }
        None
    }

    /// How many bare CRs and LFs were turned into CRLF.
    pub fn bare_line_ends(&self) -> usize {
        self.bare_line_ends
    }

    fn bare_line_end(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.bare_line_ends += 1;
        self.state = State::LineStart;
        self.after_bare = true;
    }
}

#[cfg(test)]
mod tests {
    use super::DataDecoder;

    /// Decodes `input` fed in pieces of `step` bytes: the message and the rest.
    fn decode_in_steps(input: &[u8], step: usize) -> (Vec<u8>, Option<Vec<u8>>, usize) {
        let mut decoder = DataDecoder::default();
        let mut out = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let piece = &input[at..(at + step).min(input.len())];
            if let Some(used) = decoder.decode(piece, &mut out) {
                let rest = input[at + used..].to_vec();
                return (out, Some(rest), decoder.bare_line_ends());
            }
            at += piece.len();
        }
        (out, None, decoder.bare_line_ends())
    }

    /// The same result whatever the pieces the input arrives in.
    fn decode(input: &[u8]) -> (Vec<u8>, Option<Vec<u8>>, usize) {
        let whole = decode_in_steps(input, input.len().max(1));
        for step in 1..8 {
            assert_eq!(decode_in_steps(input, step), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn ends_at_crlf_dot_crlf_and_unstuffs() {
        let (msg, rest, bare) = decode(b"a\r\n..b\r\n.c\r\n\r\n.\r\nQUIT\r\n");
        assert_eq!(msg, b"a\r\n.b\r\nc\r\n\r\n");
        assert_eq!(rest.as_deref(), Some(&b"QUIT\r\n"[..]));
        assert_eq!(bare, 0);
        // An empty message, and one that starts with a dot.
        assert_eq!(decode(b".\r\n").0, b"");
        assert_eq!(decode(b"..x\r\n.\r\n").0, b".x\r\n");
    }

    #[test]
    fn cr_cr_lf_after_the_dot_is_not_the_end() {
        // The SMTP smuggling sequence smtp-proto 0.2.5 took as the end of DATA.
        for ending in [
            &b"\r\n.\r\r\n"[..],
            b"\r\n.\r\r\r\r\n",
            b"\r\n.\n",
            b"\r\n.\r",
            b"\n.\r\n",
            b"\r.\r\n",
        ] {
            let mut input = b"hello".to_vec();
            input.extend_from_slice(ending);
            input.extend_from_slice(b"MAIL FROM:<admin@example.com>\r\n.\r\n");
            let (msg, rest, _) = decode(&input);
            assert_eq!(rest.as_deref(), Some(&b""[..]), "{ending:?}");
            let text = String::from_utf8(msg).unwrap();
            assert!(
                text.contains("MAIL FROM:<admin@example.com>\r\n"),
                "{text:?}"
            );
            assert!(text.starts_with("hello\r\n.\r\n"), "{text:?}");
        }
    }

    #[test]
    fn bare_cr_and_lf_become_crlf() {
        let (msg, _, bare) = decode(b"a\nb\rc\r\r\nd\n\r\n.\r\n");
        assert_eq!(msg, b"a\r\nb\r\nc\r\n\r\nd\r\n\r\n");
        assert_eq!(bare, 4);
        // A dot after a bare line end is a dot at a line start, as the next hop sees it.
        let (msg, _, _) = decode(b"x\r..y\r\n.\r\n");
        assert_eq!(msg, b"x\r\n.y\r\n");
    }

    #[test]
    fn no_end_means_no_message_yet() {
        let (msg, rest, _) = decode(b"abc\r\n.\r");
        assert_eq!(rest, None);
        assert_eq!(msg, b"abc\r\n");
    }

    #[test]
    fn every_line_of_the_output_ends_in_crlf() {
        let input: Vec<u8> = (0..2000u32)
            .map(|i| [b'a', b'\r', b'\n', b'.', b'x'][(i * 7919 % 5) as usize])
            .collect();
        let mut input = input;
        input.extend_from_slice(b"\r\n.\r\n");
        let (msg, rest, _) = decode(&input);
        assert!(rest.is_some());
        for (i, &b) in msg.iter().enumerate() {
            if b == b'\r' {
                assert_eq!(msg.get(i + 1), Some(&b'\n'), "bare CR at {i}");
            }
            if b == b'\n' {
                assert_eq!(msg[i - 1], b'\r', "bare LF at {i}");
            }
        }
    }
}
