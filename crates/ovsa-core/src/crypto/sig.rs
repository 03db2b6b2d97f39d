//! ECDSA identities: key generation, signing, verification, public-key encodings.

use aws_lc_rs::signature::{
    self, EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_ASN1_SIGNING,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The key algorithms of ISV and customer identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 (the default).
    #[serde(rename = "ECDSA-P256-SHA256")]
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    #[serde(rename = "ECDSA-P384-SHA384")]
    EcdsaP384,
}

// DER prefixes of SubjectPublicKeyInfo for uncompressed EC points (RFC 5480).
const SPKI_PREFIX_P256: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const SPKI_PREFIX_P384: &[u8] = &[
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];

impl KeyAlgorithm {
    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ECDSA-P256-SHA256",
            KeyAlgorithm::EcdsaP384 => "ECDSA-P384-SHA384",
        }
    }

    fn signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            KeyAlgorithm::EcdsaP384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }

    fn verification(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &ECDSA_P256_SHA256_ASN1,
            KeyAlgorithm::EcdsaP384 => &ECDSA_P384_SHA384_ASN1,
        }
    }

    pub(crate) fn ecdh(self) -> &'static aws_lc_rs::agreement::Algorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &aws_lc_rs::agreement::ECDH_P256,
            KeyAlgorithm::EcdsaP384 => &aws_lc_rs::agreement::ECDH_P384,
        }
    }

    /// Length of an uncompressed public point.
    pub fn point_len(self) -> usize {
        match self {
            KeyAlgorithm::EcdsaP256 => 65,
            KeyAlgorithm::EcdsaP384 => 97,
        }
    }

    fn spki_prefix(self) -> &'static [u8] {
        match self {
            KeyAlgorithm::EcdsaP256 => SPKI_PREFIX_P256,
            KeyAlgorithm::EcdsaP384 => SPKI_PREFIX_P384,
        }
    }

    /// The matching rcgen signature algorithm.
    pub(crate) fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "p256" | "p-256" | "ecdsa-p256" | "ecdsa-p256-sha256" => Ok(KeyAlgorithm::EcdsaP256),
            "p384" | "p-384" | "ecdsa-p384" | "ecdsa-p384-sha384" => Ok(KeyAlgorithm::EcdsaP384),
            _ => Err(Error::InvalidInput(format!(
                "unknown key algorithm '{s}': use p256 (default) or p384"
            ))),
        }
    }
}

/// An EC public key (uncompressed point) with its algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The algorithm.
    pub alg: KeyAlgorithm,
    /// The uncompressed point `04 || X || Y`.
    pub point: Vec<u8>,
}

impl PublicKey {
    /// Builds a key from an uncompressed point, checking its length and form.
    pub fn from_point(alg: KeyAlgorithm, point: &[u8]) -> Result<Self> {
        if point.len() != alg.point_len() || point.first() != Some(&0x04) {
            return Err(Error::BadCertificate(format!(
                "not an uncompressed {} public point ({} bytes)",
                alg.name(),
                point.len()
            )));
        }
        Ok(PublicKey {
            alg,
            point: point.to_vec(),
        })
    }

    /// Parses a DER SubjectPublicKeyInfo of an EC key on P-256 or P-384.
    pub fn from_spki_der(spki: &[u8]) -> Result<Self> {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384] {
            if let Some(point) = spki.strip_prefix(alg.spki_prefix()) {
                return Self::from_point(alg, point);
            }
        }
        Err(Error::BadCertificate(
            "public key is not an ECDSA P-256 or P-384 key (the only kinds OVSA uses)".into(),
        ))
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        let mut out = self.alg.spki_prefix().to_vec();
        out.extend_from_slice(&self.point);
        out
    }

    /// Verifies an ASN.1 DER ECDSA signature over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(self.alg.verification(), &self.point)
            .verify(msg, sig)
            .is_ok()
    }
}

/// An ECDSA private key, kept as zeroizing PKCS#8 plus the provider's parsed key.
pub struct SigningKey {
    alg: KeyAlgorithm,
    pkcs8: Zeroizing<Vec<u8>>,
    pair: EcdsaKeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh key.
    pub fn generate(alg: KeyAlgorithm) -> Result<Self> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(alg.signing(), &rng)
            .map_err(|_| Error::Crypto("ECDSA key generation"))?;
        Self::from_pkcs8(alg, doc.as_ref())
    }

    /// Loads a PKCS#8 key of the given algorithm.
    pub fn from_pkcs8(alg: KeyAlgorithm, pkcs8: &[u8]) -> Result<Self> {
        // aws-lc's KeyRejected text is a bare reason code ("KeyMismatch"); say it in words.
        let pair = EcdsaKeyPair::from_pkcs8(alg.signing(), pkcs8).map_err(|_| {
            Error::Keystore(format!(
                "the private key is not a valid {} key (the keystore is damaged, or its \
                 algorithm field does not match the key)",
                alg.name()
            ))
        })?;
        Ok(SigningKey {
            alg,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            pair,
        })
    }

    /// The algorithm.
    pub fn alg(&self) -> KeyAlgorithm {
        self.alg
    }

    /// The PKCS#8 encoding (secret).
    pub fn pkcs8(&self) -> &Zeroizing<Vec<u8>> {
        &self.pkcs8
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            alg: self.alg,
            point: self.pair.public_key().as_ref().to_vec(),
        }
    }

    /// Signs `msg` (ASN.1 DER signature).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        self.pair
            .sign(&rng, msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| Error::Crypto("ECDSA sign"))
    }

    /// An rcgen key pair for certificate and CSR generation.
    pub(crate) fn rcgen_key_pair(&self) -> Result<rcgen::KeyPair> {
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(self.pkcs8.as_slice());
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, self.alg.rcgen())
            .map_err(|e| Error::BadCertificate(format!("cannot use key for X.509: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_spki_round_trip() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384] {
            let k = SigningKey::generate(alg).unwrap();
            let sig = k.sign(b"hello").unwrap();
            let pk = k.public_key();
            assert!(pk.verify(b"hello", &sig));
            assert!(!pk.verify(b"hellp", &sig));
            assert_eq!(PublicKey::from_spki_der(&pk.spki_der()).unwrap(), pk);
        }
    }
}
