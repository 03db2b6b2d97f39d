//! TPM2_MakeCredential in pure Rust (TPM 2.0 Library Part 1, §24 "Protected storage" and the
//! credential protection of §24.4 / Part 3 TPM2_MakeCredential), for RSA-2048 EKs created from
//! the default template (nameAlg SHA-256, symmetric AES-128-CFB).

use aws_lc_rs::{
    cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128},
    hmac, rand,
    rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256},
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::AttestError;

/// What the TPM needs for TPM2_ActivateCredential: the two TPM2B payloads (without their outer
/// u16 size prefix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialChallenge {
    /// TPM2B_ID_OBJECT content: `u16 BE 32 || outerHMAC(32) || encIdentity`.
    #[serde(with = "crate::encoding::b64")]
    pub id_object: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET content: RSA-OAEP(SHA-256, label "IDENTITY\0") of the seed.
    #[serde(with = "crate::encoding::b64")]
    pub encrypted_secret: Vec<u8>,
}

/// KDFa (Part 1 §11.4.10.2) with HMAC-SHA-256.
pub(crate) fn kdfa_sha256(
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Zeroizing<Vec<u8>> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Zeroizing::new(Vec::with_capacity(bytes + 32));
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let mut ctx = hmac::Context::with_key(&k);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label);
        if label.last() != Some(&0) {
            ctx.update(&[0]);
        }
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// TPM2_MakeCredential for an RSA EK given as X.509 SubjectPublicKeyInfo DER.
///
/// `ak_name` is the AK's TPM Name (nameAlg || digest of its TPMT_PUBLIC); `credential` is the
/// secret (at most 32 bytes) the TPM will release only if that AK is loaded in the TPM that holds
/// the EK's private key.
pub fn make_credential_rsa(
    ek_spki_der: &[u8],
    ak_name: &[u8],
    credential: &[u8],
) -> Result<CredentialChallenge, AttestError> {
    if credential.is_empty() || credential.len() > 32 {
        return Err(AttestError::Crypto("credential must be 1..=32 bytes"));
    }
    let pk =
        PublicEncryptingKey::from_der(ek_spki_der).map_err(|_| AttestError::EkKeyUnsupported)?;
    if pk.key_size_bits() != 2048 {
        return Err(AttestError::EkKeyUnsupported);
    }
    let oaep = OaepPublicEncryptingKey::new(pk).map_err(|_| AttestError::EkKeyUnsupported)?;
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::fill(&mut seed[..]).map_err(|_| AttestError::Crypto("random"))?;
    let mut ct = vec![0u8; oaep.ciphertext_size()];
    let encrypted_secret = oaep
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            &seed[..],
            &mut ct,
            Some(b"IDENTITY\0"),
        )
        .map_err(|_| AttestError::Crypto("RSA-OAEP"))?
        .to_vec();

    let id_object = protect_credential(&seed[..], ak_name, credential)?;
    Ok(CredentialChallenge {
        id_object,
        encrypted_secret,
    })
}

/// The symmetric part shared by every EK type: `idObject` from the seed (Part 1 §24.4).
fn protect_credential(
    seed: &[u8],
    ak_name: &[u8],
    credential: &[u8],
) -> Result<Vec<u8>, AttestError> {
    let sym_key = kdfa_sha256(seed, b"STORAGE", ak_name, &[], 128);
    let hmac_key = kdfa_sha256(seed, b"INTEGRITY", &[], &[], 256);
    // encIdentity = AES-128-CFB(symKey, IV = 0, TPM2B_DIGEST(credential))
    let mut enc_identity = Vec::with_capacity(2 + credential.len());
    enc_identity.extend_from_slice(&(credential.len() as u16).to_be_bytes());
    enc_identity.extend_from_slice(credential);
    let key =
        UnboundCipherKey::new(&AES_128, &sym_key).map_err(|_| AttestError::Crypto("AES key"))?;
    EncryptingKey::cfb128(key)
        .and_then(|k| {
            k.less_safe_encrypt(
                &mut enc_identity,
                EncryptionContext::Iv128([0u8; 16].into()),
            )
        })
        .map_err(|_| AttestError::Crypto("AES-CFB"))?;

    // outerHMAC = HMAC-SHA256(hmacKey, encIdentity || objectName)
    let hk = hmac::Key::new(hmac::HMAC_SHA256, &hmac_key);
    let mut ctx = hmac::Context::with_key(&hk);
    ctx.update(&enc_identity);
    ctx.update(ak_name);
    let outer = ctx.sign();

    let mut id_object = Vec::with_capacity(2 + 32 + enc_identity.len());
    id_object.extend_from_slice(&32u16.to_be_bytes());
    id_object.extend_from_slice(outer.as_ref());
    id_object.extend_from_slice(&enc_identity);
    Ok(id_object)
}

/// KDFe (Part 1 §11.4.10.3) with SHA-256.
pub(crate) fn kdfe_sha256(
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Zeroizing<Vec<u8>> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Zeroizing::new(Vec::with_capacity(bytes + 32));
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(&counter.to_be_bytes());
        ctx.update(z);
        ctx.update(label);
        if label.last() != Some(&0) {
            ctx.update(&[0]);
        }
        ctx.update(party_u);
        ctx.update(party_v);
        out.extend_from_slice(ctx.finish().as_ref());
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// TPM2_MakeCredential for an ECC NIST P-256 EK (default template L-2: nameAlg SHA-256,
/// AES-128-CFB), given its public point as 65-byte uncompressed SEC1 (`04 || X || Y`).
///
/// One-pass ECDH (Part 1 §C.6.1): an ephemeral key `(d_e, Q_e)`, `Z = x(d_e * Q_ek)`,
/// `seed = KDFe(SHA-256, Z, "IDENTITY", x(Q_e), x(Q_ek), 256)`; the encrypted secret is the
/// TPMS_ECC_POINT `u16be(32) || x(Q_e) || u16be(32) || y(Q_e)`.
pub fn make_credential_ecc_p256(
    ek_point: &[u8],
    ak_name: &[u8],
    credential: &[u8],
) -> Result<CredentialChallenge, AttestError> {
    use aws_lc_rs::agreement::{agree, PrivateKey, UnparsedPublicKey, ECDH_P256};
    if credential.is_empty() || credential.len() > 32 {
        return Err(AttestError::Crypto("credential must be 1..=32 bytes"));
    }
    if ek_point.len() != 65 || ek_point[0] != 0x04 {
        return Err(AttestError::EkKeyUnsupported);
    }
    let eph = PrivateKey::generate(&ECDH_P256).map_err(|_| AttestError::Crypto("ECDH key"))?;
    let eph_pub = eph
        .compute_public_key()
        .map_err(|_| AttestError::Crypto("ECDH key"))?;
    let q = eph_pub.as_ref();
    if q.len() != 65 {
        return Err(AttestError::Crypto("ECDH public key"));
    }
    let seed = agree(
        &eph,
        UnparsedPublicKey::new(&ECDH_P256, ek_point),
        AttestError::EkKeyUnsupported,
        |z| {
            Ok(kdfe_sha256(
                z,
                b"IDENTITY",
                &q[1..33],
                &ek_point[1..33],
                256,
            ))
        },
    )?;
    let mut encrypted_secret = Vec::with_capacity(68);
    encrypted_secret.extend_from_slice(&32u16.to_be_bytes());
    encrypted_secret.extend_from_slice(&q[1..33]);
    encrypted_secret.extend_from_slice(&32u16.to_be_bytes());
    encrypted_secret.extend_from_slice(&q[33..65]);
    let id_object = protect_credential(&seed, ak_name, credential)?;
    Ok(CredentialChallenge {
        id_object,
        encrypted_secret,
    })
}

/// TPM2_MakeCredential for the EK in an EK certificate's SubjectPublicKeyInfo (DER):
/// RSA-2048 or ECC NIST P-256. Other keys: [`AttestError::EkKeyUnsupported`].
pub fn make_credential(
    ek_spki_der: &[u8],
    ak_name: &[u8],
    credential: &[u8],
) -> Result<CredentialChallenge, AttestError> {
    use x509_parser::prelude::FromDer;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(ek_spki_der)
        .map_err(|e| AttestError::EkCertMalformed(e.to_string()))?;
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        "1.2.840.113549.1.1.1" => make_credential_rsa(ek_spki_der, ak_name, credential),
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            if curve.as_deref() != Some("1.2.840.10045.3.1.7") {
                return Err(AttestError::EkKeyUnsupported);
            }
            make_credential_ecc_p256(&spki.subject_public_key.data, ak_name, credential)
        }
        _ => Err(AttestError::EkKeyUnsupported),
    }
}
