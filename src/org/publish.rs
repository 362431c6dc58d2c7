//! What partners need to find internal users' keys, from the keys the org key has
//! certified: DNS records (RFC 7929 OPENPGPKEY) to sign into the zone, and a Web Key
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
    pub key: Vec<u8>,
}

/// The DNS owner name of `address`'s OPENPGPKEY record (RFC 7929 §3).
pub fn openpgpkey_owner(address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    let domain = idna::domain_to_ascii(domain).ok()?;
    Some(crate::dns::keys::record_owner(
        crate::keys::KeyKind::Pgp,
        local,
        &domain,
    ))
}

/// Zone-file lines for the keys of `zone` (the users whose domain it is, or is under),
/// ready to sign into the zone.
pub fn dane(keys: &[Published], zone: &str) -> String {
    use base64::Engine;
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    let mut out =
        format!("; OPENPGPKEY records (RFC 7929) for the users of {zone}, from sealgate\n");
    for k in keys {
        let Some(domain) = k
            .address
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
        else {
            continue;
        };
        if domain != zone && !domain.ends_with(&format!(".{zone}")) {
            continue;
        }
        let Some(owner) = openpgpkey_owner(&k.address) else {
            continue;
        };
        let data = base64::engine::general_purpose::STANDARD.encode(&k.key);
        out.push_str(&format!("; {}\n{owner} IN OPENPGPKEY {data}\n", k.address));
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
    for k in keys {
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
