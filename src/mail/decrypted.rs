//! The message as it is delivered once decrypted: the outer header with the protected
//! header fields restored, the decrypted MIME entity in place of the encrypted body, and
//! the signatures that were inside the encryption kept where the recipient's client
//! verifies them (RFC 3156 `multipart/signed`, or the signed OpenPGP message itself,
//! attached or inline).
//!
//! [`super::mime`] recognises and wraps encrypted mail; this is its inverse.

use std::borrow::Cow;

use bytes::Bytes;

use super::message::Message;
use super::mime::{Cut, Encrypted, PGP_BEGIN, PGP_END, crlf, field_name, has_header_block};
use super::wrap::boundary;

/// Signatures that were inside the encrypted message (see `crypto::pgp::Signed`).
#[derive(Debug, Clone, Copy)]
pub struct KeptSignature<'a> {
    /// The signatures as a detached signature over the plaintext, armored.
    pub detached: &'a [u8],
    /// RFC 3156's `micalg` value ("pgp-sha256").
    pub micalg: &'a str,
    /// Whether `detached` verifies over the plaintext with CRLF line ends.
    pub detached_over_crlf: bool,
    /// The signed message without its encryption, armored.
    pub message: &'a [u8],
}

/// Where a kept signature went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureForm {
    /// A `multipart/signed` with the decrypted entity as its first part and the
    /// signature detached in the second (RFC 3156 §5).
    Detached,
    /// PGP/MIME whose signature would not verify detached over the entity as it
    /// travels (a binary signature over LF line ends, a plaintext that is no MIME
    /// entity): a `multipart/mixed` of the entity, readable as ever, and the signed
    /// OpenPGP message as an attachment that verifies as it is.
    Attached,
    /// Inline PGP: the armored signed OpenPGP message in place of the encrypted block,
    /// which clients show and verify as they would have the encrypted one.
    Inline,
}

impl SignatureForm {
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureForm::Detached => "multipart/signed",
            SignatureForm::Attached => "signed message attached",
            SignatureForm::Inline => "signed message inline",
        }
    }
}

/// What the `X-Sealgate-Decrypted` field adds when a signature was kept. sealgate
/// never verifies it (it holds no sender's key); the client does.
const SIGNATURE_PRESENT: &str = "; signature=present (not verified by sealgate)";

/// Outer Subjects that clients put in place of a protected one: the draft's `...`,
/// RFC 9788's `[...]`, Enigmail's and Thunderbird's `Encrypted Message`, or nothing.
const PLACEHOLDER_SUBJECTS: [&str; 5] = ["", "...", "[...]", "\u{2026}", "encrypted message"];

/// The message with its encrypted body replaced by the decrypted `plaintext`, and the
/// `X-Sealgate-Decrypted: {marker}` field added; with `signature`, kept in the form
/// returned (see [`SignatureForm`]).
///
/// For PGP/MIME and S/MIME the plaintext is a MIME entity: its fields become the
/// message's Content-* fields. When it carries protected headers, its copies of
/// Subject, From and the rest win over the outer ones; without the
/// `protected-headers` marker only its Subject does, and only over a placeholder. For
/// inline PGP the plaintext replaces the armored block in the text.
pub fn decrypted(
    raw: &[u8],
    kind: Encrypted,
    plaintext: &[u8],
    marker: &str,
    signature: Option<KeptSignature>,
) -> Option<(Vec<u8>, Option<SignatureForm>)> {
    let outer = Cut::new(raw)?;
    let marker = marker_field(marker, signature.is_some());
    if kind == Encrypted::InlinePgp {
        // The signed message replaces the block: the client shows and verifies it.
        let (text, form) = match signature {
            // Armor for armor: the line end after the block is the text's own.
            Some(kept) => (kept.message.trim_ascii_end(), Some(SignatureForm::Inline)),
            None => (plaintext, None),
        };
        return Some((inline(raw, &outer, &marker, text)?, form));
    }

    let plaintext = crlf(plaintext);
    let entity = as_entity(&plaintext);
    let inner = Cut::new(&entity)?;
    let Some(kept) = signature else {
        let mut out = head(&outer, &inner, &marker);
        out.extend_from_slice(inner.body);
        return Some((out, None));
    };
    let mut out = Vec::with_capacity(raw.len() + plaintext.len());
    out.extend_from_slice(&header(&outer, &inner));
    out.extend_from_slice(marker.as_bytes());
    // The entity exactly as signed, so a verifier gets the signed bytes.
    let form = if kept.detached_over_crlf && matches!(entity, Cow::Borrowed(_)) {
        out.extend_from_slice(&multipart_signed(&plaintext, kept));
        SignatureForm::Detached
    } else {
        out.extend_from_slice(&multipart_mixed(&entity, kept));
        SignatureForm::Attached
    };
    Some((out, Some(form)))
}

/// [`decrypted`] as a [`Message`], taking the plaintext: in the common case
/// (PGP/MIME or S/MIME, no signature kept, a plaintext that is a MIME entity with CRLF
/// line ends) the new header is put in front of the entity's body where it lies in the
/// plaintext, so that a large message is not held twice, decrypted and delivered.
/// Every other case is [`decrypted`]'s copy.
pub fn decrypted_message(
    raw: &[u8],
    kind: Encrypted,
    plaintext: Vec<u8>,
    marker: &str,
    signature: Option<KeptSignature>,
) -> Option<(Message, Option<SignatureForm>)> {
    let in_place = kind != Encrypted::InlinePgp
        && signature.is_none()
        && matches!(crlf(&plaintext), Cow::Borrowed(_))
        && has_header_block(&plaintext);
    if !in_place {
        let (out, form) = decrypted(raw, kind, &plaintext, marker, signature)?;
        return Some((Message::new(out), form));
    }
    let outer = Cut::new(raw)?;
    let inner = Cut::new(&plaintext)?;
    let head = head(&outer, &inner, &marker_field(marker, false));
    // The body is the end of the plaintext.
    let body = plaintext.len() - inner.body.len();
    let plaintext = Bytes::from(plaintext);
    Some((
        Message::from_chunks(vec![Bytes::from(head), plaintext.slice(body..)]),
        None,
    ))
}

/// The `X-Sealgate-Decrypted` field, with its line end.
fn marker_field(marker: &str, signed: bool) -> String {
    match signed {
        true => format!("X-Sealgate-Decrypted: {marker}{SIGNATURE_PRESENT}\r\n"),
        false => format!("X-Sealgate-Decrypted: {marker}\r\n"),
    }
}

/// The header block of the delivered message when no signature is kept, with the
/// empty line that ends it: [`header`], `marker`, and the inner entity's Content-*
/// fields.
fn head(outer: &Cut, inner: &Cut, marker: &str) -> Vec<u8> {
    let mut out = header(outer, inner);
    out.extend_from_slice(marker.as_bytes());
    for field in &inner.fields {
        let name = field_name(field);
        // Fields of ours inside the encrypted part are the sender's forgery.
        if !name.starts_with("x-sealgate") && name.starts_with("content-") {
            out.extend_from_slice(field);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The delivered message's header fields but for its Content-* ones: the outer fields,
/// with the inner entity's protected copies in place of theirs, and the inner fields
/// the outer lacks (Autocrypt-Gossip, say).
fn header(outer: &Cut, inner: &Cut) -> Vec<u8> {
    let inner_names: Vec<String> = inner.fields.iter().map(|f| field_name(f)).collect();
    let outer_names: Vec<String> = outer.fields.iter().map(|f| field_name(f)).collect();
    let protected = inner.fields.iter().any(|f| {
        field_name(f) == "content-type"
            && String::from_utf8_lossy(f)
                .to_ascii_lowercase()
                .contains("protected-headers")
    });
    // Without the marker, an inner Subject still replaces a placeholder: clients that
    // hide the Subject write it inside whether or not they mark the entity.
    let subject_hidden = inner_names.iter().any(|n| n == "subject")
        && outer
            .fields
            .iter()
            .filter(|f| field_name(f) == "subject")
            .all(|f| is_placeholder_subject(f));
    let wins = |name: &str| protected || (name == "subject" && subject_hidden);
    let mut out = Vec::new();
    for field in &outer.fields {
        let name = field_name(field);
        let replaced = name.starts_with("content-") || (wins(&name) && inner_names.contains(&name));
        if !replaced {
            out.extend_from_slice(field);
        }
    }
    for field in &inner.fields {
        let name = field_name(field);
        // Fields of ours inside the encrypted part are the sender's forgery, and the
        // Content-* fields describe the body, which comes later.
        if name.starts_with("x-sealgate") || name.starts_with("content-") {
            continue;
        }
        // An inner field that does not win only joins the header where the outer has
        // none of its name: the outer routing fields stay as they were.
        if wins(&name) || !outer_names.contains(&name) {
            out.extend_from_slice(field);
        }
    }
    out
}

/// Whether a Subject field's value is one a client writes in place of the real one.
fn is_placeholder_subject(field: &[u8]) -> bool {
    let text = String::from_utf8_lossy(field);
    let value = text.split_once(':').map_or("", |(_, v)| v);
    let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
    PLACEHOLDER_SUBJECTS.contains(&value.to_lowercase().as_str())
}

/// Inline PGP: the outer header, `marker`, and the text with `replacement` in place of
/// the armored block.
fn inline(raw: &[u8], outer: &Cut, marker: &str, replacement: &[u8]) -> Option<Vec<u8>> {
    let text = crate::mail::parser::parser()
        .parse(raw)?
        .body_text(0)?
        .into_owned();
    let start = text.find(PGP_BEGIN)?;
    let end = start + text[start..].find(PGP_END)? + PGP_END.len();
    let mut out = Vec::with_capacity(raw.len() + replacement.len());
    for field in &outer.fields {
        let name = field_name(field);
        if name != "content-type" && name != "content-transfer-encoding" {
            out.extend_from_slice(field);
        }
    }
    out.extend_from_slice(marker.as_bytes());
    out.extend_from_slice(
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
    );
    // The text around the block is decoded too (base64, quoted-printable): its line
    // ends are made CRLF like the replacement's.
    out.extend_from_slice(&crlf(&text.as_bytes()[..start]));
    out.extend_from_slice(&crlf(replacement));
    out.extend_from_slice(&crlf(&text.as_bytes()[end..]));
    Some(out)
}

/// The Content-Type field and body of an RFC 3156 §5 `multipart/signed` around
/// `entity` (CRLF, as signed) and the detached signature.
fn multipart_signed(entity: &[u8], kept: KeptSignature) -> Vec<u8> {
    let signature = crlf(kept.detached);
    let b = boundary(&[entity, &signature].concat());
    let mut out = format!(
        "Content-Type: multipart/signed; micalg=\"{micalg}\";\r\n\
         \tprotocol=\"application/pgp-signature\";\r\n\tboundary=\"{b}\"\r\n\r\n\
         This is an OpenPGP/MIME signed message (RFC 3156).\r\n\
         --{b}\r\n",
        micalg = kept.micalg,
    )
    .into_bytes();
    // The CRLF before the next boundary belongs to the boundary (RFC 2046 §5.1.1): the
    // first part is the entity, byte for byte.
    out.extend_from_slice(entity);
    out.extend_from_slice(
        format!(
            "\r\n--{b}\r\n\
             Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n\
             Content-Description: OpenPGP digital signature\r\n\
             Content-Disposition: attachment; filename=\"signature.asc\"\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&signature);
    if !signature.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    out
}

/// The Content-Type field and body of a `multipart/mixed` of `entity` and the signed
/// message as an attachment.
fn multipart_mixed(entity: &[u8], kept: KeptSignature) -> Vec<u8> {
    let signed = crlf(kept.message);
    let b = boundary(&[entity, &signed].concat());
    let mut out = format!(
        "Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n\
         This message was signed and encrypted; the signed original is attached.\r\n\
         --{b}\r\n"
    )
    .into_bytes();
    out.extend_from_slice(entity);
    out.extend_from_slice(
        format!(
            "\r\n--{b}\r\n\
             Content-Type: application/octet-stream; name=\"signed-message.asc\"\r\n\
             Content-Description: OpenPGP signed message as sent (verify with gpg --verify)\r\n\
             Content-Disposition: attachment; filename=\"signed-message.asc\"\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&signed);
    if !signed.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    out
}

/// The decrypted bytes as a MIME entity. Some clients (OpenSSL's `cms -encrypt` on a
/// plain file, for one) encrypt bare text with no header at all; read as an entity,
/// its first line would pass for a header field and the text would be lost. So unless
/// the bytes start with a well-formed header block, they are the body of a text/plain
/// entity (RFC 2045 §5.2's default).
fn as_entity(plaintext: &[u8]) -> Cow<'_, [u8]> {
    if has_header_block(plaintext) {
        return Cow::Borrowed(plaintext);
    }
    let charset = if plaintext.is_ascii() {
        "us-ascii"
    } else {
        "utf-8"
    };
    let mut entity = format!("Content-Type: text/plain; charset={charset}\r\n\r\n").into_bytes();
    entity.extend_from_slice(plaintext);
    Cow::Owned(entity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::wrap::pgp_mime;

    const PLAIN: &[u8] = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: Secret plans\r\nMIME-Version: 1.0\r\n\r\nbody line\r\n";

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// Clients that hide the Subject without marking the entity `protected-headers`:
    /// the inner Subject replaces a placeholder, and only a placeholder.
    #[test]
    fn unmarked_inner_subject_replaces_a_placeholder_only() {
        let inner = b"Content-Type: text/plain\r\nSubject: The real one\r\nFrom: forged@example.net\r\n\r\nhi\r\n";
        for placeholder in [
            "...",
            "Encrypted Message",
            "",
            "[...]",
            "encrypted  message",
        ] {
            let outer = PLAIN.to_vec();
            let outer = text(&outer).replace("Secret plans", placeholder);
            let wrapped = pgp_mime(outer.as_bytes(), b"x", false).unwrap();
            let (out, _) =
                decrypted(&wrapped, Encrypted::PgpMime, inner, "pgp; key=K", None).unwrap();
            let out = text(&out);
            assert!(
                out.contains("Subject: The real one\r\n"),
                "{placeholder:?}: {out}"
            );
            assert_eq!(out.matches("Subject:").count(), 1, "{out}");
            assert!(
                out.contains("From: a@example.com\r\n") && !out.contains("forged"),
                "only the Subject: {out}"
            );
        }
        let wrapped = pgp_mime(PLAIN, b"x", false).unwrap();
        let (out, _) = decrypted(&wrapped, Encrypted::PgpMime, inner, "pgp; key=K", None).unwrap();
        let out = text(&out);
        assert!(
            out.contains("Subject: Secret plans\r\n") && !out.contains("The real one"),
            "{out}"
        );
    }

    #[test]
    fn signed_entity_becomes_multipart_signed_byte_for_byte() {
        let wrapped = pgp_mime(PLAIN, b"x", true).unwrap();
        let entity = b"Content-Type: text/plain; protected-headers=\"v1\"\r\nSubject: Secret plans\r\n\r\nsigned body\r\n";
        let kept = KeptSignature {
            detached: b"-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n",
            micalg: "pgp-sha256",
            detached_over_crlf: true,
            message: b"-----BEGIN PGP MESSAGE-----\n\ndef\n-----END PGP MESSAGE-----\n",
        };
        let (out, form) = decrypted(
            &wrapped,
            Encrypted::PgpMime,
            entity,
            "pgp; key=K",
            Some(kept),
        )
        .unwrap();
        assert_eq!(form, Some(SignatureForm::Detached));
        let out = text(&out);
        assert!(
            out.contains(
                "X-Sealgate-Decrypted: pgp; key=K; signature=present (not verified by sealgate)\r\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("Subject: Secret plans\r\n") && !out.contains("Subject: ..."),
            "{out}"
        );
        let start = out.find("\r\n\r\nThis is an OpenPGP/MIME signed").unwrap();
        let b = out[..start]
            .split("boundary=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        // RFC 2046 §5.1.1: the part runs from after the first delimiter line to the
        // CRLF before the next one.
        let open = out.find(&format!("--{b}\r\n")).unwrap() + b.len() + 4;
        let close = open + out[open..].find(&format!("\r\n--{b}\r\n")).unwrap();
        let first = &out[open..close];
        assert_eq!(first.as_bytes(), entity, "{out}");
        assert!(
            out.contains("-----BEGIN PGP SIGNATURE-----\r\n\r\nabc\r\n"),
            "{out}"
        );

        // Not verifiable detached: the entity as ever, the signed message attached.
        let kept = KeptSignature {
            detached_over_crlf: false,
            ..kept
        };
        let (out, form) = decrypted(
            &wrapped,
            Encrypted::PgpMime,
            entity,
            "pgp; key=K",
            Some(kept),
        )
        .unwrap();
        assert_eq!(form, Some(SignatureForm::Attached));
        let out = text(&out);
        assert!(out.contains("Content-Type: multipart/mixed;"), "{out}");
        assert!(out.contains(&text(entity)), "{out}");
        assert!(
            out.contains(
                "filename=\"signed-message.asc\"\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\ndef\r\n"
            ),
            "{out}"
        );
        assert!(out.contains("Subject: Secret plans\r\n"), "{out}");
    }

    /// Built in the plaintext's buffer or copied, the message is the same.
    #[test]
    fn decrypted_message_is_decrypted_in_every_shape() {
        let pgp = pgp_mime(PLAIN, b"x", true).unwrap();
        let smime = crate::mail::wrap::smime_enveloped(
            PLAIN,
            b"\x30\x00",
            false,
            crate::mail::wrap::SmimeType::EnvelopedData,
        )
        .unwrap();
        let inline = b"From: a@example.org\r\nSubject: x\r\n\r\nhi\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nabc\r\n-----END PGP MESSAGE-----\r\nbye\r\n";
        let entities: [&[u8]; 6] = [
            b"Content-Type: text/plain; protected-headers=\"v1\"\r\nSubject: Secret plans\r\n\r\nbody\r\n",
            b"Content-Type: text/plain\r\nX-Sealgate-Decrypted: forged\r\n\r\nbody\r\n",
            b"Content-Type: text/plain\n\nLF body\n",
            b"Bare text, no header\r\n\r\nat all\r\n",
            b"Content-Type: text/plain\r\n\r\n",
            b"",
        ];
        for (kind, raw) in [
            (Encrypted::PgpMime, &pgp[..]),
            (Encrypted::Smime, &smime[..]),
            (Encrypted::InlinePgp, &inline[..]),
        ] {
            for entity in entities {
                let copied = decrypted(raw, kind, entity, "pgp; key=K", None);
                let built = decrypted_message(raw, kind, entity.to_vec(), "pgp; key=K", None)
                    .map(|(m, form)| (m.to_vec(), form));
                assert_eq!(built, copied, "{kind:?} {}", text(entity));
            }
        }
        let kept = KeptSignature {
            detached: b"-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n",
            micalg: "pgp-sha256",
            detached_over_crlf: true,
            message: b"-----BEGIN PGP MESSAGE-----\n\ndef\n-----END PGP MESSAGE-----\n",
        };
        let (out, form) = decrypted_message(
            &pgp,
            Encrypted::PgpMime,
            entities[0].to_vec(),
            "pgp; key=K",
            Some(kept),
        )
        .unwrap();
        assert_eq!(form, Some(SignatureForm::Detached));
        assert!(text(&out.to_vec()).contains("multipart/signed"));
    }
}
