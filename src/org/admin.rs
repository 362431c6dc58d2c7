//! The operations behind `sealgate org ...` and `sealgate keys export`, run by the
//! admin socket's dispatcher ([`crate::keys::admin`]) in the server or in the CLI.

use openpgp::Cert;
use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{OrgError, OrgStore, key, renew};
use crate::config::Config;
use crate::keys::KeyStore;
use crate::keys::secrets::Sealer;

/// One `org` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "kebab-case")]
pub enum OrgRequest {
    Init {
        name: String,
        /// Seconds; `None`: never.
        expires: Option<u64>,
        replace: bool,
    },
    Import {
        /// The key file's bytes, base64.
        data: String,
        passphrase: Option<String>,
        replace: bool,
    },
    Export {
        secret: bool,
    },
    Status,
    Renew,
    KeysExport {
        address: String,
        smime: bool,
    },
    /// The certified keys of every internal user, for `org publish`: JSON in the output.
    Published,
}

impl OrgRequest {
    /// Whether it needs the sealed secrets (and so the KEK).
    pub fn needs_secrets(&self) -> bool {
        !matches!(
            self,
            OrgRequest::Status | OrgRequest::KeysExport { .. } | OrgRequest::Published
        )
    }
}

/// What an org request gives back: lines for the admin (stderr when it failed), and
/// what goes to standard output (a key, a status report).
#[derive(Debug, Default)]
pub struct OrgAnswer {
    pub messages: Vec<String>,
    pub output: String,
}

/// What the operations work on.
pub struct OrgContext<'a> {
    pub store: &'a OrgStore,
    pub keys: &'a dyn KeyStore,
    pub sealer: Option<&'a Sealer>,
    pub config: &'a Config,
}

impl OrgContext<'_> {
    fn sealer(&self) -> Result<&Sealer, OrgError> {
        self.sealer
            .ok_or_else(|| OrgError::Internal("no key-encryption key for this request".into()))
    }

    /// The org key in force (public), if any.
    fn org_key(&self) -> Result<Option<Cert>, OrgError> {
        self.store
            .key()?
            .map(|bytes| {
                Cert::from_bytes(&bytes)
                    .map_err(|e| OrgError::Internal(format!("the stored org key: {e}")))
            })
            .transpose()
    }
}

/// Carries out `request` at `now`.
pub fn execute(
    cx: &OrgContext,
    request: OrgRequest,
    now: OffsetDateTime,
) -> Result<OrgAnswer, OrgError> {
    match request {
        OrgRequest::Init {
            name,
            expires,
            replace,
        } => {
            refuse_replacing(cx, replace)?;
            let expires = expires.map(std::time::Duration::from_secs);
            let cert = key::generate(&name, expires, now)?;
            install(cx, &cert, now)
        }
        OrgRequest::Import {
            data,
            passphrase,
            replace,
        } => {
            use base64::Engine;
            refuse_replacing(cx, replace)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| OrgError::Refused(format!("bad request: {e}")))?;
            let cert = key::check_import(&bytes, passphrase.as_deref())?;
            install(cx, &cert, now)
        }
        OrgRequest::Export { secret } => {
            let Some(public) = cx.org_key()? else {
                return Err(no_org_key());
            };
            let cert = if secret {
                let fpr = public.fingerprint().to_hex();
                let tsk = cx
                    .store
                    .key_secret(cx.sealer()?, &fpr)?
                    .ok_or_else(|| OrgError::Internal("the org key's secret is missing".into()))?;
                Cert::from_bytes(&tsk[..])
                    .map_err(|e| OrgError::Internal(format!("the stored org key: {e}")))?
            } else {
                public
            };
            Ok(OrgAnswer {
                output: String::from_utf8(key::armored(&cert, secret)).expect("armor is ASCII"),
                ..OrgAnswer::default()
            })
        }
        OrgRequest::Status => status(cx, now),
        OrgRequest::Renew => {
            let report = renew::run(cx.store, cx.keys, cx.sealer()?, cx.config, now)?;
            Ok(OrgAnswer {
                messages: describe(&report),
                ..OrgAnswer::default()
            })
        }
        OrgRequest::KeysExport { address, smime } => keys_export(cx, &address, smime, now),
        OrgRequest::Published => published(cx, now),
    }
}

fn no_org_key() -> OrgError {
    OrgError::Refused("there is no org key: make one with `sealgate org init`".into())
}

/// Replacing the org key leaves every user's key unverified until the new key has
/// certified it: only on purpose.
fn refuse_replacing(cx: &OrgContext, replace: bool) -> Result<(), OrgError> {
    match cx.org_key()? {
        Some(existing) if !replace => Err(OrgError::Refused(format!(
            "an org key exists ({}); replacing it leaves every user's key unverified until \
             the new key has certified it: give --replace to do so",
            existing.fingerprint()
        ))),
        _ => Ok(()),
    }
}

/// Stores `cert` as the org key (sealing its secret) and certifies every user at once.
fn install(cx: &OrgContext, cert: &Cert, now: OffsetDateTime) -> Result<OrgAnswer, OrgError> {
    let fpr = cert.fingerprint().to_hex();
    let public = cert.to_vec().expect("a cert serializes");
    let secret = zeroize::Zeroizing::new(cert.as_tsk().to_vec().expect("a cert serializes"));
    cx.store.set_key(cx.sealer()?, &fpr, &public, &secret)?;
    let mut messages = vec![format!("org key {fpr} is in force")];
    let report = renew::run(cx.store, cx.keys, cx.sealer()?, cx.config, now)?;
    messages.extend(describe(&report));
    messages.push("keep a backup of it: sealgate org export --secret > org-backup.asc".into());
    Ok(OrgAnswer {
        messages,
        ..OrgAnswer::default()
    })
}

/// The lines a renewal run gives the admin.
fn describe(report: &renew::Report) -> Vec<String> {
    let mut lines = vec![format!(
        "certified {} key(s) now, {} still current, {} inactive user(s) not renewed",
        report.certified.len(),
        report.current,
        report.inactive.len()
    )];
    for (address, fingerprint) in &report.certified {
        lines.push(format!("certified {address} {fingerprint}"));
    }
    for (address, why) in &report.failed {
        lines.push(format!("not certified {address}: {why}"));
    }
    lines
}

/// `org status`: the report on standard output, warnings (which `check` prints too) as
/// messages.
fn status(cx: &OrgContext, now: OffsetDateTime) -> Result<OrgAnswer, OrgError> {
    let mut out = String::new();
    let mut messages = Vec::new();
    let date = |t: OffsetDateTime| t.date().to_string();
    match cx.org_key()? {
        None => out.push_str("org key: none (sealgate org init makes one)\n"),
        Some(cert) => {
            let created = OffsetDateTime::from(cert.primary_key().key().creation_time());
            let policy = openpgp::policy::StandardPolicy::new();
            let expires = cert
                .with_policy(&policy, None)
                .ok()
                .and_then(|v| v.primary_key().key_expiration_time())
                .map_or("never".to_string(), |t| date(OffsetDateTime::from(t)));
            let uid = cert
                .userids()
                .next()
                .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
                .unwrap_or_default();
            out.push_str(&format!(
                "org key: {} \"{uid}\" created {} expires {expires}\n",
                cert.fingerprint(),
                date(created)
            ));
            let fpr = cert.fingerprint().to_hex();
            let certifications = cx.store.certifications()?;
            let current = certifications
                .iter()
                .filter(|c| c.org_fingerprint == fpr && c.expires > now)
                .count();
            let unverified = renew::unverified(cx.store, cx.keys, cx.config, now)?;
            if unverified > 0 {
                messages.push(format!(
                    "warning: {unverified} internal user key(s) are not certified by the org key \
                     in force: partners see them as unverified until `sealgate org renew` (or \
                     the renewal job) certifies them"
                ));
            }
            out.push_str(&format!(
                "users certified: {current} (certifications valid {}), unverified: {unverified}\n",
                humantime::format_duration(cx.config.org.certification_validity.0)
            ));
        }
    }
    match cx.store.ca()? {
        None => out.push_str("org certificate: none (sealgate org cert init makes one)\n"),
        Some(_) => out.push_str("org certificate: present\n"),
    }
    let next = cx
        .store
        .next_renewal()?
        .map_or("when `sealgate serve` starts".to_string(), |t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        });
    out.push_str(&format!(
        "renewal: every {}, next {next}\n",
        humantime::format_duration(cx.config.org.renew_every.0)
    ));
    Ok(OrgAnswer {
        output: out,
        messages,
    })
}

/// `keys export ADDRESS`: the user's current key with the org certification, armored.
fn keys_export(
    cx: &OrgContext,
    address: &str,
    smime: bool,
    now: OffsetDateTime,
) -> Result<OrgAnswer, OrgError> {
    let Some(address) = crate::keys::address::normalize(address) else {
        return Err(OrgError::Refused(format!("{address:?} is not an address")));
    };
    if smime {
        return Err(OrgError::Refused(
            "there is no org certificate: make one with `sealgate org cert init`".into(),
        ));
    }
    let entry = cx
        .keys
        .find(&address)?
        .into_iter()
        .filter(|e| renew::eligible(e, cx.config))
        .max_by_key(|e| e.key_created)
        .ok_or_else(|| {
            OrgError::Refused(format!(
                "no current key of an internal user for {address} (SCKM or imported)"
            ))
        })?;
    let (cert, certified) = certified_key(cx, &entry, now)?;
    let mut messages = Vec::new();
    if !certified {
        messages.push(format!(
            "{address}: the key is not certified by the org key (yet): run sealgate org renew"
        ));
    }
    // Only public material leaves: an SCKM entry's material is its public cert.
    let armored = cert.armored().to_vec().expect("a cert serializes");
    Ok(OrgAnswer {
        messages,
        output: String::from_utf8(armored).expect("armor is ASCII"),
    })
}

/// `entry`'s public cert with the org key's certification when it has a current one,
/// and whether it has.
fn certified_key(
    cx: &OrgContext,
    entry: &crate::keys::KeyEntry,
    now: OffsetDateTime,
) -> Result<(Cert, bool), OrgError> {
    let material = cx
        .keys
        .material(&entry.address, &entry.fingerprint)?
        .ok_or_else(|| OrgError::Internal(format!("key {} vanished", entry.fingerprint)))?;
    let cert = Cert::from_bytes(&material)
        .map_err(|e| OrgError::Internal(format!("cached key {}: {e}", entry.fingerprint)))?;
    match cx.store.certification(&entry.address, &entry.fingerprint)? {
        Some(c) if c.expires > now => Ok((key::with_certifications(cert, &c.signatures)?, true)),
        _ => Ok((cert, false)),
    }
}

/// One published key, as `org publish` gets it.
#[derive(Debug, Serialize, Deserialize)]
pub struct PublishedKey {
    pub address: String,
    /// The binary public cert with its certification, base64.
    pub key: String,
}

/// The certified key of every internal user the org vouches for (the newest, when a
/// user has several): only certified ones, since publishing says the org stands by them.
fn published(cx: &OrgContext, now: OffsetDateTime) -> Result<OrgAnswer, OrgError> {
    use base64::Engine;
    let mut newest: std::collections::BTreeMap<String, crate::keys::KeyEntry> =
        std::collections::BTreeMap::new();
    for entry in cx
        .keys
        .list()?
        .into_iter()
        .filter(|e| renew::eligible(e, cx.config))
    {
        let keep = newest
            .get(&entry.address)
            .is_none_or(|old| old.key_created < entry.key_created);
        if keep {
            newest.insert(entry.address.clone(), entry);
        }
    }
    let mut keys = Vec::new();
    let mut messages = Vec::new();
    for entry in newest.values() {
        match certified_key(cx, entry, now)? {
            (cert, true) => keys.push(PublishedKey {
                address: entry.address.clone(),
                key: base64::engine::general_purpose::STANDARD
                    .encode(cert.to_vec().expect("a cert serializes")),
            }),
            (_, false) => messages.push(format!(
                "{}: not published: not certified by the org key (run sealgate org renew)",
                entry.address
            )),
        }
    }
    Ok(OrgAnswer {
        messages,
        output: serde_json::to_string(&keys).expect("keys serialize"),
    })
}
