//! Where OpenPGP keys hide in mail: the Autocrypt header (Level 1), and armored
//! public key blocks in text parts.

use base64::Engine;

/// Autocrypt Level 1 §2.1: a header longer than this is invalid.
pub const MAX_AUTOCRYPT_HEADER: usize = 10 * 1024;
/// The most armored blocks we take from one text part.
const MAX_BLOCKS: usize = 4;

const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const END: &str = "-----END PGP PUBLIC KEY BLOCK-----";

/// A parsed Autocrypt header.
#[derive(Debug, PartialEq, Eq)]
pub struct Autocrypt {
    /// The `addr` attribute, as written.
    pub addr: String,
    /// The decoded `keydata`.
    pub keydata: Vec<u8>,
}

/// Parses the value of an `Autocrypt:` header (unfolded or folded). Returns why not,
/// when the header is invalid: unknown critical attributes, a missing `addr` or
/// `keydata`, or keydata that is not base64.
pub fn parse_autocrypt(value: &str) -> Result<Autocrypt, String> {
    if value.len() > MAX_AUTOCRYPT_HEADER {
        return Err(format!(
            "Autocrypt header of {} bytes is over 10 KiB",
            value.len()
        ));
    }
    let mut addr = None;
    let mut keydata = None;
    for attribute in value.split(';') {
        let attribute = attribute.trim();
        if attribute.is_empty() {
            continue;
        }
        let (name, val) = attribute
            .split_once('=')
            .ok_or_else(|| format!("Autocrypt attribute {attribute:?} has no value"))?;
        match name.trim() {
            "addr" => addr = Some(val.trim().to_string()),
            "keydata" => keydata = Some(val),
            "prefer-encrypt" => {}
            // Attributes starting with '_' are non-critical; any other unknown one
            // makes the header invalid (Autocrypt Level 1 §2.1).
            other if other.starts_with('_') => {}
            other => return Err(format!("unknown critical Autocrypt attribute {other:?}")),
        }
    }
    let addr = addr.ok_or("Autocrypt header without addr")?;
    let keydata: String = keydata
        .ok_or("Autocrypt header without keydata")?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let keydata = base64::engine::general_purpose::STANDARD
        .decode(keydata)
        .map_err(|e| format!("Autocrypt keydata is not base64: {e}"))?;
    Ok(Autocrypt { addr, keydata })
}

/// The armored public key blocks in a text, at most a few.
pub fn armored_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while blocks.len() < MAX_BLOCKS {
        let Some(start) = rest.find(BEGIN) else { break };
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        blocks.push(&rest[start..end]);
        rest = &rest[end..];
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocrypt_header() {
        let parsed = parse_autocrypt(
            "addr=alice@example.org; prefer-encrypt=mutual; keydata=\r\n aGVs\r\n bG8=",
        )
        .unwrap();
        assert_eq!(parsed.addr, "alice@example.org");
        assert_eq!(parsed.keydata, b"hello");
        assert!(parse_autocrypt("addr=a@b; keydata=aGVsbG8=; type=2").is_err());
        assert!(parse_autocrypt("addr=a@b; keydata=aGVsbG8=; _x=2").is_ok());
        assert!(parse_autocrypt("keydata=aGVsbG8=").is_err());
        assert!(parse_autocrypt("addr=a@b; keydata=!!!").is_err());
    }

    #[test]
    fn finds_armored_blocks() {
        let text = format!("hi\n{BEGIN}\n\nabc\n{END}\nbye {BEGIN}\nx\n{END}");
        assert_eq!(armored_blocks(&text).len(), 2);
        assert!(armored_blocks("no keys here").is_empty());
    }
}
