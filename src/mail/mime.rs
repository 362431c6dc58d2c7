//! The MIME side of encryption, reading: which messages are already encrypted, where
//! their ciphertext is, and a message cut into its header fields. Wrapping (PGP/MIME,
//! RFC 3156; S/MIME, RFC 8551; the protected Subject, "protected headers",
//! draft-autocrypt-lamps-protected-headers) is [`super::wrap`]; unwrapping is
//! [`super::decrypted`].
//!
//! Parsing is mail-parser's; this module only cuts the message at the offsets it
//! reports and puts header fields back together, byte for byte where they are kept.

use std::borrow::Cow;

use mail_parser::MimeHeaders;

use super::message::Message;
use super::parser::parser;

/// How a message is already encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encrypted {
    /// multipart/encrypted; protocol="application/pgp-encrypted".
    PgpMime,
    /// A text/plain body holding an armored PGP MESSAGE.
    InlinePgp,
    /// application/pkcs7-mime enveloped-data (or authEnveloped-data).
    Smime,
}

impl Encrypted {
    pub fn as_str(self) -> &'static str {
        match self {
            Encrypted::PgpMime | Encrypted::InlinePgp => "pgp",
            Encrypted::Smime => "smime",
        }
    }
}

pub(super) const PGP_BEGIN: &str = "-----BEGIN PGP MESSAGE-----";
pub(super) const PGP_END: &str = "-----END PGP MESSAGE-----";

/// A message cut into its raw header fields (each with its folding and line end) and
/// its body.
pub struct Cut<'a> {
    pub fields: Vec<&'a [u8]>,
    pub body: &'a [u8],
}

impl<'a> Cut<'a> {
    /// Cuts `raw`; `None` when mail-parser cannot read it at all.
    ///
    /// The header ends where mail-parser's body starts (it may end it early: at a line
    /// of whitespace only, say), but never past the first empty line, where every
    /// reader ends it. The fields are cut line by line, a line that starts with a space
    /// or a tab continuing the field before it, not at mail-parser's field offsets: its
    /// field parsers may read on past a line's end (0.11.9's Date parser, on a malformed
    /// date, took the next line into the Date field, and the empty line and what
    /// follows it too; found by fuzz/, the decrypt target). A field so taken was hidden
    /// in the Date field: a forged `X-Sealgate-Decrypted` in a decrypted entity went
    /// out unseen, a Subject stayed outside protected headers, and fields we add after
    /// the outer ones ended up in the body.
    pub fn new(raw: &'a [u8]) -> Option<Cut<'a>> {
        // mail-parser is given the header block only (up to the first empty line, past
        // which no reader takes the header on): it decides where the header ends from
        // the header alone, and the body, which it would parse into parts and decode
        // (base64 attachments and all) for nothing, can be megabytes.
        let empty_line = first_empty_line(raw);
        let header = &raw[..empty_line.map_or(raw.len(), |(_, after)| after)];
        let message = parser().parse(header)?;
        let root = message.parts.first()?;
        let parsed_body = (root.raw_body_offset() as usize).min(header.len());
        let (header_end, body_start) = match empty_line {
            Some((line, after)) if line < parsed_body => (line, after),
            _ => (parsed_body, parsed_body),
        };
        let mut fields: Vec<&'a [u8]> = Vec::new();
        let mut start = 0;
        for line in raw[..header_end].split_inclusive(|&b| b == b'\n') {
            let end = start + line.len();
            match fields.last_mut() {
                Some(field) if matches!(line.first(), Some(b' ' | b'\t')) => {
                    *field = &raw[end - field.len() - line.len()..end];
                }
                _ => fields.push(&raw[start..end]),
            }
            start = end;
        }
        if let Some(last) = fields.last_mut() {
            *last = trim_blank_line(last);
        }
        Some(Cut {
            fields,
            body: &raw[body_start..],
        })
    }

    /// The fields whose name satisfies `keep`.
    pub fn fields_where(&self, keep: impl Fn(&str) -> bool) -> Vec<&'a [u8]> {
        self.fields
            .iter()
            .copied()
            .filter(|f| keep(&field_name(f)))
            .collect()
    }
}

/// The first empty line: where it starts, and where the body after it starts.
fn first_empty_line(raw: &[u8]) -> Option<(usize, usize)> {
    if raw.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    if raw.starts_with(b"\n") {
        return Some((0, 1));
    }
    let crlf = memchr::memmem::find(raw, b"\r\n\r\n").map(|at| (at + 2, at + 4));
    let lf = memchr::memmem::find(raw, b"\n\n").map(|at| (at + 1, at + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The last field before the body runs up to the body and so includes the line that
/// ended the header block. For mail-parser that is any line of whitespace only
/// (`" \r\n"`, a form feed), not just an empty one; left on the field, a field put
/// after it would be in the body.
fn trim_blank_line(field: &[u8]) -> &[u8] {
    let Some(lines) = field.strip_suffix(b"\n") else {
        return field;
    };
    let last = lines
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    if lines[last..].iter().all(u8::is_ascii_whitespace) {
        &field[..last]
    } else {
        field
    }
}

/// A field's name, lower-cased.
pub fn field_name(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end])
        .trim()
        .to_ascii_lowercase()
}

pub(super) fn is_content_field(name: &str) -> bool {
    name.starts_with("content-")
}

/// Header fields the protected-headers scheme copies into the encrypted part.
pub(super) const PROTECTED: [&str; 6] = ["subject", "from", "to", "cc", "date", "message-id"];

/// How the message is already encrypted, if it is.
///
/// The top-level Content-Type decides, and only inline PGP needs the body: the whole
/// message is parsed (its parts decoded, base64 attachments and all) only when it may
/// hold an armored block, that is when the armor line is in it as it is, or when its
/// text is base64 (where the line is not to be seen until it is decoded). Every
/// message passes here, so this is most of what a plain message costs to look at.
pub fn encrypted(raw: &[u8]) -> Option<Encrypted> {
    encrypted_in(&parsed_for_kind(raw)?.0)
}

/// [`encrypted`] and [`ciphertext`] at once: a message that [`encrypted`] parses whole
/// is not parsed again for its ciphertext.
pub fn payload(raw: &[u8]) -> Option<(Encrypted, Option<Cow<'_, [u8]>>)> {
    let (message, whole) = parsed_for_kind(raw)?;
    let kind = encrypted_in(&message)?;
    let ciphertext = match whole {
        true => ciphertext_in(&message, kind),
        false => ciphertext(raw, kind),
    };
    Some((kind, ciphertext))
}

/// [`encrypted`], for a message in its chunks: only the header block is copied, and
/// the body is searched for the armor line where it lies. A message that may hold
/// inline PGP, or whose header block is too long to take alone, is read whole, as
/// [`encrypted`] reads it.
pub fn encrypted_message(message: &Message) -> Option<Encrypted> {
    const HEADER_LIMIT: usize = 256 * 1024;
    let head = message.header_block(HEADER_LIMIT);
    if head.len() >= HEADER_LIMIT || super::payload::contains(message, PGP_BEGIN.as_bytes()) {
        return encrypted(&message.to_vec());
    }
    let headers = parser().parse_headers(&head)?;
    if base64_body(&headers) {
        return encrypted(&message.to_vec());
    }
    encrypted_in(&headers)
}

/// The message as [`encrypted`] reads it, and whether that is whole (else its header
/// only).
fn parsed_for_kind(raw: &[u8]) -> Option<(mail_parser::Message<'_>, bool)> {
    let headers = parser().parse_headers(raw)?;
    let may_be_inline =
        memchr::memmem::find(raw, PGP_BEGIN.as_bytes()).is_some() || base64_body(&headers);
    if may_be_inline {
        return Some((parser().parse(raw)?, true));
    }
    Some((headers, false))
}

/// Whether the top-level body is base64, where an armor line cannot be seen until it is
/// decoded.
fn base64_body(headers: &mail_parser::Message<'_>) -> bool {
    headers
        .header_raw("Content-Transfer-Encoding")
        .is_some_and(|cte| cte.trim().eq_ignore_ascii_case("base64"))
}

/// [`encrypted`], for a message already parsed.
pub fn encrypted_in(message: &mail_parser::Message<'_>) -> Option<Encrypted> {
    let ct = message.content_type();
    let (ctype, subtype) = ct.map_or(("text".to_string(), "plain".to_string()), |ct| {
        (
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or("").to_ascii_lowercase(),
        )
    });
    let attribute = |name: &str| {
        ct.and_then(|ct| ct.attribute(name))
            .map(str::to_ascii_lowercase)
    };
    match (ctype.as_str(), subtype.as_str()) {
        ("multipart", "encrypted")
            if attribute("protocol").as_deref() == Some("application/pgp-encrypted") =>
        {
            Some(Encrypted::PgpMime)
        }
        ("application", "pkcs7-mime" | "x-pkcs7-mime") => {
            match attribute("smime-type").as_deref() {
                Some("enveloped-data" | "authenveloped-data") => Some(Encrypted::Smime),
                // Old clients leave smime-type out; the file name still says what it is.
                None if attribute("name").is_some_and(|n| n.ends_with(".p7m")) => {
                    Some(Encrypted::Smime)
                }
                _ => None,
            }
        }
        ("text", "plain") => {
            let text = message.body_text(0)?;
            (text.contains(PGP_BEGIN) && text.contains(PGP_END)).then_some(Encrypted::InlinePgp)
        }
        _ => None,
    }
}

/// The ciphertext inside an encrypted message: the armored block of PGP/MIME or inline
/// PGP, or the DER/BER of S/MIME.
pub fn ciphertext(raw: &[u8], kind: Encrypted) -> Option<Cow<'_, [u8]>> {
    ciphertext_in(&parser().parse(raw)?, kind)
}

/// [`ciphertext`], for a message already parsed (whole).
fn ciphertext_in<'x>(message: &mail_parser::Message<'x>, kind: Encrypted) -> Option<Cow<'x, [u8]>> {
    match kind {
        Encrypted::PgpMime => {
            let children = message.parts.first()?.sub_parts()?;
            let payload = message.part(*children.get(1)?)?;
            Some(in_place(payload))
        }
        Encrypted::InlinePgp => {
            let text = message.body_text(0)?;
            let start = text.find(PGP_BEGIN)?;
            let end = start + text[start..].find(PGP_END)? + PGP_END.len();
            Some(Cow::Owned(text[start..end].as_bytes().to_vec()))
        }
        Encrypted::Smime => Some(in_place(message.parts.first()?)),
    }
}

/// A part's content, where it lies in the message when it needed no decoding (the
/// armored block of PGP/MIME nearly always): a large message is not copied for it.
fn in_place<'x>(part: &mail_parser::MessagePart<'x>) -> Cow<'x, [u8]> {
    use mail_parser::PartType;
    match &part.body {
        PartType::Text(Cow::Borrowed(text)) | PartType::Html(Cow::Borrowed(text)) => {
            Cow::Borrowed(text.as_bytes())
        }
        PartType::Binary(Cow::Borrowed(bytes)) | PartType::InlineBinary(Cow::Borrowed(bytes)) => {
            Cow::Borrowed(bytes)
        }
        _ => Cow::Owned(part.contents().to_vec()),
    }
}

/// Whether `text` starts with header fields ending in an empty line, as a MIME entity
/// with fields does: every line before it a `name: value` field (RFC 5322 §2.2) or the
/// folded continuation of one. Lines may end in CRLF or, as some clients encrypt them,
/// a bare LF.
pub fn has_header_block(text: &[u8]) -> bool {
    let mut first = true;
    for line in text.split_inclusive(|&b| b == b'\n') {
        // The last line has no end: no empty line follows it.
        let Some(line) = line.strip_suffix(b"\n") else {
            return false;
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return !first;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        let field = line
            .iter()
            .position(|&b| b == b':')
            .is_some_and(|colon| colon > 0 && line[..colon].iter().all(|&b| b.is_ascii_graphic()));
        if !(field || (continuation && !first)) {
            return false;
        }
        first = false;
    }
    // No empty line: a header without a body is no entity we can place.
    false
}

/// Line ends made CRLF, as DATA makes them ([`crate::smtp::data`]): a bare LF
/// (OpenSSL and some clients encrypt LF text; files saved by mail clients often have LF
/// line ends) and a bare CR each become CRLF. A bare CR left in a decrypted header is
/// no line end to mail-parser, but the relay sends it on as one: the next hop would
/// read a field we never saw (a forged `X-Sealgate`).
pub fn crlf(text: &[u8]) -> Cow<'_, [u8]> {
    // Mostly there is nothing to change (MIME entities are CRLF already): then the
    // text is not copied.
    let clean = memchr::memchr2_iter(b'\r', b'\n', text).all(|at| match text[at] {
        b'\r' => text.get(at + 1) == Some(&b'\n'),
        _ => at > 0 && text[at - 1] == b'\r',
    });
    if clean {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len() + text.len() / 32);
    let mut bytes = text.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                bytes.next_if_eq(&b'\n');
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::wrap::{
        SmimeType, inner_entity, pgp_mime, pgp_mime_frame, pgp_mime_parts, smime_enveloped,
    };

    /// Unwrapping without signatures, as these tests were written for.
    fn decrypted(raw: &[u8], kind: Encrypted, plaintext: &[u8], marker: &str) -> Option<Vec<u8>> {
        crate::mail::decrypted::decrypted(raw, kind, plaintext, marker, None).map(|(m, _)| m)
    }

    const PLAIN: &[u8] = b"Received: from x\r\n\tby y; Mon, 1 Jan 2026 00:00:00 +0000\r\nFrom: a@example.com\r\nTo: b@example.org\r\nSubject: Secret plans\r\nMIME-Version: 1.0\r\nContent-Type: text/plain;\r\n charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nbody line\r\n";

    #[test]
    fn header_blocks() {
        assert!(has_header_block(
            b"Content-Type: text/plain;\r\n charset=x\r\n\r\nbody"
        ));
        assert!(has_header_block(b"Content-Type: text/plain\n\nLF text"));
        assert!(has_header_block(b"Subject: no body\r\n\r\n"));
        assert!(!has_header_block(b"Hello world\r\n\r\nbody"));
        assert!(!has_header_block(b" folded first\r\n\r\n"));
        assert!(!has_header_block(b"\r\nan empty header"));
        assert!(!has_header_block(b"Subject: never ends\r\n"));
        assert!(!has_header_block(b": no name\r\n\r\n"));
        assert!(!has_header_block(b"Bad name: x\r\n\r\n"));
    }

    #[test]
    fn cuts_fields_exactly() {
        let cut = Cut::new(PLAIN).unwrap();
        assert_eq!(
            cut.fields[0],
            b"Received: from x\r\n\tby y; Mon, 1 Jan 2026 00:00:00 +0000\r\n"
        );
        assert_eq!(
            cut.fields.last().unwrap(),
            b"Content-Transfer-Encoding: 8bit\r\n"
        );
        assert_eq!(cut.body, b"body line\r\n");
        assert_eq!(cut.fields.concat().len() + 2 + cut.body.len(), PLAIN.len());
    }

    #[test]
    fn the_parts_cut_once_are_the_entity_and_the_frame() {
        for protect in [true, false] {
            let (entity, opening, closing) = pgp_mime_parts(PLAIN, protect).unwrap();
            assert_eq!(entity, inner_entity(PLAIN, protect).unwrap());
            // The same frame but for its boundary, which is random.
            let (other_opening, other_closing) = pgp_mime_frame(PLAIN, protect).unwrap();
            let unbounded = |opening: Vec<u8>, closing: &[u8]| {
                let closing = String::from_utf8(closing.to_vec()).unwrap();
                let boundary = closing.trim().trim_matches('-');
                String::from_utf8(opening).unwrap().replace(boundary, "B")
            };
            let frame = unbounded(opening, &closing);
            assert_eq!(frame, unbounded(other_opening, &other_closing));
            assert!(frame.contains("boundary=\"B\""), "{frame}");
            assert_eq!(frame.contains("Subject: ...\r\n"), protect, "{frame}");
        }
    }

    #[test]
    fn inner_entity_carries_content_fields_and_protected_headers() {
        let inner = String::from_utf8(inner_entity(PLAIN, true).unwrap()).unwrap();
        assert!(
            inner.starts_with(
                "Content-Type: text/plain;\r\n charset=utf-8;\r\n\tprotected-headers=\"v1\"\r\n"
            ),
            "{inner}"
        );
        assert!(inner.contains("Subject: Secret plans\r\n"));
        assert!(!inner.contains("Received:"));
        assert!(inner.ends_with("\r\n\r\nbody line\r\n"));
    }

    #[test]
    fn wraps_and_unwraps_pgp_mime() {
        let armored = b"-----BEGIN PGP MESSAGE-----\r\n\r\nxyz\r\n-----END PGP MESSAGE-----\r\n";
        let wrapped = pgp_mime(PLAIN, armored, true).unwrap();
        let text = String::from_utf8_lossy(&wrapped);
        assert!(text.contains("Subject: ...\r\n"), "{text}");
        assert!(
            text.starts_with("Received: from x\r\n\tby y;"),
            "routing headers kept in order"
        );
        assert!(!text.contains("Secret plans"));
        assert_eq!(encrypted(&wrapped), Some(Encrypted::PgpMime));
        assert_eq!(
            &*ciphertext(&wrapped, Encrypted::PgpMime).unwrap(),
            &armored[..]
        );

        let inner = inner_entity(PLAIN, true).unwrap();
        let restored = decrypted(&wrapped, Encrypted::PgpMime, &inner, "pgp; key=ABC").unwrap();
        let text = String::from_utf8_lossy(&restored);
        assert!(
            text.contains("Subject: Secret plans\r\n") && !text.contains("Subject: ..."),
            "{text}"
        );
        assert!(text.contains("X-Sealgate-Decrypted: pgp; key=ABC\r\n"));
        assert!(text.ends_with("\r\n\r\nbody line\r\n"), "{text}");
        assert_eq!(encrypted(&restored), None);
    }

    /// A sender could put `X-Sealgate-Decrypted` inside the encrypted part, where the
    /// gateway's removal of forged fields on arrival does not reach.
    #[test]
    fn fields_of_ours_inside_the_encrypted_part_are_dropped() {
        let armored = b"-----BEGIN PGP MESSAGE-----\r\n\r\nxyz\r\n-----END PGP MESSAGE-----\r\n";
        let wrapped = pgp_mime(PLAIN, armored, false).unwrap();
        let inner = b"Content-Type: text/plain\r\nX-Sealgate-Decrypted: smime; key=FORGED\r\n\
                      x-sealgate: decrypted; rule=forged\r\n\r\nhello\r\n";
        let restored = decrypted(&wrapped, Encrypted::PgpMime, inner, "pgp; key=ABC").unwrap();
        let text = String::from_utf8_lossy(&restored);
        assert_eq!(text.matches("X-Sealgate-Decrypted").count(), 1, "{text}");
        assert!(
            text.contains("X-Sealgate-Decrypted: pgp; key=ABC\r\n"),
            "{text}"
        );
        assert!(!text.to_lowercase().contains("forged"), "{text}");
    }

    #[test]
    fn bare_text_and_headerless_plaintext_are_kept_as_the_body() {
        let wrapped = smime_enveloped(PLAIN, b"\x30\x00", false, SmimeType::EnvelopedData).unwrap();
        let out = decrypted(
            &wrapped,
            Encrypted::Smime,
            b"This is some sample content.",
            "smime; key=K",
        )
        .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.ends_with(
                "Content-Type: text/plain; charset=us-ascii\r\n\r\nThis is some sample content."
            ),
            "{text}"
        );
        let out = decrypted(
            &wrapped,
            Encrypted::Smime,
            b"Dear Fran: this is a test.\n\nBye\n",
            "smime; key=K",
        )
        .unwrap();
        assert!(
            String::from_utf8_lossy(&out)
                .ends_with("\r\n\r\nDear Fran: this is a test.\r\n\r\nBye\r\n")
        );
    }

    #[test]
    fn inner_fields_the_outer_lacks_are_kept() {
        let wrapped = pgp_mime(PLAIN, b"x", false).unwrap();
        let inner = b"Content-Type: text/plain\r\nAutocrypt-Gossip: addr=c@example.org; keydata=AAAA\r\nSubject: inner\r\n\r\nhi\r\n";
        let text = String::from_utf8(
            decrypted(&wrapped, Encrypted::PgpMime, inner, "pgp; key=K").unwrap(),
        )
        .unwrap();
        assert!(
            text.contains("Autocrypt-Gossip: addr=c@example.org"),
            "{text}"
        );
        assert!(
            text.contains("Subject: Secret plans\r\n") && !text.contains("Subject: inner"),
            "unprotected inner fields do not override: {text}"
        );
    }

    #[test]
    fn detects_smime_and_inline_pgp() {
        let smime = smime_enveloped(
            PLAIN,
            b"\x30\x03\x02\x01\x00",
            false,
            SmimeType::EnvelopedData,
        )
        .unwrap();
        assert_eq!(encrypted(&smime), Some(Encrypted::Smime));
        assert_eq!(
            &*ciphertext(&smime, Encrypted::Smime).unwrap(),
            &b"\x30\x03\x02\x01\x00"[..]
        );
        assert!(
            String::from_utf8_lossy(&smime).contains("Subject: Secret plans"),
            "unprotected"
        );
        let inline = b"From: a@example.org\r\nSubject: x\r\n\r\nhi\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nabc\r\n-----END PGP MESSAGE-----\r\nbye\r\n";
        assert_eq!(encrypted(inline), Some(Encrypted::InlinePgp));
        let out = decrypted(inline, Encrypted::InlinePgp, b"the secret\n", "pgp; key=K").unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.ends_with("\r\n\r\nhi\r\nthe secret\r\n\r\nbye\r\n"),
            "{text}"
        );
        assert_eq!(encrypted(PLAIN), None);
    }

    /// authEnveloped-data (AES-GCM) is wrapped and unwrapped like enveloped-data: as
    /// sealgate writes it, and as `openssl cms -encrypt -aes-256-gcm` does (LF, and the
    /// smime-type in its own case).
    #[test]
    fn wraps_and_unwraps_auth_enveloped_data() {
        let der = b"\x30\x03\x02\x01\x00";
        let wrapped = smime_enveloped(PLAIN, der, true, SmimeType::AuthEnvelopedData).unwrap();
        let text = String::from_utf8_lossy(&wrapped);
        assert!(
            text.contains(
                "Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data;\r\n\tname=\"smime.p7m\"\r\n"
            ),
            "{text}"
        );
        assert!(text.contains("Subject: ...\r\n") && !text.contains("Secret plans"));
        assert_eq!(encrypted(&wrapped), Some(Encrypted::Smime));
        assert_eq!(&*ciphertext(&wrapped, Encrypted::Smime).unwrap(), &der[..]);
        let inner = inner_entity(PLAIN, true).unwrap();
        let restored = decrypted(&wrapped, Encrypted::Smime, &inner, "smime; key=K").unwrap();
        let text = String::from_utf8_lossy(&restored);
        assert!(
            text.contains("Subject: Secret plans\r\n") && !text.contains("authEnveloped"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nbody line\r\n"), "{text}");
        assert_eq!(encrypted(&restored), None);

        let openssl = b"MIME-Version: 1.0\nContent-Disposition: attachment; filename=\"smime.p7m\"\n\
            Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data; name=\"smime.p7m\"\n\
            Content-Transfer-Encoding: base64\n\nMAMCAQA=\n";
        assert_eq!(encrypted(openssl), Some(Encrypted::Smime));
        assert_eq!(&*ciphertext(openssl, Encrypted::Smime).unwrap(), &der[..]);
    }
}
