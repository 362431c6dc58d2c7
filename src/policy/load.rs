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

use serde::Deserialize;
use toml::{Spanned, Value};

use super::fields::{
    Field, action, authenticated, format, key_want, locality, lookup_offline, no_key,
};
use super::rule::*;
use super::{Policy, lint};
use crate::mail::Direction;

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
    if files.is_empty() {
        problems.push(Problem {
            path: dir.to_path_buf(),
            line: 1,
            message: "policy_dir has no *.toml rule files: every message passes as it is".into(),
            warning: true,
        });
    }
    let mut loaded = load_texts(&files);
    problems.append(&mut loaded.problems);
    loaded.problems = problems;
    loaded
}

/// The `*.toml` files of `dir` in name order, with their text. Hidden files (editor
/// swap files) are skipped.
///
/// Only regular files are read. A symbolic link is an error and is not followed: run
/// as root, `check` would otherwise read whatever it points to (`/etc/shadow`) and echo
/// its lines in its error messages. The file is opened with `O_NOFOLLOW` and checked
/// again once open, so a link swapped in after the listing is refused as well.
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
            name.ends_with(".toml") && !name.starts_with('.')
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            read_rule_file(&path)
                .map(|text| (path.clone(), text))
                .map_err(|m| problem(&path, m))
        })
        .collect()
}

/// A rule file larger than this is refused: a thousand rules take about 100 KiB.
const MAX_RULE_FILE: u64 = 16 * 1024 * 1024;

/// Reads one rule file, if it is a regular file (not a link) of a sane size.
fn read_rule_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let kind = std::fs::symlink_metadata(path)
        .map_err(|e| format!("cannot read the rule file: {e}"))?
        .file_type();
    if kind.is_symlink() {
        return Err(
            "is a symbolic link; policy files must be regular files in policy_dir (not read)"
                .into(),
        );
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read the rule file: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the rule file: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file; policy files must be regular files (not read)".into());
    }
    if meta.len() > MAX_RULE_FILE {
        return Err(format!(
            "is {} bytes, more than a rule file may be ({MAX_RULE_FILE})",
            meta.len()
        ));
    }
    let mut text = String::new();
    file.take(MAX_RULE_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the rule file: {e}"))?;
    Ok(text)
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
    // In the order an admin reads them: by file, then line.
    problems.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
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
        let mut reply_at = start;
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
            if key.get_ref() == "reply" {
                reply_at = at;
            }
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
                "chain_validated" => field.bool().map(|b| when.chain_validated = Some(b)),
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
                "no_key_text" => field.reply_text().map(|t| then.no_key_text = Some(t)),
                "lookup_offline" => field
                    .one_of(&["defer", "send_clear"])
                    .map(|s| then.lookup_offline = Some(lookup_offline(&s))),
                "encrypt_again" => field.bool().map(|b| then.encrypt_again = Some(b)),
                "reply" => field.reply().map(|r| then.reply = Some(r)),
                "harvest" => field.bool().map(|b| then.harvest = Some(b)),
                "use_mailflow_keys" => field.bool().map(|b| then.use_mailflow_keys = Some(b)),
                "smime_authenticated_encryption" => field
                    .one_of(&["never", "when_capable", "always"])
                    .map(|s| then.smime_authenticated_encryption = Some(authenticated(&s))),
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
            self.error(reply_at, "reply is only for action = \"reject\"".into());
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
