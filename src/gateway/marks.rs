//! The marks a rule leaves on a message: subject tags taken out or put in front, header
//! fields added, and the `X-Sealgate` field that says what was done.
//!
//! Only the header block is rewritten; the body is shared with the original. Fields
//! are found with mail-parser's offsets (but for [`strip_ours`], which reads lines) and
//! new values are encoded by mail-builder (RFC 2047 where they are not ASCII).

use mail_builder::headers::{Header, text::Text};

use crate::mail::message::Message;
use crate::policy::rule::Tags;

/// The field sealgate reports its treatment in.
pub const STATUS_FIELD: &str = "X-Sealgate";

/// Every field whose name starts with this is sealgate's to write: fields of that name
/// that arrive with a message are removed, on both listeners, before anything else, so
/// that a sender cannot forge what the gateway did (`X-Sealgate-Decrypted`, say).
pub const OUR_PREFIX: &str = "x-sealgate";

/// `message` without any `X-Sealgate*` field. Costs a scan of the header block when
/// there is none, which is nearly always.
///
/// The fields are found line by line in the whole header block, up to the first empty
/// line, not with mail-parser: the next hop may read more of it as header than
/// mail-parser does. mail-parser 0.11 stops reading the header at a line without a
/// colon followed by a line of whitespace only (`Q`, then `" "`), where other readers
/// skip the odd line or take it for a continuation and read on to the empty line: a
/// field after them was no field to us and went through to the next hop (found by the
/// `smtp_session` fuzz target). A line that starts with `X-Sealgate` goes, with the
/// continuation lines after it; a line of whitespace only stays, whatever it means to
/// the reader.
pub fn strip_ours(message: &Message, id: &str) -> Message {
    // The whole block, however long: a field past a limit would go through.
    let head = message.header_block(usize::MAX);
    if !mentions_ours(&head) {
        return message.clone();
    }
    let mut out = Vec::with_capacity(head.len());
    let mut removing = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let continuation =
            matches!(line.first(), Some(b' ' | b'\t')) && !line.iter().all(u8::is_ascii_whitespace);
        if !continuation {
            removing = is_ours_line(line);
            if removing {
                let name = line.split(|&b| b == b':').next().unwrap_or(line);
                let name = String::from_utf8_lossy(&name[..name.len().min(64)]);
                tracing::info!(
                    %id,
                    field = name.trim_end(),
                    "removed an X-Sealgate field the message arrived with"
                );
            }
        }
        if !removing {
            out.extend_from_slice(line);
        }
    }
    message.with_head(head.len(), out)
}

/// Whether a field of this name is sealgate's to write.
pub fn is_ours(name: &str) -> bool {
    is_ours_line(name.as_bytes())
}

/// Whether a header line starts with `X-Sealgate`, in any case: the start of a field
/// of ours, to any reader. Compared as bytes: a line, or a name as mail-parser gives
/// it (bytes that are not UTF-8 read as U+FFFD), need not be ASCII, and slicing a str
/// could cut a character in two and panic.
fn is_ours_line(line: &[u8]) -> bool {
    line.get(..OUR_PREFIX.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(OUR_PREFIX.as_bytes()))
}

/// Whether the header block has a line that starts with `X-Sealgate`, in any case.
fn mentions_ours(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').any(is_ours_line)
}

/// Header blocks longer than this are not rewritten by [`apply`] past this point.
const HEAD_LIMIT: usize = 256 * 1024;

/// `message` with `tags` applied and, when given, `X-Sealgate: status` at the top.
/// Any `X-Sealgate` field already there is removed first: a sender must not be able
/// to forge what the gateway did.
pub fn apply(message: &Message, tags: &Tags, status: Option<&str>) -> Message {
    if tags.is_empty() && status.is_none() {
        return message.clone();
    }
    let head = message.header_block(HEAD_LIMIT);
    let Some(parsed) = crate::mail::parser::parser().parse_headers(&head) else {
        return message.clone();
    };
    let subject = parsed.subject().map(str::to_string);
    let new_subject = subject.as_deref().map(|s| retag(s, tags));
    let mut out = Vec::with_capacity(head.len() + 256);
    let fields = parsed.headers();
    // New fields go below our own Received field, which stays first as a trace field
    // should.
    let ours_first = fields
        .first()
        .is_some_and(|f| f.name.as_str().eq_ignore_ascii_case("received"));
    let mut added = false;
    let add_fields = |out: &mut Vec<u8>| {
        if let Some(status) = status {
            write_field(out, STATUS_FIELD, status);
        }
        for (name, value) in &tags.add_headers {
            write_field(out, name, value);
        }
    };
    if !ours_first {
        add_fields(&mut out);
        added = true;
    }
    for (i, field) in fields.iter().enumerate() {
        if i == 1 && !added {
            add_fields(&mut out);
            added = true;
        }
        let start = field.offset_field as usize;
        let end = fields
            .get(i + 1)
            .map_or(head.len(), |next| next.offset_field as usize);
        let Some(raw) = head.get(start..end) else {
            continue;
        };
        let name = field.name.as_str();
        // Our own status field is written once; `X-Sealgate-Decrypted`, which the
        // decryption added, stays. (Fields of ours that came with the message were
        // removed when it arrived: see [`strip_ours`].)
        if status.is_some() && name.eq_ignore_ascii_case(STATUS_FIELD) {
            continue;
        }
        match &new_subject {
            // Rewritten only when the tags changed it, so it stays byte for byte otherwise.
            Some(new) if name.eq_ignore_ascii_case("subject") && Some(new) != subject.as_ref() => {
                write_field(&mut out, "Subject", new);
            }
            _ => out.extend_from_slice(raw),
        }
    }
    if !added {
        add_fields(&mut out);
    }
    // A prefix for a message that had no Subject at all.
    if subject.is_none()
        && let Some(prefix) = &tags.subject_prefix
    {
        write_field(&mut out, "Subject", prefix.trim_end());
    }
    message.with_head(head.len(), out)
}

/// The subject with the tags taken out (case-insensitive, with the space they leave
/// tidied) and the prefix put in front.
pub fn retag(subject: &str, tags: &Tags) -> String {
    let mut text = subject.to_string();
    for tag in tags.subject_remove.iter().filter(|t| !t.is_empty()) {
        let lower_tag = tag.to_lowercase();
        while let Some(at) = text.to_lowercase().find(&lower_tag) {
            // Lower-casing can change byte lengths outside ASCII; only cut where the
            // offsets still line up with the original.
            if !text.is_char_boundary(at) || !text.is_char_boundary(at + tag.len()) {
                break;
            }
            text.replace_range(at..at + tag.len(), "");
        }
    }
    let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(prefix) = &tags.subject_prefix
        && !text.starts_with(prefix.as_str())
    {
        text.insert_str(0, prefix);
    }
    text
}

/// Writes `Name: value` CRLF, the value encoded and folded by mail-builder.
fn write_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    Text::new(value).write_header(out, name.len() + 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(remove: &[&str], prefix: Option<&str>, add: &[(&str, &str)]) -> Tags {
        Tags {
            add_headers: add
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            subject_prefix: prefix.map(str::to_string),
            subject_remove: remove.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn text(message: &Message) -> String {
        String::from_utf8(message.to_vec()).unwrap()
    }

    const MAIL: &[u8] = b"From: a@example.com\r\nSubject: [SECURE] quarterly\r\n  numbers\r\nX-Sealgate: decrypted pgp; rule=forged\r\n\r\nbody [secure]\r\n";

    #[test]
    fn subject_tags_and_fields() {
        let message = Message::new(MAIL);
        let out = apply(
            &message,
            &tags(&["[secure]"], Some("[enc] "), &[("X-Class", "secret")]),
            None,
        );
        let out = text(&out);
        assert!(
            out.contains("Subject: [enc] quarterly numbers\r\n"),
            "{out}"
        );
        assert!(out.starts_with("X-Class: secret\r\n"), "{out}");
        // The body is not touched, and neither is a field that was not asked for.
        assert!(out.ends_with("\r\n\r\nbody [secure]\r\n"), "{out}");
        assert!(
            out.contains("X-Sealgate: decrypted pgp; rule=forged\r\n"),
            "{out}"
        );
    }

    #[test]
    fn status_replaces_a_forged_one() {
        let out = text(&apply(
            &Message::new(MAIL),
            &Tags::default(),
            Some("passed; rule=decrypt-sckm"),
        ));
        assert!(
            out.starts_with("X-Sealgate: passed; rule=decrypt-sckm\r\nFrom:"),
            "{out}"
        );
        assert_eq!(out.matches("X-Sealgate").count(), 1, "{out}");
        assert!(
            out.contains("Subject: [SECURE] quarterly\r\n  numbers\r\n"),
            "{out}"
        );
        // Below our own Received field, which stays first.
        let received = Message::new(&b"Received: from x by y\r\nSubject: s\r\n\r\nhi\r\n"[..]);
        let out = text(&apply(&received, &Tags::default(), Some("passed; rule=r")));
        assert!(
            out.starts_with(
                "Received: from x by y\r\nX-Sealgate: passed; rule=r\r\nSubject: s\r\n\r\n"
            ),
            "{out:?}"
        );
    }

    #[test]
    fn non_ascii_subjects_are_encoded() {
        let message = Message::new("Subject: Grüße [secure]\r\n\r\nhi\r\n".as_bytes());
        let out = text(&apply(&message, &tags(&["[Secure]"], None, &[]), None));
        assert!(out.is_ascii(), "{out}");
        let parsed = mail_parser::MessageParser::default()
            .parse(out.as_bytes())
            .unwrap();
        assert_eq!(parsed.subject(), Some("Grüße"));
        assert!(out.ends_with("\r\n\r\nhi\r\n"));
    }

    #[test]
    fn nothing_to_do_is_the_same_message() {
        let message = Message::new(MAIL);
        assert_eq!(
            text(&apply(&message, &Tags::default(), None)).as_bytes(),
            MAIL
        );
    }
}
