//! Keystores: an identity's private key (optionally passphrase-encrypted), its certificate and
//! the chain above it, in one JSON file written with mode 0600.

use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::cert::{self, Certificate};
use crate::crypto::{aead::AeadKey, kdf, random_array, KeyAlgorithm, SigningKey};
use crate::encoding::{b64, b64_secret, MAX_JSON_ARTIFACT};
use crate::error::{Error, Result};
use crate::fsutil;

const KEYSTORE_TYPE: &str = "keystore";
const KEYSTORE_VERSION: u64 = 1;
/// PBKDF2 iterations for new passphrase-protected keystores (OWASP 2023 guidance for SHA-256).
pub const PBKDF2_ITERATIONS: u32 = 600_000;
const MIN_PBKDF2_ITERATIONS: u32 = 100_000;
/// Upper bound on a stored iteration count: opening a keystore must not be a denial of service
/// (~10x today's default, a few seconds of one core).
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
const PASSPHRASE_AAD: &[u8] = b"OVSA-v1 keystore private key";

/// How the private key is stored.
pub enum KeystoreProtection {
    /// In the clear (the file is still mode 0600).
    None,
    /// Encrypted with a key derived from this passphrase.
    Passphrase(Zeroizing<String>),
}

/// An identity: private key, certificate, chain.
pub struct Keystore {
    key: SigningKey,
    certificate: Certificate,
    chain: Vec<Certificate>,
    /// Whether it was read from a file whose key was passphrase-protected.
    passphrase_protected: bool,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeystoreFile {
    ovsa: String,
    version: u64,
    algorithm: KeyAlgorithm,
    private_key: PrivateKeyField,
    #[serde(with = "b64")]
    certificate: Vec<u8>,
    #[serde(default)]
    chain: Vec<B64Cert>,
}

#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct B64Cert(#[serde(with = "b64")] Vec<u8>);

#[derive(Serialize, Deserialize)]
#[serde(tag = "protection", deny_unknown_fields)]
enum PrivateKeyField {
    #[serde(rename = "none")]
    Clear {
        #[serde(with = "b64_secret")]
        pkcs8: Zeroizing<Vec<u8>>,
    },
    #[serde(rename = "pbkdf2-sha256+aes-256-gcm")]
    Passphrase {
        iterations: u32,
        #[serde(with = "b64")]
        salt: Vec<u8>,
        #[serde(with = "b64")]
        nonce: Vec<u8>,
        #[serde(with = "b64")]
        ciphertext: Vec<u8>,
    },
}

impl Keystore {
    /// Generates a new identity with a self-signed certificate valid for `days`; also returns a
    /// CSR (PEM) to have the key certified by a CA.
    pub fn generate(alg: KeyAlgorithm, subject: &str, days: u32) -> Result<(Self, String)> {
        let key = SigningKey::generate(alg)?;
        let certificate = cert::self_signed(&key, subject, days)?;
        let csr = cert::csr_pem(&key, subject)?;
        Ok((
            Keystore {
                key,
                certificate,
                chain: Vec::new(),
                passphrase_protected: false,
            },
            csr,
        ))
    }

    /// Builds a keystore from parts, checking the certificate matches the key.
    pub fn from_parts(
        key: SigningKey,
        certificate: Certificate,
        chain: Vec<Certificate>,
    ) -> Result<Self> {
        let mut ks = Keystore {
            certificate: certificate.clone(),
            key,
            chain: Vec::new(),
            passphrase_protected: false,
        };
        ks.import_certificate(certificate, chain)?;
        Ok(ks)
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The identity certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// Certificates above the identity certificate (may be empty).
    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    /// Replaces the certificate (e.g. by a CA-signed one). Fails unless it certifies this key.
    pub fn import_certificate(
        &mut self,
        certificate: Certificate,
        chain: Vec<Certificate>,
    ) -> Result<()> {
        let pk = certificate.public_key()?;
        if pk != self.key.public_key() {
            return Err(Error::Keystore(format!(
                "certificate '{}' certifies another key, not this keystore's key",
                certificate.subject()
            )));
        }
        self.certificate = certificate;
        self.chain = chain;
        Ok(())
    }

    /// Serialises the keystore.
    pub fn to_bytes(&self, protection: &KeystoreProtection) -> Result<Zeroizing<Vec<u8>>> {
        let private_key = match protection {
            KeystoreProtection::None => PrivateKeyField::Clear {
                pkcs8: self.key.pkcs8().clone(),
            },
            KeystoreProtection::Passphrase(pass) => {
                if pass.is_empty() {
                    return Err(Error::Keystore("the passphrase is empty".into()));
                }
                let salt = random_array::<16>()?;
                let nonce = random_array::<12>()?;
                let kek = kdf::pbkdf2_sha256(pass.as_bytes(), &salt, PBKDF2_ITERATIONS)?;
                let ciphertext =
                    AeadKey::new(&kek)?.seal(nonce, &aad(self.key.alg()), self.key.pkcs8())?;
                PrivateKeyField::Passphrase {
                    iterations: PBKDF2_ITERATIONS,
                    salt: salt.to_vec(),
                    nonce: nonce.to_vec(),
                    ciphertext,
                }
            }
        };
        let file = KeystoreFile {
            ovsa: KEYSTORE_TYPE.into(),
            version: KEYSTORE_VERSION,
            algorithm: self.key.alg(),
            private_key,
            certificate: self.certificate.der().to_vec(),
            chain: self
                .chain
                .iter()
                .map(|c| B64Cert(c.der().to_vec()))
                .collect(),
        };
        let mut out = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::Keystore(format!("cannot serialise: {e}")))?;
        out.push(b'\n');
        Ok(Zeroizing::new(out))
    }

    /// Writes the keystore to `path` (mode 0600, atomically).
    pub fn save(
        &self,
        path: &Path,
        protection: &KeystoreProtection,
        overwrite: bool,
    ) -> Result<()> {
        let bytes = self.to_bytes(protection)?;
        fsutil::write_atomic(path, &bytes, fsutil::MODE_SECRET, overwrite)
    }

    /// Parses a keystore; `passphrase` is needed only when the key is encrypted.
    pub fn from_bytes(bytes: &[u8], passphrase: Option<&str>) -> Result<Self> {
        let file: KeystoreFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::malformed("keystore", e.to_string()))?;
        if file.ovsa != KEYSTORE_TYPE {
            return Err(Error::WrongArtifactType {
                expected: "keystore",
                found: file.ovsa,
            });
        }
        if file.version != KEYSTORE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "keystore",
                found: file.version,
                supported: KEYSTORE_VERSION,
            });
        }
        let passphrase_protected = matches!(file.private_key, PrivateKeyField::Passphrase { .. });
        let pkcs8 = match file.private_key {
            PrivateKeyField::Clear { pkcs8 } => pkcs8,
            PrivateKeyField::Passphrase {
                iterations,
                salt,
                nonce,
                ciphertext,
            } => {
                let pass = passphrase.ok_or_else(|| {
                    Error::Keystore(
                        "the private key is passphrase-protected: set OVSA_KEYSTORE_PASSPHRASE or pass --passphrase-file".into(),
                    )
                })?;
                if !(MIN_PBKDF2_ITERATIONS..=MAX_PBKDF2_ITERATIONS).contains(&iterations) {
                    return Err(Error::malformed(
                        "keystore",
                        format!(
                            "PBKDF2 iteration count {iterations} is outside {MIN_PBKDF2_ITERATIONS}..={MAX_PBKDF2_ITERATIONS}"
                        ),
                    ));
                }
                let nonce: [u8; 12] = nonce
                    .try_into()
                    .map_err(|_| Error::malformed("keystore", "nonce is not 12 bytes"))?;
                let kek = kdf::pbkdf2_sha256(pass.as_bytes(), &salt, iterations)?;
                AeadKey::new(&kek)?
                    .open(nonce, &aad(file.algorithm), &ciphertext)
                    .ok_or(Error::BadPassphrase)?
            }
        };
        let key = SigningKey::from_pkcs8(file.algorithm, &pkcs8)?;
        let certificate = Certificate::from_der(&file.certificate)?;
        let chain = file
            .chain
            .iter()
            .map(|c| Certificate::from_der(&c.0))
            .collect::<Result<Vec<_>>>()?;
        let mut ks = Keystore::from_parts(key, certificate, chain)?;
        ks.passphrase_protected = passphrase_protected;
        Ok(ks)
    }

    /// Whether this keystore was read from a file whose private key was passphrase-protected
    /// (so saving it again should keep a passphrase).
    pub fn was_passphrase_protected(&self) -> bool {
        self.passphrase_protected
    }

    /// Reads a keystore file.
    pub fn load(path: &Path, passphrase: Option<&str>) -> Result<Self> {
        let bytes = Zeroizing::new(fsutil::read_limited_as(
            path,
            MAX_JSON_ARTIFACT,
            "keystore",
        )?);
        Self::from_bytes(&bytes, passphrase).map_err(|e| match e {
            Error::Malformed { .. } | Error::WrongArtifactType { .. } => {
                match crate::artifact::wrong_file(path, &crate::artifact::ArtifactKind::Keystore) {
                    Some(wrong) => wrong,
                    None => match e {
                        Error::Malformed { what, detail } => Error::Malformed {
                            what,
                            detail: format!("{}: {detail}", path.display()),
                        },
                        other => other,
                    },
                }
            }
            other => in_file(other, path),
        })
    }
}

/// Names the keystore file in errors that do not say which file they concern.
fn in_file(e: Error, path: &Path) -> Error {
    match e {
        Error::Keystore(m) => Error::Keystore(format!("{}: {m}", path.display())),
        Error::BadCertificate(m) => {
            Error::BadCertificate(format!("{} (keystore): {m}", path.display()))
        }
        other => other,
    }
}

fn aad(alg: KeyAlgorithm) -> Vec<u8> {
    let mut a = PASSPHRASE_AAD.to_vec();
    a.push(0);
    a.extend_from_slice(alg.name().as_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_clear_and_passphrase() {
        let (ks, csr) = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=t", 10).unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let clear = ks.to_bytes(&KeystoreProtection::None).unwrap();
        let back = Keystore::from_bytes(&clear, None).unwrap();
        assert_eq!(back.certificate(), ks.certificate());

        let prot = KeystoreProtection::Passphrase(Zeroizing::new("hunter2".into()));
        let enc = ks.to_bytes(&prot).unwrap();
        assert!(matches!(
            Keystore::from_bytes(&enc, None),
            Err(Error::Keystore(_))
        ));
        assert!(matches!(
            Keystore::from_bytes(&enc, Some("nope")),
            Err(Error::BadPassphrase)
        ));
        let back = Keystore::from_bytes(&enc, Some("hunter2")).unwrap();
        assert_eq!(back.key().public_key(), ks.key().public_key());
    }

    #[test]
    fn absurd_iteration_counts_are_refused_quickly() {
        let (ks, _) = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=t", 10).unwrap();
        let prot = KeystoreProtection::Passphrase(Zeroizing::new("pw".into()));
        let enc = String::from_utf8(ks.to_bytes(&prot).unwrap().to_vec()).unwrap();
        for n in ["4294967295", "99999"] {
            let bad = enc.replace("\"iterations\": 600000", &format!("\"iterations\": {n}"));
            let start = std::time::Instant::now();
            assert!(matches!(
                Keystore::from_bytes(bad.as_bytes(), Some("pw")),
                Err(Error::Malformed { .. })
            ));
            assert!(start.elapsed().as_secs() < 1);
        }
    }

    #[test]
    fn import_rejects_foreign_certificate() {
        let (mut a, _) = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=a", 10).unwrap();
        let (b, _) = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=b", 10).unwrap();
        assert!(a
            .import_certificate(b.certificate().clone(), vec![])
            .is_err());
    }
}
