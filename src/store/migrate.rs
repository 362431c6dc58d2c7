//! `sealgate store migrate --from sled --to postgres`: a gateway that ran on sled joins
//! a cluster. Its key cache and sealed secrets are copied into the shared store exactly
//! as they are, every time kept (a mailflow key still expires 180 days after it was
//! harvested here); an entry the shared store already has is left as the shared store
//! has it. Its organization state and its transport identity with its peers are copied
//! too, unless the cluster has its own already (a cluster speaks with one voice). Its spooled copies are **moved**: each leaves the sled spool once the shared
//! store has committed it, so that no copy is delivered by both.
//!
//! The gateway must be stopped (the sled database is locked while it serves), and its
//! key-encryption key must be the cluster's (the secrets are copied sealed).

use crate::config::Config;
use crate::keys::secrets::Sealer;
use crate::keys::store::SledKeyStore;
use crate::keys::store::postgres::PgKeyStore;
use crate::spool::postgres::PgSpool;
use crate::spool::sled::SledSpool;
use crate::store::records::Records;
use crate::transfer::TransferStore;

/// What was copied.
#[derive(Debug, Default)]
pub struct Report {
    pub entries: usize,
    /// Entries the shared store had already, and kept.
    pub kept: usize,
    pub secrets: usize,
    pub spooled: usize,
    /// Records of the organization's keys copied (none when the cluster has its own).
    pub org_records: usize,
    /// The organization state here was left out: the cluster has an org key already.
    pub org_kept: bool,
    /// The transport identity and peers were copied.
    pub transfer: bool,
}

/// Copies the sled database under `config.data_dir` into the shared store `[store]`
/// names.
pub fn sled_to_postgres(config: &Config) -> Result<Report, String> {
    let db = crate::store::open(&config.data_dir)
        .map_err(|e| format!("{e} (stop `sealgate serve` on this gateway before migrating)"))?;
    let sealer = Sealer::open(&config.data_dir).map_err(|e| e.to_string())?;
    let pg = super::postgres::shared(&config.store, Some(&sealer))
        .map_err(|e| e.to_string())?
        .ok_or("[store] backend must be \"postgres\": the shared store to migrate to")?;
    let mut report = Report::default();

    let keys = SledKeyStore::open(&db, config.keys.lookup_ttl.0).map_err(|e| e.to_string())?;
    let (entries, secrets) = keys.everything().map_err(|e| e.to_string())?;
    let shared_keys = PgKeyStore::new(pg.clone(), config.keys.lookup_ttl.0);
    for (entry, material) in &entries {
        let secret = secrets
            .iter()
            .find(|(fingerprint, _)| *fingerprint == entry.fingerprint)
            .map(|(_, sealed)| sealed.as_slice());
        // A sealed secret must open with this KEK, which the cluster's canary proved to
        // be the cluster's: a secret that does not is not carried into the cluster.
        if let Some(sealed) = secret {
            sealer
                .open_sealed(&entry.fingerprint, sealed)
                .map_err(|e| {
                    format!("the secret of {} {}: {e}", entry.address, entry.fingerprint)
                })?;
        }
        if shared_keys
            .insert_as_is(entry, material, secret)
            .map_err(|e| e.to_string())?
        {
            report.entries += 1;
            report.secrets += usize::from(secret.is_some());
        } else {
            report.kept += 1;
        }
    }

    let local_org = Records::open(&db, None, "org").map_err(|e| e.to_string())?;
    let shared_org = Records::open(&db, Some(pg.clone()), "org").map_err(|e| e.to_string())?;
    let cluster_has_org = shared_org.get("key").map_err(|e| e.to_string())?.is_some()
        || shared_org.get("ca").map_err(|e| e.to_string())?.is_some();
    if cluster_has_org {
        report.org_kept = !local_org
            .scan_prefix(b"")
            .map_err(|e| e.to_string())?
            .is_empty();
    } else {
        report.org_records = local_org.copy_all(&shared_org).map_err(|e| e.to_string())?;
    }
    let transfer = TransferStore::open(&db).map_err(|e| e.to_string())?;
    let shared_transfer =
        TransferStore::open_configured(&db, Some(pg.clone())).map_err(|e| e.to_string())?;
    report.transfer = transfer
        .copy_into(&shared_transfer)
        .map_err(|e| e.to_string())?;

    let local = SledSpool::open(&db).map_err(|e| e.to_string())?;
    // Held by nobody: the first member's retrier to come claims them.
    let shared = PgSpool::new(pg, String::new(), config.store.member_timeout.0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    for (key, entry) in local.entries() {
        let message = local.message(key).map_err(|e| e.to_string())?;
        runtime
            .block_on(async {
                shared.hold(vec![(entry, message)]).await?;
                local.remove(key).await
            })
            .map_err(|e| format!("spool entry {key}: {e}"))?;
        report.spooled += 1;
    }
    db.flush().map_err(|e| e.to_string())?;
    Ok(report)
}
