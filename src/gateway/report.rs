//! What became of one client transaction, said once and read three ways: the one log
//! line an admin greps for (`transaction`), the `X-Sealgate-Trace` field a mail-flow
//! test reads in what arrives, and the counters Prometheus scrapes.

use std::time::Duration;

use crate::mail::envelope::Envelope;
use crate::policy::{Treatment, Verdict};
use crate::smtp::reply::Reply;
use crate::telemetry;

/// The trace field's name; an `X-Sealgate` field, so one that arrives with a message
/// is removed like the others ([`super::marks::strip_ours`]).
pub const TRACE_FIELD: &str = "X-Sealgate-Trace";

/// What was done for one recipient, known once the transform ran.
#[derive(Debug, Clone)]
pub struct Done {
    /// The deciding rule's name ("none" when no rule decided).
    pub rule: String,
    /// "encrypted pgp", "decrypted smime", "passed", "rejected", "not decrypted (...)".
    pub action: String,
    /// The key encrypted to or decrypted with.
    pub key: Option<String>,
    /// Why the treatment differs from what the rule asked ("key lookup failed: sent
    /// in clear").
    pub note: Option<&'static str>,
}

/// Per recipient, what was done: `done` as the transform reports it, the key from the
/// verdict (encryption) or from the group that carries the decrypted copy.
pub fn done(verdicts: &[Verdict], done: &[String], decrypted_with: &[Option<String>]) -> Vec<Done> {
    verdicts
        .iter()
        .enumerate()
        .map(|(i, verdict)| {
            let action = done
                .get(i)
                .cloned()
                .unwrap_or_else(|| "nothing (the transform failed)".into());
            let key = match &verdict.treatment {
                Treatment::Encrypt(key) if action.starts_with("encrypted") => {
                    Some(key.fingerprint.clone())
                }
                Treatment::Decrypt(_) => decrypted_with.get(i).cloned().flatten(),
                _ => None,
            };
            Done {
                rule: verdict.rule.clone().unwrap_or_else(|| "none".into()),
                action,
                key,
                note: verdict.note,
            }
        })
        .collect()
}

/// The `X-Sealgate-Trace` field for the copy that goes to `group` (indexes into the
/// envelope's recipients): the transaction's id and direction, then for each of the
/// copy's recipients the action, the rule and the key. Only the copy's own recipients
/// are named: the others may be Bcc recipients. One folded line per recipient.
pub fn trace_field(id: &str, envelope: &Envelope, group: &[usize], done: &[Done]) -> Vec<u8> {
    let mut field = format!("{TRACE_FIELD}: id={id}; direction={}", envelope.direction);
    for &i in group {
        let (Some(recipient), Some(done)) = (envelope.recipients.get(i), done.get(i)) else {
            continue;
        };
        field.push_str(&format!(
            ";\r\n rcpt=<{}> action=\"{}\" rule=\"{}\"",
            clean(recipient),
            clean(&done.action),
            clean(&done.rule)
        ));
        if let Some(key) = &done.key {
            field.push_str(&format!(" key={}", clean(key)));
        }
    }
    field.push_str("\r\n");
    field.into_bytes()
}

/// `text` fit for a quoted header value: no line breaks or other controls, no quote
/// that would end the value early.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// One client transaction, answered.
pub struct Report<'a> {
    pub id: &'a str,
    pub envelope: &'a Envelope,
    /// The message's size as it arrived (with our Received field).
    pub size: usize,
    pub done: &'a [Done],
    /// Per recipient: what the next hop said ("250 2.0.0"), or sealgate's own refusal
    /// ("sealgate 550 5.7.1"), and what became of a failure once others were accepted
    /// ("spooled", "DSN").
    pub outcomes: &'a [String],
    /// Per recipient: whether its copy went to the next hop over TLS.
    pub tls_out: &'a [bool],
    pub reply: &'a Reply,
    pub elapsed: Duration,
}

impl Report<'_> {
    /// The one INFO line of the transaction, and its counts.
    pub fn record(&self) {
        let envelope = self.envelope;
        if tracing::enabled!(tracing::Level::INFO) {
            self.log();
        }
        telemetry::message(envelope.direction, self.reply, self.elapsed);
        for done in self.done {
            telemetry::recipient(envelope.direction, telemetry::action_label(&done.action));
        }
    }

    /// The transaction line: built only when INFO is logged, since it formats every
    /// recipient.
    fn log(&self) {
        let envelope = self.envelope;
        let recipients: Vec<String> = envelope
            .recipients
            .iter()
            .enumerate()
            .map(|(i, address)| {
                let done = self.done.get(i);
                let mut text = format!(
                    "<{address}> {}",
                    done.map_or("nothing", |d| d.action.as_str())
                );
                if let Some(note) = done.and_then(|d| d.note) {
                    text.push_str(&format!(" ({note})"));
                }
                if let Some(key) = done.and_then(|d| d.key.as_deref()) {
                    text.push_str(&format!(" key={key}"));
                }
                if let Some(done) = done {
                    text.push_str(&format!(" rule={}", done.rule));
                }
                let outcome = self.outcomes.get(i).map_or("?", String::as_str);
                text.push_str(&format!(": {outcome}"));
                if self.tls_out.get(i).copied().unwrap_or(false) {
                    text.push_str(" tls");
                }
                text
            })
            .collect();
        tracing::info!(
            id = %self.id,
            direction = %envelope.direction,
            client = %envelope.client_ip,
            helo = %envelope.helo,
            tls = %envelope.tls.as_deref().unwrap_or("none"),
            from = %format!("<{}>", envelope.mail_from),
            size = self.size,
            recipients = %recipients.join("; "),
            reply = %self.reply,
            ms = self.elapsed.as_millis() as u64,
            "transaction"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{Done, trace_field};
    use crate::mail::Direction;
    use crate::mail::envelope::Envelope;

    #[test]
    fn the_trace_names_only_the_copy_s_recipients_and_cannot_be_broken_open() {
        let envelope = Envelope {
            direction: Direction::Outbound,
            client_ip: "127.0.0.1".parse().unwrap(),
            helo: "client".into(),
            tls: None,
            esmtp: true,
            mail_from: "a@example.com".into(),
            params: Default::default(),
            recipients: vec!["bcc@example.org".into(), "bob@example.org".into()],
        };
        let done = vec![
            Done {
                rule: "r1".into(),
                action: "passed".into(),
                key: None,
                note: None,
            },
            Done {
                rule: "evil\"\r\nBcc: x".into(),
                action: "encrypted pgp".into(),
                key: Some("ABCD".into()),
                note: None,
            },
        ];
        let field = String::from_utf8(trace_field("Q1", &envelope, &[1], &done)).unwrap();
        assert_eq!(
            field,
            "X-Sealgate-Trace: id=Q1; direction=outbound;\r\n rcpt=<bob@example.org> \
             action=\"encrypted pgp\" rule=\"evil'  Bcc: x\" key=ABCD\r\n"
        );
        assert!(!field.contains("bcc@example.org"));
    }
}
