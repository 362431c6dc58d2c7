//! The requests behind `sealgate transfer ...`, `keys export --to` and `keys
//! import-bundle`, run by the admin socket's dispatcher ([`crate::keys::admin`]) in the
//! server or in the CLI.

use base64::Engine;
use der::Decode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_cert::Certificate;

use super::bundle::{self, Opened};
use super::export::{self, Selection};
use super::identity::{self, Identity};
use super::store::Received;
use super::{Peer, TransferError, TransferStore, display_fingerprint, import};
use crate::keys::KeyStore;
use crate::keys::admin::Answer;
use crate::keys::entry::Selector;
use crate::keys::material;
use crate::keys::secrets::Sealer;

/// One transfer request. Files travel base64 (the request is JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "kebab-case")]
pub enum TransferRequest {
    /// This gateway's transport certificate, made on first use.
    Cert,
    Trust {
        cert: String,
        name: Option<String>,
    },
    Peers,
    Export {
        /// A peer's name or fingerprint; or, with `cert`, what to call that certificate.
        to: String,
        /// The peer's certificate file, when the admin named a file.
        cert: Option<String>,
        selection: Selection,
    },
    Import {
        data: String,
        trust_once: bool,
    },
}

impl TransferRequest {
    /// Whether it needs the key-encryption key (every request but `peers`).
    pub fn needs_secrets(&self) -> bool {
        !matches!(self, TransferRequest::Peers)
    }
}

/// What the requests work on.
pub struct TransferContext<'a> {
    pub store: &'a TransferStore,
    pub keys: &'a dyn KeyStore,
    pub sealer: Option<&'a Sealer>,
    /// The name this gateway's certificate carries.
    pub hostname: &'a str,
}

impl TransferContext<'_> {
    fn sealer(&self) -> Result<&Sealer, TransferError> {
        self.sealer
            .ok_or_else(|| TransferError::Internal("no key-encryption key for this request".into()))
    }

    fn identity(&self, now: OffsetDateTime) -> Result<Identity, TransferError> {
        self.store
            .identity_or_create(self.sealer()?, self.hostname, now)
    }
}

/// Carries out `request` at `now`.
pub fn execute(
    cx: &TransferContext,
    request: TransferRequest,
    now: OffsetDateTime,
) -> Result<Answer, TransferError> {
    match request {
        TransferRequest::Cert => {
            let identity = cx.identity(now)?;
            Ok(Answer {
                messages: vec![display_fingerprint(identity.fingerprint())],
                output: identity::pem(identity.cert_der()),
            })
        }
        TransferRequest::Trust { cert, name } => trust(cx, &decode(&cert)?, name, now),
        TransferRequest::Peers => Ok(Answer {
            output: peers_table(&cx.store.peers()?),
            ..Answer::default()
        }),
        TransferRequest::Export {
            to,
            cert,
            selection,
        } => export(cx, &to, cert.as_deref(), &selection, now),
        TransferRequest::Import { data, trust_once } => {
            import_bundle(cx, &decode(&data)?, trust_once, now)
        }
    }
}

fn decode(base64: &str) -> Result<Vec<u8>, TransferError> {
    base64::engine::general_purpose::STANDARD
        .decode(base64)
        .map_err(|e| TransferError::Refused(format!("bad request: {e}")))
}

/// The one certificate of a PEM or DER file, with its DER.
fn read_certificate(file: &[u8]) -> Result<(Certificate, Vec<u8>), TransferError> {
    let refused = |why: String| TransferError::Refused(why);
    let certs = material::parse_x509(file)
        .map_err(|e| refused(format!("not a transport certificate: {e}")))?;
    let [cert] = certs.as_slice() else {
        return Err(refused(format!(
            "the file holds {} certificates; give the peer's transport certificate alone",
            certs.len()
        )));
    };
    let der = der::Encode::to_der(cert).map_err(|e| refused(format!("certificate: {e}")))?;
    Ok((cert.clone(), der))
}

/// Records a peer's transport certificate.
fn trust(
    cx: &TransferContext,
    file: &[u8],
    name: Option<String>,
    now: OffsetDateTime,
) -> Result<Answer, TransferError> {
    let refused = |why: String| TransferError::Refused(why);
    let (cert, der) = read_certificate(file)?;
    let fingerprint = material::x509_fingerprint(&der);
    if cx.store.identity_cert()?.is_some_and(|own| own == der) {
        return Err(refused(
            "this is this gateway's own transport certificate, not a peer's".into(),
        ));
    }
    if !material::x509_can_encrypt(&cert) {
        return Err(refused(
            "the certificate's key usage does not allow encryption: bundles cannot be wrapped to it".into(),
        ));
    }
    let not_after = cert.tbs_certificate.validity.not_after.to_system_time();
    if OffsetDateTime::from(not_after) <= now {
        return Err(refused(format!(
            "the certificate expired at {}",
            OffsetDateTime::from(not_after)
        )));
    }
    let subject = cert.tbs_certificate.subject.to_string();
    let name = name.unwrap_or_else(|| default_name(&subject, &fingerprint));
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refused(format!(
            "the name {name:?} must be one word, without spaces"
        )));
    }
    let peers = cx.store.peers()?;
    if let Some(other) = peers
        .iter()
        .find(|p| p.name == name && p.fingerprint != fingerprint)
    {
        return Err(refused(format!(
            "the name {name:?} is taken by peer {}; choose another with --name",
            display_fingerprint(&other.fingerprint)
        )));
    }
    let added = peers
        .iter()
        .find(|p| p.fingerprint == fingerprint)
        .map_or(now, |p| p.added);
    cx.store.put_peer(&Peer {
        name: name.clone(),
        fingerprint: fingerprint.clone(),
        subject: subject.clone(),
        cert: der,
        added,
    })?;
    tracing::info!(peer = %name, %fingerprint, %subject, "transfer: trusted a peer");
    Ok(Answer {
        messages: vec![format!(
            "trusted peer {name}: {subject}, fingerprint {}",
            display_fingerprint(&fingerprint)
        )],
        output: String::new(),
    })
}

/// A peer's default name: its host name when it is a sealgate transport certificate,
/// else the start of its fingerprint.
fn default_name(subject: &str, fingerprint: &str) -> String {
    subject
        .strip_prefix("CN=sealgate transport ")
        .filter(|host| !host.contains(',') && !host.is_empty())
        .map_or_else(|| fingerprint[..16].to_string(), str::to_string)
}

fn peers_table(peers: &[Peer]) -> String {
    if peers.is_empty() {
        return "no trusted peers\n".into();
    }
    let mut out = String::from("NAME\tFINGERPRINT (SHA-256)\tSUBJECT\tTRUSTED SINCE\n");
    for peer in peers {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            peer.name,
            display_fingerprint(&peer.fingerprint),
            peer.subject,
            peer.added
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        ));
    }
    out
}

/// The trusted peer named `to` (by name or fingerprint).
fn find_peer(store: &TransferStore, to: &str) -> Result<Peer, TransferError> {
    // A fingerprint as openssl or gpg prints it, or plain, as `keys list` takes one.
    let wanted = match Selector::parse(to) {
        Some(Selector::Fingerprint(fingerprint)) => Some(fingerprint),
        _ => None,
    };
    store
        .peers()?
        .into_iter()
        .find(|p| p.name == to || wanted.as_ref() == Some(&p.fingerprint))
        .ok_or_else(|| {
            TransferError::Refused(format!(
                "no trusted peer is called {to:?} (see transfer peers), and no such certificate file exists"
            ))
        })
}

fn export(
    cx: &TransferContext,
    to: &str,
    cert_file: Option<&str>,
    selection: &Selection,
    now: OffsetDateTime,
) -> Result<Answer, TransferError> {
    let (peer_cert, peer_name) = match cert_file {
        Some(file) => (read_certificate(&decode(file)?)?, to.to_string()),
        None => {
            let peer = find_peer(cx.store, to)?;
            let cert = Certificate::from_der(&peer.cert)
                .map_err(|e| TransferError::Internal(format!("peer {}: {e}", peer.name)))?;
            ((cert, peer.cert), peer.name)
        }
    };
    let identity = cx.identity(now)?;
    let peer_fingerprint = material::x509_fingerprint(&peer_cert.1);
    if peer_fingerprint == identity.fingerprint() {
        return Err(TransferError::Refused(
            "that is this gateway's own transport certificate: a bundle goes to another gateway"
                .into(),
        ));
    }
    let sequence = cx.store.next_sequence()?;
    let bundle = export::collect(
        cx.keys,
        cx.sealer()?,
        selection,
        (identity.fingerprint(), &peer_fingerprint),
        sequence,
        now,
    )?;
    if bundle.entries.is_empty() {
        return Err(TransferError::Refused(
            "no entry of the key cache matches: nothing to export".into(),
        ));
    }
    let secrets = bundle.entries.iter().filter(|e| e.secret.is_some()).count();
    let output = bundle::wrap(&bundle, &identity, &peer_cert.0)?;
    tracing::info!(
        peer = %peer_name,
        fingerprint = %peer_fingerprint,
        entries = bundle.entries.len(),
        secrets,
        sequence,
        "transfer: exported a key bundle"
    );
    Ok(Answer {
        messages: vec![format!(
            "bundle {sequence} for {peer_name} ({}): {} entries, {secrets} with SCKM secrets",
            display_fingerprint(&peer_fingerprint),
            bundle.entries.len()
        )],
        output,
    })
}

fn import_bundle(
    cx: &TransferContext,
    file: &[u8],
    trust_once: bool,
    now: OffsetDateTime,
) -> Result<Answer, TransferError> {
    let refused = |why: String| TransferError::Refused(why);
    let Some(identity) = cx.store.identity(cx.sealer()?)? else {
        return Err(refused(
            "this gateway has no transport certificate, so no bundle can be for it: run `sealgate transfer cert` and give its output to the source".into(),
        ));
    };
    let Opened {
        signer,
        signer_fingerprint,
        bundle,
    } = bundle::unwrap(file, &identity)?;
    if bundle.to != identity.fingerprint() {
        return Err(refused(format!(
            "the bundle is addressed to another gateway ({}), and was passed on to this one",
            display_fingerprint(&bundle.to)
        )));
    }
    if bundle.from != signer_fingerprint {
        return Err(refused(format!(
            "the bundle says it comes from {} but is signed by {}",
            display_fingerprint(&bundle.from),
            display_fingerprint(&signer_fingerprint)
        )));
    }
    let subject = signer.tbs_certificate.subject.to_string();
    let mut messages = Vec::new();
    let source = match cx.store.peer(&signer_fingerprint)? {
        Some(peer) => peer.name,
        None if trust_once => {
            messages.push(format!(
                "trusting {subject} once, for this bundle only: fingerprint {}",
                display_fingerprint(&signer_fingerprint)
            ));
            subject.clone()
        }
        None => {
            return Err(refused(format!(
                "the bundle is signed by a gateway this one does not trust: {subject}, fingerprint {}. \
                 Compare it with the fingerprint `sealgate transfer cert --fingerprint` prints there, \
                 then run `sealgate transfer trust` with its certificate, or import with --trust-once",
                display_fingerprint(&signer_fingerprint)
            )));
        }
    };
    if let Some(last) = cx
        .store
        .received(&signer_fingerprint)?
        .filter(|last| bundle.sequence <= last.sequence)
    {
        return Err(refused(format!(
            "replayed: bundle {} from {source} is not newer than bundle {}, imported at {}",
            bundle.sequence,
            last.sequence,
            last.at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        )));
    }
    messages.extend(import::import(cx.keys, cx.sealer()?, &bundle.entries, now)?);
    cx.store.set_received(
        &signer_fingerprint,
        &Received {
            sequence: bundle.sequence,
            at: now,
        },
    )?;
    tracing::info!(
        peer = %source,
        fingerprint = %signer_fingerprint,
        sequence = bundle.sequence,
        entries = bundle.entries.len(),
        "transfer: imported a key bundle"
    );
    messages.push(format!(
        "bundle {} from {source}: {} entries",
        bundle.sequence,
        bundle.entries.len()
    ));
    Ok(Answer {
        messages,
        output: String::new(),
    })
}
