//! Recipients' OpenPGP certs, parsed once per material rather than once per message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use openpgp::parse::Parse;
use sequoia_openpgp as openpgp;

/// Recipients' OpenPGP certs, parsed, by fingerprint. Parsing and canonicalizing a cert
/// (its self-signatures checked) was 7 % of the gateway's CPU for a 4 KiB encrypted
/// message (perf, the release binary). A parsed cert is used only while the cache's
/// material is the same bytes: a key refreshed in place is parsed anew. Whether a key
/// may be used is decided on the cache's entries before this, every time, and the
/// cert's validity now (expiry, revocation) is checked at each encryption.
#[derive(Default)]
pub struct ParsedCerts {
    by_fingerprint: Mutex<HashMap<String, Parsed>>,
}

/// A cert and the material it was parsed from.
type Parsed = (Vec<u8>, Arc<openpgp::Cert>);

/// Certs held at most; past it, the map starts over (a gateway that encrypts to more
/// distinct keys than this re-parses some).
const PARSED_CERTS: usize = 4096;

impl ParsedCerts {
    /// The cert of `fingerprint` parsed from `material`, parsed now unless held.
    pub fn get(&self, fingerprint: &str, material: &[u8]) -> Result<Arc<openpgp::Cert>, String> {
        let lock = || {
            self.by_fingerprint
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some((held, cert)) = lock().get(fingerprint)
            && held[..] == *material
        {
            return Ok(cert.clone());
        }
        let cert = Arc::new(openpgp::Cert::from_bytes(material).map_err(|e| e.to_string())?);
        let mut map = lock();
        if map.len() >= PARSED_CERTS {
            map.clear();
        }
        map.insert(fingerprint.to_string(), (material.to_vec(), cert.clone()));
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openpgp::cert::CertBuilder;
    use openpgp::serialize::SerializeInto;
    use sequoia_openpgp as openpgp;

    use super::ParsedCerts;

    #[test]
    fn a_cert_is_parsed_again_only_when_its_material_changes() {
        let (cert, _) = CertBuilder::new()
            .add_userid("<bob@example.org>")
            .add_transport_encryption_subkey()
            .generate()
            .unwrap();
        let (other, _) = CertBuilder::new()
            .add_userid("<bob@example.org>")
            .generate()
            .unwrap();
        let (material, changed) = (cert.to_vec().unwrap(), other.to_vec().unwrap());
        let parsed = ParsedCerts::default();
        let first = parsed.get("FPR", &material).unwrap();
        assert!(Arc::ptr_eq(&first, &parsed.get("FPR", &material).unwrap()));
        let refreshed = parsed.get("FPR", &changed).unwrap();
        assert_eq!(*refreshed, other);
        assert!(parsed.get("BAD", b"not a cert").is_err());
    }
}
