//! The operations behind `sealgate org ...` and `sealgate keys export`, run by the
//! admin socket's dispatcher ([`crate::keys::admin`]) in the server or in the CLI.
//! The certificate operations are in [`certificate`], what is exported in [`export`].

mod certificate;
mod export;

use certificate::{cert_crl, cert_import, cert_init, cert_revoke};
pub use export::PublishedKey;
use export::{keys_export, published};

use der::Decode;
use openpgp::Cert;
use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{OrgError, OrgStore, key, renew};
use crate::config::Config;
use crate::keys::KeyStore;
use crate::keys::admin::Answer;
use crate::keys::material;
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
    CertInit {
        subject: String,
        days: Option<u32>,
    },
    CertImport {
        /// The CA certificate's and its key's files, base64.
        cert: String,
        key: String,
        passphrase: Option<String>,
    },
    CertRevoke {
        target: String,
    },
    CertCrl,
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
) -> Result<Answer, OrgError> {
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
            Ok(Answer {
                output: String::from_utf8(key::armored(&cert, secret)).expect("armor is ASCII"),
                ..Answer::default()
            })
        }
        OrgRequest::Status => status(cx, now),
        OrgRequest::Renew => {
            let report = renew::run(cx.store, cx.keys, cx.sealer()?, cx.config, now)?;
            Ok(Answer {
                messages: describe(&report),
                ..Answer::default()
            })
        }
        OrgRequest::KeysExport { address, smime } => keys_export(cx, &address, smime, now),
        OrgRequest::Published => published(cx, now),
        OrgRequest::CertInit { subject, days } => cert_init(cx, &subject, days, now),
        OrgRequest::CertImport {
            cert,
            key,
            passphrase,
        } => cert_import(cx, cert, key, passphrase, now),
        OrgRequest::CertRevoke { target } => cert_revoke(cx, &target, now),
        OrgRequest::CertCrl => cert_crl(cx, now),
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
fn install(cx: &OrgContext, cert: &Cert, now: OffsetDateTime) -> Result<Answer, OrgError> {
    let fpr = cert.fingerprint().to_hex();
    let public = cert.to_vec().expect("a cert serializes");
    let secret = zeroize::Zeroizing::new(cert.as_tsk().to_vec().expect("a cert serializes"));
    cx.store.set_key(cx.sealer()?, &fpr, &public, &secret)?;
    let mut messages = vec![format!("org key {fpr} is in force")];
    let report = renew::run(cx.store, cx.keys, cx.sealer()?, cx.config, now)?;
    messages.extend(describe(&report));
    messages.push("keep a backup of it: sealgate org export --secret > org-backup.asc".into());
    Ok(Answer {
        messages,
        ..Answer::default()
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
    if !report.issued.is_empty() || report.certificates_current > 0 {
        lines.push(format!(
            "issued {} S/MIME certificate(s) now, {} still current",
            report.issued.len(),
            report.certificates_current
        ));
    }
    for (address, serial) in &report.issued {
        lines.push(format!("issued {address} serial {serial}"));
    }
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
fn status(cx: &OrgContext, now: OffsetDateTime) -> Result<Answer, OrgError> {
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
        Some(der) => {
            let (subject, not_after) = x509_cert::Certificate::from_der(&der)
                .map(|c| {
                    (
                        c.tbs_certificate.subject.to_string(),
                        c.tbs_certificate.validity.not_after.to_string(),
                    )
                })
                .unwrap_or_default();
            let fingerprint = material::x509_fingerprint(&der);
            let issued = cx.store.issued()?;
            let current = issued
                .iter()
                .filter(|c| c.issuer == fingerprint && c.revoked.is_none() && c.not_after > now)
                .count();
            let revoked = issued.iter().filter(|c| c.revoked.is_some()).count();
            out.push_str(&format!(
                "org certificate: \"{subject}\" until {not_after}, sha256 {fingerprint}\n\
                 user certificates: {current} current, {revoked} revoked\n"
            ));
        }
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
    Ok(Answer {
        output: out,
        messages,
    })
}
