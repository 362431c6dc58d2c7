//! Delivery status notifications (RFC 3464): what the sender gets when a copy that the
//! gateway already accepted cannot be handed on.

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::MimePart;

use crate::smtp::reply::Reply;

/// One recipient that failed for good.
#[derive(Debug, Clone)]
pub struct Failure {
    pub recipient: String,
    /// The reply that ended it (the next hop's, or ours when the spool gave up).
    pub reply: Reply,
    /// The next hop refused it (it is named as Remote-MTA); otherwise sealgate did,
    /// by policy or because encryption failed.
    pub remote: bool,
}

/// What a DSN needs to know about the message it reports on.
pub struct Report<'a> {
    /// Our name, as Reporting-MTA.
    pub hostname: &'a str,
    /// The next hop that refused, as Remote-MTA.
    pub next_hop: &'a str,
    /// The original sender, who gets the DSN.
    pub sender: &'a str,
    /// The transaction id the client was given.
    pub id: &'a str,
    /// When sealgate accepted the message.
    pub arrival: time::OffsetDateTime,
    pub failures: &'a [Failure],
    /// The original header block, returned as text/rfc822-headers.
    pub original_headers: &'a [u8],
}

/// Builds the DSN as a complete message in wire form.
pub fn build(report: &Report<'_>) -> Vec<u8> {
    let rfc2822 = time::format_description::well_known::Rfc2822;
    let mut human = format!(
        "This is the mail gateway at {}.\r\n\r\n\
         Your message (id {}) could not be delivered to the following recipients:\r\n\r\n",
        report.hostname, report.id
    );
    let mut status = format!(
        "Reporting-MTA: dns; {}\r\nArrival-Date: {}\r\n",
        report.hostname,
        report.arrival.format(&rfc2822).unwrap_or_default()
    );
    for failure in report.failures {
        human.push_str(&format!("  <{}>: {}\r\n", failure.recipient, failure.reply));
        // Action "failed" takes a permanent status (RFC 3464 §2.3.4): a copy refused
        // with a 4xx reply that is reported here will not be retried either.
        let status_code = failure.reply.status();
        let (class, rest) = status_code.split_at(1);
        let class = if class == "4" { "5" } else { class };
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {class}{rest}\r\n",
            failure.recipient,
        ));
        if failure.remote {
            status.push_str(&format!("Remote-MTA: dns; {}\r\n", report.next_hop));
        }
        status.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", failure.reply));
    }

    let report_type =
        ContentType::new("multipart/report").attribute("report-type", "delivery-status");
    let body = MimePart::new(
        report_type,
        vec![
            MimePart::new("text/plain", human),
            verbatim("message/delivery-status", status.into_bytes()),
            verbatim("text/rfc822-headers", report.original_headers.to_vec()),
        ],
    );
    let postmaster = format!("MAILER-DAEMON@{}", report.hostname);
    MessageBuilder::new()
        .message_id(message_id(report))
        .from(("Mail Delivery System", postmaster.as_str()))
        .to(report.sender)
        .subject("Undelivered Mail Returned to Sender")
        .header(
            "Auto-Submitted",
            mail_builder::headers::raw::Raw::new("auto-replied"),
        )
        .body(body)
        .write_to_vec()
        .unwrap_or_default()
}

/// The DSN's Message-ID, in our `hostname`: left to itself, mail-builder would use
/// the machine's name, which may be a container's id or an internal name. The
/// transaction id says which message it reports on; the random part keeps apart two
/// DSNs about one message (one at once, one when the spool gives up).
fn message_id(report: &Report<'_>) -> String {
    format!(
        "{}.{:016x}.dsn@{}",
        report.id,
        rand::random::<u64>(),
        report.hostname
    )
}

/// A part sent as it is. message/delivery-status must not be base64-encoded, and the
/// returned headers should stay readable.
fn verbatim(content_type: &'static str, body: Vec<u8>) -> MimePart<'static> {
    let encoding = if body.is_ascii() { "7bit" } else { "8bit" };
    MimePart::new(ContentType::new(content_type), body).transfer_encoding(encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_id_is_in_our_hostname() {
        let failure = Failure {
            recipient: "gone@example.org".into(),
            reply: Reply::new(550, Some([5, 1, 1]), "no such user"),
            remote: true,
        };
        let report = Report {
            hostname: "gw.example.net",
            next_hop: "mx.example.org:25",
            sender: "alice@example.net",
            id: "18F3A2B4C5D60001",
            arrival: time::OffsetDateTime::UNIX_EPOCH,
            failures: std::slice::from_ref(&failure),
            original_headers: b"Subject: hi\r\n",
        };
        let ids: Vec<String> = (0..2)
            .map(|_| {
                let dsn = String::from_utf8(build(&report)).unwrap();
                let id = dsn
                    .lines()
                    .find_map(|l| l.strip_prefix("Message-ID: "))
                    .unwrap_or_else(|| panic!("no Message-ID in {dsn}"));
                id.to_string()
            })
            .collect();
        for id in &ids {
            assert!(id.starts_with("<18F3A2B4C5D60001."), "{id}");
            assert!(id.ends_with(".dsn@gw.example.net>"), "{id}");
        }
        assert_ne!(ids[0], ids[1], "two DSNs about one message");
    }
}
