//! The operations behind `sealgate org ...` and `sealgate keys export`, run by the
//! admin socket's dispatcher ([`crate::keys::admin`]) in the server or in the CLI.

use der::Decode;
use openpgp::Cert;
use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use sequoia_openpgp as openpgp;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ca::{Ca, CaError};
use super::{OrgError, OrgStore, key, renew};
use crate::config::Config;
use crate::keys::KeyStore;
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
        OrgRequest::CertInit { subject, days } => cert_init(cx, &subject, days, now),
        OrgRequest::CertImport {
            cert,
            key,
            passphrase,
        } => {
            use base64::Engine;
            let decode = |data: String| {
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| OrgError::Refused(format!("bad request: {e}")))
            };
            let ca = Ca::import(&decode(cert)?, &decode(key)?, passphrase.as_deref(), now)
                .map_err(ca_error)?;
            install_ca(cx, ca, Vec::new(), now)
        }
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
        return smime_export(cx, &address, now);
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
    /// The binary public cert with its certification, base64; empty when the user has
    /// only an S/MIME certificate to publish.
    pub key: String,
    /// The user's current certificate from the org certificate, DER in base64.
    #[serde(default)]
    pub certificate: Option<String>,
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
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut keys = Vec::new();
    let mut messages = Vec::new();
    for entry in newest.values() {
        let certificate = cx
            .store
            .issued_to(&entry.address)?
            .into_iter()
            .filter(|c| c.revoked.is_none() && c.not_after > now)
            .max_by_key(|c| c.not_after)
            .map(|c| b64(&c.der));
        let key = match entry.kind {
            crate::keys::KeyKind::Pgp => match certified_key(cx, entry, now)? {
                (cert, true) => b64(&cert.to_vec().expect("a cert serializes")),
                (_, false) => {
                    messages.push(format!(
                        "{}: key not published: not certified by the org key (run sealgate org renew)",
                        entry.address
                    ));
                    String::new()
                }
            },
            crate::keys::KeyKind::Smime => String::new(),
        };
        if !key.is_empty() || certificate.is_some() {
            keys.push(PublishedKey {
                address: entry.address.clone(),
                key,
                certificate,
            });
        }
    }
    Ok(OrgAnswer {
        messages,
        output: serde_json::to_string(&keys).expect("keys serialize"),
    })
}

fn ca_error(e: CaError) -> OrgError {
    match e {
        CaError::Refused(why) | CaError::Unsupported(why) => OrgError::Refused(why),
        CaError::Internal(why) => OrgError::Internal(why),
    }
}

/// How long a self-signed org certificate lives: `--days`, else as long as the org key
/// (when it expires), else ten years.
fn cert_init(
    cx: &OrgContext,
    subject: &str,
    days: Option<u32>,
    now: OffsetDateTime,
) -> Result<OrgAnswer, OrgError> {
    const TEN_YEARS: time::Duration = time::Duration::days(3652);
    let not_after = match days {
        Some(days) => now + time::Duration::days(days.into()),
        None => {
            let policy = openpgp::policy::StandardPolicy::new();
            cx.org_key()?
                .and_then(|cert| {
                    cert.with_policy(&policy, None)
                        .ok()?
                        .primary_key()
                        .key_expiration_time()
                })
                .map_or(now + TEN_YEARS, OffsetDateTime::from)
        }
    };
    let ca = Ca::self_signed(subject, now, not_after).map_err(ca_error)?;
    let warning = "warning: a self-signed org certificate makes partners trust it one by one; \
                   in production, import one issued by your organization's CA \
                   (sealgate org cert import CA.pem KEY.pem)"
        .to_string();
    install_ca(cx, ca, vec![warning], now)
}

/// Puts `ca` in force (after checking it names no user's address) and issues
/// certificates at once.
fn install_ca(
    cx: &OrgContext,
    ca: Ca,
    mut messages: Vec<String>,
    now: OffsetDateTime,
) -> Result<OrgAnswer, OrgError> {
    let users: Vec<String> = cx.keys.list()?.into_iter().map(|e| e.address).collect();
    if let Some(shared) = ca
        .emails()
        .into_iter()
        .find(|e| users.iter().any(|u| u.eq_ignore_ascii_case(e)))
    {
        return Err(OrgError::Refused(format!(
            "the org certificate carries {shared}, a user's address: it must have none, or \
             one no user has"
        )));
    }
    let fingerprint = material::x509_fingerprint(ca.cert_der());
    cx.store
        .set_ca(cx.sealer()?, &fingerprint, ca.cert_der(), &ca.key_pkcs8())?;
    messages.push(format!(
        "org certificate \"{}\" (sha256 {fingerprint}) is in force until {}",
        ca.subject(),
        ca.not_after().date()
    ));
    let report = renew::run(cx.store, cx.keys, cx.sealer()?, cx.config, now)?;
    messages.extend(describe(&report));
    Ok(OrgAnswer {
        messages,
        ..OrgAnswer::default()
    })
}

/// Revokes the user certificates of an address, or the one with a serial.
fn cert_revoke(cx: &OrgContext, target: &str, now: OffsetDateTime) -> Result<OrgAnswer, OrgError> {
    let address = crate::keys::address::normalize(target);
    let serial: String = target
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_uppercase();
    let mut messages = Vec::new();
    for mut cert in cx.store.issued()? {
        let named = match &address {
            Some(address) => cert.address == *address,
            None => cert.serial == serial,
        };
        if named && cert.revoked.is_none() {
            cert.revoked = Some(now);
            cx.store.put_issued(&cert)?;
            messages.push(format!("revoked {} serial {}", cert.address, cert.serial));
        }
    }
    if messages.is_empty() {
        return Err(OrgError::Refused(format!(
            "no unrevoked user certificate matches {target}"
        )));
    }
    messages.push("publish the new CRL: sealgate org cert crl > crl.pem".into());
    Ok(OrgAnswer {
        messages,
        ..OrgAnswer::default()
    })
}

/// The CRL of the org certificate in force, PEM: every certificate it issued that was
/// revoked. Valid for a week; write it again (say, daily) where partners fetch it.
fn cert_crl(cx: &OrgContext, now: OffsetDateTime) -> Result<OrgAnswer, OrgError> {
    let ca = renew::stored_ca(cx.store, cx.sealer()?)?.ok_or_else(no_ca)?;
    let issuer = material::x509_fingerprint(ca.cert_der());
    let mut revoked = Vec::new();
    for cert in cx.store.issued()? {
        if let (Some(at), true) = (cert.revoked, cert.issuer == issuer) {
            let serial = (0..cert.serial.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(cert.serial.get(i..i + 2)?, 16).ok())
                .collect();
            revoked.push((serial, at));
        }
    }
    let number = cx.store.next_crl_number()?;
    let der = ca
        .crl(&revoked, number, now, now + time::Duration::days(7))
        .map_err(ca_error)?;
    Ok(OrgAnswer {
        output: pem("X509 CRL", &der),
        ..OrgAnswer::default()
    })
}

fn no_ca() -> OrgError {
    OrgError::Refused("there is no org certificate: make one with `sealgate org cert init`".into())
}

fn pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).expect("PEM encodes")
}

/// `keys export ADDRESS --smime`: the user's newest unrevoked certificate, then the org
/// certificate that issued it (when it is the one in force).
fn smime_export(
    cx: &OrgContext,
    address: &str,
    now: OffsetDateTime,
) -> Result<OrgAnswer, OrgError> {
    let cert = cx
        .store
        .issued()?
        .into_iter()
        .filter(|c| c.address == address && c.revoked.is_none() && c.not_after > now)
        .max_by_key(|c| c.not_after)
        .ok_or_else(|| {
            OrgError::Refused(format!(
                "{address} has no current S/MIME certificate from the org certificate"
            ))
        })?;
    let mut output = pem("CERTIFICATE", &cert.der);
    if let Some(ca) = cx.store.ca()?
        && material::x509_fingerprint(&ca) == cert.issuer
    {
        output.push_str(&pem("CERTIFICATE", &ca));
    }
    Ok(OrgAnswer {
        output,
        ..OrgAnswer::default()
    })
}
