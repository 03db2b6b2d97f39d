//! The signed-artifact envelope shared by every JSON artifact (package header, master license,
//! license config, TCB reference, customer license, registration record).
//!
//! ```json
//! { "ovsa": "<type>", "version": 1, "body": { ... },
//!   "signer": "<base64 DER certificate>",
//!   "signature": { "alg": "ECDSA-P256-SHA256", "value": "<base64 DER ECDSA signature>" } }
//! ```
//! The signature is over the canonical encoding ([`crate::encoding`]) of the envelope without its
//! `signature` member, so the type, version, body and signer are all covered. The artifact's
//! digest (SHA-256 of those same bytes) is its identity: a package's digest is its *header hash*.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crypto::{hash::sha256, KeyAlgorithm};
use crate::encoding::{b64, canonical_json, MAX_JSON_ARTIFACT};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::identity::{Certificate, Keystore};

/// A body type that travels in a signed envelope.
pub trait Artifact: Serialize + DeserializeOwned {
    /// The `ovsa` type tag.
    const TYPE: &'static str;
    /// The body format version this build writes and reads.
    const VERSION: u64;
    /// Checks invariants the type system does not express (called after parsing and before
    /// signing).
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureField {
    alg: KeyAlgorithm,
    #[serde(with = "b64")]
    value: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeFile {
    ovsa: String,
    version: u64,
    body: Value,
    #[serde(with = "b64")]
    signer: Vec<u8>,
    signature: SignatureField,
}

/// A verified artifact: its signature holds under `signer`.
///
/// Whether `signer` is *trusted* is the caller's decision ([`Signed::require_signer`],
/// [`Certificate::verify_chain`]).
#[derive(Debug, Clone)]
pub struct Signed<T> {
    body: T,
    body_value: Value,
    signer: Certificate,
    alg: KeyAlgorithm,
    signature: Vec<u8>,
    digest: [u8; 32],
}

fn signed_bytes(ty: &str, version: u64, body: &Value, signer_der: &[u8]) -> Result<Vec<u8>> {
    let v = serde_json::json!({
        "ovsa": ty,
        "version": version,
        "body": body,
        "signer": b64::encode(signer_der),
    });
    canonical_json(&v)
}

impl<T: Artifact> Signed<T> {
    /// Signs `body` with the keystore's key; the keystore's certificate becomes the signer.
    pub fn sign(body: T, keystore: &Keystore) -> Result<Self> {
        body.validate()?;
        let body_value = serde_json::to_value(&body)
            .map_err(|e| Error::malformed(T::TYPE, format!("cannot serialise: {e}")))?;
        let signer = keystore.certificate().clone();
        let msg = signed_bytes(T::TYPE, T::VERSION, &body_value, signer.der())?;
        let signature = keystore.key().sign(&msg)?;
        Ok(Signed {
            body,
            body_value,
            alg: keystore.key().alg(),
            signer,
            signature,
            digest: sha256(&msg),
        })
    }

    /// Parses an envelope and verifies its signature; also checks that the signer's certificate
    /// is within its validity period now.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let s = Self::from_bytes_ignoring_time(bytes)?;
        s.signer.check_validity_now()?;
        Ok(s)
    }

    /// Like [`Signed::from_bytes`] without the signer validity-period check (for inspection).
    pub fn from_bytes_ignoring_time(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_JSON_ARTIFACT {
            return Err(Error::malformed(
                T::TYPE,
                format!(
                    "{} bytes exceeds the {MAX_JSON_ARTIFACT}-byte limit",
                    bytes.len()
                ),
            ));
        }
        let env: EnvelopeFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::malformed(T::TYPE, format!("not a signed OVSA artifact: {e}")))?;
        if env.ovsa != T::TYPE {
            return Err(Error::WrongArtifactType {
                expected: T::TYPE,
                found: env.ovsa,
            });
        }
        if env.version != T::VERSION {
            return Err(Error::UnsupportedVersion {
                what: T::TYPE,
                found: env.version,
                supported: T::VERSION,
            });
        }
        let signer = Certificate::from_der(&env.signer)?;
        let key = signer.public_key()?;
        if key.alg != env.signature.alg {
            return Err(Error::malformed(
                T::TYPE,
                format!(
                    "signature algorithm {} does not match the signer's {} key",
                    env.signature.alg.name(),
                    key.alg.name()
                ),
            ));
        }
        let msg = signed_bytes(T::TYPE, T::VERSION, &env.body, &env.signer)?;
        if !key.verify(&msg, &env.signature.value) {
            return Err(Error::BadSignature { what: T::TYPE });
        }
        let body: T = serde_json::from_value(env.body.clone())
            .map_err(|e| Error::malformed(T::TYPE, format!("body: {e}")))?;
        body.validate()?;
        Ok(Signed {
            body,
            body_value: env.body,
            signer,
            alg: env.signature.alg,
            signature: env.signature.value,
            digest: sha256(&msg),
        })
    }

    /// Reads and verifies an artifact file (see [`Signed::from_bytes`]).
    pub fn load(path: &Path) -> Result<Self> {
        let expected = crate::artifact::ArtifactKind::from_type(T::TYPE);
        let what = expected.describe();
        let what = what.trim_start_matches("a ").trim_start_matches("an ");
        let bytes = fsutil::read_limited_as(path, MAX_JSON_ARTIFACT, what)?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            Error::Malformed { .. } | Error::WrongArtifactType { .. } => {
                crate::artifact::wrong_file(path, &expected).unwrap_or_else(|| with_path(e, path))
            }
            other => with_path(other, path),
        })
    }

    /// The envelope as pretty-printed JSON (any formatting verifies the same).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let env = EnvelopeFile {
            ovsa: T::TYPE.into(),
            version: T::VERSION,
            body: self.body_value.clone(),
            signer: self.signer.der().to_vec(),
            signature: SignatureField {
                alg: self.alg,
                value: self.signature.clone(),
            },
        };
        let mut out = serde_json::to_vec_pretty(&env)
            .map_err(|e| Error::malformed(T::TYPE, e.to_string()))?;
        out.push(b'\n');
        Ok(out)
    }

    /// Writes the envelope to `path` atomically with permissions `mode`.
    pub fn save(&self, path: &Path, mode: u32, overwrite: bool) -> Result<()> {
        fsutil::write_atomic(path, &self.to_bytes()?, mode, overwrite)
    }

    /// The verified body.
    pub fn body(&self) -> &T {
        &self.body
    }

    /// The body as generic JSON (for display).
    pub fn body_json(&self) -> &Value {
        &self.body_value
    }

    /// The certificate that signed.
    pub fn signer(&self) -> &Certificate {
        &self.signer
    }

    /// SHA-256 of the signed bytes: the artifact's identity.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Fails with [`Error::SignerMismatch`] unless `expected` signed this artifact.
    pub fn require_signer(&self, expected: &Certificate) -> Result<()> {
        if self.signer.fingerprint() == expected.fingerprint() {
            Ok(())
        } else {
            Err(Error::SignerMismatch {
                what: T::TYPE,
                expected: expected.subject().to_string(),
                found: self.signer.subject().to_string(),
            })
        }
    }
}

/// Adds the file path to errors that do not name their file.
pub(crate) fn with_path(e: Error, path: &Path) -> Error {
    let p = path.display();
    match e {
        Error::Malformed { what, detail } => Error::Malformed {
            what,
            detail: format!("{p}: {detail}"),
        },
        Error::BadCertificate(m) => Error::BadCertificate(format!("{p}: signer: {m}")),
        other => other,
    }
}

/// Reads the `ovsa` type tag of a JSON artifact without verifying it (to dispatch on it).
pub fn peek_type(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        ovsa: String,
    }
    serde_json::from_slice::<Peek>(bytes).ok().map(|p| p.ovsa)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Note {
        text: String,
        n: u64,
    }
    impl Artifact for Note {
        const TYPE: &'static str = "test-note";
        const VERSION: u64 = 1;
    }

    fn ks() -> Keystore {
        Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=signer", 10)
            .unwrap()
            .0
    }

    #[test]
    fn sign_verify_reformat() {
        let k = ks();
        let s = Signed::sign(
            Note {
                text: "hi".into(),
                n: 3,
            },
            &k,
        )
        .unwrap();
        let bytes = s.to_bytes().unwrap();
        let back = Signed::<Note>::from_bytes(&bytes).unwrap();
        assert_eq!(back.body(), s.body());
        assert_eq!(back.digest(), s.digest());
        // Re-formatted (compact, keys re-ordered) still verifies.
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let compact = serde_json::to_vec(&v).unwrap();
        assert_eq!(
            Signed::<Note>::from_bytes(&compact).unwrap().digest(),
            s.digest()
        );
        back.require_signer(k.certificate()).unwrap();
        assert!(matches!(
            back.require_signer(ks().certificate()),
            Err(Error::SignerMismatch { .. })
        ));
    }

    #[test]
    fn tampering_is_detected() {
        let s = Signed::sign(
            Note {
                text: "hi".into(),
                n: 3,
            },
            &ks(),
        )
        .unwrap();
        let text = String::from_utf8(s.to_bytes().unwrap()).unwrap();
        let changed = text.replace("\"n\": 3", "\"n\": 4");
        assert!(matches!(
            Signed::<Note>::from_bytes(changed.as_bytes()),
            Err(Error::BadSignature { .. })
        ));
        let retyped = text.replace("test-note", "other-type");
        assert!(matches!(
            Signed::<Note>::from_bytes(retyped.as_bytes()),
            Err(Error::WrongArtifactType { .. })
        ));
        assert!(matches!(
            Signed::<Note>::from_bytes(b"{not json"),
            Err(Error::Malformed { .. })
        ));
    }
}
