//! Reading one field of a `[[rule]]` from its TOML value: the types, the lists, the
//! regexes, globs, sizes and replies, each with a message an admin can act on.

use globset::{GlobBuilder, GlobSetBuilder};
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use toml::Value;

use super::rule::*;
use crate::keys::{KeyKind, Source};
use crate::smtp::reply::Reply;

/// Regexes in rules are bounded, so a careless pattern cannot eat memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The longest reply text a rule may set: with the code and status in front, the
/// reply line stays well within RFC 5321's 512 octets.
const MAX_REPLY_TEXT: usize = 200;

/// One field's value, read into what the rule needs; errors are plain messages.
pub struct Field<'a> {
    pub value: &'a Value,
}

pub type Read<T> = Result<T, String>;

impl Field<'_> {
    pub fn string(&self) -> Read<String> {
        self.value
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("expected a string, found {}", self.value.type_str()))
    }

    pub fn bool(&self) -> Read<bool> {
        self.value
            .as_bool()
            .ok_or_else(|| format!("expected true or false, found {}", self.value.type_str()))
    }

    /// A string, or a list of strings.
    pub fn strings(&self) -> Read<Vec<String>> {
        let list = match self.value {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_str().map(str::to_string).ok_or_else(|| {
                        format!("expected a list of strings, found {}", item.type_str())
                    })
                })
                .collect::<Read<_>>()?,
            other => {
                return Err(format!(
                    "expected a string or a list of strings, found {}",
                    other.type_str()
                ));
            }
        };
        if list.is_empty() {
            return Err("the list is empty".into());
        }
        Ok(list)
    }

    pub fn one_of(&self, allowed: &[&str]) -> Read<String> {
        let text = self.string()?;
        if allowed.contains(&text.as_str()) {
            Ok(text)
        } else {
            Err(format!("{text:?} is not one of {allowed:?}"))
        }
    }

    /// Addresses, domains and globs over addresses.
    pub fn patterns(&self) -> Read<Patterns> {
        let list = self.strings()?;
        for pattern in &list {
            super::index::check(pattern)?;
        }
        Ok(Patterns(list.iter().map(|p| p.to_lowercase()).collect()))
    }

    pub fn globs(&self, case_insensitive: bool) -> Read<Globs> {
        let text = self.strings()?;
        let mut set = GlobSetBuilder::new();
        for pattern in &text {
            let glob = GlobBuilder::new(pattern)
                .case_insensitive(case_insensitive)
                .literal_separator(false)
                .build()
                .map_err(|e| format!("{pattern:?} is not a glob: {}", e.kind()))?;
            set.add(glob);
        }
        let set = set.build().map_err(|e| e.to_string())?;
        Ok(Globs { text, set })
    }

    pub fn regex(&self) -> Read<Regex> {
        compile(&self.string()?)
    }

    pub fn size(&self) -> Read<u64> {
        crate::config::units::ByteSize::deserialize(self.value.clone())
            .map(|s| s.0)
            .map_err(|e| e.message().to_string())
    }

    pub fn sources(&self) -> Read<Vec<Source>> {
        self.strings()?
            .iter()
            .map(|s| match s.as_str() {
                "admin" => Ok(Source::Admin),
                "lookup" => Ok(Source::Lookup),
                "mailflow" => Ok(Source::Mailflow),
                "sckm" => Ok(Source::Sckm),
                other => Err(format!(
                    "{other:?} is not a key source; use \"admin\", \"lookup\", \"mailflow\" or \"sckm\""
                )),
            })
            .collect()
    }

    pub fn encrypted(&self) -> Read<EncryptedWant> {
        match self.value {
            Value::Boolean(true) => Ok(EncryptedWant::Yes),
            Value::Boolean(false) => Ok(EncryptedWant::No),
            Value::String(s) if s == "pgp" => Ok(EncryptedWant::Pgp),
            Value::String(s) if s == "smime" => Ok(EncryptedWant::Smime),
            other => Err(format!(
                "expected true, false, \"pgp\" or \"smime\", found {}",
                describe(other)
            )),
        }
    }

    /// `header = { name = "X-Class", matches = "(?i)secret" }`, or a list of them.
    pub fn headers(&self) -> Read<Vec<HeaderTest>> {
        let one = |value: &Value| -> Read<HeaderTest> {
            let table = value
                .as_table()
                .ok_or("expected { name = \"...\", matches = \"...\" }")?;
            if let Some(unknown) = table.keys().find(|k| *k != "name" && *k != "matches") {
                return Err(format!("unknown key {unknown:?}; use name and matches"));
            }
            let name = table
                .get("name")
                .and_then(Value::as_str)
                .ok_or("header needs name = \"Field-Name\"")?;
            if !is_field_name(name) {
                return Err(format!("{name:?} is not a header field name"));
            }
            let matches = table
                .get("matches")
                .and_then(Value::as_str)
                .ok_or("header needs matches = \"regex\"")?;
            Ok(HeaderTest {
                name: name.to_ascii_lowercase(),
                regex: compile(matches)?,
            })
        };
        match self.value {
            Value::Array(items) => items.iter().map(one).collect(),
            value => Ok(vec![one(value)?]),
        }
    }

    /// `add_header = "X-Foo: value"`, or a list of them.
    pub fn add_headers(&self) -> Read<Vec<(String, String)>> {
        self.strings()?
            .iter()
            .map(|line| {
                let (name, value) = line
                    .split_once(':')
                    .ok_or_else(|| format!("{line:?} is not \"Name: value\""))?;
                let (name, value) = (name.trim(), value.trim());
                if !is_field_name(name) {
                    return Err(format!("{name:?} is not a header field name"));
                }
                if value.contains(['\r', '\n']) {
                    return Err(format!("the value of {name} has a line break"));
                }
                Ok((name.to_string(), value.to_string()))
            })
            .collect()
    }

    /// The text of an SMTP reply, as `no_key_text` gives it: one line of printable
    /// ASCII (RFC 5321's textstring; a line break would end the reply early, and other
    /// control characters reach the client's logs and screens), and short enough to
    /// stay one line.
    pub fn reply_text(&self) -> Read<String> {
        let text = self.string()?;
        let text = text.trim();
        if text.is_empty() {
            return Err("the text is empty".into());
        }
        if let Some(c) = text.chars().find(|c| !(' '..='~').contains(c)) {
            return Err(format!(
                "{c:?} is not allowed: an SMTP reply is one line of printable ASCII"
            ));
        }
        if text.len() > MAX_REPLY_TEXT {
            return Err(format!(
                "the text is {} characters long; at most {MAX_REPLY_TEXT} are allowed",
                text.len()
            ));
        }
        Ok(text.to_string())
    }

    /// `reply = "550 5.7.1 text"`: a 4xx or 5xx code, an enhanced status code of the
    /// same class, and text.
    pub fn reply(&self) -> Read<Reply> {
        let text = self.string()?;
        let mut words = text.splitn(3, ' ');
        let usage = || {
            format!("{text:?} is not \"550 5.7.1 text\" (a 4xx or 5xx code, a status code, text)")
        };
        let code: u16 = words
            .next()
            .and_then(|c| c.parse().ok())
            .ok_or_else(usage)?;
        if !(400..600).contains(&code) {
            return Err(format!("{code} is not a 4xx or 5xx code"));
        }
        let esc: Vec<u8> = words
            .next()
            .ok_or_else(usage)?
            .split('.')
            .map(|n| n.parse::<u8>())
            .collect::<Result<_, _>>()
            .map_err(|_| usage())?;
        let &[class, subject, detail] = esc.as_slice() else {
            return Err(usage());
        };
        if u16::from(class) != code / 100 {
            return Err(format!(
                "the status code {class}.{subject}.{detail} does not match the reply code {code}"
            ));
        }
        let words = words.next().unwrap_or("").trim();
        if words.is_empty() || words.contains(['\r', '\n']) {
            return Err(usage());
        }
        Ok(Reply::new(
            code,
            Some([class, subject, detail]),
            words.to_string(),
        ))
    }
}

fn compile(pattern: &str) -> Read<Regex> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            // regex's message spans several lines (pattern, caret, error); keep the error.
            let text = e.to_string();
            let last = text.lines().last().unwrap_or("").trim();
            format!("not a valid regex: {}", last.trim_start_matches("error: "))
        })
}

fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.type_str().to_string(),
    }
}

pub fn locality(s: &str) -> Locality {
    if s == "internal" {
        Locality::Internal
    } else {
        Locality::External
    }
}

pub fn key_want(s: &str) -> KeyWant {
    match s {
        "pgp" => KeyWant::Kind(KeyKind::Pgp),
        "smime" => KeyWant::Kind(KeyKind::Smime),
        "none" => KeyWant::None,
        _ => KeyWant::Any,
    }
}

pub fn action(s: &str) -> Action {
    match s {
        "encrypt" => Action::Encrypt,
        "decrypt" => Action::Decrypt,
        "reject" => Action::Reject,
        _ => Action::Pass,
    }
}

pub fn format(s: &str) -> Format {
    match s {
        "pgp" => Format::Pgp,
        "smime" => Format::Smime,
        _ => Format::Auto,
    }
}

pub fn lookup_offline(s: &str) -> LookupOffline {
    if s == "send_clear" {
        LookupOffline::SendClear
    } else {
        LookupOffline::Defer
    }
}

pub fn no_key(s: &str) -> NoKey {
    match s {
        "send_clear" => NoKey::SendClear,
        "defer" => NoKey::Defer,
        _ => NoKey::Reject,
    }
}

pub fn authenticated(s: &str) -> AuthenticatedEncryption {
    match s {
        "when_capable" => AuthenticatedEncryption::WhenCapable,
        "always" => AuthenticatedEncryption::Always,
        _ => AuthenticatedEncryption::Never,
    }
}
