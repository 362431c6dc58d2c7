//! Harvesting: the input is an inbound message, as the harvester thread gets it.
//!
//! It reaches mail-parser's MIME walk, the Autocrypt header, `application/pgp-keys`
//! parts and armored key blocks (sequoia's cert parser), the S/MIME signatures of
//! `multipart/signed` and opaque signed-data (BER, CMS SignedData, signature checks),
//! S/MIME chain validation against a trust store, the `Authentication-Results` that
//! vouch for a key, and the key store's rules, on a sled database opened once and
//! emptied before every input.
//!
//! Besides not panicking: keys are stored for one address only (the From address), and
//! never for an internal one.

#![no_main]

use std::collections::BTreeSet;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sealgate::keys::SledKeyStore;
use sealgate::keys::harvest::trust::SmimeTrust;
use sealgate::keys::harvest::{self, Rules, openpgp};
use sealgate::mail::InternalDomains;
use sealgate_fuzz::{NOW, scratch};

struct World {
    db: sled::Db,
    store: SledKeyStore,
    rules: Rules,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    let db = sealgate::store::open(&scratch("harvest")).expect("the database opens");
    let store = SledKeyStore::open(&db, std::time::Duration::from_secs(86400)).expect("keys");
    World {
        db,
        store,
        rules: Rules {
            internal: InternalDomains::new(["example.com"]),
            trusted_authserv_ids: vec!["mx.example.com".into()],
            // A trust store, so that every S/MIME signer certificate goes through chain
            // validation (rustls-webpki, with the intermediates the message carries).
            // testdata/ holds no CA certificate, so NSS Bob stands in as the anchor.
            smime_trust: Some(std::sync::Arc::new(
                SmimeTrust::from_pem(include_bytes!(
                    "../../testdata/corpus/smime/thunderbird-nss-smime/derived/Bob.cert.pem"
                ))
                .expect("a trust anchor"),
            )),
        },
    }
});

fuzz_target!(|data: &[u8]| {
    let world = &*WORLD;
    for tree in ["keys", "secrets"] {
        world
            .db
            .open_tree(tree)
            .and_then(|t| t.clear())
            .expect("cleared");
    }
    let report = harvest::harvest(&world.store, &world.rules, data, NOW);
    let addresses: BTreeSet<&str> = report.stored.iter().map(|(a, _, _)| a.as_str()).collect();
    assert!(
        addresses.len() <= 1,
        "keys for several addresses: {addresses:?}"
    );
    for address in addresses {
        assert!(
            !world.rules.internal.is_internal(address),
            "harvested for {address}"
        );
    }

    // The Autocrypt and armor readers on their own, on the whole input as text.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = openpgp::parse_autocrypt(text);
        for block in openpgp::armored_blocks(text) {
            assert!(block.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
            assert!(block.ends_with("-----END PGP PUBLIC KEY BLOCK-----"));
        }
    }
});
