//! The project's cryptography, on one provider: `aws-lc-rs` (AEAD, ECDH, ECDSA, HKDF, SHA-2,
//! PBKDF2; also rustls's default provider, FIPS-capable). `docs/CRYPTO.md` gives the measurements
//! behind the choice. Nothing outside this module names the provider, so it can be swapped here.

pub mod aead;
pub mod ecdh;
pub mod hash;
pub mod kdf;
pub mod sig;

pub use sig::{KeyAlgorithm, PublicKey, SigningKey};

use crate::error::{Error, Result};

/// Fills `out` with cryptographically secure random bytes.
pub fn fill_random(out: &mut [u8]) -> Result<()> {
    use aws_lc_rs::rand::SecureRandom;
    aws_lc_rs::rand::SystemRandom::new()
        .fill(out)
        .map_err(|_| Error::Crypto("random number generator failed"))
}

/// Returns `N` random bytes.
pub fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    fill_random(&mut out)?;
    Ok(out)
}

/// Compares two byte strings in time independent of where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
