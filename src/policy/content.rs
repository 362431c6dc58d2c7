//! What the rules can ask about a message: its size, Subject and other header fields,
//! whether it is already encrypted or signed, and its attachments. Read once per
//! message with mail-parser, and only as deep as the policy's conditions need.

use mail_parser::{HeaderValue, MimeHeaders};

use crate::mail::message::Message;
use crate::mail::mime::{self, Encrypted};

/// How much of the message the rules look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Subject or header conditions: the header block.
    pub headers: bool,
    /// encrypted, signed or attachment conditions: the whole MIME structure.
    pub structure: bool,
}

impl Needs {
    pub fn union(self, other: Needs) -> Needs {
        Needs {
            headers: self.headers || other.headers,
            structure: self.structure || other.structure,
        }
    }
}

/// Header blocks longer than this are read only this far.
const HEADER_LIMIT: usize = 256 * 1024;

/// The facts about one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    pub size: u64,
    /// Decoded (RFC 2047); empty when there is none.
    pub subject: String,
    /// (lower-case name, value): decoded for unstructured fields, else as written,
    /// unfolded.
    pub headers: Vec<(String, String)>,
    pub encrypted: Option<Encrypted>,
    pub signed: bool,
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The file name, or "" when it has none.
    pub name: String,
    /// type/subtype, lower-case.
    pub mime: String,
}

impl Content {
    /// Reads what `needs` asks for; the rest stays empty.
    pub fn read(message: &Message, needs: Needs) -> Content {
        let mut content = Content {
            size: message.len() as u64,
            ..Content::default()
        };
        if needs.structure {
            let raw = message.to_vec();
            if let Some(parsed) = crate::mail::parser::parser().parse(&raw) {
                content.fill_headers(&parsed, &raw);
                content.fill_structure(&parsed);
            }
        } else if needs.headers {
            let head = message.header_block(HEADER_LIMIT);
            if let Some(parsed) = crate::mail::parser::parser().parse_headers(&head) {
                content.fill_headers(&parsed, &head);
            }
        }
        content
    }

    fn fill_headers(&mut self, parsed: &mail_parser::Message<'_>, raw: &[u8]) {
        self.subject = parsed.subject().unwrap_or("").to_string();
        for header in parsed.headers() {
            let value = match &header.value {
                HeaderValue::Text(text) => unfold(text),
                _ => {
                    let (start, end) = (header.offset_start as usize, header.offset_end as usize);
                    let bytes = raw.get(start..end).unwrap_or_default();
                    unfold(&String::from_utf8_lossy(bytes))
                }
            };
            self.headers
                .push((header.name.as_str().to_ascii_lowercase(), value));
        }
    }

    fn fill_structure(&mut self, parsed: &mail_parser::Message<'_>) {
        self.encrypted = mime::encrypted_in(parsed);
        self.signed = is_signed(parsed);
        self.attachments = parsed
            .attachments()
            .map(|part| Attachment {
                name: part.attachment_name().unwrap_or("").to_string(),
                mime: part.content_type().map_or(String::new(), |ct| {
                    format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase()
                }),
            })
            .collect();
    }
}

/// Signed as a whole: multipart/signed (PGP/MIME or S/MIME), S/MIME signed-data, or a
/// clear-signed inline PGP text.
fn is_signed(parsed: &mail_parser::Message<'_>) -> bool {
    let Some(ct) = parsed.content_type() else {
        return false;
    };
    let (ctype, subtype) = (ct.ctype(), ct.subtype().unwrap_or(""));
    if ctype.eq_ignore_ascii_case("multipart") {
        return subtype.eq_ignore_ascii_case("signed");
    }
    if ctype.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("pkcs7-mime")
            || subtype.eq_ignore_ascii_case("x-pkcs7-mime"))
    {
        return ct
            .attribute("smime-type")
            .is_some_and(|t| t.eq_ignore_ascii_case("signed-data"));
    }
    ctype.eq_ignore_ascii_case("text")
        && parsed
            .body_text(0)
            .is_some_and(|t| t.contains("-----BEGIN PGP SIGNED MESSAGE-----"))
}

fn unfold(value: &str) -> String {
    value
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Needs = Needs {
        headers: true,
        structure: true,
    };

    fn read(raw: &str) -> Content {
        Content::read(&Message::new(raw.replace('\n', "\r\n").into_bytes()), ALL)
    }

    #[test]
    fn headers_and_subject_are_decoded() {
        let c =
            read("Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_[secure]?=\nX-Class: top\n secret\n\nhi\n");
        assert_eq!(c.subject, "Grüße [secure]");
        assert!(
            c.headers.contains(&("x-class".into(), "top secret".into())),
            "{:?}",
            c.headers
        );
        assert!(c.encrypted.is_none() && !c.signed && c.attachments.is_empty());
    }

    #[test]
    fn structure() {
        let signed = read(
            "Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=b\n\n--b\nContent-Type: text/plain\n\nhi\n--b\nContent-Type: application/pgp-signature\n\nsig\n--b--\n",
        );
        assert!(signed.signed);
        let pgp = read(
            "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\n\n--b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n--b\nContent-Type: application/octet-stream\n\n-----BEGIN PGP MESSAGE-----\nx\n-----END PGP MESSAGE-----\n--b--\n",
        );
        assert_eq!(pgp.encrypted, Some(Encrypted::PgpMime));
        let attached = read(
            "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhi\n--b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=\"Report.PDF\"\n\nx\n--b--\n",
        );
        assert_eq!(
            attached.attachments,
            vec![Attachment {
                name: "Report.PDF".into(),
                mime: "application/pdf".into()
            }]
        );
    }

    #[test]
    fn reads_only_what_is_needed() {
        let message = Message::new(
            &b"Subject: s\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n-----END PGP MESSAGE-----\r\n"[..],
        );
        let c = Content::read(&message, Needs::default());
        assert_eq!(c.subject, "");
        assert_eq!(c.size, message.len() as u64);
        let c = Content::read(
            &message,
            Needs {
                headers: true,
                structure: false,
            },
        );
        assert_eq!((c.subject.as_str(), c.encrypted), ("s", None));
        assert_eq!(
            Content::read(&message, ALL).encrypted,
            Some(Encrypted::InlinePgp)
        );
    }
}
