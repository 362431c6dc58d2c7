//! Cryptographic message formats. Today: reading the BER that real S/MIME clients send.
//! Encryption and decryption (PGP/MIME, S/MIME) come with the crypto issue; nothing
//! here ever signs.

pub mod ber;
