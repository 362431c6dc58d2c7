//! BER to DER, for CMS structures from real mail clients.
//!
//! Thunderbird, Outlook and `openssl cms -stream` send indefinite-length BER, and the
//! `der` crate (0.7, which `cms` 0.2 is built on) refuses it. No maintained crate
//! transcodes BER to DER on that generation of RustCrypto, so this module does exactly
//! that and nothing else: indefinite lengths become definite, long-form lengths become
//! minimal, and constructed (segmented) OCTET STRINGs become primitive. It does not
//! interpret the content, and it is bounded in depth and size by its input.

/// Why the input is not BER we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BerError {
    #[error("truncated BER at byte {0}")]
    Truncated(usize),
    #[error("BER nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("malformed BER at byte {0}")]
    Malformed(usize),
}

/// Deeper nesting than this is refused: no legitimate CMS message comes close.
pub const MAX_DEPTH: usize = 64;

const OCTET_STRING: u8 = 0x04;
const CONSTRUCTED: u8 = 0x20;

/// Re-encodes the single BER element at the start of `input` as DER. Bytes after the
/// element (mail clients sometimes pad) are ignored.
pub fn to_der(input: &[u8]) -> Result<Vec<u8>, BerError> {
    let mut out = Vec::with_capacity(input.len());
    convert(input, 0, 0, &mut out)?;
    Ok(out)
}

struct Header {
    /// The identifier octets as they were (single or multi-byte tag).
    tag: std::ops::Range<usize>,
    constructed: bool,
    /// `None` for the indefinite form.
    length: Option<usize>,
    /// Where the contents start.
    body: usize,
}

fn header(input: &[u8], pos: usize) -> Result<Header, BerError> {
    let first = *input.get(pos).ok_or(BerError::Truncated(pos))?;
    let mut end = pos + 1;
    if first & 0x1f == 0x1f {
        // High tag number form: continuation bytes have the top bit set.
        loop {
            let b = *input.get(end).ok_or(BerError::Truncated(end))?;
            end += 1;
            if b & 0x80 == 0 {
                break;
            }
            if end - pos > 6 {
                return Err(BerError::Malformed(pos));
            }
        }
    }
    let tag = pos..end;
    let len_byte = *input.get(end).ok_or(BerError::Truncated(end))?;
    let mut body = end + 1;
    let length = match len_byte {
        0x80 => None,
        short if short < 0x80 => Some(short as usize),
        long => {
            let count = (long & 0x7f) as usize;
            if count > 4 {
                return Err(BerError::Malformed(end));
            }
            let bytes = input
                .get(body..body + count)
                .ok_or(BerError::Truncated(body))?;
            body += count;
            Some(bytes.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize))
        }
    };
    let constructed = first & CONSTRUCTED != 0;
    if length.is_none() && !constructed {
        return Err(BerError::Malformed(pos));
    }
    if let Some(length) = length
        && body.checked_add(length).is_none_or(|end| end > input.len())
    {
        return Err(BerError::Truncated(body));
    }
    Ok(Header {
        tag,
        constructed,
        length,
        body,
    })
}

fn push_length(out: &mut Vec<u8>, length: usize) {
    if length < 0x80 {
        out.push(length as u8);
    } else {
        let bytes = length.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Converts the element at `pos` into `out`; returns the position after it.
fn convert(input: &[u8], pos: usize, depth: usize, out: &mut Vec<u8>) -> Result<usize, BerError> {
    if depth > MAX_DEPTH {
        return Err(BerError::TooDeep);
    }
    let h = header(input, pos)?;
    if !h.constructed {
        let length = h.length.expect("primitive elements have a definite length");
        out.extend_from_slice(&input[h.tag.clone()]);
        push_length(out, length);
        out.extend_from_slice(&input[h.body..h.body + length]);
        return Ok(h.body + length);
    }

    // Convert the children first; their DER length is only known afterwards.
    let mut children = Vec::new();
    let mut cursor = h.body;
    let end = loop {
        match h.length {
            Some(length) if cursor >= h.body + length => break h.body + length,
            None if input.get(cursor..cursor + 2) == Some(&[0, 0]) => break cursor + 2,
            None if cursor >= input.len() => return Err(BerError::Truncated(cursor)),
            _ => cursor = convert(input, cursor, depth + 1, &mut children)?,
        }
    };
    if let Some(length) = h.length
        && cursor != h.body + length
    {
        return Err(BerError::Malformed(cursor));
    }

    let tag_bytes = &input[h.tag.clone()];
    if tag_bytes == [OCTET_STRING | CONSTRUCTED] {
        // DER has no segmented strings: join the (already primitive) segments.
        let joined = primitive_contents(&children)?;
        out.push(OCTET_STRING);
        push_length(out, joined.len());
        out.extend_from_slice(&joined);
    } else {
        out.extend_from_slice(tag_bytes);
        push_length(out, children.len());
        out.extend_from_slice(&children);
    }
    Ok(end)
}

/// The concatenated contents of a run of DER primitive OCTET STRINGs.
pub fn primitive_contents(elements: &[u8]) -> Result<Vec<u8>, BerError> {
    let mut joined = Vec::with_capacity(elements.len());
    let mut pos = 0;
    while pos < elements.len() {
        let h = header(elements, pos)?;
        let length = h.length.ok_or(BerError::Malformed(pos))?;
        if elements[pos] != OCTET_STRING {
            return Err(BerError::Malformed(pos));
        }
        joined.extend_from_slice(&elements[h.body..h.body + length]);
        pos = h.body + length;
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indefinite_lengths_become_definite() {
        // SEQUENCE (indefinite) { INTEGER 42 }
        assert_eq!(
            to_der(&[0x30, 0x80, 0x02, 0x01, 0x2a, 0x00, 0x00]).unwrap(),
            [0x30, 0x03, 0x02, 0x01, 0x2a]
        );
    }

    #[test]
    fn segmented_octet_strings_are_joined() {
        // [0] { OCTET STRING (constructed, indefinite) { "ab", "c" } }
        let ber = [
            0xa0, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0x00, 0x00, 0x00,
            0x00,
        ];
        assert_eq!(
            to_der(&ber).unwrap(),
            [0xa0, 0x05, 0x04, 0x03, b'a', b'b', b'c']
        );
    }

    #[test]
    fn long_lengths_become_minimal() {
        assert_eq!(
            to_der(&[0x04, 0x82, 0x00, 0x01, 0xff]).unwrap(),
            [0x04, 0x01, 0xff]
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(to_der(&[0x30, 0x80, 0x02, 0x01]).is_err());
        assert!(to_der(&[0x04, 0x85, 1, 2, 3, 4, 5]).is_err());
        assert!(to_der(&[0x30, 0x05, 0x02]).is_err());
        let deep: Vec<u8> = std::iter::repeat_n([0x30u8, 0x80], 100).flatten().collect();
        assert_eq!(to_der(&deep), Err(BerError::TooDeep));
        assert!(to_der(&[]).is_err());
    }
}
