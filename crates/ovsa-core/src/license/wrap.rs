//! Wrapping the model key (DEK) to a recipient's EC key, optionally mixed with a key share.
//!
//! ```text
//! Z    = ECDH(ephemeral, recipient)                       (x coordinate)
//! KEK  = HKDF-SHA256(ikm = Z || share, salt, info = label || header_hash || epk)
//! wrapped = AES-256-GCM(KEK, random 96-bit nonce, aad = "OVSA-v1 model key" || header_hash, DEK)
//! ```
//! For a master license the share is empty and the salt is the model GUID; for a customer
//! license the share is the license service's 32-byte secret and the salt is the license GUID.
//! Without the share the KEK cannot be computed from anything on the customer's disk.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::aead::AeadKey;
use crate::crypto::{ecdh, kdf, random_array, PublicKey, SigningKey};
use crate::encoding::b64;
use crate::error::{Error, Result};
use crate::package::ModelKey;

/// The wrapping algorithm identifier.
pub const WRAP_ALG: &str = "ECDH-ES+HKDF-SHA256+A256GCM";
const DEK_AAD: &[u8] = b"OVSA-v1 model key";

/// A wrapped model key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    /// Always [`WRAP_ALG`].
    pub alg: String,
    /// The sender's ephemeral public point (uncompressed).
    #[serde(with = "b64")]
    pub epk: Vec<u8>,
    /// AES-GCM nonce (12 bytes).
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// Encrypted DEK || tag (48 bytes).
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

fn kek(
    z: &[u8],
    share: &[u8],
    salt: &[u8],
    label: &[u8],
    header_hash: &[u8; 32],
    epk: &[u8],
) -> Result<AeadKey> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(z.len() + share.len()));
    ikm.extend_from_slice(z);
    ikm.extend_from_slice(share);
    let k = kdf::hkdf_sha256(&ikm, salt, &[label, header_hash, epk])?;
    AeadKey::new(&k)
}

fn aad(prefix: &[u8], header_hash: &[u8; 32]) -> Vec<u8> {
    [prefix, header_hash.as_slice()].concat()
}

/// Wraps `dek` to `recipient`.
pub fn wrap(
    dek: &ModelKey,
    recipient: &PublicKey,
    share: &[u8],
    salt: &[u8],
    label: &[u8],
    header_hash: &[u8; 32],
) -> Result<WrappedKey> {
    seal_secret(
        dek.as_bytes(),
        recipient,
        share,
        salt,
        label,
        DEK_AAD,
        header_hash,
    )
}

/// Wraps any 32-byte secret to `recipient` (the same construction as [`wrap`]; `aad_prefix`
/// names what is wrapped, so a wrapped key share can never be opened as a model key).
pub(crate) fn seal_secret(
    secret: &[u8; 32],
    recipient: &PublicKey,
    share: &[u8],
    salt: &[u8],
    label: &[u8],
    aad_prefix: &[u8],
    header_hash: &[u8; 32],
) -> Result<WrappedKey> {
    let (epk, z) = ecdh::agree_ephemeral(recipient)?;
    let key = kek(&z, share, salt, label, header_hash, &epk)?;
    let nonce = random_array::<12>()?;
    let ciphertext = key.seal(nonce, &aad(aad_prefix, header_hash), secret)?;
    Ok(WrappedKey {
        alg: WRAP_ALG.into(),
        epk,
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// Unwraps with the recipient's private key; `what` names the artifact in errors.
pub fn unwrap(
    w: &WrappedKey,
    recipient: &SigningKey,
    share: &[u8],
    salt: &[u8],
    label: &[u8],
    header_hash: &[u8; 32],
    what: &'static str,
) -> Result<ModelKey> {
    let bytes = open_secret(w, recipient, share, salt, label, DEK_AAD, header_hash, what)?;
    Ok(ModelKey::from_bytes(*bytes))
}

/// Opens what [`seal_secret`] sealed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn open_secret(
    w: &WrappedKey,
    recipient: &SigningKey,
    share: &[u8],
    salt: &[u8],
    label: &[u8],
    aad_prefix: &[u8],
    header_hash: &[u8; 32],
    what: &'static str,
) -> Result<Zeroizing<[u8; 32]>> {
    if w.alg != WRAP_ALG {
        return Err(Error::malformed(
            what,
            format!("unknown key wrapping '{}'", w.alg),
        ));
    }
    let nonce: [u8; 12] = w
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| Error::malformed(what, "wrapped key nonce is not 12 bytes"))?;
    let z = ecdh::agree_static(recipient, &w.epk)?;
    let key = kek(&z, share, salt, label, header_hash, &w.epk)?;
    let plain = key
        .open(nonce, &aad(aad_prefix, header_hash), &w.ciphertext)
        .ok_or(Error::UnwrapFailed { what })?;
    let bytes: [u8; 32] = plain
        .as_slice()
        .try_into()
        .map_err(|_| Error::malformed(what, "wrapped key is not 32 bytes"))?;
    Ok(Zeroizing::new(bytes))
}
