//! The chunked AEAD stream that carries one model file.
//!
//! For file `i` of a package with header hash `H` and model key `DEK`:
//! - file key `K_i = HKDF-SHA256(ikm = DEK, salt = H, info = "OVSA-v1 file key" || u32be(i))`;
//! - the plaintext is cut into chunks of `chunk_size` bytes (the last may be shorter; an empty
//!   file is one empty chunk);
//! - chunk `c` is sealed with AES-256-GCM under `K_i`, nonce `u64be(c) || 00 00 00 || last`
//!   (`last` = 1 on the final chunk, else 0) and AAD `H`, and stored as ciphertext || 16-byte tag.
//!
//! A chunk moved to another position, another file or another package, a dropped final chunk, or
//! any flipped bit fails authentication (the STREAM construction of Hoang, Reyhanitabar, Rogaway
//! and Vizár, with per-file keys).

use super::ModelKey;
use crate::crypto::aead::{AeadKey, NONCE_LEN, TAG_LEN};
use crate::crypto::kdf::hkdf_sha256;
use crate::error::Result;

const FILE_KEY_INFO: &[u8] = b"OVSA-v1 file key";

/// Number of chunks of a file of `size` bytes.
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    if size == 0 {
        1
    } else {
        size.div_ceil(u64::from(chunk_size))
    }
}

/// Stored length of a file of `size` bytes (plaintext plus one tag per chunk), if it fits a u64.
pub fn sealed_len(size: u64, chunk_size: u32) -> Option<u64> {
    size.checked_add(chunk_count(size, chunk_size).checked_mul(TAG_LEN as u64)?)
}

/// The nonce of chunk `index`.
pub fn chunk_nonce(index: u64, last: bool) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Seals and opens the chunks of one file.
pub struct FileCipher {
    key: AeadKey,
    header_hash: [u8; 32],
}

impl FileCipher {
    /// Derives the cipher of file `file_index`.
    pub fn new(dek: &ModelKey, header_hash: &[u8; 32], file_index: u32) -> Result<Self> {
        let k = hkdf_sha256(
            dek.as_bytes(),
            header_hash,
            &[FILE_KEY_INFO, &file_index.to_be_bytes()],
        )?;
        Ok(FileCipher {
            key: AeadKey::new(&k)?,
            header_hash: *header_hash,
        })
    }

    /// Encrypts a chunk in place and returns its tag.
    pub fn seal_chunk(&self, index: u64, last: bool, buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        self.key
            .seal_in_place(chunk_nonce(index, last), &self.header_hash, buf)
    }

    /// Decrypts a chunk in place. `false` when authentication fails (the buffer is then garbage
    /// and must be wiped by the caller).
    #[must_use]
    pub fn open_chunk(&self, index: u64, last: bool, buf: &mut [u8], tag: &[u8]) -> bool {
        self.key
            .open_in_place(chunk_nonce(index, last), &self.header_hash, tag, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(chunk_count(0, 4096), 1);
        assert_eq!(chunk_count(1, 4096), 1);
        assert_eq!(chunk_count(4096, 4096), 1);
        assert_eq!(chunk_count(4097, 4096), 2);
        assert_eq!(sealed_len(0, 4096), Some(16));
        assert_eq!(sealed_len(4097, 4096), Some(4097 + 32));
        assert_eq!(sealed_len(u64::MAX, 4096), None);
    }

    #[test]
    fn chunk_binding() {
        let dek = ModelKey::generate().unwrap();
        let h = [7u8; 32];
        let c0 = FileCipher::new(&dek, &h, 0).unwrap();
        let c1 = FileCipher::new(&dek, &h, 1).unwrap();
        let mut buf = b"hello world".to_vec();
        let tag = c0.seal_chunk(3, false, &mut buf).unwrap();
        let sealed = buf.clone();
        // Right position opens.
        assert!(c0.open_chunk(3, false, &mut buf, &tag));
        assert_eq!(buf, b"hello world");
        // Other index, final flag, file, or header hash: refused.
        for (cipher, idx, last) in [(&c0, 4, false), (&c0, 3, true), (&c1, 3, false)] {
            let mut b = sealed.clone();
            assert!(!cipher.open_chunk(idx, last, &mut b, &tag));
        }
        let other = FileCipher::new(&dek, &[8u8; 32], 0).unwrap();
        let mut b = sealed.clone();
        assert!(!other.open_chunk(3, false, &mut b, &tag));
    }
}
