//! Harvesting: keys found in inbound mail go into the key cache with source
//! `mailflow`, but only keys that belong to the address in From.
//!
//! - S/MIME: the signer certificates of `multipart/signed` and opaque `signed-data`
//!   messages whose signature verifies ([`smime`]).
//! - OpenPGP: the Autocrypt header, `application/pgp-keys` parts, and armored key
//!   blocks in text parts ([`openpgp`]).
//!
//! Harvesting reads the message and never changes it. It runs after the message has
//! been handed on, off the session's path, so it can neither delay nor fail delivery;
//! whatever goes wrong costs a log line. The work is bounded per message: its size,
//! the parts and key sources looked at, the user IDs and certificates per key, and the
//! time spent ([`BUDGET`]). Keys are never harvested for internal addresses: a From of
//! ours on inbound mail is spoofed, or a user's own key, which is managed, not harvested.

pub mod openpgp;
pub mod smime;
#[cfg(test)]
mod tests;
pub mod trust;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mail_parser::MimeHeaders;
use time::OffsetDateTime;

use super::address;
use super::entry::Source;
use super::material::{self, Origin, Refusal};
use super::store::{Candidate, KeyStore, Put};
use crate::mail::InternalDomains;
use crate::mail::authentication::Authentication;
use crate::mail::message::Message;

/// Messages larger than this are not parsed for keys.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// The most MIME parts we look at in one message.
const MAX_PARTS: usize = 256;
/// The most key sources (headers, parts, signatures) we look at in one message.
const MAX_FINDINGS: usize = 16;
/// The time one message may take. Each key source is bounded on its own; this stops a
/// message that is costly in many small ways between two of them.
pub const BUDGET: Duration = Duration::from_secs(2);

/// What harvesting one message did, for the log and for tests.
#[derive(Debug, Default)]
pub struct Report {
    /// (address, fingerprint, what the store did).
    pub stored: Vec<(String, String, Put)>,
    /// Why keys that were found were not stored.
    pub refused: Vec<String>,
}

/// The bytes of messages waiting for the harvester at most. Past it, messages are not
/// harvested (counted, and logged): harvesting must never hold up mail or memory.
const QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// What harvesting needs to know besides the message.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Keys are never harvested for these.
    pub internal: InternalDomains,
    /// `[inbound] trusted_authserv_ids`: whose `Authentication-Results` may vouch for a
    /// key that replaces an established one.
    pub trusted_authserv_ids: Vec<String>,
    /// `[keys] smime_trust`: the CAs a harvested S/MIME certificate is validated
    /// against; `None` validates nothing.
    pub smime_trust: Option<std::sync::Arc<trust::SmimeTrust>>,
}

/// Hands inbound messages to a harvesting thread of its own, off the SMTP path.
#[derive(Clone)]
pub struct Harvester {
    /// Each message with its transaction id, for the log.
    queue: std::sync::mpsc::SyncSender<(String, Message)>,
    /// Bytes of the messages in the queue.
    queued: Arc<AtomicUsize>,
    /// Messages not harvested because the queue was full, since start.
    dropped: Arc<AtomicU64>,
}

impl Harvester {
    /// Starts the harvesting thread; it ends when the last `Harvester` is dropped.
    pub fn start(store: Arc<dyn KeyStore>, rules: Rules) -> Harvester {
        // The byte bound is the one that matters; this only bounds the bookkeeping.
        let (queue, messages) = std::sync::mpsc::sync_channel::<(String, Message)>(1024);
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        std::thread::Builder::new()
            .name("harvester".into())
            .spawn(move || {
                lower_priority();
                for (id, message) in messages {
                    // A panic in a parser on hostile mail (mail-parser, sequoia, the cms
                    // and x509 crates) costs this message's keys, not harvesting: the
                    // thread would end, and every later message would be dropped. One
                    // was found: mail-parser 0.11's debug assertion on a broken multipart
                    // (fuzz/, the harvest target), in builds with debug assertions.
                    let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        harvest(
                            store.as_ref(),
                            &rules,
                            &message.to_vec(),
                            OffsetDateTime::now_utc(),
                        )
                    }));
                    taken.fetch_sub(message.len(), Ordering::Relaxed);
                    match report {
                        Ok(report) => log(&id, &report),
                        Err(_) => tracing::error!(
                            %id,
                            "harvesting this message panicked; no key taken from it"
                        ),
                    }
                }
            })
            .expect("the harvester thread starts");
        Harvester {
            queue,
            queued,
            dropped: Arc::default(),
        }
    }

    /// Queues an accepted inbound message for harvesting. Never blocks, and queues only
    /// what harvesting needs: nothing for a message too large to harvest or without a
    /// sign of a key in it, and nothing past [`QUEUE_BYTES`].
    pub fn submit(&self, id: &str, message: &Message) {
        let size = message.len();
        if size > MAX_MESSAGE || !may_carry_keys(message) {
            return;
        }
        let before = self.queued.fetch_add(size, Ordering::Relaxed);
        let queued = before + size <= QUEUE_BYTES
            && self
                .queue
                .try_send((id.to_string(), message.clone()))
                .is_ok();
        if !queued {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                %id,
                dropped,
                queued_bytes = before,
                "harvester busy: a message was not harvested"
            );
        }
    }
}

impl Harvester {
    /// Bytes of messages waiting to be harvested now.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Messages not harvested because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Runs the harvester below the SMTP sessions' priority: on a busy machine, delivery
/// goes first. (On Linux a thread has a nice value of its own.)
fn lower_priority() {
    // SAFETY: setpriority only changes the scheduling priority of this thread.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// Whether anything in the message looks like a key: an Autocrypt header, a key part,
/// an armored key block, or an S/MIME signature. A cheap scan (one pass, SIMD) that
/// spares the queue the many messages without any.
fn may_carry_keys(message: &Message) -> bool {
    use std::sync::LazyLock;
    static MARKERS: LazyLock<aho_corasick::AhoCorasick> = LazyLock::new(|| {
        aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build([
                "autocrypt:",
                "pgp-keys",
                "BEGIN PGP PUBLIC KEY BLOCK",
                "pkcs7-signature",
                "pkcs7-mime",
            ])
            .expect("the markers build")
    });
    // A marker may straddle two chunks: each chunk is searched with the end of the one
    // before it.
    const OVERLAP: usize = 32;
    let mut tail: Vec<u8> = Vec::new();
    for chunk in message.pieces() {
        let head = &chunk[..chunk.len().min(OVERLAP)];
        tail.extend_from_slice(head);
        if MARKERS.is_match(&tail[..]) || MARKERS.is_match(&chunk[..]) {
            return true;
        }
        tail.clear();
        tail.extend_from_slice(&chunk[chunk.len().saturating_sub(OVERLAP)..]);
    }
    false
}

fn log(id: &str, report: &Report) {
    for (address, fingerprint, put) in &report.stored {
        crate::telemetry::harvested(match put {
            Put::Added => "added",
            Put::Refreshed => "updated",
            Put::Replaced(_) => "replaced",
            Put::Revoked => "revoked",
            Put::Pending(_) => "pending",
            Put::Ignored(_) => "ignored",
        });
        match put {
            Put::Pending(established) => tracing::warn!(
                %id,
                %address,
                %fingerprint,
                established = %established.join(","),
                "harvested key kept as pending: another key for this address is established, and nothing vouched for the mail that brought this one"
            ),
            Put::Replaced(old) => {
                tracing::info!(%id, %address, %fingerprint, replaced = %old.join(","), "harvested key replaces the older one")
            }
            _ => tracing::info!(%id, %address, %fingerprint, result = ?put, "harvested key"),
        }
    }
    for reason in &report.refused {
        crate::telemetry::harvested("refused");
        tracing::info!(%id, %reason, "key not harvested");
    }
}

/// Harvests the keys in one inbound message (in wire form) into `store`.
pub fn harvest(store: &dyn KeyStore, rules: &Rules, raw: &[u8], now: OffsetDateTime) -> Report {
    let mut report = Report::default();
    let candidates = match find(raw, rules, now, &mut report.refused) {
        Some(candidates) => candidates,
        None => return report,
    };
    for candidate in candidates {
        let (address, fingerprint) = (candidate.address.clone(), candidate.fingerprint.clone());
        match store.put(candidate, now) {
            Ok(put) => report.stored.push((address, fingerprint, put)),
            Err(e) => report
                .refused
                .push(format!("key {fingerprint} for {address} not stored: {e}")),
        }
    }
    report
}

/// Every key in the message that may be cached for its From address.
fn find(
    raw: &[u8],
    rules: &Rules,
    now: OffsetDateTime,
    refused: &mut Vec<String>,
) -> Option<Vec<Candidate>> {
    let started = Instant::now();
    if raw.len() > MAX_MESSAGE {
        refused.push(format!(
            "message of {} bytes is too large to harvest",
            raw.len()
        ));
        return None;
    }
    let message = crate::mail::parser::parser().parse(raw)?;
    let from = message
        .from()
        .and_then(|from| from.first())
        .and_then(|addr| addr.address())
        .and_then(address::normalize);
    let Some(from) = from else {
        refused.push("no usable From address".into());
        return None;
    };
    if rules.internal.is_internal(&from) {
        refused.push(format!(
            "From {from} is an internal address: internal users' keys are not harvested"
        ));
        return None;
    }
    let origin = Origin {
        source: Source::Mailflow,
        message_id: message.message_id().map(str::to_string),
        sender: Some(from.clone()),
    };
    let mut candidates = Vec::new();
    let mut take = |result: Result<Vec<Candidate>, Refusal>, refused: &mut Vec<String>| match result
    {
        Ok(found) => candidates.extend(found),
        Err(Refusal(reason)) => refused.push(reason),
    };

    // Autocrypt: exactly one header, and never in a multipart/report (bounces quote
    // other people's headers).
    let is_report = message.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
    });
    let autocrypt: Vec<&[u8]> = message
        .headers()
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case("Autocrypt"))
        .map(|h| {
            &raw[(h.offset_start as usize).min(raw.len())..(h.offset_end as usize).min(raw.len())]
        })
        .collect();
    match (autocrypt.as_slice(), is_report) {
        ([], _) => {}
        (_, true) => refused.push("Autocrypt header in a multipart/report is ignored".into()),
        ([value], false) => take(autocrypt_candidates(value, &from, &origin, now), refused),
        (many, false) => refused.push(format!("{} Autocrypt headers: all ignored", many.len())),
    }

    let mut findings = 0;
    for part in message.parts.iter().take(MAX_PARTS) {
        if findings >= MAX_FINDINGS {
            refused.push("too many keys in one message; the rest are ignored".into());
            break;
        }
        if started.elapsed() > BUDGET {
            refused.push(format!(
                "harvesting took more than {BUDGET:?}; the rest of the message is ignored"
            ));
            break;
        }
        // A part without Content-Type is text/plain (RFC 2045 §5.2): a key pasted into
        // a plain, non-MIME message is there too.
        let ct = part.content_type();
        let (ctype, subtype) = match ct {
            Some(ct) => (
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or("").to_ascii_lowercase(),
            ),
            None => ("text".to_string(), "plain".to_string()),
        };
        match (ctype.as_str(), subtype.as_str()) {
            ("application", "pgp-keys") => {
                findings += 1;
                take(
                    pgp_candidates(part.contents(), &from, &origin, now),
                    refused,
                );
            }
            ("text", _) => {
                if let Some(text) = part.text_contents() {
                    for block in openpgp::armored_blocks(text) {
                        findings += 1;
                        take(
                            pgp_candidates(block.as_bytes(), &from, &origin, now),
                            refused,
                        );
                    }
                }
            }
            ("multipart", "signed") => {
                let protocol = ct
                    .and_then(|ct| ct.attribute("protocol"))
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if !matches!(
                    protocol.as_str(),
                    "application/pkcs7-signature" | "application/x-pkcs7-signature"
                ) {
                    continue;
                }
                let children = part.sub_parts().unwrap_or_default();
                let (Some(content), Some(signature)) = (
                    children.first().and_then(|&id| message.part(id)),
                    children.get(1).and_then(|&id| message.part(id)),
                ) else {
                    refused.push("multipart/signed without content and signature parts".into());
                    continue;
                };
                findings += 1;
                let start = content.raw_header_offset() as usize;
                let end = (content.raw_end_offset() as usize).min(raw.len());
                let signed = raw.get(start..end).unwrap_or_default();
                take(
                    smime_candidates(
                        signature.contents(),
                        Some(signed),
                        &from,
                        &origin,
                        rules,
                        now,
                    ),
                    refused,
                );
            }
            ("application", "pkcs7-mime" | "x-pkcs7-mime") => {
                let smime_type = ct
                    .and_then(|ct| ct.attribute("smime-type"))
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if smime_type == "signed-data" {
                    findings += 1;
                    take(
                        smime_candidates(part.contents(), None, &from, &origin, rules, now),
                        refused,
                    );
                }
            }
            _ => {}
        }
    }
    // A key that would replace one long seen for the address needs the mail's From
    // domain vouched for by the MTA in front (DKIM or DMARC), or time.
    let authentication = Authentication::read(
        message
            .headers()
            .iter()
            .filter(|h| {
                h.name
                    .as_str()
                    .eq_ignore_ascii_case("Authentication-Results")
            })
            .filter_map(|h| raw.get(h.offset_start as usize..h.offset_end as usize))
            .filter_map(|value| std::str::from_utf8(value).ok()),
        &rules.trusted_authserv_ids,
    );
    let vouched = authentication.vouches_for_from(crate::mail::envelope::domain_of(&from));
    for candidate in &mut candidates {
        candidate.authenticated = vouched;
    }
    Some(candidates)
}

fn autocrypt_candidates(
    raw_value: &[u8],
    from: &str,
    origin: &Origin,
    now: OffsetDateTime,
) -> Result<Vec<Candidate>, Refusal> {
    let value = std::str::from_utf8(raw_value)
        .map_err(|_| Refusal("Autocrypt header is not UTF-8".into()))?;
    let header = openpgp::parse_autocrypt(value).map_err(Refusal)?;
    if address::normalize(&header.addr).as_deref() != Some(from) {
        return Err(Refusal(format!(
            "Autocrypt addr {} is not the From address {from}",
            header.addr
        )));
    }
    pgp_candidates(&header.keydata, from, origin, now)
}

fn pgp_candidates(
    bytes: &[u8],
    from: &str,
    origin: &Origin,
    now: OffsetDateTime,
) -> Result<Vec<Candidate>, Refusal> {
    let mut candidates = Vec::new();
    let mut reasons = Vec::new();
    for cert in material::parse_pgp(bytes)? {
        match material::pgp_candidates(&cert, Some(from), origin, now) {
            Ok(found) => candidates.extend(found),
            Err(Refusal(reason)) => reasons.push(reason),
        }
    }
    if candidates.is_empty() {
        return Err(Refusal(reasons.join("; ")));
    }
    Ok(candidates)
}

fn smime_candidates(
    signature: &[u8],
    detached: Option<&[u8]>,
    from: &str,
    origin: &Origin,
    rules: &Rules,
    now: OffsetDateTime,
) -> Result<Vec<Candidate>, Refusal> {
    let signed = smime::verify(signature, detached)?;
    let mut candidates = Vec::new();
    let mut reasons = signed.failures;
    for signer in &signed.signers {
        let cert = &signer.cert;
        match material::x509_candidates(cert, Some(from), origin, now) {
            Ok(mut found) => {
                let validated = rules
                    .smime_trust
                    .as_ref()
                    .is_some_and(|trust| trust.validates(cert, &signed.certificates, now));
                for candidate in &mut found {
                    candidate.chain_validated = validated;
                    candidate.reads_aes_gcm = signer.reads_aes_gcm;
                }
                candidates.extend(found);
            }
            Err(Refusal(reason)) => reasons.push(reason),
        }
    }
    if candidates.is_empty() {
        return Err(Refusal(if reasons.is_empty() {
            "no signer".into()
        } else {
            reasons.join("; ")
        }));
    }
    Ok(candidates)
}
