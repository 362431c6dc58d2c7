//! `sealgate spool ...`: the retry spool under the admin's hand, as `postqueue -p`,
//! `postqueue -f` and `postsuper -d` put Postfix's queue. The verbs work on a running
//! gateway through its admin socket, and on the database directly when none runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::dsn::Failure;
use super::{Change, Changed, Entry, Key, Spool, SpoolError, now_ms};
use crate::config::Config;
use crate::keys::admin::Answer;
use crate::mail::message::Message;
use crate::smtp::reply;

/// How long `spool retry` waits for the retrier's attempt before it reports.
const RETRY_WAIT: Duration = Duration::from_secs(30);

/// One `sealgate spool` verb.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum SpoolRequest {
    List {
        json: bool,
    },
    Show {
        id: String,
    },
    /// Makes entries due now, ignoring their back-off: one, or with `None` all.
    Retry {
        id: Option<String>,
    },
    /// Removes an entry, telling the sender in a DSN unless `silent`.
    Delete {
        id: String,
        silent: bool,
    },
}

/// What the verbs work on.
pub struct SpoolContext<'a> {
    pub spool: &'a Spool,
    pub config: &'a Config,
    /// Whether this is the running gateway (whose retrier can be woken and waited for).
    pub running: bool,
}

/// Why a verb failed (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum SpoolAdminError {
    /// The admin named no entry the spool holds.
    #[error("no spooled copy {0} (sealgate spool list shows them)")]
    Unknown(String),
    /// The retrier is attempting it; the admin may ask again in a moment.
    #[error("{0} is being attempted right now; try again in a moment")]
    Busy(Key),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The task reading the spool failed: a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// One entry as `spool list --json` prints it. The field names are part of the
/// interface: scripts read them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Listed {
    /// The spool's name for the entry, for `spool show`, `retry` and `delete`.
    pub id: String,
    /// The id the client was given for the transaction (in the log lines too).
    pub queue_id: String,
    pub direction: String,
    pub from: String,
    pub recipients: Vec<String>,
    pub next_hop: String,
    pub attempts: u32,
    /// RFC 3339, UTC.
    pub created: String,
    /// RFC 3339, UTC.
    pub next_attempt: String,
    pub last_reply: Option<String>,
}

impl Listed {
    fn new(key: Key, entry: &Entry, config: &Config) -> Listed {
        Listed {
            id: key.to_string(),
            queue_id: entry.id.clone(),
            direction: entry.direction.to_string(),
            from: entry.mail_from.clone(),
            recipients: entry.recipients.clone(),
            next_hop: config.listener(entry.direction).next_hop.to_string(),
            attempts: entry.attempts,
            created: rfc3339(entry.arrived as i128 * 1_000_000_000),
            next_attempt: rfc3339(entry.next_attempt_ms as i128 * 1_000_000),
            last_reply: entry.last_reply.clone(),
        }
    }
}

fn rfc3339(unix_nanos: i128) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(unix_nanos)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(&Rfc3339)
        .unwrap_or_default()
}

pub async fn execute(
    cx: &SpoolContext<'_>,
    request: SpoolRequest,
) -> Result<Answer, SpoolAdminError> {
    match request {
        SpoolRequest::List { json } => list(cx, json).await,
        SpoolRequest::Show { id } => show(cx, &id).await,
        SpoolRequest::Retry { id } => retry(cx, id.as_deref()).await,
        SpoolRequest::Delete { id, silent } => delete(cx, &id, silent).await,
    }
}

async fn list(cx: &SpoolContext<'_>, json: bool) -> Result<Answer, SpoolAdminError> {
    let listed: Vec<Listed> = every(cx.spool)
        .await?
        .iter()
        .map(|(key, entry)| Listed::new(*key, entry, cx.config))
        .collect();
    let output = if json {
        let mut text = serde_json::to_string_pretty(&listed).expect("entries serialize");
        text.push('\n');
        text
    } else {
        table(&listed)
    };
    Ok(Answer {
        messages: Vec::new(),
        output,
    })
}

/// Every entry, read off the async threads: the shared spool's query blocks until
/// PostgreSQL answers.
async fn every(spool: &Spool) -> Result<Vec<(Key, Entry)>, SpoolAdminError> {
    let spool = spool.clone();
    let listed = tokio::task::spawn_blocking(move || spool.listed())
        .await
        .map_err(|e| SpoolAdminError::Internal(e.to_string()))?;
    Ok(listed?)
}

/// The text `spool list` prints: a block per entry, as `postqueue -p` does.
fn table(listed: &[Listed]) -> String {
    if listed.is_empty() {
        return "the retry spool is empty\n".into();
    }
    let mut out = String::new();
    for entry in listed {
        out.push_str(&format!(
            "{}  {}  queue id {}  {} attempts  next {}  via {}\n  from: <{}>\n",
            entry.id,
            entry.direction,
            entry.queue_id,
            entry.attempts,
            entry.next_attempt,
            entry.next_hop,
            printable(&entry.from)
        ));
        for recipient in &entry.recipients {
            out.push_str(&format!("  to:   <{}>\n", printable(recipient)));
        }
        if let Some(last) = &entry.last_reply {
            out.push_str(&format!("  last: {}\n", printable(last)));
        }
    }
    let copies = if listed.len() == 1 { "copy" } else { "copies" };
    out.push_str(&format!("-- {} {copies} held\n", listed.len()));
    out
}

/// `text` safe for the admin's terminal: what a sender wrote must not be able to move
/// the cursor or retitle the window (escape sequences) when the admin looks at it.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' && c != '\n' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// The entry `id` names, or an error for the admin.
async fn find(cx: &SpoolContext<'_>, id: &str) -> Result<(Key, Entry), SpoolAdminError> {
    let unknown = || SpoolAdminError::Unknown(printable(id));
    let key: Key = id.parse().map_err(|()| unknown())?;
    match cx.spool.find(key).await? {
        Some(entry) => Ok((key, entry)),
        None => Err(unknown()),
    }
}

async fn show(cx: &SpoolContext<'_>, id: &str) -> Result<Answer, SpoolAdminError> {
    let (key, entry) = find(cx, id).await?;
    let message = cx.spool.message_of(key).await?;
    let listed = Listed::new(key, &entry, cx.config);
    let mut out = String::new();
    out.push_str(&format!("id:           {}\n", listed.id));
    out.push_str(&format!("queue id:     {}\n", listed.queue_id));
    out.push_str(&format!("direction:    {}\n", listed.direction));
    out.push_str(&format!("from:         <{}>\n", printable(&listed.from)));
    for recipient in &listed.recipients {
        out.push_str(&format!("to:           <{}>\n", printable(recipient)));
    }
    out.push_str(&format!("next hop:     {}\n", listed.next_hop));
    out.push_str(&format!("created:      {}\n", listed.created));
    out.push_str(&format!("attempts:     {}\n", listed.attempts));
    out.push_str(&format!("next attempt: {}\n", listed.next_attempt));
    if let Some(last) = &listed.last_reply {
        out.push_str(&format!("last reply:   {}\n", printable(last)));
    }
    out.push_str(&format!(
        "DSN:          {}\n",
        if entry.notify {
            "to the sender on failure"
        } else {
            "none (unverified sender)"
        }
    ));
    out.push_str(&format!("size:         {} bytes\n\n", message.len()));
    out.push_str(&printable(&String::from_utf8_lossy(
        &message.header_block(64 * 1024),
    )));
    Ok(Answer {
        messages: Vec::new(),
        output: out,
    })
}

async fn retry(cx: &SpoolContext<'_>, id: Option<&str>) -> Result<Answer, SpoolAdminError> {
    let keys: Vec<Key> = match id {
        Some(id) => vec![find(cx, id).await?.0],
        None => every(cx.spool)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect(),
    };
    let mut passes = cx.spool.passes();
    let start = *passes.borrow_and_update();
    let mut messages = Vec::new();
    let (mut due, mut busy) = (Vec::new(), Vec::new());
    for key in keys {
        let now = now_ms();
        let changed = cx
            .spool
            .change(key, |entry, _| Change {
                updated: Some(Entry {
                    next_attempt_ms: now,
                    ..entry.clone()
                }),
                dsn: None,
            })
            .await?;
        match changed {
            Changed::Done => due.push(key),
            Changed::Busy => busy.push(key),
            // Delivered since the list was read.
            Changed::Gone => {}
        }
    }
    if let (Some(_), [key]) = (id, &busy[..]) {
        return Err(SpoolAdminError::Busy(*key));
    }
    if !busy.is_empty() {
        messages.push(format!("{}: being attempted right now", names(&busy)));
    }
    tracing::info!(copies = due.len(), "spool: made due now by the admin");
    if due.is_empty() {
        messages.push("nothing to retry".into());
        return Ok(Answer {
            messages,
            output: String::new(),
        });
    }
    if !cx.running {
        messages.push(format!(
            "{} made due now; sealgate attempts {} when it runs",
            names(&due),
            if due.len() == 1 { "it" } else { "them" }
        ));
        return Ok(Answer {
            messages,
            output: String::new(),
        });
    }
    // Two completed passes after the change mean one began after it: every copy made
    // due has had its attempt, or was left alone because its next hop rests.
    cx.spool.wake();
    let waited = tokio::time::timeout(RETRY_WAIT, async {
        while *passes.borrow_and_update() < start + 2 {
            cx.spool.wake();
            if passes.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    if waited.is_err() {
        messages.push(format!(
            "the retrier is still busy after {}s; `sealgate spool list` shows how it went",
            RETRY_WAIT.as_secs()
        ));
    }
    for key in due {
        let line = match cx.spool.find(key).await? {
            None => format!("{key}: done (delivered, or a DSN went to the sender)"),
            Some(entry) => match (entry.next_attempt_ms <= now_ms(), &entry.last_reply) {
                (true, _) => format!(
                    "{key}: not attempted: its next hop rests (`sealgate relay status`; `sealgate relay reset` tries it now)"
                ),
                (false, Some(last)) => format!(
                    "{key}: still waiting for {} recipient(s): {}",
                    entry.recipients.len(),
                    printable(last)
                ),
                (false, None) => format!("{key}: still waiting"),
            },
        };
        messages.push(line);
    }
    Ok(Answer {
        messages,
        output: String::new(),
    })
}

fn names(keys: &[Key]) -> String {
    keys.iter()
        .map(Key::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn delete(cx: &SpoolContext<'_>, id: &str, silent: bool) -> Result<Answer, SpoolAdminError> {
    let (key, _) = find(cx, id).await?;
    let hostname = &cx.config.hostname;
    let mut what = None;
    let changed = cx
        .spool
        .change(key, |entry, message| {
            let dsn = if silent {
                what = Some("no DSN (--silent)".to_string());
                None
            } else {
                let notice = deletion_notice(cx, entry, message, hostname);
                what = Some(match (&notice, entry.mail_from.is_empty(), entry.notify) {
                    (Some(_), _, _) => format!("a DSN goes to <{}>", printable(&entry.mail_from)),
                    (None, true, _) => "no DSN: the copy was itself a DSN".to_string(),
                    (None, false, _) => {
                        "no DSN: the sender of this inbound mail is not verified (it would be backscatter)".to_string()
                    }
                });
                notice
            };
            tracing::info!(
                id = %entry.id,
                spool_id = %key,
                sender = %entry.mail_from,
                recipients = ?entry.recipients,
                dsn = dsn.is_some(),
                "spool: copy deleted by the admin"
            );
            Change { updated: None, dsn }
        })
        .await?;
    match changed {
        Changed::Done => {
            cx.spool.wake();
            Ok(Answer {
                messages: vec![format!("{key}: deleted; {}", what.unwrap_or_default())],
                output: String::new(),
            })
        }
        Changed::Busy => Err(SpoolAdminError::Busy(key)),
        Changed::Gone => Err(SpoolAdminError::Unknown(key.to_string())),
    }
}

/// The DSN that tells the sender their copy was deleted, if anyone may be told.
fn deletion_notice(
    cx: &SpoolContext<'_>,
    entry: &Entry,
    message: &Message,
    hostname: &str,
) -> Option<(Entry, Message)> {
    let failures: Vec<Failure> = entry
        .recipients
        .iter()
        .map(|recipient| Failure {
            recipient: recipient.clone(),
            reply: reply::DELETED_BY_ADMIN,
            remote: false,
        })
        .collect();
    let next_hop = cx.config.listener(entry.direction).next_hop.to_string();
    cx.spool
        .notice(entry, &failures, message, next_hop, hostname)
}

#[cfg(test)]
mod tests {
    use super::{Key, printable};

    #[test]
    fn spool_ids_read_back_what_they_print() {
        for key in [Key::Local(0), Key::Local(0x1F), Key::Shared(u64::MAX)] {
            assert_eq!(key.to_string().parse::<Key>(), Ok(key));
        }
        assert_eq!("l1f".parse::<Key>(), Ok(Key::Local(0x1F)));
        assert_eq!(" S2A ".parse::<Key>(), Ok(Key::Shared(0x2A)));
        for bad in [
            "",
            "L",
            "X12",
            "L-1",
            "L+1",
            "L12345678901234567",
            "1F",
            "Lé",
        ] {
            assert_eq!(bad.parse::<Key>(), Err(()), "{bad:?}");
        }
    }

    #[test]
    fn what_a_sender_wrote_cannot_drive_the_admin_terminal() {
        assert_eq!(
            printable("a\u{1b}]0;owned\u{7}b\rc\td\n"),
            "a\u{FFFD}]0;owned\u{FFFD}b\u{FFFD}c\td\n"
        );
    }
}
