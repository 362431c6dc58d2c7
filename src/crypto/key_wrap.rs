//! RFC 3394 AES key wrap, around RustCrypto's aes-kw: S/MIME's key agreement recipients
//! and OpenPGP's ECDH both wrap the session key with it.

use zeroize::Zeroizing;

/// RFC 3394 AES key wrap with a KEK of 16, 24 or 32 bytes.
pub fn aes_wrap(kek: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0; key.len() + 8];
    let done = match kek.len() {
        16 => aes_kw::KekAes128::try_from(kek).ok()?.wrap(key, &mut out),
        24 => aes_kw::KekAes192::try_from(kek).ok()?.wrap(key, &mut out),
        32 => aes_kw::KekAes256::try_from(kek).ok()?.wrap(key, &mut out),
        _ => return None,
    };
    done.ok().map(|_| out)
}

/// RFC 3394 AES key unwrap; `None` when the integrity check fails.
pub fn aes_unwrap(kek: &[u8], wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    // A content key is at most 32 bytes; a longer wrapped key is not one of ours.
    if !(16..=72).contains(&wrapped.len()) {
        return None;
    }
    let mut out = Zeroizing::new(vec![0; wrapped.len() - 8]);
    let done = match kek.len() {
        16 => aes_kw::KekAes128::try_from(kek)
            .ok()?
            .unwrap(wrapped, &mut out),
        24 => aes_kw::KekAes192::try_from(kek)
            .ok()?
            .unwrap(wrapped, &mut out),
        32 => aes_kw::KekAes256::try_from(kek)
            .ok()?
            .unwrap(wrapped, &mut out),
        _ => return None,
    };
    done.ok().map(|_| out)
}
