//! AES-256-GCM, the only AEAD used.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use crate::error::{Error, Result};

/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;

/// An AES-256-GCM key. The provider keeps the expanded key schedule and wipes it on drop.
pub struct AeadKey(LessSafeKey);

impl AeadKey {
    /// Makes a key from 32 bytes.
    pub fn new(key: &[u8; 32]) -> Result<Self> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, key).map_err(|_| Error::Crypto("AES-256-GCM key"))?;
        Ok(AeadKey(LessSafeKey::new(unbound)))
    }

    /// Encrypts `in_out` in place and returns the tag.
    pub fn seal_in_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| Error::Crypto("AES-256-GCM seal"))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `in_out` in place, checking `tag`. Returns `false` when authentication fails; the
    /// buffer content is then unspecified and must be discarded by the caller.
    #[must_use]
    pub fn open_in_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        tag: &[u8],
        in_out: &mut [u8],
    ) -> bool {
        self.0
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                tag,
                in_out,
            )
            .is_ok()
    }

    /// Encrypts a short message, returning ciphertext || tag.
    pub fn seal(&self, nonce: [u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut buf = plaintext.to_vec();
        let tag = self.seal_in_place(nonce, aad, &mut buf)?;
        buf.extend_from_slice(&tag);
        Ok(buf)
    }

    /// Decrypts ciphertext || tag. `None` when authentication fails.
    pub fn open(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        let split = sealed.len().checked_sub(TAG_LEN)?;
        let (ct, tag) = sealed.split_at(split);
        let mut buf = zeroize::Zeroizing::new(ct.to_vec());
        self.open_in_place(nonce, aad, tag, &mut buf).then_some(buf)
    }
}
