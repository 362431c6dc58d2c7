//! Decryption: read the EnvelopedData or AuthEnvelopedData (BER or DER) and its
//! RecipientInfos, find the ones that name one of our certificates, unwrap the content
//! key (RSA key transport or ECDH key agreement) and decrypt the content: AES-CBC or
//! 3DES-CBC for EnvelopedData, AES-GCM for AuthEnvelopedData, whose tag is checked
//! before any plaintext exists.

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::ContentInfo;
use cms::enveloped_data::{KeyTransRecipientInfo, OriginatorIdentifierOrKey, RecipientIdentifier};
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{AnyRef, OctetString};
use der::{Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use rand::RngCore;
use rand::rngs::OsRng;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use super::algorithms::{
    ContentCipher, Curve, aes_unwrap, ecc_cms_shared_info, kdf_hash, wrap_key_len, x963_kdf,
};
use super::auth_enveloped::Gcm;
use super::key_transport::{RsaPadding, rsa_decrypt};
use super::{SmimeKey, fingerprint, malformed};
use crate::crypto::{CryptoError, Decrypted, MAX_PLAINTEXT, ber};
use crate::mail::mime::has_header_block;

/// The largest message we try to open: the plaintext limit plus room for the envelope.
const MAX_MESSAGE: usize = MAX_PLAINTEXT + 1024 * 1024;
/// The most RecipientInfos we read from one message. Mail to a large list is encrypted to
/// hundreds of people; many more is an attack on our time.
const MAX_RECIPIENT_INFOS: usize = 1024;
/// The most recipient keys we read from one KeyAgreeRecipientInfo.
const MAX_KARI_KEYS: usize = 256;
/// The most unwrap attempts for one message. Each costs a private-key operation and a
/// pass over the content, so a message naming our certificate a thousand times must not
/// get a thousand of them.
const MAX_ATTEMPTS: usize = 4;

/// Decrypts CMS EnvelopedData or AuthEnvelopedData (DER, or the indefinite-length BER
/// that Thunderbird, Outlook and `openssl cms -stream` send) with the first of `keys`
/// that matches a RecipientInfo: a KeyTransRecipientInfo by issuer and serial number or
/// by subject key identifier (RSA, PKCS#1 v1.5 or RSAES-OAEP), or a
/// KeyAgreeRecipientInfo (EC P-256 and P-384, ephemeral-static ECDH). Content:
/// AES-128/192/256-CBC and 3DES-CBC in EnvelopedData, AES-128/192/256-GCM in
/// AuthEnvelopedData (RFC 5083, RFC 5084), with its authAttrs as associated data.
///
/// Garbage, unsupported algorithms and oversized or too deeply nested input give
/// [`CryptoError::Malformed`], and so does AuthEnvelopedData whose tag does not check
/// out: nothing of its content is returned. No key named by the message gives
/// [`CryptoError::NoKey`].
pub fn decrypt(message: &[u8], keys: &[SmimeKey]) -> Result<Decrypted, CryptoError> {
    let envelope = Envelope::parse(message)?;
    let protection = envelope.protection()?;

    let mut first_error = None;
    let mut attempts = 0;
    'keys: for key in keys {
        for slot in envelope.slots_for(&key.cert) {
            if attempts == MAX_ATTEMPTS {
                break 'keys;
            }
            attempts += 1;
            let opened = slot
                .unwrap(key, protection.key_len())
                .and_then(|content_key| {
                    protection
                        .open(&content_key, &envelope.ciphertext)
                        .map_err(|failure| {
                            malformed(format!(
                                "the content {failure} with certificate {}: wrong key or \
                                 damaged message",
                                fingerprint(&key.cert)
                            ))
                        })
                });
            match opened {
                Ok(plaintext) => {
                    return Ok(Decrypted {
                        plaintext,
                        fingerprint: fingerprint(&key.cert),
                    });
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    Err(first_error.unwrap_or(CryptoError::NoKey))
}

/// What decryption needs from an EnvelopedData or AuthEnvelopedData.
struct Envelope {
    recipients: Vec<Recipient>,
    content_algorithm: AlgorithmIdentifierOwned,
    ciphertext: Vec<u8>,
    /// AuthEnvelopedData's associated data and tag; `None` for EnvelopedData.
    authenticated: Option<Authenticated>,
}

/// The fields AuthEnvelopedData has after its EncryptedContentInfo.
struct Authenticated {
    /// GCM's associated data: the DER of the authAttrs as a SET OF (RFC 5083 §2.1), or
    /// nothing when there are none.
    aad: Vec<u8>,
    /// The `mac` field: the GCM tag.
    tag: Vec<u8>,
}

impl Authenticated {
    /// `fields`: what follows the authEncryptedContentInfo, that is
    /// `[1] IMPLICIT authAttrs OPTIONAL, mac, [2] IMPLICIT unauthAttrs OPTIONAL`.
    fn parse(fields: &[AnyRef<'_>]) -> Result<Self, CryptoError> {
        let auth_attrs = Tag::ContextSpecific {
            constructed: true,
            number: TagNumber::N1,
        };
        let mut fields = fields.iter();
        let mut next = fields.next();
        let mut aad = Vec::new();
        if let Some(attrs) = next.filter(|f| f.tag() == auth_attrs) {
            // The attributes are authenticated under the SET OF tag, not the implicit
            // [1] they are sent with.
            aad = AnyRef::new(Tag::Set, attrs.value())
                .and_then(|set| set.to_der())
                .map_err(malformed)?;
            next = fields.next();
        }
        let tag = next
            .filter(|f| f.tag() == Tag::OctetString)
            .ok_or_else(|| malformed("AuthEnvelopedData without a mac"))?
            .value()
            .to_vec();
        Ok(Authenticated { aad, tag })
    }
}

/// How the content is protected, once its algorithm has been read.
enum Protection<'a> {
    /// EnvelopedData: a block cipher in CBC mode.
    Cbc(ContentCipher),
    /// AuthEnvelopedData: AES-GCM and the fields its tag covers.
    Gcm(Gcm, &'a Authenticated),
}

impl Protection<'_> {
    fn key_len(&self) -> usize {
        match self {
            Protection::Cbc(cipher) => cipher.key_len(),
            Protection::Gcm(gcm, _) => gcm.key_len(),
        }
    }

    /// The plaintext, or what went wrong, as in "the content {} with certificate X".
    fn open(&self, key: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, &'static str> {
        match self {
            Protection::Cbc(cipher) => {
                let plaintext = cipher.decrypt(key, ciphertext).ok_or("does not decrypt")?;
                // A wrong RSA key goes on with a random content key (RFC 3218 §2.3), and
                // CBC then finds valid padding about one time in 256: noise. S/MIME's
                // content is a MIME entity (RFC 8551 §3.1) or at least text, which noise
                // is not, so noise fails here like any wrong key, and is never delivered
                // as the message. The sender learns nothing from it: both failures look
                // the same to it, and the recipient gets the message as it arrived.
                if !is_content(&plaintext) {
                    return Err("does not decrypt to a MIME entity or text");
                }
                Ok(plaintext)
            }
            Protection::Gcm(gcm, auth) => gcm
                .open(key, ciphertext, &auth.aad, &auth.tag)
                .ok_or("fails its integrity check"),
        }
    }
}

/// Whether `content` can be what was encrypted: a MIME entity (RFC 8551 §3.1), with
/// header fields or with an empty header; or, as OpenSSL sends without `-text` (as in
/// Thunderbird's interop messages), bare text: UTF-8 with no control characters but
/// tab, form feed, line ends and escape (ISO-2022-JP's shifts are 7-bit text), which
/// the delivered message then labels as text.
/// Noise is neither: for its shortest, 15 bytes, about one time in 10^5.
fn is_content(content: &[u8]) -> bool {
    has_header_block(content)
        || content.starts_with(b"\r\n")
        || std::str::from_utf8(content).is_ok_and(|text| {
            !text
                .chars()
                .any(|c| c.is_control() && !"\t\x0c\r\n\x1b".contains(c))
        })
}

/// The DER elements one after another in `bytes`, at most `max` of them.
fn elements(bytes: &[u8], max: usize) -> Result<Vec<AnyRef<'_>>, CryptoError> {
    let mut reader = SliceReader::new(bytes).map_err(malformed)?;
    let mut out = Vec::new();
    while !reader.is_finished() {
        if out.len() == max {
            return Err(malformed(format!("more than {max} elements")));
        }
        out.push(AnyRef::decode(&mut reader).map_err(malformed)?);
    }
    Ok(out)
}

impl Envelope {
    /// Reads the parts of an EnvelopedData or AuthEnvelopedData that decryption uses.
    /// The structure is walked by hand rather than decoded whole with cms's
    /// `EnvelopedData` (or our [`AuthEnvelopedData`](super::auth_enveloped::AuthEnvelopedData)),
    /// for three reasons:
    /// a BER `[0] IMPLICIT` encryptedContent stays constructed after [`ber::to_der`] and
    /// der would refuse it; decoding a SET sorts it (quadratic in an attacker's hands);
    /// and one RecipientInfo of a kind we cannot read must not hide ours.
    fn parse(message: &[u8]) -> Result<Self, CryptoError> {
        if message.len() > MAX_MESSAGE {
            return Err(malformed(format!(
                "message of {} bytes is over the {MAX_MESSAGE}-byte limit",
                message.len()
            )));
        }
        let der = ber::to_der(message).map_err(|e| malformed(format!("not CMS: {e}")))?;
        let info = ContentInfo::from_der(&der)
            .map_err(|e| malformed(format!("not a CMS ContentInfo: {e}")))?;
        drop(der);
        let authenticated = match info.content_type {
            rfc5911::ID_ENVELOPED_DATA => false,
            rfc5911::ID_CT_AUTH_ENVELOPED_DATA => true,
            rfc5911::ID_SIGNED_DATA => {
                return Err(malformed(
                    "signed-data, not enveloped-data (the signature layer is outside)",
                ));
            }
            other => {
                return Err(malformed(format!(
                    "CMS content type {other} is not enveloped-data"
                )));
            }
        };
        if info.content.tag() != Tag::Sequence {
            return Err(malformed("EnvelopedData is not a SEQUENCE"));
        }
        // EnvelopedData: version, originatorInfo?, recipientInfos, encryptedContentInfo,
        // unprotectedAttrs?. AuthEnvelopedData has the same up to its
        // authEncryptedContentInfo, then authAttrs?, mac, unauthAttrs?.
        let fields = elements(info.content.value(), if authenticated { 7 } else { 5 })?;
        if fields.first().map(Tagged::tag) != Some(Tag::Integer) {
            return Err(malformed("EnvelopedData without a version"));
        }
        let set = fields
            .iter()
            .position(|f| f.tag() == Tag::Set)
            .ok_or_else(|| malformed("EnvelopedData without RecipientInfos"))?;
        let eci = fields
            .get(set + 1)
            .filter(|f| f.tag() == Tag::Sequence)
            .ok_or_else(|| malformed("EnvelopedData without EncryptedContentInfo"))?;

        let recipients: Vec<Recipient> = elements(fields[set].value(), MAX_RECIPIENT_INFOS)?
            .iter()
            .filter_map(Recipient::parse)
            .collect();
        if recipients.is_empty() {
            return Err(malformed("no readable RecipientInfo"));
        }

        // contentType, contentEncryptionAlgorithm, [0] IMPLICIT encryptedContent
        let eci = elements(eci.value(), 3)?;
        let content_algorithm = eci
            .get(1)
            .and_then(|alg| AlgorithmIdentifierOwned::from_der(&alg.to_der().ok()?).ok())
            .ok_or_else(|| malformed("EncryptedContentInfo without an algorithm"))?;
        let primitive = Tag::ContextSpecific {
            constructed: false,
            number: TagNumber::N0,
        };
        let constructed = Tag::ContextSpecific {
            constructed: true,
            number: TagNumber::N0,
        };
        let ciphertext = match eci.get(2) {
            Some(content) if content.tag() == primitive => content.value().to_vec(),
            // BER's segmented form: OCTET STRING pieces, already primitive after to_der.
            Some(content) if content.tag() == constructed => {
                ber::primitive_contents(content.value()).map_err(malformed)?
            }
            Some(_) => return Err(malformed("encryptedContent of the wrong type")),
            None => return Err(malformed("detached encrypted content is not supported")),
        };
        let authenticated = match authenticated {
            true => Some(Authenticated::parse(&fields[set + 2..])?),
            false => None,
        };
        Ok(Envelope {
            recipients,
            content_algorithm,
            ciphertext,
            authenticated,
        })
    }

    /// The content's protection, checked against the ciphertext's length and the tag's.
    fn protection(&self) -> Result<Protection<'_>, CryptoError> {
        let length = self.ciphertext.len();
        let Some(authenticated) = &self.authenticated else {
            let cipher = ContentCipher::from_algorithm(&self.content_algorithm)?;
            if length == 0 || !length.is_multiple_of(cipher.block_len()) {
                return Err(malformed(format!(
                    "encrypted content of {length} bytes is not whole blocks"
                )));
            }
            if length > MAX_PLAINTEXT + cipher.block_len() {
                return Err(malformed("encrypted content is over the plaintext limit"));
            }
            return Ok(Protection::Cbc(cipher));
        };
        let gcm = Gcm::from_algorithm(&self.content_algorithm)?;
        if authenticated.tag.len() != gcm.tag_len() {
            return Err(malformed(format!(
                "a mac of {} bytes where the parameters announce {}",
                authenticated.tag.len(),
                gcm.tag_len()
            )));
        }
        if length > MAX_PLAINTEXT {
            return Err(malformed("encrypted content is over the plaintext limit"));
        }
        Ok(Protection::Gcm(gcm, authenticated))
    }

    /// The places in this message where `cert`'s key may find the content key.
    fn slots_for<'a>(&'a self, cert: &'a Certificate) -> impl Iterator<Item = Slot<'a>> + 'a {
        self.recipients.iter().flat_map(move |recipient| {
            let found: Vec<Slot<'a>> = match recipient {
                Recipient::Ktri(ktri) if ktri_names(&ktri.rid, cert) => vec![Slot::Ktri(ktri)],
                Recipient::Kari(kari) => kari
                    .keys
                    .iter()
                    .filter(|(rid, _)| rid.names(cert))
                    .map(|(_, wrapped)| Slot::Kari(kari, wrapped))
                    .collect(),
                _ => Vec::new(),
            };
            found
        })
    }
}

/// A RecipientInfo of a kind we can open.
enum Recipient {
    Ktri(KeyTransRecipientInfo),
    Kari(Kari),
}

impl Recipient {
    /// `None` for kinds we do not open (KEK, password, other) and for ones we cannot read.
    fn parse(element: &AnyRef<'_>) -> Option<Self> {
        let kari = Tag::ContextSpecific {
            constructed: true,
            number: TagNumber::N1,
        };
        if element.tag() == Tag::Sequence {
            KeyTransRecipientInfo::from_der(&element.to_der().ok()?)
                .ok()
                .map(Recipient::Ktri)
        } else if element.tag() == kari {
            Kari::parse(element.value()).map(Recipient::Kari)
        } else {
            None
        }
    }
}

/// The parts of a KeyAgreeRecipientInfo (RFC 5652 §6.2.2) that decryption uses.
///
/// Read by hand because cms 0.2.3's `KeyAgreeRecipientIdentifier` cannot decode the
/// `rKeyId` alternative at all: it declares `[0] IMPLICIT RecipientKeyIdentifier`
/// primitive, while a SEQUENCE under an implicit tag is constructed, and der then
/// refuses either form. OpenSSL's `-keyid` sends that alternative.
struct Kari {
    originator: OriginatorIdentifierOrKey,
    ukm: Option<Vec<u8>>,
    key_enc_alg: AlgorithmIdentifierOwned,
    /// recipientEncryptedKeys: who, and the wrapped content key.
    keys: Vec<(KariRecipient, Vec<u8>)>,
}

/// KeyAgreeRecipientIdentifier.
enum KariRecipient {
    IssuerAndSerialNumber(IssuerAndSerialNumber),
    KeyId(SubjectKeyIdentifier),
}

impl KariRecipient {
    fn names(&self, cert: &Certificate) -> bool {
        match self {
            KariRecipient::IssuerAndSerialNumber(ias) => issued_as(ias, cert),
            KariRecipient::KeyId(ski) => has_key_id(ski, cert),
        }
    }
}

impl Kari {
    /// `value`: the contents of the `[1]` KeyAgreeRecipientInfo.
    fn parse(value: &[u8]) -> Option<Self> {
        let explicit = |n| Tag::ContextSpecific {
            constructed: true,
            number: n,
        };
        // version, [0] originator, [1] ukm?, keyEncryptionAlgorithm, recipientEncryptedKeys
        let fields = elements(value, 5).ok()?;
        let mut fields = fields.iter();
        if fields.next()?.tag() != Tag::Integer {
            return None;
        }
        let originator = fields
            .next()
            .filter(|f| f.tag() == explicit(TagNumber::N0))?;
        let originator = OriginatorIdentifierOrKey::from_der(originator.value()).ok()?;
        let mut next = fields.next()?;
        let mut ukm = None;
        if next.tag() == explicit(TagNumber::N1) {
            ukm = Some(OctetString::from_der(next.value()).ok()?.into_bytes());
            next = fields.next()?;
        }
        let key_enc_alg = AlgorithmIdentifierOwned::from_der(&next.to_der().ok()?).ok()?;
        let encrypted_keys = fields.next().filter(|f| f.tag() == Tag::Sequence)?;
        let mut keys = Vec::new();
        for rek in elements(encrypted_keys.value(), MAX_KARI_KEYS).ok()? {
            let [rid, wrapped] = elements(rek.value(), 2).ok()?.try_into().ok()?;
            let rid = if rid.tag() == Tag::Sequence {
                KariRecipient::IssuerAndSerialNumber(
                    IssuerAndSerialNumber::from_der(&rid.to_der().ok()?).ok()?,
                )
            } else if rid.tag() == explicit(TagNumber::N0) {
                // RecipientKeyIdentifier: subjectKeyIdentifier, date?, other?
                let key_id = *elements(rid.value(), 3).ok()?.first()?;
                KariRecipient::KeyId(SubjectKeyIdentifier::from_der(&key_id.to_der().ok()?).ok()?)
            } else {
                return None;
            };
            if wrapped.tag() != Tag::OctetString {
                return None;
            }
            keys.push((rid, wrapped.value().to_vec()));
        }
        Some(Kari {
            originator,
            ukm,
            key_enc_alg,
            keys,
        })
    }
}

fn issued_as(ias: &IssuerAndSerialNumber, cert: &Certificate) -> bool {
    ias.issuer == cert.tbs_certificate.issuer
        && ias.serial_number == cert.tbs_certificate.serial_number
}

fn has_key_id(ski: &SubjectKeyIdentifier, cert: &Certificate) -> bool {
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|ext| ext.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER)
        .any(|ext| {
            SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes()).is_ok_and(|own| own == *ski)
        })
}

fn ktri_names(rid: &RecipientIdentifier, cert: &Certificate) -> bool {
    match rid {
        RecipientIdentifier::IssuerAndSerialNumber(ias) => issued_as(ias, cert),
        RecipientIdentifier::SubjectKeyIdentifier(ski) => has_key_id(ski, cert),
    }
}

/// One wrapped copy of the content key that names our certificate.
enum Slot<'a> {
    Ktri(&'a KeyTransRecipientInfo),
    Kari(&'a Kari, &'a [u8]),
}

impl Slot<'_> {
    /// The content key of `key_len` bytes, unwrapped with `key`. EnvelopedData and
    /// AuthEnvelopedData carry it the same way.
    fn unwrap(&self, key: &SmimeKey, key_len: usize) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        match self {
            Slot::Ktri(ktri) => {
                let padding = RsaPadding::from_algorithm(&ktri.key_enc_alg)?;
                match rsa_decrypt(&key.private_key, &padding, ktri.enc_key.as_bytes())? {
                    Some(content_key) if content_key.len() == key_len => Ok(content_key),
                    // RFC 3218 §2.3: a failed unwrap goes on with a random key, so that a
                    // padding error looks like any other wrong key (Bleichenbacher, Marvin).
                    // Under GCM the random key fails the tag, as a wrong key does.
                    _ => {
                        let mut random = Zeroizing::new(vec![0; key_len]);
                        OsRng.fill_bytes(&mut random);
                        Ok(random)
                    }
                }
            }
            Slot::Kari(kari, wrapped) => kari_unwrap(kari, wrapped, key, key_len),
        }
    }
}

/// The content key from a KeyAgreeRecipientInfo (RFC 5753, ephemeral-static ECDH).
fn kari_unwrap(
    kari: &Kari,
    wrapped: &[u8],
    key: &SmimeKey,
    key_len: usize,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let OriginatorIdentifierOrKey::OriginatorKey(originator) = &kari.originator else {
        return Err(malformed(
            "static-static ECDH (an originator certificate) is not supported",
        ));
    };
    let scheme = &kari.key_enc_alg.oid;
    let hash = kdf_hash(scheme)
        .ok_or_else(|| malformed(format!("unsupported key agreement algorithm {scheme}")))?;
    let wrap = kari
        .key_enc_alg
        .parameters
        .as_ref()
        .and_then(|p| AlgorithmIdentifierOwned::from_der(&p.to_der().ok()?).ok())
        .ok_or_else(|| malformed("key agreement without a key-wrap algorithm"))?;
    let kek_len = wrap_key_len(&wrap.oid)
        .ok_or_else(|| malformed(format!("unsupported key-wrap algorithm {}", wrap.oid)))?;
    let spki = &key.cert.tbs_certificate.subject_public_key_info;
    let curve = (spki.algorithm.oid == rfc5912::ID_EC_PUBLIC_KEY)
        .then(|| Curve::of(&spki.algorithm))
        .flatten()
        .ok_or_else(|| {
            CryptoError::Key(format!(
                "certificate {} is not an EC P-256/P-384 key",
                fingerprint(&key.cert)
            ))
        })?;
    let ephemeral = originator
        .public_key
        .as_bytes()
        .ok_or_else(|| malformed("originator key is not whole bytes"))?;
    let z = curve
        .agree_static(key.private_key.pkcs8(), ephemeral)
        .map_err(|e| match e {
            Some(reason) => CryptoError::Key(reason),
            None => malformed("originator key is not a point on the recipient's curve"),
        })?;
    let ukm = kari.ukm.as_deref();
    let shared_info = ecc_cms_shared_info(&wrap, ukm, kek_len).map_err(malformed)?;
    let kek = x963_kdf(hash, &z, &shared_info, kek_len);
    aes_unwrap(&kek, wrapped)
        .filter(|content_key| content_key.len() == key_len)
        .ok_or_else(|| {
            malformed(format!(
                "the content key does not unwrap with certificate {}: wrong key or damaged message",
                fingerprint(&key.cert)
            ))
        })
}
