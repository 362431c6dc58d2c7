//! The one mail-parser configuration every reading of a message uses.

use std::sync::LazyLock;

use mail_parser::{HeaderName, MessageParser};

/// How one kind of field is parsed.
type Setter = fn(MessageParser, HeaderName<'static>) -> MessageParser;

/// mail-parser's default parsers, but for `Received`, which nothing here reads: it was
/// about half of all header parsing, and 2 % of the gateway's CPU for a 4 KiB encrypted
/// message, whose header block is read five times on its way (perf). It is skipped, so
/// it has no value; its offsets, like every other field's, are as the default gives.
pub fn parser() -> &'static MessageParser {
    use HeaderName::*;
    static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
        // The default, spelled out (mail-parser 0.11's `parse_headers`): once one parser
        // is named, the fields not named are only read raw.
        let text: Setter = |p, name| p.header_text(name);
        let address: Setter = |p, name| p.header_address(name);
        let date: Setter = |p, name| p.header_date(name);
        let id: Setter = |p, name| p.header_id(name);
        let list: Setter = |p, name| p.header_comma_separated(name);
        let content_type: Setter = |p, name| p.header_content_type(name);
        let raw: Setter = |p, name| p.header_raw(name);
        let skip: Setter = |p, name| p.ignore_header(name);
        let table: [(Setter, &[HeaderName<'static>]); 8] = [
            (
                text,
                &[
                    Subject,
                    Comments,
                    ContentDescription,
                    ContentLocation,
                    ContentTransferEncoding,
                ],
            ),
            (
                address,
                &[
                    From,
                    To,
                    Cc,
                    Bcc,
                    ReplyTo,
                    Sender,
                    ResentTo,
                    ResentFrom,
                    ResentBcc,
                    ResentCc,
                    ResentSender,
                    ListArchive,
                    ListHelp,
                    ListId,
                    ListOwner,
                    ListPost,
                    ListSubscribe,
                    ListUnsubscribe,
                ],
            ),
            (date, &[Date, ResentDate]),
            (
                id,
                &[
                    MessageId,
                    References,
                    InReplyTo,
                    ReturnPath,
                    ContentId,
                    ResentMessageId,
                ],
            ),
            (list, &[Keywords, ContentLanguage]),
            (content_type, &[ContentType, ContentDisposition]),
            (raw, &[MimeVersion]),
            (skip, &[Received]),
        ];
        table
            .into_iter()
            .flat_map(|(set, names)| names.iter().map(move |name| (set, name.clone())))
            .fold(MessageParser::new(), |parser, (set, name)| {
                set(parser, name)
            })
    });
    &PARSER
}

#[cfg(test)]
mod tests {
    use mail_parser::{HeaderValue, MessageParser};

    use super::parser;

    /// [`parser`] reads every message as mail-parser's default does, field for field
    /// and part for part, but for the value of `Received`.
    #[test]
    fn the_parser_is_the_default_but_for_received() {
        let mut messages: Vec<Vec<u8>> = vec![
            b"From: a@example.com\r\nTo: b@example.org\r\nSubject: Secret plans\r\nMIME-Version: 1.0\r\n\r\nbody\r\n".to_vec(),
            b"Received: from a\r\n\tby b; Mon, 1 Jan 2026 00:00:00 +0000\r\nReceived: x\r\n "
                .to_vec(),
            b"Received:\n\t".to_vec(),
            // Every field the table names.
            b"Return-Path: <r@x>\r\nReceived: by x\r\nComments: =?utf-8?q?caf=C3=A9?=\r\n\
              Sender: S <s@x>\r\nReply-To: r@x\r\nCc: c@x\r\nBcc: b@x\r\n\
              Resent-From: f@x\r\nResent-Sender: s@x\r\nResent-To: t@x\r\n\
              Resent-Cc: c@x\r\nResent-Bcc: b@x\r\nResent-Date: Mon, 1 Jan 2026 00:00:00 +0000\r\n\
              Resent-Message-ID: <r@x>\r\nList-Archive: <https://x>\r\nList-Help: <mailto:h@x>\r\n\
              List-ID: <l.x>\r\nList-Owner: <mailto:o@x>\r\nList-Post: <mailto:p@x>\r\n\
              List-Subscribe: <mailto:s@x>\r\nList-Unsubscribe: <mailto:u@x>\r\n\
              References: <a@x> <b@x>\r\nIn-Reply-To: <a@x>\r\nKeywords: a, b\r\n\
              MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Disposition: inline; filename=a.txt\r\nContent-ID: <c@x>\r\n\
              Content-Language: en, de\r\nContent-Description: =?utf-8?q?caf=C3=A9?=\r\n\
              Content-Location: a.txt\r\nContent-Transfer-Encoding: 8bit\r\n\r\nbody\r\n"
                .to_vec(),
            b"Received: (comment (nested) ) from [1.2.3.4] by x with ESMTP id y; garbage\r\n\
              Subject: =?utf-8?q?caf=C3=A9?=\r\nMessage-ID: <a@b>\r\nDate: nonsense\r\n\
              Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n\
              Content-Type: message/rfc822\r\n\r\nReceived: inner\r\n\tfolded\r\n\
              From: a@b\r\n\r\nbody\r\n--X--\r\n"
                .to_vec(),
        ];
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata"
        ))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "eml") {
                    messages.push(std::fs::read(&path).unwrap());
                }
            }
        }
        assert!(messages.len() > 20, "the test messages were not found");
        fn strip<'x>(value: &HeaderValue<'x>) -> HeaderValue<'x> {
            match value {
                HeaderValue::Received(_) => HeaderValue::Empty,
                other => other.clone(),
            }
        }
        for raw in &messages {
            let ours = parser().parse(raw);
            let theirs = MessageParser::default().parse(raw);
            let (Some(ours), Some(theirs)) = (ours, theirs) else {
                assert!(
                    parser().parse(raw).is_none() && MessageParser::default().parse(raw).is_none()
                );
                continue;
            };
            assert_eq!(ours.parts.len(), theirs.parts.len());
            for (a, b) in ours.parts.iter().zip(&theirs.parts) {
                assert_eq!(
                    (a.offset_header, a.offset_body, a.offset_end, &a.body),
                    (b.offset_header, b.offset_body, b.offset_end, &b.body)
                );
                assert_eq!(a.headers.len(), b.headers.len());
                for (x, y) in a.headers.iter().zip(&b.headers) {
                    assert_eq!(
                        (&x.name, x.offset_field, x.offset_start, x.offset_end),
                        (&y.name, y.offset_field, y.offset_start, y.offset_end)
                    );
                    assert_eq!(x.value, strip(&y.value), "{:?}", x.name);
                }
            }
        }
    }
}
