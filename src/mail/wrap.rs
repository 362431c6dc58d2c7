//! The encrypted message sealgate writes: the MIME entity that is encrypted (the
//! message's content, and with protected headers its Subject and the rest), and the
//! PGP/MIME (RFC 3156) or S/MIME (RFC 8551) message around the ciphertext. Reading
//! what others wrote is [`super::mime`]'s.

use base64::Engine;

use super::mime::{Cut, PROTECTED, field_name, is_content_field};

/// The MIME entity to encrypt: the message's Content-* fields and body, and with
/// `protect` the protected header fields too, marked `protected-headers="v1"`.
pub fn inner_entity(raw: &[u8], protect: bool) -> Option<Vec<u8>> {
    Some(entity_of(&Cut::new(raw)?, protect))
}

fn entity_of(cut: &Cut<'_>, protect: bool) -> Vec<u8> {
    let raw_len = cut.fields.iter().map(|f| f.len()).sum::<usize>() + cut.body.len();
    let mut entity = Vec::with_capacity(raw_len + 2);
    let content = cut.fields_where(is_content_field);
    let has_type = content.iter().any(|f| field_name(f) == "content-type");
    if !has_type {
        // RFC 2045 §5.2: no Content-Type means text/plain; charset=us-ascii.
        let param = if protect {
            "; protected-headers=\"v1\""
        } else {
            ""
        };
        entity.extend_from_slice(
            format!("Content-Type: text/plain; charset=us-ascii{param}\r\n").as_bytes(),
        );
    }
    for field in &content {
        if protect && field_name(field) == "content-type" {
            entity.extend_from_slice(&with_parameter(field, "protected-headers=\"v1\""));
        } else {
            entity.extend_from_slice(field);
        }
    }
    if protect {
        for field in cut.fields_where(|name| PROTECTED.contains(&name)) {
            entity.extend_from_slice(field);
        }
    }
    entity.extend_from_slice(b"\r\n");
    entity.extend_from_slice(cut.body);
    entity
}

/// Appends `; parameter` to a (possibly folded) header field, before its line end.
fn with_parameter(field: &[u8], parameter: &str) -> Vec<u8> {
    let trimmed = field.trim_ascii_end();
    let mut out = trimmed.to_vec();
    out.extend_from_slice(format!(";\r\n\t{parameter}\r\n").as_bytes());
    out
}

/// The outer header of an encrypted message: every field but the Content-* ones, the
/// Subject replaced by `...` when it is protected, and MIME-Version.
fn outer_fields(cut: &Cut<'_>, protect: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for field in &cut.fields {
        match field_name(field).as_str() {
            name if is_content_field(name) || name == "mime-version" => {}
            "subject" if protect => out.extend_from_slice(b"Subject: ...\r\n"),
            _ => out.extend_from_slice(field),
        }
    }
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    out
}

/// A boundary that does not occur in `content`.
pub(super) fn boundary(content: &[u8]) -> String {
    let mut n = 0u32;
    loop {
        let candidate = format!("=-sealgate-{:08x}-{n}", rand::random::<u32>());
        if memchr::memmem::find(content, candidate.as_bytes()).is_none() {
            return candidate;
        }
        n += 1;
    }
}

/// The PGP/MIME message (RFC 3156 §4) carrying `armored`.
pub fn pgp_mime(raw: &[u8], armored: &[u8], protect: bool) -> Option<Vec<u8>> {
    let (mut out, closing) = pgp_mime_frame(raw, protect)?;
    out.extend_from_slice(armored);
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&closing);
    Some(out)
}

/// A PGP/MIME message around an armored block that is not here yet: the message up to
/// where the block goes (the outer fields, the version part, the encrypted part's
/// header), for `raw`'s header (the body is not read), and the closing boundary that
/// follows the block's last line.
///
/// The boundary is not looked for in the block: it starts with `=-`, which ASCII armor
/// cannot hold (base64 has no `-`; its `=` ends a line or starts the checksum line,
/// whose next character is base64; the BEGIN and END lines start with `-`).
pub fn pgp_mime_frame(raw: &[u8], protect: bool) -> Option<(Vec<u8>, Vec<u8>)> {
    Some(frame_of(&Cut::new(raw)?, protect))
}

/// [`inner_entity`] and [`pgp_mime_frame`] of `raw`, which is cut (parsed) once for
/// both: the entity to encrypt, and the PGP/MIME message up to and after its armor.
pub fn pgp_mime_parts(raw: &[u8], protect: bool) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let cut = Cut::new(raw)?;
    let (opening, closing) = frame_of(&cut, protect);
    Some((entity_of(&cut, protect), opening, closing))
}

fn frame_of(cut: &Cut<'_>, protect: bool) -> (Vec<u8>, Vec<u8>) {
    let fields = outer_fields(cut, protect);
    let b = format!("=-sealgate-{:08x}-0", rand::random::<u32>());
    let mut head = fields;
    head.extend_from_slice(
        format!(
            "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\tboundary=\"{b}\"\r\n\r\n\
             This is an OpenPGP/MIME encrypted message (RFC 3156).\r\n\
             --{b}\r\n\
             Content-Type: application/pgp-encrypted\r\n\
             Content-Description: PGP/MIME version identification\r\n\r\n\
             Version: 1\r\n\r\n\
             --{b}\r\n\
             Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
             Content-Description: OpenPGP encrypted message\r\n\
             Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n"
        )
        .as_bytes(),
    );
    (head, format!("\r\n--{b}--\r\n").into_bytes())
}

/// The CMS structure an application/pkcs7-mime part carries, as its `smime-type`
/// parameter names it (RFC 8551 §3.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmimeType {
    /// EnvelopedData: what every client reads.
    EnvelopedData,
    /// AuthEnvelopedData (RFC 5083): authenticated encryption, AES-GCM.
    AuthEnvelopedData,
}

impl SmimeType {
    pub fn as_str(self) -> &'static str {
        match self {
            SmimeType::EnvelopedData => "enveloped-data",
            SmimeType::AuthEnvelopedData => "authEnveloped-data",
        }
    }
}

/// The S/MIME message (RFC 8551 §3.3) carrying `der`, an EnvelopedData or
/// AuthEnvelopedData as `smime_type` says.
pub fn smime_enveloped(
    raw: &[u8],
    der: &[u8],
    protect: bool,
    smime_type: SmimeType,
) -> Option<Vec<u8>> {
    let mut out = outer_fields(&Cut::new(raw)?, protect);
    out.extend_from_slice(
        format!(
            "Content-Type: application/pkcs7-mime; smime-type={};\r\n\tname=\"smime.p7m\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n",
            smime_type.as_str()
        )
        .as_bytes(),
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    Some(out)
}
