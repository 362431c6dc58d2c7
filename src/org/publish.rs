//! What partners need to find internal users' keys, from the keys the org key has
//! certified and the certificates the org certificate issued: DNS records (RFC 7929
//! OPENPGPKEY, RFC 8162 SMIMEA) to sign into the zone, and a Web Key
//! Directory tree (draft-koch-openpgp-webkey-service) in the layout `gpg-wks-client
//! --install-key` makes: `DOMAIN/hu/HASH` and `DOMAIN/policy`.
//!
//! Pure: key bytes in, text and file contents out. The CLI writes the files, so that
//! they land where the admin runs it, not where the server runs.

use sha1::Digest as _;

/// One internal user's key to publish: the binary transferable public key, with the
/// org certification.
pub struct Published {
    pub address: String,
    /// Empty when there is only a certificate.
    pub key: Vec<u8>,
    /// The user's certificate from the org certificate, DER.
    pub certificate: Option<Vec<u8>>,
}

/// Zone-file lines for the keys and certificates of `zone`'s users (the users whose
/// domain it is, or is under), ready to sign into the zone. SMIMEA records are
/// `3 0 0`: DANE-EE, the full certificate, not hashed (what key lookup, sealgate's
/// included, can encrypt to).
pub fn dane(keys: &[Published], zone: &str) -> String {
    use base64::Engine;
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    let mut out = format!(
        "; OPENPGPKEY (RFC 7929) and SMIMEA (RFC 8162) records for the users of {zone}, from sealgate\n"
    );
    for k in keys {
        let Some((local, domain)) = k.address.rsplit_once('@') else {
            continue;
        };
        let domain = domain.to_ascii_lowercase();
        if domain != zone && !domain.ends_with(&format!(".{zone}")) {
            continue;
        }
        let Ok(ascii) = idna::domain_to_ascii(&domain) else {
            continue;
        };
        out.push_str(&format!("; {}\n", k.address));
        if !k.key.is_empty() {
            let owner = crate::dns::keys::record_owner(crate::keys::KeyKind::Pgp, local, &ascii);
            let data = base64::engine::general_purpose::STANDARD.encode(&k.key);
            out.push_str(&format!("{owner} IN OPENPGPKEY {data}\n"));
        }
        if let Some(der) = &k.certificate {
            let owner = crate::dns::keys::record_owner(crate::keys::KeyKind::Smime, local, &ascii);
            let data: String = der.iter().map(|b| format!("{b:02X}")).collect();
            out.push_str(&format!("{owner} IN SMIMEA 3 0 0 {data}\n"));
        }
    }
    out
}

/// The WKD hash of `address`: z-base-32 of the SHA-1 of the lower-cased local part.
pub fn wkd_hash(address: &str) -> Option<String> {
    let (local, _) = address.rsplit_once('@')?;
    let digest = sha1::Sha1::digest(local.to_lowercase().as_bytes());
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("ybndrfg8ejkmcpqxot1uwisza345h769");
    let zbase32 = spec.encoding().expect("a valid z-base-32 specification");
    Some(zbase32.encode(&digest))
}

/// The files of a WKD tree, as (path relative to its folder, contents): each user's key
/// at `DOMAIN/hu/HASH`, and an empty `DOMAIN/policy` for each domain.
pub fn wkd(keys: &[Published]) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut domains = std::collections::BTreeSet::new();
    for k in keys.iter().filter(|k| !k.key.is_empty()) {
        let (Some(hash), Some((_, domain))) = (wkd_hash(&k.address), k.address.rsplit_once('@'))
        else {
            continue;
        };
        let domain = domain.to_ascii_lowercase();
        files.push((format!("{domain}/hu/{hash}"), k.key.clone()));
        domains.insert(domain);
    }
    for domain in domains {
        files.push((format!("{domain}/policy"), Vec::new()));
    }
    files
}
