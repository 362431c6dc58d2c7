//! The human form of `sealgate keys list`: one aligned line per (address, key) with the
//! cache's view (source, dates, flags), and below it what `gpg --list-keys` would show
//! of the key itself: the primary key, the user IDs, each subkey with its usage and
//! whether the gateway decrypts with it.

use sealgate::keys::describe::KeyDetails;
use sealgate::keys::{Allowed, KeyEntry, Source};
use time::OffsetDateTime;
use time::macros::format_description;

/// The table (the caller says so when there is nothing to show).
pub fn render(entries: &[KeyEntry], now: OffsetDateTime, allowed: Allowed) -> String {
    let header = [
        "ADDRESS",
        "KIND",
        "SOURCE",
        "ADDED",
        "EXPIRES",
        "FINGERPRINT",
        "FLAGS",
    ]
    .map(String::from);
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|e| {
            [
                e.address.clone(),
                e.kind.as_str().into(),
                e.source.as_str().into(),
                date(Some(e.added)),
                date(e.expires),
                e.fingerprint.clone(),
                flags(e, now, allowed).join(","),
            ]
        })
        .collect();
    let mut widths = [0; 7];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |row: &[String; 7]| {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        cells.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(&header);
    for (entry, row) in entries.iter().zip(&rows) {
        out.push_str(&line(row));
        if let Some(details) = &entry.details {
            out.push_str(&describe(entry, details));
        }
    }
    out
}

/// A date as gpg writes it, or "never".
fn date(t: Option<OffsetDateTime>) -> String {
    let day = format_description!("[year]-[month]-[day]");
    t.and_then(|t| t.format(&day).ok())
        .unwrap_or_else(|| "never".into())
}

/// What an admin should know at a glance.
fn flags(e: &KeyEntry, now: OffsetDateTime, allowed: Allowed) -> Vec<&'static str> {
    let mut flags = Vec::new();
    if e.can_decrypt {
        flags.push("decrypt");
    }
    if e.revoked {
        flags.push("revoked");
    }
    if e.legacy {
        flags.push("legacy-sha1");
    }
    if e.retired {
        flags.push("retired");
    }
    if e.pending {
        flags.push("pending");
    }
    if e.is_expired(now) || e.key_expires.is_some_and(|t| t <= now) {
        flags.push("expired");
    }
    if e.source == Source::Mailflow
        && !e.revoked
        && !e.pending
        && !e.usable_for_encryption(now, allowed)
        && e.usable_for_encryption(now, Allowed::EVERY_SOURCE)
    {
        // Harvested and fit to encrypt to, but [keys] does not allow it.
        flags.push("mailflow-not-used");
    } else if !e.can_decrypt
        && !e.revoked
        && !e.is_expired(now)
        && !e.usable_for_encryption(now, Allowed::EVERY_SOURCE)
    {
        flags.push("unusable");
    }
    flags
}

/// The key itself, indented under its row: `pub` (or `cert`), `uid`, `sub` lines.
fn describe(entry: &KeyEntry, d: &KeyDetails) -> String {
    let mut out = String::new();
    let usage = |u: &str| {
        if u.is_empty() {
            String::new()
        } else {
            format!("  [{u}]")
        }
    };
    match entry.kind {
        sealgate::keys::KeyKind::Pgp => {
            out.push_str(&format!(
                "    pub  {}  {}{}  expires {}\n",
                d.algorithm,
                date(Some(entry.key_created)),
                usage(&d.usage),
                date(entry.key_expires)
            ));
            for uid in &d.user_ids {
                out.push_str(&format!("    uid  {uid}\n"));
            }
            for sub in &d.subkeys {
                let mut notes = Vec::new();
                if sub.decrypts {
                    notes.push("decrypts");
                }
                if sub.current {
                    notes.push("current");
                } else if sub.decrypts {
                    notes.push("kept for old mail");
                }
                if sub.revoked {
                    notes.push("revoked");
                }
                out.push_str(&format!(
                    "    sub  {}  {}{}  expires {}  {}{}\n",
                    sub.algorithm,
                    date(Some(sub.created)),
                    usage(&sub.usage),
                    date(sub.expires),
                    sub.fingerprint,
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", notes.join(", "))
                    }
                ));
            }
        }
        sealgate::keys::KeyKind::Smime => {
            out.push_str(&format!(
                "    cert {}  {} to {}{}\n",
                d.algorithm,
                date(Some(entry.key_created)),
                date(entry.key_expires),
                usage(&d.usage)
            ));
            for subject in &d.user_ids {
                out.push_str(&format!("    subj {subject}\n"));
            }
            if let (Some(issuer), Some(serial)) = (&d.issuer, &d.serial) {
                out.push_str(&format!("    iss  {issuer}  serial {serial}\n"));
            }
        }
    }
    out
}
