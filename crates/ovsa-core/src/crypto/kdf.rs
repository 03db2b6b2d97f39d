//! Key derivation: HKDF-SHA256 (RFC 5869) and PBKDF2-HMAC-SHA256 (for keystore passphrases).

use std::num::NonZeroU32;

use aws_lc_rs::{hkdf, pbkdf2};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256: extract with `salt`, expand with the concatenation of `info` into 32 bytes.
pub fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[&[u8]]) -> Result<Zeroizing<[u8; 32]>> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let okm = prk
        .expand(info, Len(32))
        .map_err(|_| Error::Crypto("HKDF expand"))?;
    let mut out = Zeroizing::new([0u8; 32]);
    okm.fill(out.as_mut())
        .map_err(|_| Error::Crypto("HKDF fill"))?;
    Ok(out)
}

/// PBKDF2-HMAC-SHA256 of a passphrase into a 32-byte key.
pub fn pbkdf2_sha256(
    passphrase: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<Zeroizing<[u8; 32]>> {
    let iterations = NonZeroU32::new(iterations)
        .ok_or_else(|| Error::Keystore("PBKDF2 iteration count is zero".into()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        passphrase,
        out.as_mut(),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hkdf_rfc5869_case1_prefix() {
        // RFC 5869 test case 1 (first 32 bytes of OKM).
        let ikm = [0x0b; 22];
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let okm = hkdf_sha256(&ikm, &salt, &[&info]).unwrap();
        assert_eq!(
            hex::encode(okm.as_ref()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }
}
