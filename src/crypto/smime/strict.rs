//! A strict reading of AuthEnvelopedData, for what must be refused when altered in any
//! byte (a key transfer bundle). AES-GCM and the key agreement cover the content, the
//! content key and the recipient; a few fields are covered by nothing, so here each must
//! hold its one canonical value, and the whole envelope must be the DER it decodes to.

use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{OriginatorIdentifierOrKey, RecipientInfo};
use const_oid::db::{rfc5911, rfc5912};
use der::{Decode, Encode, Tagged};

use super::auth_enveloped::AuthEnvelopedData;
use super::malformed;
use crate::crypto::CryptoError;

/// Checks that `der` is an AuthEnvelopedData (DER, nothing around it) for exactly one
/// recipient by ephemeral-static ECDH, as sealgate and `openssl cms -encrypt
/// -aes-256-gcm` make it to an EC certificate: version 0, no originatorInfo, no
/// unauthenticated attributes, id-data content, a KeyAgreeRecipientInfo of version 3
/// whose originator key is id-ecPublicKey with absent, NULL or P-256/P-384 parameters.
pub fn check_strict_envelope(der: &[u8]) -> Result<(), CryptoError> {
    let info = ContentInfo::from_der(der).map_err(|e| malformed(format!("not DER CMS: {e}")))?;
    if info.content_type != rfc5911::ID_CT_AUTH_ENVELOPED_DATA {
        return Err(malformed(format!(
            "CMS content type {} is not authEnveloped-data",
            info.content_type
        )));
    }
    let envelope: AuthEnvelopedData = info
        .content
        .decode_as()
        .map_err(|e| malformed(format!("malformed AuthEnvelopedData: {e}")))?;
    let canonical = ContentInfo {
        content_type: info.content_type,
        content: der::Any::encode_from(&envelope).map_err(malformed)?,
    }
    .to_der()
    .map_err(malformed)?;
    if canonical != der {
        return Err(malformed("the envelope is not in its DER form"));
    }
    if envelope.version != CmsVersion::V0
        || envelope.originator_info.is_some()
        || envelope.unauth_attrs.is_some()
    {
        return Err(malformed(
            "the envelope has a field outside its canonical form (version, originatorInfo or unauthAttrs)",
        ));
    }
    if envelope.auth_encrypted_content_info.content_type != rfc5911::ID_DATA {
        return Err(malformed("the envelope's content type is not id-data"));
    }
    let [RecipientInfo::Kari(kari)] = envelope.recip_infos.0.as_slice() else {
        return Err(malformed(
            "the envelope must have exactly one recipient, by EC key agreement",
        ));
    };
    if kari.version != CmsVersion::V3 {
        return Err(malformed("the key agreement's version is not 3"));
    }
    let OriginatorIdentifierOrKey::OriginatorKey(originator) = &kari.originator else {
        return Err(malformed(
            "the key agreement has no ephemeral originator key",
        ));
    };
    let parameters = originator.algorithm.parameters.as_ref();
    let canonical_parameters = parameters.is_none_or(|p| {
        p.tag() == der::Tag::Null && p.value().is_empty()
            || p.decode_as::<const_oid::ObjectIdentifier>()
                .is_ok_and(|curve| curve == rfc5912::SECP_256_R_1 || curve == rfc5912::SECP_384_R_1)
    });
    if originator.algorithm.oid != rfc5912::ID_EC_PUBLIC_KEY || !canonical_parameters {
        return Err(malformed(
            "the originator key is not an id-ecPublicKey in its canonical form",
        ));
    }
    Ok(())
}
