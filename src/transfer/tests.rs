//! Bundles between gateways in one process: every byte of a bundle altered, and a bundle
//! passed on to a third gateway, are refused and store nothing.

use base64::Engine;
use time::OffsetDateTime;

use super::admin::{TransferContext, TransferRequest, execute};
use super::export::Selection;
use super::{TransferError, TransferStore};
use crate::crypto::smime;
use crate::keys::material::{self, Origin};
use crate::keys::secrets::Sealer;
use crate::keys::{KeyStore, SledKeyStore, Source};

/// A gateway's stores, in a temp dir.
struct Gateway {
    _dir: tempfile::TempDir,
    keys: SledKeyStore,
    sealer: Sealer,
    transfer: TransferStore,
}

impl Gateway {
    fn new() -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        Gateway {
            keys: SledKeyStore::open(&db, std::time::Duration::from_secs(86400)).unwrap(),
            sealer: Sealer::open(dir.path()).unwrap(),
            transfer: TransferStore::open(&db).unwrap(),
            _dir: dir,
        }
    }

    fn run(&self, request: TransferRequest) -> Result<crate::keys::admin::Answer, TransferError> {
        let cx = TransferContext {
            store: &self.transfer,
            keys: &self.keys,
            sealer: Some(&self.sealer),
            hostname: "gw.test",
        };
        execute(&cx, request, OffsetDateTime::now_utc())
    }

    fn cert(&self) -> String {
        self.run(TransferRequest::Cert).unwrap().output
    }

    fn trust(&self, other: &Gateway, name: &str) {
        self.run(TransferRequest::Trust {
            cert: b64(other.cert().as_bytes()),
            name: Some(name.into()),
        })
        .unwrap();
    }

    fn import(&self, bundle: &[u8]) -> Result<crate::keys::admin::Answer, TransferError> {
        self.run(TransferRequest::Import {
            data: b64(bundle),
            trust_once: false,
        })
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A gateway A with one admin key, trusting and trusted by B; A's bundle for B, DER.
fn a_bundle_for_b() -> (Gateway, Gateway, Vec<u8>) {
    let (a, b) = (Gateway::new(), Gateway::new());
    a.trust(&b, "b");
    b.trust(&a, "a");
    let (cert, _) = sequoia_openpgp::cert::CertBuilder::new()
        .set_creation_time(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        .add_userid("Carol <carol@example.org>")
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    let key = sequoia_openpgp::serialize::SerializeInto::to_vec(&cert).unwrap();
    let origin = Origin {
        source: Source::Admin,
        message_id: None,
        sender: None,
    };
    let now = OffsetDateTime::now_utc();
    for candidate in material::import_candidates(&key, &origin, now).unwrap() {
        a.keys.put(candidate, now).unwrap();
    }
    let pem = a
        .run(TransferRequest::Export {
            to: "b".into(),
            cert: None,
            selection: Selection::default(),
        })
        .unwrap()
        .output;
    let (_, der) = der::pem::decode_vec(pem.as_bytes()).unwrap();
    (a, b, der)
}

#[test]
fn a_bundle_altered_in_any_byte_is_refused_and_stores_nothing() {
    let (_a, b, der) = a_bundle_for_b();
    for at in 0..der.len() {
        for flip in [0x01, 0x80] {
            let mut altered = der.clone();
            altered[at] ^= flip;
            let result = b.import(&altered);
            assert!(
                matches!(result, Err(TransferError::Refused(_))),
                "byte {at} ^ {flip:#x} of {}: {result:?}",
                der.len()
            );
        }
    }
    assert!(b.keys.list().unwrap().is_empty());
    // The genuine bundle imports, once.
    b.import(&der).unwrap();
    assert_eq!(b.keys.list().unwrap().len(), 1);
}

#[test]
fn a_bundle_passed_on_to_a_third_gateway_is_refused() {
    let (a, b, der) = a_bundle_for_b();
    let c = Gateway::new();
    c.trust(&a, "a");
    // B opens A's bundle and wraps A's signed content to C, unchanged.
    let identity = b.transfer.identity(&b.sealer).unwrap().unwrap();
    let key = identity.decryption_key().unwrap();
    let signed = smime::decrypt(&der, std::slice::from_ref(&key))
        .unwrap()
        .plaintext;
    let c_cert = material::parse_x509(c.cert().as_bytes()).unwrap().remove(0);
    let passed_on = smime::encrypt_authenticated(&signed, &[c_cert]).unwrap();
    let err = c.import(&passed_on).unwrap_err();
    assert!(
        err.to_string().contains("addressed to another gateway"),
        "{err}"
    );
    assert!(c.keys.list().unwrap().is_empty());
}

#[test]
fn a_bundle_with_a_secret_that_can_sign_is_refused_as_import_sckm_refuses_it() {
    use sequoia_openpgp::serialize::SerializeInto;

    let (a, b, _) = a_bundle_for_b();
    // A whole secret key, primary (which signs and certifies) included: what a gateway
    // must never hold, handed over as an SCKM entry by a peer that should know better.
    let (cert, _) = sequoia_openpgp::cert::CertBuilder::new()
        .set_creation_time(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        .add_userid("User <user@example.com>")
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let public = cert.clone().strip_secret_key_material().to_vec().unwrap();
    let origin = Origin {
        source: Source::Admin,
        message_id: None,
        sender: None,
    };
    let mut entry = material::import_candidates(&public, &origin, now).unwrap();
    let candidate = entry.remove(0);
    let entry = crate::keys::KeyEntry {
        address: candidate.address,
        added: now,
        key_created: candidate.key_created,
        ..crate::keys::KeyEntry::sample(candidate.kind, Source::Sckm, &candidate.fingerprint)
    };
    let a_identity = a.transfer.identity(&a.sealer).unwrap().unwrap();
    let b_identity = b.transfer.identity(&b.sealer).unwrap().unwrap();
    let forged = super::bundle::Bundle {
        format: super::bundle::FORMAT.into(),
        from: a_identity.fingerprint().into(),
        to: b_identity.fingerprint().into(),
        sequence: 100,
        created: now,
        entries: vec![super::bundle::BundleEntry {
            entry,
            material: public,
            secret: Some(b64(&cert.as_tsk().to_vec().unwrap())),
        }],
    };
    let pem = super::bundle::wrap(&forged, &a_identity, b_identity.cert()).unwrap();
    let err = b.import(pem.as_bytes()).unwrap_err();
    assert!(
        err.to_string().contains("import-sckm") && err.to_string().contains("primary"),
        "{err}"
    );
    assert!(b.keys.list().unwrap().is_empty());
}
