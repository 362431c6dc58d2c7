//! CMS as S/MIME clients send it: the input is the DER or BER of a ContentInfo.
//!
//! It goes through our BER-to-DER transcoder, EnvelopedData decryption with the corpus
//! S/MIME keys (RSA PKCS#1 v1.5 and OAEP, EC P-384 key agreement; the seeds are
//! encrypted to them, so mutations reach the content decryption), and the SignedData
//! reading and signature checks of harvesting.
//!
//! Besides not panicking: DER is BER, so transcoding our own output changes nothing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::crypto::{ber, smime};
use sealgate::keys::harvest;
use sealgate_fuzz::SMIME_SCKM;

fuzz_target!(|data: &[u8]| {
    if let Ok(der) = ber::to_der(data) {
        assert_eq!(ber::to_der(&der).as_ref(), Ok(&der), "DER transcoded again");
    }
    let _ = smime::decrypt(data, &SMIME_SCKM);
    let _ = harvest::smime::verify(data, None);
});
