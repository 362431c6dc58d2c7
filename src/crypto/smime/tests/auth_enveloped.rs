//! AuthEnvelopedData with AES-GCM (RFC 5083, RFC 5084): what `openssl cms -encrypt
//! -aes-*-gcm` makes we open, for RSA and EC recipients, in DER and streamed BER; what
//! we make `openssl cms -decrypt` opens; and nothing comes out of a message whose tag,
//! ciphertext, nonce or authenticated attributes were changed.

use aes_gcm::AesGcm;
use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use cms::builder::{KeyEncryptionInfo, KeyTransRecipientInfoBuilder, RecipientInfoBuilder};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{EncryptedContentInfo, RecipientIdentifier, RecipientInfos};
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Decode};
use rsa::pkcs8::DecodePublicKey;
use x509_cert::attr::Attribute;

use super::*;
use crate::crypto::smime::auth_enveloped::{AuthEnvelopedData, GcmParameters};
use crate::crypto::{Decrypted, ber};

/// The AuthEnvelopedData inside a DER ContentInfo.
fn auth_enveloped(message: &[u8]) -> AuthEnvelopedData {
    let info = ContentInfo::from_der(message).unwrap();
    assert_eq!(info.content_type, rfc5911::ID_CT_AUTH_ENVELOPED_DATA);
    info.content.decode_as().unwrap()
}

fn content_info(data: &AuthEnvelopedData) -> Vec<u8> {
    ContentInfo {
        content_type: rfc5911::ID_CT_AUTH_ENVELOPED_DATA,
        content: Any::encode_from(data).unwrap(),
    }
    .to_der()
    .unwrap()
}

#[test]
fn we_open_what_openssl_encrypts_with_aes_gcm_to_rsa_and_ec() {
    let dir = TempDir::new().unwrap();
    let parties = [
        ("rsa", Party::encryption(dir.path(), "bob", "rsa")),
        ("P-256", Party::encryption(dir.path(), "fran", "P-256")),
        ("P-384", Party::encryption(dir.path(), "gil", "P-384")),
    ];
    let variants: &[&[&str]] = &[
        &["-aes-256-gcm", "-outform", "DER"],
        &["-aes-128-gcm", "-outform", "DER"],
        &["-aes-192-gcm", "-outform", "DER"],
        // Indefinite-length BER, as a streaming client sends it.
        &["-aes-256-gcm", "-stream", "-outform", "DER"],
        &["-aes-128-gcm", "-stream", "-outform", "SMIME"],
        // Recipient named by subject key identifier.
        &["-aes-256-gcm", "-outform", "DER", "-keyid"],
    ];
    for (kind, party) in &parties {
        let key = party.sckm();
        let mut kind_variants: Vec<Vec<&str>> = variants.iter().map(|v| v.to_vec()).collect();
        match *kind {
            "rsa" => kind_variants.push(vec![
                "-aes-256-gcm",
                "-outform",
                "DER",
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ]),
            _ => kind_variants.push(vec![
                "-aes-128-gcm",
                "-outform",
                "DER",
                "-keyopt",
                "ecdh_kdf_md:sha256",
            ]),
        }
        for variant in &kind_variants {
            let message = party.openssl_encrypt(dir.path(), variant);
            if variant.contains(&"-stream") {
                assert_eq!(&message[..2], &[0x30, 0x80], "{kind} {variant:?} gives BER");
            }
            if variant.contains(&"-stream") || variant.contains(&"-keyid") {
                // The derived type cannot read these, which is why decryption walks the
                // structure: a segmented [0] IMPLICIT content stays constructed after BER
                // to DER, and cms 0.2.3 cannot decode a KeyAgreeRecipientInfo's rKeyId.
                let info = ContentInfo::from_der(&ber::to_der(&message).unwrap()).unwrap();
                assert_eq!(info.content_type, rfc5911::ID_CT_AUTH_ENVELOPED_DATA);
            } else {
                let expected_oid = if variant.contains(&"-aes-128-gcm") {
                    rfc5911::ID_AES_128_GCM
                } else if variant.contains(&"-aes-192-gcm") {
                    rfc5911::ID_AES_192_GCM
                } else {
                    rfc5911::ID_AES_256_GCM
                };
                let algorithm = auth_enveloped(&message)
                    .auth_encrypted_content_info
                    .content_enc_alg
                    .oid;
                assert_eq!(algorithm, expected_oid, "{kind} {variant:?}");
            }
            let opened = decrypt(&message, std::slice::from_ref(&key))
                .unwrap_or_else(|e| panic!("{kind} {variant:?}: {e}"));
            assert_eq!(opened.plaintext, ENTITY, "{kind} {variant:?}");
            assert_eq!(opened.fingerprint, fingerprint(&party.certificate()));
        }
    }
}

#[test]
fn openssl_opens_what_we_encrypt_as_auth_enveloped_data() {
    let dir = TempDir::new().unwrap();
    let parties = [
        Party::encryption(dir.path(), "rsa", "rsa"),
        Party::encryption(dir.path(), "p256", "P-256"),
        Party::encryption(dir.path(), "p384", "P-384"),
    ];
    let certs: Vec<Certificate> = parties.iter().map(Party::certificate).collect();
    let message = encrypt_authenticated(ENTITY, &certs).unwrap();
    let data = auth_enveloped(&message);
    assert_eq!(data.version, CmsVersion::V0, "RFC 5083: always 0");
    assert_eq!(data.recip_infos.0.len(), 3);
    let algorithm = &data.auth_encrypted_content_info.content_enc_alg;
    assert_eq!(algorithm.oid, rfc5911::ID_AES_256_GCM);
    let params: GcmParameters = algorithm.parameters.as_ref().unwrap().decode_as().unwrap();
    assert_eq!(params.nonce.as_bytes().len(), 12);
    assert_eq!(params.icv_len, 16);
    assert_eq!(data.mac.as_bytes().len(), 16);
    assert!(data.auth_attrs.is_none() && data.unauth_attrs.is_none());
    for party in &parties {
        assert_eq!(party.openssl_decrypt(dir.path(), &message), ENTITY);
        assert_eq!(
            decrypt(&message, &[party.sckm()]).unwrap().plaintext,
            ENTITY
        );
    }

    // Two messages never share a nonce (each has a key of its own as well).
    let again = auth_enveloped(&encrypt_authenticated(ENTITY, &certs).unwrap());
    assert_ne!(
        again.auth_encrypted_content_info.content_enc_alg.parameters,
        data.auth_encrypted_content_info.content_enc_alg.parameters
    );
    // The same checks as EnvelopedData: nobody to encrypt to, or a signing certificate.
    assert!(matches!(
        encrypt_authenticated(ENTITY, &[]),
        Err(CryptoError::Key(_))
    ));
    let signer = Party::new(dir.path(), "signer", "rsa", "digitalSignature");
    assert!(matches!(
        encrypt_authenticated(ENTITY, &[signer.certificate()]),
        Err(CryptoError::Key(reason)) if reason.contains("signing only")
    ));
}

#[test]
fn a_ten_mib_entity_survives_aes_gcm_both_ways() {
    let dir = TempDir::new().unwrap();
    let bob = Party::encryption(dir.path(), "bob", "rsa");
    let mut entity = b"Content-Type: application/octet-stream\r\n\r\n".to_vec();
    let mut noise = vec![0u8; 10 * 1024 * 1024];
    OsRng.fill_bytes(&mut noise);
    entity.extend(noise);
    let message = encrypt_authenticated(&entity, &[bob.certificate()]).unwrap();
    assert!(bob.openssl_decrypt(dir.path(), &message) == entity);
    let input = dir.path().join("entity.txt");
    std::fs::write(&input, &entity).unwrap();
    let ber = openssl(
        dir.path(),
        &[
            "cms",
            "-encrypt",
            "-binary",
            "-stream",
            "-aes-256-gcm",
            "-outform",
            "DER",
            "-in",
            input.to_str().unwrap(),
            bob.cert.to_str().unwrap(),
        ],
    );
    assert_eq!(&ber[..2], &[0x30, 0x80]);
    assert!(decrypt(&ber, &[bob.sckm()]).unwrap().plaintext == entity);
}

/// Changes one bit of the last occurrence of `field` in `message`.
fn flip_in(message: &[u8], field: &[u8]) -> Vec<u8> {
    let at = memchr::memmem::rfind(message, field).expect("the field is in the message");
    let mut out = message.to_vec();
    out[at + field.len() / 2] ^= 0x01;
    out
}

fn assert_refused(result: Result<Decrypted, CryptoError>, what: &str) {
    assert!(
        matches!(&result, Err(CryptoError::Malformed(reason)) if reason.contains("fails its integrity check")),
        "{what}: {result:?}"
    );
}

#[test]
fn a_changed_tag_ciphertext_or_nonce_releases_nothing() {
    let dir = TempDir::new().unwrap();
    for kind in ["rsa", "P-256"] {
        let party = Party::encryption(dir.path(), "bob", kind);
        let key = party.sckm();
        let keys = std::slice::from_ref(&key);
        for message in [
            party.openssl_encrypt(dir.path(), &["-aes-256-gcm", "-outform", "DER"]),
            encrypt_authenticated(ENTITY, &[party.certificate()]).unwrap(),
        ] {
            assert_eq!(decrypt(&message, keys).unwrap().plaintext, ENTITY);
            let data = auth_enveloped(&message);
            let ciphertext = data
                .auth_encrypted_content_info
                .encrypted_content
                .as_ref()
                .unwrap()
                .as_bytes()
                .to_vec();
            let params: GcmParameters = data
                .auth_encrypted_content_info
                .content_enc_alg
                .parameters
                .as_ref()
                .unwrap()
                .decode_as()
                .unwrap();
            for (what, field) in [
                ("tag", data.mac.as_bytes().to_vec()),
                ("ciphertext", ciphertext.clone()),
                ("nonce", params.nonce.as_bytes().to_vec()),
            ] {
                assert_refused(
                    decrypt(&flip_in(&message, &field), keys),
                    &format!("{kind}: a changed {what}"),
                );
            }

            // A tag cut short is refused before any key is tried.
            let mut short = data.clone();
            short.mac = OctetString::new(&data.mac.as_bytes()[..12]).unwrap();
            assert_malformed(decrypt(&content_info(&short), keys), "mac of 12 bytes");
            // And so is a tag length GCM does not have.
            let mut odd = data.clone();
            let mut odd_params = params.clone();
            odd_params.icv_len = 8;
            odd.auth_encrypted_content_info.content_enc_alg.parameters =
                Some(Any::encode_from(&odd_params).unwrap());
            assert_malformed(decrypt(&content_info(&odd), keys), "tag length 8");
            // A ciphertext spliced in from another message under the same key's name.
            let other =
                auth_enveloped(&encrypt_authenticated(b"other", &[party.certificate()]).unwrap());
            let mut spliced = data.clone();
            spliced.auth_encrypted_content_info.encrypted_content =
                other.auth_encrypted_content_info.encrypted_content;
            assert_refused(
                decrypt(&content_info(&spliced), keys),
                "a spliced ciphertext",
            );
        }
    }
}

/// AuthEnvelopedData to `party` (RSA) with a content-type authAttr, made by hand: no
/// tool we have writes authAttrs (Bouncy Castle does). OpenSSL 3.0 cannot even read
/// them: it expects them under [2] and feeds them to GCM as nothing (openssl/openssl
/// issues 26101 and 31635, fixed in 2026). `aad` is what the tag is computed over;
/// RFC 5083 says it is the DER of the authAttrs as a SET OF.
fn with_auth_attrs(party: &Party, aad: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let cert = party.certificate();
    let content_key = [7u8; 32];
    let nonce = [9u8; 12];
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap();
    let rsa = rsa::RsaPublicKey::from_public_key_der(&spki).unwrap();
    let rid = RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: cert.tbs_certificate.issuer.clone(),
        serial_number: cert.tbs_certificate.serial_number.clone(),
    });
    let mut rng = OsRng;
    let info = KeyTransRecipientInfoBuilder::new(rid, KeyEncryptionInfo::Rsa(rsa), &mut rng)
        .unwrap()
        .build(&content_key)
        .unwrap();
    let content_type = Attribute {
        oid: rfc5911::ID_CONTENT_TYPE,
        values: SetOfVec::try_from(vec![Any::encode_from(&rfc5911::ID_DATA).unwrap()]).unwrap(),
    };
    let attrs = SetOfVec::try_from(vec![content_type]).unwrap();
    let mut ciphertext = ENTITY.to_vec();
    let tag = AesGcm::<aes::Aes256, U12, U16>::new_from_slice(&content_key)
        .unwrap()
        .encrypt_in_place_detached(
            GenericArray::from_slice(&nonce),
            &aad(&attrs.to_der().unwrap()),
            &mut ciphertext,
        )
        .unwrap();
    let params = GcmParameters {
        nonce: OctetString::new(nonce.to_vec()).unwrap(),
        icv_len: 16,
    };
    content_info(&AuthEnvelopedData {
        version: CmsVersion::V0,
        originator_info: None,
        recip_infos: RecipientInfos::try_from(vec![info]).unwrap(),
        auth_encrypted_content_info: EncryptedContentInfo {
            content_type: rfc5911::ID_DATA,
            content_enc_alg: x509_cert::spki::AlgorithmIdentifierOwned {
                oid: rfc5911::ID_AES_256_GCM,
                parameters: Some(Any::encode_from(&params).unwrap()),
            },
            encrypted_content: Some(OctetString::new(ciphertext).unwrap()),
        },
        auth_attrs: Some(attrs),
        mac: OctetString::new(tag.to_vec()).unwrap(),
        unauth_attrs: None,
    })
}

#[test]
fn auth_attrs_are_authenticated_as_a_set_of() {
    let dir = TempDir::new().unwrap();
    let bob = Party::encryption(dir.path(), "bob", "rsa");
    let keys = [bob.sckm()];
    let message = with_auth_attrs(&bob, |set_of| set_of.to_vec());
    // The attributes are sent under [1] IMPLICIT and authenticated under SET OF.
    assert!(auth_enveloped(&message).auth_attrs.is_some());
    assert_eq!(decrypt(&message, &keys).unwrap().plaintext, ENTITY);

    // The tag binds the attributes: the content-type attribute's value (the last id-data
    // in the message) changed, and nothing opens.
    let id_data = rfc5911::ID_DATA.to_der().unwrap();
    assert_refused(
        decrypt(&flip_in(&message, &id_data), &keys),
        "a changed authAttr",
    );
    // Tags computed over no associated data, or over the [1] form, are not accepted.
    for (wrong, what) in [
        (with_auth_attrs(&bob, |_| Vec::new()), "no associated data"),
        (
            with_auth_attrs(&bob, |set_of| [&[0xa1u8][..], &set_of[1..]].concat()),
            "the [1] form",
        ),
    ] {
        assert_refused(decrypt(&wrong, &keys), what);
    }
}

#[test]
fn only_aes_gcm_is_read_as_authenticated_content() {
    let dir = TempDir::new().unwrap();
    let bob = Party::encryption(dir.path(), "bob", "rsa");
    let keys = [bob.sckm()];
    let message = encrypt_authenticated(ENTITY, &[bob.certificate()]).unwrap();
    let data = auth_enveloped(&message);

    // CBC where GCM belongs: no tag would protect it, so it is refused.
    let mut cbc = data.clone();
    cbc.auth_encrypted_content_info.content_enc_alg = x509_cert::spki::AlgorithmIdentifierOwned {
        oid: rfc5911::ID_AES_256_CBC,
        parameters: Some(Any::encode_from(&OctetString::new(vec![0u8; 16]).unwrap()).unwrap()),
    };
    assert_malformed(
        decrypt(&content_info(&cbc), &keys),
        "unsupported authenticated content encryption algorithm",
    );
    // A nonce of another length.
    let mut long_nonce = data.clone();
    long_nonce
        .auth_encrypted_content_info
        .content_enc_alg
        .parameters = Some(
        Any::encode_from(&GcmParameters {
            nonce: OctetString::new(vec![0u8; 16]).unwrap(),
            icv_len: 16,
        })
        .unwrap(),
    );
    assert_malformed(
        decrypt(&content_info(&long_nonce), &keys),
        "nonce of 16 bytes",
    );
    // No parameters at all.
    let mut bare = data.clone();
    bare.auth_encrypted_content_info.content_enc_alg.parameters = None;
    assert_malformed(decrypt(&content_info(&bare), &keys), "without parameters");
    // No mac: the structure is cut off after the EncryptedContentInfo.
    let no_mac = {
        let eci = data.auth_encrypted_content_info.to_der().unwrap();
        let body = [
            CmsVersion::V0.to_der().unwrap(),
            data.recip_infos.to_der().unwrap(),
            eci,
        ]
        .concat();
        let oid = rfc5911::ID_CT_AUTH_ENVELOPED_DATA.to_der().unwrap();
        tlv(0x30, &[oid, tlv(0xa0, &tlv(0x30, &body))].concat())
    };
    assert_malformed(decrypt(&no_mac, &keys), "without a mac");
}
