//! Sizes and durations as admins write them in `sealgate.toml` ("50MiB", "15m", "1d").
//!
//! Each type checks its value while it is deserialized, so that a bad value is reported
//! with the line it stands on.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};

/// A duration written as humantime text: "90s", "15m", "1d", "100ms".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let duration = humantime::parse_duration(&text).map_err(|e| {
            D::Error::custom(format!(
                "{text:?} is not a duration ({e}); write it as \"90s\", \"15m\", \"1d\""
            ))
        })?;
        if duration.is_zero() {
            return Err(D::Error::custom("a duration of zero is not allowed here"));
        }
        Ok(HumanDuration(duration))
    }
}

/// `[keys] lookup_ttl`: a duration from 1 hour to 999 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupTtl(pub Duration);

impl LookupTtl {
    pub const MIN: Duration = Duration::from_secs(60 * 60);
    pub const MAX: Duration = Duration::from_secs(999 * 24 * 60 * 60);
}

impl Default for LookupTtl {
    fn default() -> Self {
        LookupTtl(Duration::from_secs(24 * 60 * 60))
    }
}

impl<'de> Deserialize<'de> for LookupTtl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let HumanDuration(ttl) = HumanDuration::deserialize(d)?;
        if !(LookupTtl::MIN..=LookupTtl::MAX).contains(&ttl) {
            return Err(D::Error::custom(format!(
                "lookup_ttl {} is out of range: it must be from 1h to 999d",
                humantime::format_duration(ttl)
            )));
        }
        Ok(LookupTtl(ttl))
    }
}

/// `[limits] max_line_length`: at least RFC 5321's 512 octets (§4.5.3.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineLength(pub usize);

impl<'de> Deserialize<'de> for LineLength {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let length = usize::deserialize(d)?;
        if length < 512 {
            return Err(D::Error::custom(format!(
                "max_line_length {length} is below the 512 octets RFC 5321 requires"
            )));
        }
        Ok(LineLength(length))
    }
}

/// A size in bytes, written as a number or as text with a unit: "50MiB", "512KiB", "2MB".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    fn parse(text: &str) -> Option<u64> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().ok()?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            _ => return None,
        };
        number.checked_mul(factor)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let size = match Raw::deserialize(d)? {
            Raw::Number(n) => n,
            Raw::Text(text) => ByteSize::parse(&text).ok_or_else(|| {
                D::Error::custom(format!(
                    "{text:?} is not a size; write it as \"50MiB\", \"512KiB\" or a number of bytes"
                ))
            })?,
        };
        if size == 0 {
            return Err(D::Error::custom("a size of zero is not allowed here"));
        }
        Ok(ByteSize(size))
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("50MiB"), Some(50 << 20));
        assert_eq!(ByteSize::parse("2 KB"), Some(2000));
        assert_eq!(ByteSize::parse("1234"), Some(1234));
        assert_eq!(ByteSize::parse("lots"), None);
        assert_eq!(ByteSize::parse("5XB"), None);
    }
}
