//! `org cert ...` and `keys export ADDRESS --smime`: the Organization certificate,
//! the user certificates it issued, their revocation and the CRL.

use sequoia_openpgp as openpgp;
use time::OffsetDateTime;

use super::{Answer, OrgContext, describe};
use crate::keys::material;
use crate::org::ca::{Ca, CaError};
use crate::org::{OrgError, renew};

pub(super) fn ca_error(e: CaError) -> OrgError {
    match e {
        CaError::Refused(why) | CaError::Unsupported(why) => OrgError::Refused(why),
        CaError::Internal(why) => OrgError::Internal(why),
    }
}

/// How long a self-signed org certificate lives: `--days`, else as long as the org key
/// (when it expires), else ten years.
pub(super) fn cert_import(
    cx: &OrgContext,
    cert: String,
    key: String,
    passphrase: Option<String>,
    now: OffsetDateTime,
) -> Result<Answer, OrgError> {
    use base64::Engine;
    let decode = |data: String| {
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| OrgError::Refused(format!("bad request: {e}")))
    };
    let ca =
        Ca::import(&decode(cert)?, &decode(key)?, passphrase.as_deref(), now).map_err(ca_error)?;
    install_ca(cx, ca, Vec::new(), now)
}

pub(super) fn cert_init(
    cx: &OrgContext,
    subject: &str,
    days: Option<u32>,
    now: OffsetDateTime,
) -> Result<Answer, OrgError> {
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
pub(super) fn install_ca(
    cx: &OrgContext,
    ca: Ca,
    mut messages: Vec<String>,
    now: OffsetDateTime,
) -> Result<Answer, OrgError> {
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
    Ok(Answer {
        messages,
        ..Answer::default()
    })
}

/// Revokes the user certificates of an address, or the one with a serial.
pub(super) fn cert_revoke(
    cx: &OrgContext,
    target: &str,
    now: OffsetDateTime,
) -> Result<Answer, OrgError> {
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
    Ok(Answer {
        messages,
        ..Answer::default()
    })
}

/// The CRL of the org certificate in force, PEM: every certificate it issued that was
/// revoked. Valid for a week; write it again (say, daily) where partners fetch it.
pub(super) fn cert_crl(cx: &OrgContext, now: OffsetDateTime) -> Result<Answer, OrgError> {
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
    Ok(Answer {
        output: pem("X509 CRL", &der),
        ..Answer::default()
    })
}

pub(super) fn no_ca() -> OrgError {
    OrgError::Refused("there is no org certificate: make one with `sealgate org cert init`".into())
}

pub(super) fn pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).expect("PEM encodes")
}

/// `keys export ADDRESS --smime`: the user's newest unrevoked certificate, then the org
/// certificate that issued it (when it is the one in force).
pub(super) fn smime_export(
    cx: &OrgContext,
    address: &str,
    now: OffsetDateTime,
) -> Result<Answer, OrgError> {
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
    Ok(Answer {
        output,
        ..Answer::default()
    })
}
