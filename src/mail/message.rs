//! A message as it travels through the gateway: the client's bytes, untouched, with the
//! headers sealgate adds in front of them.
//!
//! The body is reference-counted ([`Bytes`]), so fanning one message out to several
//! next-hop transactions, or prepending a header, never copies it.

use bytes::Bytes;

use super::envelope::Envelope;

/// A message in wire form (CRLF line ends, not dot-stuffed), as a list of chunks.
#[derive(Debug, Clone, Default)]
pub struct Message {
    chunks: Vec<Bytes>,
}

impl Message {
    /// The message exactly as the client sent it.
    pub fn new(data: impl Into<Bytes>) -> Message {
        Message {
            chunks: vec![data.into()],
        }
    }

    /// A message that arrived in pieces.
    pub fn from_chunks(chunks: Vec<Bytes>) -> Message {
        Message { chunks }
    }

    /// Puts a header field (CRLF-terminated) in front of the message.
    pub fn prepend(&mut self, header: impl Into<Bytes>) {
        self.chunks.insert(0, header.into());
    }

    /// The chunks, in order; together they are the message.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole message in one buffer. This copies: use it off the hot path only.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for chunk in &self.chunks {
            out.extend_from_slice(chunk);
        }
        out
    }

    /// The message with its first `old_len` bytes replaced by `head`; the rest is
    /// shared, not copied.
    pub fn with_head(&self, old_len: usize, head: Vec<u8>) -> Message {
        let mut chunks = vec![Bytes::from(head)];
        let mut skip = old_len;
        for chunk in &self.chunks {
            if skip >= chunk.len() {
                skip -= chunk.len();
                continue;
            }
            chunks.push(chunk.slice(skip..));
            skip = 0;
        }
        Message { chunks }
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
        for chunk in &self.chunks {
            let chunk = &chunk[..chunk.len().min(limit - head.len())];
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
