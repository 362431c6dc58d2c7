//! From an opened bundle into the key cache. Every entry is checked before any is
//! stored: an SCKM secret by exactly the rules of `keys import-sckm` (any secret that
//! can sign refuses the whole bundle), a public key by those of `keys import`. Entries
//! keep their source and times ([`Carried`]), so that the cache's lifetime rules go on
//! as if the key had always been here; the store merges them with what is here by the
//! same precedence as any other import.

use base64::Engine;
use time::OffsetDateTime;

use super::TransferError;
use super::bundle::BundleEntry;
use crate::keys::material::{self, Origin};
use crate::keys::sckm;
use crate::keys::secrets::Sealer;
use crate::keys::store::{Candidate, Carried, Put};
use crate::keys::{KeyStore, Source, address};

/// What became of each entry: one line per entry, for the admin.
pub fn import(
    keys: &dyn KeyStore,
    sealer: &Sealer,
    entries: &[BundleEntry],
    now: OffsetDateTime,
) -> Result<Vec<String>, TransferError> {
    let mut lines = Vec::new();
    let mut candidates = Vec::new();
    for entry in entries {
        match candidate(keys, sealer, entry, now)? {
            Ok(candidate) => candidates.push(candidate),
            Err(skipped) => lines.push(skipped),
        }
    }
    for candidate in candidates {
        let (address, fingerprint) = (candidate.address.clone(), candidate.fingerprint.clone());
        let source = candidate.source;
        let what = match keys
            .put(candidate, now)
            .map_err(|e| TransferError::Internal(e.to_string()))?
        {
            Put::Added => "added".to_string(),
            Put::Refreshed => "merged with the entry here".to_string(),
            Put::Replaced(old) => format!("added, replacing {}", old.join(", ")),
            Put::Pending(established) => format!(
                "added as pending (not used while {} is established here)",
                established.join(", ")
            ),
            Put::Revoked => "revoked".to_string(),
            Put::Ignored(why) => format!("not imported: {why}"),
        };
        tracing::info!(%address, %fingerprint, source = source.as_str(), result = %what, "transfer: imported entry");
        lines.push(format!(
            "{address} {fingerprint} ({}): {what}",
            source.as_str()
        ));
    }
    Ok(lines)
}

/// The candidate for one entry; `Ok(Err(line))` when the entry is skipped (a public
/// key that is no longer acceptable here, such as an expired certificate), and
/// `Err` when the whole bundle must be refused.
fn candidate(
    keys: &dyn KeyStore,
    sealer: &Sealer,
    bundled: &BundleEntry,
    now: OffsetDateTime,
) -> Result<Result<Candidate, String>, TransferError> {
    let entry = &bundled.entry;
    let name = format!("{} {}", entry.address, entry.fingerprint);
    let refused = |why: String| TransferError::Refused(format!("entry {name}: {why}"));
    if address::normalize(&entry.address).as_deref() != Some(entry.address.as_str()) {
        return Err(refused("not a normalised e-mail address".into()));
    }
    let candidates = match (entry.source, &bundled.secret) {
        (Source::Sckm, Some(secret)) => {
            let file = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(secret)
                    .map_err(|e| refused(format!("the secret is not base64: {e}")))?,
            );
            let held = |fingerprint: &str| keys.sealed_secret(fingerprint).ok().flatten();
            sckm::candidates(&file, None, sealer, &held, now)
                .map_err(|e| refused(format!("refused as keys import-sckm refuses it: {e}")))?
                .0
        }
        (Source::Sckm, None) => return Err(refused("an SCKM entry without its secret".into())),
        (_, Some(_)) => return Err(refused("a secret in an entry that is not SCKM".into())),
        (source, None) => {
            let origin = Origin {
                source,
                message_id: entry.message_id.clone(),
                sender: entry.sender.clone(),
            };
            match material::import_candidates(&bundled.material, &origin, now) {
                Ok(candidates) => candidates,
                Err(e) => return Ok(Err(format!("{name}: skipped: {e}"))),
            }
        }
    };
    let Some(mut candidate) = candidates
        .into_iter()
        .find(|c| c.address == entry.address && c.fingerprint == entry.fingerprint)
    else {
        return Err(refused(
            "its key does not hold this address and fingerprint".into(),
        ));
    };
    candidate.revoked |= entry.revoked;
    candidate.can_encrypt &= !candidate.revoked;
    candidate.chain_validated = entry.chain_validated;
    candidate.reads_aes_gcm = entry.reads_aes_gcm;
    candidate.carried = Some(Carried {
        added: entry.added,
        last_seen: entry.last_seen,
        seen: entry.seen,
        pending: entry.pending,
        retired: entry.retired,
    });
    Ok(Ok(candidate))
}
