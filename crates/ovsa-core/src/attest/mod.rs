//! Attestation Verifier (pure Rust, no TPM): TPM quote and host-evidence verification, the
//! credential challenge (TPM2_MakeCredential), EK certificate chain validation.
//!
//! Evidence in ([`Evidence`]), typed result out ([`AttestationResult`]) or a precise
//! [`AttestError`]. Formats are specified in `docs/ATTESTATION.md`.

mod credential;
mod ekcert;
mod error;
pub mod host_blob;
mod pcr;
mod qualify;
mod verify;
pub mod wire;

#[cfg(test)]
mod tests;

pub use credential::{
    make_credential, make_credential_ecc_p256, make_credential_rsa, CredentialChallenge,
};
pub use ekcert::{ek_spki, verify_ek_chain, EkTrust, TCG_KP_EK_CERTIFICATE};
pub use error::AttestError;
pub use host_blob::{HostBlobError, HostEvidence, HOST_EVIDENCE_NV_BASE};
pub use pcr::{check_reference, PcrSet};
pub use qualify::{host_qualifying_data, quote_qualifying_data, QUOTE_DOMAIN};
pub use verify::{
    issue_credential, verify, verify_quote_only, AkBinding, AttestationResult, Evidence, Expected,
    HostResult, PendingCredential, ReferenceValues, VerifierConfig,
};
pub use wire::{ClockInfo, HashAlg, QuoteInfo};

mod b64 {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let t = String::deserialize(d)?;
        STANDARD.decode(t).map_err(D::Error::custom)
    }
}

mod b64_opt {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&STANDARD.encode(v)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| STANDARD.decode(t).map_err(D::Error::custom))
            .transpose()
    }
}

mod b64_vec {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|x| STANDARD.encode(x))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|t| STANDARD.decode(t).map_err(D::Error::custom))
            .collect()
    }
}

mod b64_opt_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<Vec<u8>>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::b64_vec::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Vec<u8>>>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::b64_vec")] Vec<Vec<u8>>);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}
