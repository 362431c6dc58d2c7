//! A message as it travels through the gateway: the client's bytes, untouched, with the
//! headers sealgate adds in front of them.
//!
//! The body is reference-counted ([`Bytes`]), so fanning one message out to several
//! next-hop transactions, or prepending a header, never copies it. An encrypted copy
//! holds its OpenPGP message in binary, armored only as it is written out
//! ([`Message::armored`]).

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;

use super::envelope::Envelope;
use crate::crypto::pgp::armor;

/// A message in wire form (CRLF line ends, not dot-stuffed), as a list of chunks.
#[derive(Debug, Clone, Default)]
pub struct Message {
    chunks: Vec<Bytes>,
    /// The chunks that are binary, to be written as ASCII armor's base64 lines: the
    /// OpenPGP message of an encrypted copy. Empty in any other message.
    armor: Range<usize>,
}

/// A part of a [`Message`] as it is held.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// Bytes of the message as they are.
    Text(&'a [u8]),
    /// Binary, a whole number of armor lines' worth except at the end, that is written
    /// as the base64 lines of ASCII armor ([`armor::push_lines`]). They start at a line
    /// start, after the BEGIN lines.
    Armor(&'a [u8]),
}

impl<'a> Part<'a> {
    /// The part in pieces of about `size` bytes in wire form each; armor is cut at
    /// line ends.
    pub fn split(self, size: usize) -> impl Iterator<Item = Part<'a>> {
        let (bytes, step, armored) = match self {
            Part::Text(text) => (text, size.max(1), false),
            Part::Armor(binary) => {
                const LINE: usize = armor::lines_len(armor::LINE_BYTES);
                (binary, (size / LINE).max(1) * armor::LINE_BYTES, true)
            }
        };
        bytes.chunks(step).map(move |piece| match armored {
            true => Part::Armor(piece),
            false => Part::Text(piece),
        })
    }

    /// The part in wire form: text is lent, armor is made.
    pub fn wire(self) -> Cow<'a, [u8]> {
        match self {
            Part::Text(text) => Cow::Borrowed(text),
            Part::Armor(binary) => {
                let mut lines = Vec::new();
                armor::push_lines(&mut lines, binary);
                Cow::Owned(lines)
            }
        }
    }
}

/// Binary per armored chunk: whole armor lines, 64 KiB and a little once armored.
const ARMOR_CHUNK: usize = 1024 * armor::LINE_BYTES;

impl Message {
    /// The message exactly as the client sent it.
    pub fn new(data: impl Into<Bytes>) -> Message {
        Message::from_chunks(vec![data.into()])
    }

    /// A message that arrived in pieces.
    pub fn from_chunks(chunks: Vec<Bytes>) -> Message {
        Message {
            chunks,
            armor: 0..0,
        }
    }

    /// `head`, then `binary` (an OpenPGP message) as the base64 lines of its ASCII
    /// armor, then `tail`. The armor is made a chunk at a time as the message is
    /// written ([`Message::pieces`]): a large encrypted copy is held in binary, never
    /// armored (a third larger) besides the message it was made from.
    pub fn armored(head: Vec<u8>, binary: Vec<u8>, tail: Vec<u8>) -> Message {
        let binary = Bytes::from(binary);
        let mut chunks = vec![Bytes::from(head)];
        let mut at = 0;
        while at < binary.len() {
            let end = (at + ARMOR_CHUNK).min(binary.len());
            chunks.push(binary.slice(at..end));
            at = end;
        }
        let armor = 1..chunks.len();
        chunks.push(Bytes::from(tail));
        Message { chunks, armor }
    }

    /// Puts a header field (CRLF-terminated) in front of the message.
    pub fn prepend(&mut self, header: impl Into<Bytes>) {
        self.chunks.insert(0, header.into());
        if !self.armor.is_empty() {
            self.armor = self.armor.start + 1..self.armor.end + 1;
        }
    }

    /// The chunks, in order, for a message that came in (or was read back) as it is:
    /// together they are the message. `None` for one made by [`Message::armored`],
    /// whose armor exists only as it is written ([`Message::pieces`]).
    pub fn chunks(&self) -> Option<&[Bytes]> {
        self.armor.is_empty().then_some(&self.chunks[..])
    }

    /// The message in wire form, a piece at a time: what is written to the spool or a
    /// file. Only armored chunks are made here; the rest is lent.
    pub fn pieces(&self) -> impl Iterator<Item = Cow<'_, [u8]>> {
        self.parts().map(Part::wire)
    }

    /// The message as it is held, in order: what is written to the next hop, which
    /// writes the armor straight into its output ([`crate::relay::dot`]).
    pub fn parts(&self) -> impl Iterator<Item = Part<'_>> {
        self.chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| match self.armor.contains(&i) {
                true => Part::Armor(chunk),
                false => Part::Text(chunk),
            })
    }

    /// Length in bytes, in wire form.
    pub fn len(&self) -> usize {
        self.chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| match self.armor.contains(&i) {
                true => armor::lines_len(chunk.len()),
                false => chunk.len(),
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole message in one buffer. This copies: use it off the hot path only.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for piece in self.pieces() {
            out.extend_from_slice(&piece);
        }
        out
    }

    /// The message with its first `old_len` bytes replaced by `head`; the rest is
    /// shared, not copied. An armored message stays armored when the bytes replaced lie
    /// before its armor, as a header does (the `X-Sealgate` status field on an
    /// encrypted copy); replacing part of the armor itself copies it whole.
    pub fn with_head(&self, old_len: usize, head: Vec<u8>) -> Message {
        let before_armor: usize = self.chunks[..self.armor.start].iter().map(Bytes::len).sum();
        if !self.armor.is_empty() && old_len > before_armor {
            return Message::new(self.to_vec()).with_head(old_len, head);
        }
        let mut chunks = vec![Bytes::from(head)];
        let mut armor = 0..0;
        let mut skip = old_len;
        for (i, chunk) in self.chunks.iter().enumerate() {
            if self.armor.contains(&i) {
                // Nothing of the armor is skipped: `old_len` ends before it.
                if armor.is_empty() {
                    armor = chunks.len()..chunks.len();
                }
                chunks.push(chunk.clone());
                armor.end = chunks.len();
                continue;
            }
            if skip >= chunk.len() {
                skip -= chunk.len();
                continue;
            }
            chunks.push(chunk.slice(skip..));
            skip = 0;
        }
        Message { chunks, armor }
    }

    /// The header block with the empty line that ends it (copied), and the body after
    /// it (shared, not copied). A message without an empty line is all header.
    pub fn split_head(&self) -> (Vec<u8>, Message) {
        let mut head = self.header_block(usize::MAX);
        if head.len() + 2 > self.len() {
            return (self.to_vec(), Message::default());
        }
        // header_block stopped at an empty line: the CRLF of that line follows.
        head.extend_from_slice(b"\r\n");
        let body = self.with_head(head.len(), Vec::new());
        (head, body)
    }

    /// The header block (up to, not including, the empty line), at most `limit` bytes.
    /// Copies no more than that: the search for the empty line goes chunk by chunk.
    pub fn header_block(&self, limit: usize) -> Vec<u8> {
        const END: &[u8] = b"\r\n\r\n";
        let mut head = Vec::new();
        for piece in self.pieces() {
            let chunk = &piece[..piece.len().min(limit - head.len())];
            // An empty line across two chunks: the last three bytes so far and the
            // first three of this chunk.
            let seam_start = head.len().saturating_sub(3);
            let mut seam = head[seam_start..].to_vec();
            seam.extend_from_slice(&chunk[..chunk.len().min(3)]);
            let end = memchr::memmem::find(&seam, END)
                .map(|at| seam_start + at)
                .or_else(|| memchr::memmem::find(chunk, END).map(|at| head.len() + at));
            if let Some(at) = end {
                // Up to and with the CRLF of the last field.
                let end = at + 2;
                if end <= head.len() {
                    head.truncate(end);
                } else {
                    head.extend_from_slice(&chunk[..end - head.len()]);
                }
                return head;
            }
            head.extend_from_slice(chunk);
            if head.len() >= limit {
                break;
            }
        }
        head
    }
}

/// A new transaction id: unique within this gateway, sortable by time, safe in file
/// names and headers.
pub fn new_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xFFFF;
    format!("{micros:X}{n:04X}")
}

/// The `Received:` header sealgate adds (RFC 5321 §4.4), naming itself and the direction.
pub fn received_header(
    envelope: &Envelope,
    hostname: &str,
    id: &str,
    now: time::OffsetDateTime,
) -> String {
    // The protocol names of RFC 3848 and RFC 6531.
    let protocol = match (
        envelope.params.smtputf8,
        envelope.esmtp,
        envelope.tls.is_some(),
    ) {
        (true, _, false) => "UTF8SMTP",
        (true, _, true) => "UTF8SMTPS",
        (false, true, false) => "ESMTP",
        (false, true, true) => "ESMTPS",
        (false, false, false) => "SMTP",
        (false, false, true) => "SMTPS",
    };
    let helo = sanitize(&envelope.helo);
    let date = now
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default();
    let mut header = format!(
        "Received: from {helo} ({ip})\r\n\tby {host} (sealgate, {direction}) with {protocol} id {id}",
        ip = address_literal(envelope.client_ip),
        host = sanitize(hostname),
        direction = envelope.direction,
    );
    // Naming the recipient is only safe when there is one: otherwise it would disclose
    // the other recipients of a Bcc'd message to each other.
    if let [rcpt] = envelope.recipients.as_slice() {
        header.push_str(&format!("\r\n\tfor <{}>", sanitize(rcpt)));
    }
    header.push_str(&format!(";\r\n\t{date}\r\n"));
    header
}

/// The client's address as RFC 5321 §4.1.3 writes it: `[192.0.2.1]`, `[IPv6:2001:db8::1]`.
fn address_literal(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("[{v4}]"),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("[{v4}]"),
            None => format!("[IPv6:{v6}]"),
        },
    }
}

/// Keeps a peer-supplied token from breaking the header's syntax.
fn sanitize(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '(' | ')' | ';' | '\\'))
        .take(255)
        .collect();
    if clean.is_empty() {
        "unknown".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::Direction;
    use crate::mail::envelope::MailParams;

    #[test]
    fn received_names_sealgate_and_direction() {
        let env = Envelope {
            direction: Direction::Outbound,
            client_ip: "127.0.0.1".parse().unwrap(),
            helo: "mta.example.com (evil)\r\n".into(),
            tls: Some("TLSv1_3 TLS13_AES_128_GCM_SHA256".into()),
            esmtp: true,
            mail_from: "a@example.com".into(),
            params: MailParams::default(),
            recipients: vec!["b@example.org".into()],
        };
        let h = received_header(
            &env,
            "gw.example.com",
            "ABC",
            time::OffsetDateTime::UNIX_EPOCH,
        );
        assert!(h.starts_with("Received: from mta.example.com evil ([127.0.0.1])\r\n\tby gw.example.com (sealgate, outbound) with ESMTPS id ABC"), "{h}");
        assert!(h.contains("for <b@example.org>;"), "{h}");
        assert!(h.ends_with("+0000\r\n"), "{h}");
    }

    #[test]
    fn an_armored_message_is_written_as_armor_written_at_once() {
        use std::io::Write;
        for len in [
            0,
            1,
            47,
            48,
            49,
            ARMOR_CHUNK - 1,
            ARMOR_CHUNK,
            ARMOR_CHUNK + 1,
            3 * ARMOR_CHUNK + 5,
        ] {
            let binary: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut held = armor::Binary::with_capacity(len);
            held.write_all(&binary).unwrap();
            let (held, end) = held.finish();
            let head = b"Subject: x\r\n\r\n".to_vec();
            let mut opened = head.clone();
            opened.extend_from_slice(armor::BEGIN_LINES);
            let mut tail = end;
            tail.extend_from_slice(b"\r\n--b--\r\n");
            let mut message = Message::armored(opened, held, tail);
            message.prepend(&b"Received: y\r\n"[..]);

            let mut expected = b"Received: y\r\n".to_vec();
            expected.extend_from_slice(&head);
            expected.extend_from_slice(&armor::armor_message(&binary));
            expected.extend_from_slice(b"\r\n--b--\r\n");
            // Its raw chunks are not the message: only its pieces are.
            assert_eq!(message.chunks().is_none(), len > 0, "{len} bytes");
            let written: Vec<u8> = message.pieces().flat_map(|p| p.into_owned()).collect();
            assert_eq!(written, expected, "{len} bytes");
            assert_eq!(message.to_vec(), expected, "{len} bytes");
            assert_eq!(message.len(), expected.len(), "{len} bytes");
            assert_eq!(message.header_block(1000), b"Received: y\r\nSubject: x\r\n");
            // A new header keeps the binary held as it is; cutting into the armor
            // copies it whole. Either way the message comes out the same.
            let rewritten = message.with_head(13, b"Received: z\r\n".to_vec());
            assert_eq!(rewritten.chunks().is_none(), len > 0, "{len} bytes");
            let mut with_z = b"Received: z\r\n".to_vec();
            with_z.extend_from_slice(&expected[13..]);
            assert_eq!(rewritten.to_vec(), with_z, "{len} bytes");
            assert_eq!(rewritten.len(), with_z.len(), "{len} bytes");
            let into_armor = 13 + head.len() + armor::BEGIN_LINES.len() + 1;
            let cut = message.with_head(into_armor, b"X".to_vec());
            assert!(cut.chunks().is_some(), "{len} bytes");
            assert_eq!(cut.to_vec()[1..], expected[into_armor..], "{len} bytes");
        }
    }

    #[test]
    fn header_block_stops_at_blank_line() {
        let mut m = Message::new(&b"Subject: x\r\n\r\nbody\r\n"[..]);
        m.prepend(&b"Received: y\r\n"[..]);
        assert_eq!(m.header_block(1000), b"Received: y\r\nSubject: x\r\n");
        assert_eq!(m.len(), 13 + 20);
    }

    #[test]
    fn header_block_finds_an_empty_line_across_chunks() {
        let cuts: [&[&[u8]]; 4] = [
            &[b"Subject: x\r", b"\n\r\nbody\r\n"],
            &[b"Subject: x\r\n", b"\r\nbody\r\n"],
            &[b"Subject: x\r\n\r", b"\nbody\r\n"],
            &[b"Subj", b"ect: x", b"\r\n\r\nbody\r\n"],
        ];
        for chunks in cuts {
            let m =
                Message::from_chunks(chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect());
            assert_eq!(m.header_block(usize::MAX), b"Subject: x\r\n", "{chunks:?}");
            assert_eq!(m.header_block(6), b"Subjec", "{chunks:?}");
        }
        // No empty line: all of it is header.
        let m = Message::new(&b"Subject: x\r\nFrom: y\r\n"[..]);
        assert_eq!(m.header_block(usize::MAX), b"Subject: x\r\nFrom: y\r\n");
    }
}
