//! ECDH-ES key wrapping primitives: an ephemeral key agreed with a recipient's static key.

use aws_lc_rs::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use zeroize::Zeroizing;

use super::sig::{PublicKey, SigningKey};
use crate::error::{Error, Result};

/// Generates an ephemeral key on the recipient's curve and agrees with the recipient.
/// Returns the ephemeral public point and the shared secret (the x coordinate).
pub fn agree_ephemeral(recipient: &PublicKey) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let alg = recipient.alg.ecdh();
    let eph = EphemeralPrivateKey::generate(alg, &rng)
        .map_err(|_| Error::Crypto("ECDH ephemeral key generation"))?;
    let epk = eph
        .compute_public_key()
        .map_err(|_| Error::Crypto("ECDH public key"))?
        .as_ref()
        .to_vec();
    let shared = agreement::agree_ephemeral(
        eph,
        UnparsedPublicKey::new(alg, &recipient.point),
        Error::BadCertificate("recipient public key is not a valid curve point".into()),
        |s| Ok(Zeroizing::new(s.to_vec())),
    )?;
    Ok((epk, shared))
}

/// Agrees the recipient's static private key with a sender's ephemeral public point.
pub fn agree_static(recipient: &SigningKey, ephemeral_point: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let alg = recipient.alg().ecdh();
    let private = agreement::PrivateKey::from_private_key_der(alg, recipient.pkcs8())
        .map_err(|_| Error::Keystore("private key cannot be used for ECDH".into()))?;
    agreement::agree(
        &private,
        UnparsedPublicKey::new(alg, ephemeral_point),
        Error::malformed(
            "wrapped key",
            "ephemeral public key is not a valid curve point",
        ),
        |s| Ok(Zeroizing::new(s.to_vec())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyAlgorithm;

    #[test]
    fn both_sides_agree() {
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384] {
            let k = SigningKey::generate(alg).unwrap();
            let (epk, s1) = agree_ephemeral(&k.public_key()).unwrap();
            let s2 = agree_static(&k, &epk).unwrap();
            assert_eq!(*s1, *s2);
            assert!(agree_static(&k, &[4u8; 65]).is_err());
        }
    }
}
