//! The human form of `sealgate keys list`: an aligned table, one line per (address,
//! key), in the spirit of `gpg --list-keys`.

use sealgate::keys::KeyEntry;
use time::OffsetDateTime;
use time::macros::format_description;

/// The table, or a note that the cache is empty.
pub fn render(entries: &[KeyEntry], now: OffsetDateTime) -> String {
    if entries.is_empty() {
        return "the key cache is empty\n".into();
    }
    let day = format_description!("[year]-[month]-[day]");
    let date = |t: Option<OffsetDateTime>| t.and_then(|t| t.format(&day).ok());
    let rows: Vec<[String; 7]> = entries
        .iter()
        .map(|e| {
            let mut flags = Vec::new();
            if e.can_decrypt {
                flags.push("decrypt");
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
            if e.is_expired(now) {
                flags.push("expired");
            } else if !e.usable_for_encryption(now, sealgate::keys::Allowed::EVERY_SOURCE) {
                flags.push("unusable");
            }
            [
                e.address.clone(),
                e.kind.as_str().into(),
                e.source.as_str().into(),
                date(Some(e.added)).unwrap_or_default(),
                date(e.expires).unwrap_or_else(|| "never".into()),
                e.fingerprint.clone(),
                flags.join(","),
            ]
        })
        .collect();
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
    let mut widths = [0; 7];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
