//! Reading rule files: every `*.toml` in `policy_dir`, in name order, into a
//! [`Policy`]. Every problem is collected, not just the first, each as
//! `path:line: message`, so that `sealgate check` can list them all at once.
//!
//! A rule file is a list of `[[rule]]` tables. Each field is read on its own from the
//! TOML value with its span, so an error names the line of the field that has it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{GlobBuilder, GlobSetBuilder};
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use toml::{Spanned, Value};

use super::rule::*;
use super::{Policy, lint};
use crate::config::Direction;
use crate::keys::{KeyKind, Source};
use crate::smtp::reply::Reply;

/// The shipped `policies/`, built in: used when `policy_dir` does not exist, so that
/// `sealgate serve` behaves the same from any working directory.
const BUILT_IN: [(&str, &str); 3] = [
    (
        "10-outbound-secure.toml",
        include_str!("../../policies/10-outbound-secure.toml"),
    ),
    (
        "20-outbound.toml",
        include_str!("../../policies/20-outbound.toml"),
    ),
    (
        "30-inbound.toml",
        include_str!("../../policies/30-inbound.toml"),
    ),
];

/// Regexes in rules are bounded, so a careless pattern cannot eat memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    /// 1-based; 1 when the problem is the whole file.
    pub line: usize,
    pub message: String,
    /// Warnings do not stop the policy from loading.
    pub warning: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.warning { "warning: " } else { "" };
        // One problem, one line, whatever a message holds.
        let message = self.message.replace(['\r', '\n'], " ");
        write!(f, "{}:{}: {kind}{message}", self.path.display(), self.line)
    }
}

/// What loading found: the policy when there was no error, and every problem.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Option<Policy>,
    pub problems: Vec<Problem>,
}

impl Loaded {
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| !p.warning)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.warning)
    }
}

/// Loads every rule file in `dir`; the built-in policy when `dir` does not exist.
pub fn load_dir(dir: &Path) -> Loaded {
    let mut problems = Vec::new();
    let files: Vec<(PathBuf, String)> = if !dir.exists() {
        problems.push(Problem {
            path: dir.to_path_buf(),
            line: 1,
            message:
                "policy_dir does not exist: the built-in policy (the shipped policies/) is used"
                    .into(),
            warning: true,
        });
        BUILT_IN
            .iter()
            .map(|(name, text)| (dir.join(name), text.to_string()))
            .collect()
    } else {
        match read_dir(dir) {
            Ok(files) => files,
            Err(problem) => {
                return Loaded {
                    policy: None,
                    problems: vec![problem],
                };
            }
        }
    };
    let mut loaded = load_texts(&files);
    problems.append(&mut loaded.problems);
    loaded.problems = problems;
    loaded
}

/// The `*.toml` files of `dir` in name order, with their text. Hidden files (editor
/// swap files) are skipped.
fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, Problem> {
    let problem = |path: &Path, message: String| Problem {
        path: path.to_path_buf(),
        line: 1,
        message,
        warning: false,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| problem(dir, format!("cannot read policy_dir: {e}")))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".toml") && !name.starts_with('.') && path.is_file()
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| match std::fs::read_to_string(&path) {
            Ok(text) => Ok((path, text)),
            Err(e) => Err(problem(&path, format!("cannot read the rule file: {e}"))),
        })
        .collect()
}

/// Loads rule files given as (path, text), in the order given.
pub fn load_texts(files: &[(PathBuf, String)]) -> Loaded {
    let mut problems = Vec::new();
    let mut rules: Vec<(Direction, Rule)> = Vec::new();
    for (path, text) in files {
        let file: Arc<str> = path
            .file_name()
            .map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy())
            .into();
        let mut reader = FileReader {
            path,
            text,
            file,
            problems: &mut problems,
        };
        reader.read(&mut rules);
    }
    let has_errors = problems.iter().any(|p| !p.warning);
    let policy = (!has_errors).then(|| {
        let (inbound, outbound): (Vec<_>, Vec<_>) = rules
            .into_iter()
            .partition(|(direction, _)| *direction == Direction::Inbound);
        Policy::new(
            inbound.into_iter().map(|(_, r)| r).collect(),
            outbound.into_iter().map(|(_, r)| r).collect(),
        )
    });
    if let Some(policy) = &policy {
        let paths: BTreeMap<&str, &Path> = files
            .iter()
            .filter_map(|(p, _)| Some((p.file_name()?.to_str()?, p.as_path())))
            .collect();
        for (origin, message) in lint::warnings(policy) {
            let path = paths
                .get(&*origin.file)
                .map_or_else(|| PathBuf::from(&*origin.file), |p| p.to_path_buf());
            problems.push(Problem {
                path,
                line: origin.line,
                message,
                warning: true,
            });
        }
    }
    Loaded { policy, problems }
}

/// A rule file's outer shape: nothing but `[[rule]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<BTreeMap<Spanned<String>, Spanned<Value>>>>,
}

struct FileReader<'a> {
    path: &'a Path,
    text: &'a str,
    file: Arc<str>,
    problems: &'a mut Vec<Problem>,
}

impl FileReader<'_> {
    fn error(&mut self, offset: usize, message: String) {
        self.problems.push(Problem {
            path: self.path.to_path_buf(),
            line: line_of(self.text, offset),
            message,
            warning: false,
        });
    }

    fn read(&mut self, rules: &mut Vec<(Direction, Rule)>) {
        let raw: RawFile = match toml::from_str(self.text) {
            Ok(raw) => raw,
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                self.error(offset, e.message().to_string());
                return;
            }
        };
        if raw.rule.is_empty() {
            self.problems.push(Problem {
                path: self.path.to_path_buf(),
                line: 1,
                message: "no [[rule]] in this file".into(),
                warning: true,
            });
        }
        for table in raw.rule {
            let start = rule_start(self.text, table.span().start);
            if let Some(rule) = self.rule(start, table.into_inner()) {
                rules.push(rule);
            }
        }
    }

    /// One `[[rule]]`; `None` (with the problems recorded) when it has errors.
    fn rule(
        &mut self,
        start: usize,
        fields: BTreeMap<Spanned<String>, Spanned<Value>>,
    ) -> Option<(Direction, Rule)> {
        let errors_before = self.problems.iter().filter(|p| !p.warning).count();
        let mut chain = None;
        let mut chain_given = false;
        let mut name = None;
        let mut continues = false;
        let mut when = Conditions::default();
        let mut then = Actions::default();
        for (key, value) in fields {
            let at = key.span().start;
            let field = Field {
                value: value.get_ref(),
            };
            chain_given |= key.get_ref() == "chain";
            let result = match key.get_ref().as_str() {
                "chain" => field.one_of(&["inbound", "outbound"]).map(|c| {
                    chain = Some(if c == "inbound" {
                        Direction::Inbound
                    } else {
                        Direction::Outbound
                    })
                }),
                "name" => field.string().map(|s| name = Some(s)),
                "continue" => field.bool().map(|b| continues = b),

                "sender" => field.patterns().map(|p| when.sender = Some(p)),
                "recipient" => field.patterns().map(|p| when.recipient = Some(p)),
                "recipient_is" => field
                    .one_of(&["internal", "external"])
                    .map(|s| when.recipient_is = Some(locality(&s))),
                "key" => field
                    .one_of(&["any", "pgp", "smime", "none"])
                    .map(|s| when.key = Some(key_want(&s))),
                "key_source" => field.sources().map(|s| when.key_source = Some(s)),
                "subject" => field.regex().map(|r| when.subject = Some(r)),
                "header" => field.headers().map(|h| when.headers = h),
                "size_over" => field.size().map(|s| when.size_over = Some(s)),
                "size_under" => field.size().map(|s| when.size_under = Some(s)),
                "encrypted" => field.encrypted().map(|e| when.encrypted = Some(e)),
                "signed" => field.bool().map(|b| when.signed = Some(b)),
                "attachment_name" => field.globs(true).map(|g| when.attachment_name = Some(g)),
                "attachment_type" => field.globs(true).map(|g| when.attachment_type = Some(g)),

                "action" => field
                    .one_of(&["encrypt", "decrypt", "pass", "reject"])
                    .map(|s| then.action = Some(action(&s))),
                "format" => field
                    .one_of(&["auto", "pgp", "smime"])
                    .map(|s| then.format = Some(format(&s))),
                "no_key" => field
                    .one_of(&["reject", "send_clear", "defer"])
                    .map(|s| then.no_key = Some(no_key(&s))),
                "encrypt_again" => field.bool().map(|b| then.encrypt_again = Some(b)),
                "reply" => field.reply().map(|r| then.reply = Some(r)),
                "harvest" => field.bool().map(|b| then.harvest = Some(b)),
                "use_mailflow_keys" => field.bool().map(|b| then.use_mailflow_keys = Some(b)),
                "add_header" => field.add_headers().map(|h| then.tags.add_headers = h),
                "subject_prefix" => field.string().map(|s| then.tags.subject_prefix = Some(s)),
                "subject_remove" => field.strings().map(|s| then.tags.subject_remove = s),
                other => Err(format!("unknown field {other:?} in [[rule]]")),
            };
            if let Err(message) = result {
                let message = format!("{}: {message}", key.get_ref());
                self.error(at, message);
            }
        }
        let Some(direction) = chain else {
            if chain_given {
                return None;
            }
            self.error(
                start,
                "this rule has no chain; add chain = \"inbound\" or chain = \"outbound\"".into(),
            );
            return None;
        };
        if then.reply.is_some() && then.action != Some(Action::Reject) {
            self.error(start, "reply is only for action = \"reject\"".into());
        }
        let errors_after = self.problems.iter().filter(|p| !p.warning).count();
        (errors_after == errors_before).then(|| {
            let origin = Origin {
                file: self.file.clone(),
                line: line_of(self.text, start),
            };
            (
                direction,
                Rule {
                    origin,
                    name,
                    when,
                    then,
                    continues,
                },
            )
        })
    }
}

/// One field's value, read into what the rule needs; errors are plain messages.
struct Field<'a> {
    value: &'a Value,
}

type Read<T> = Result<T, String>;

impl Field<'_> {
    fn string(&self) -> Read<String> {
        self.value
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("expected a string, found {}", self.value.type_str()))
    }

    fn bool(&self) -> Read<bool> {
        self.value
            .as_bool()
            .ok_or_else(|| format!("expected true or false, found {}", self.value.type_str()))
    }

    /// A string, or a list of strings.
    fn strings(&self) -> Read<Vec<String>> {
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

    fn one_of(&self, allowed: &[&str]) -> Read<String> {
        let text = self.string()?;
        if allowed.contains(&text.as_str()) {
            Ok(text)
        } else {
            Err(format!("{text:?} is not one of {allowed:?}"))
        }
    }

    /// Addresses, domains and globs over addresses.
    fn patterns(&self) -> Read<Patterns> {
        let list = self.strings()?;
        for pattern in &list {
            super::index::address_glob(pattern)?;
        }
        Ok(Patterns(list.iter().map(|p| p.to_lowercase()).collect()))
    }

    fn globs(&self, case_insensitive: bool) -> Read<Globs> {
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

    fn regex(&self) -> Read<Regex> {
        compile(&self.string()?)
    }

    fn size(&self) -> Read<u64> {
        crate::units::ByteSize::deserialize(self.value.clone())
            .map(|s| s.0)
            .map_err(|e| e.message().to_string())
    }

    fn sources(&self) -> Read<Vec<Source>> {
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

    fn encrypted(&self) -> Read<EncryptedWant> {
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
    fn headers(&self) -> Read<Vec<HeaderTest>> {
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
    fn add_headers(&self) -> Read<Vec<(String, String)>> {
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

    /// `reply = "550 5.7.1 text"`: a 4xx or 5xx code, an enhanced status code of the
    /// same class, and text.
    fn reply(&self) -> Read<Reply> {
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

fn locality(s: &str) -> Locality {
    if s == "internal" {
        Locality::Internal
    } else {
        Locality::External
    }
}

fn key_want(s: &str) -> KeyWant {
    match s {
        "pgp" => KeyWant::Kind(KeyKind::Pgp),
        "smime" => KeyWant::Kind(KeyKind::Smime),
        "none" => KeyWant::None,
        _ => KeyWant::Any,
    }
}

fn action(s: &str) -> Action {
    match s {
        "encrypt" => Action::Encrypt,
        "decrypt" => Action::Decrypt,
        "reject" => Action::Reject,
        _ => Action::Pass,
    }
}

fn format(s: &str) -> Format {
    match s {
        "pgp" => Format::Pgp,
        "smime" => Format::Smime,
        _ => Format::Auto,
    }
}

fn no_key(s: &str) -> NoKey {
    match s {
        "send_clear" => NoKey::SendClear,
        "defer" => NoKey::Defer,
        _ => NoKey::Reject,
    }
}

/// The start of the `[[rule]]` header a table's span begins in, so a rule's line is
/// the line an admin sees it start on.
fn rule_start(text: &str, span_start: usize) -> usize {
    let start = span_start.min(text.len());
    if text[start..].starts_with("[[") {
        return start;
    }
    text[..start].rfind("[[").unwrap_or(start)
}

/// The 1-based line that byte `offset` of `text` is on.
fn line_of(text: &str, offset: usize) -> usize {
    memchr::memchr_iter(b'\n', &text.as_bytes()[..offset.min(text.len())]).count() + 1
}
