//! The protected model package (`.dat`).
//!
//! Layout (all integers big-endian; `docs/FORMATS.md` has the full specification):
//!
//! ```text
//! "OVSAPKG\0" | u32 container version (1) | u32 header length H | header (H bytes) | payload
//! ```
//! The header is a signed envelope ([`crate::envelope`]) whose body is a [`PackageHeader`]; its
//! digest is the package's *header hash*. The payload is every model file in header order, each
//! as a stream of AES-256-GCM chunks ([`stream`]) under a per-file key derived from the model
//! key (DEK) and the header hash, so truncation, reordering, substitution and bit flips are all
//! detected, and chunks can be verified and decrypted independently and in parallel.

pub mod format;
pub mod protect;
pub mod reader;
pub mod stream;

pub use format::{FileEntry, FileKind, ModelFormat, PackageHeader};
pub use protect::{
    classify_inputs, protect, protect_uncommitted, reprotect_uncommitted, ModelInput,
    ProtectOptions, Protected,
};
pub use reader::{DecryptedModel, Package, ReadAt};

use zeroize::Zeroizing;

/// The model key (DEK): a fresh random AES-256 key per package. Zeroized on drop.
#[derive(Clone)]
pub struct ModelKey(Zeroizing<[u8; 32]>);

impl ModelKey {
    /// Generates a fresh random key.
    pub fn generate() -> crate::Result<Self> {
        Ok(ModelKey(Zeroizing::new(
            crate::crypto::random_array::<32>()?
        )))
    }

    /// Wraps existing key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ModelKey(Zeroizing::new(bytes))
    }

    /// The key bytes (secret).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for ModelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ModelKey(<secret>)")
    }
}
