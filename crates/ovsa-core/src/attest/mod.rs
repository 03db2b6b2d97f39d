//! Attestation Verifier (pure Rust, no TPM): TPM quote and host-evidence verification, the
//! credential challenge (TPM2_MakeCredential), EK certificate chain validation.
//!
//! Evidence in ([`Evidence`]), typed result out ([`AttestationResult`]) or a precise
//! [`AttestError`]. Formats are specified in `docs/ATTESTATION.md`.

mod credential;
mod ekbind;
mod ekcert;
mod error;
pub mod eventlog;
pub mod host_blob;
pub mod ima;
mod le_reader;
pub mod measured_boot;
mod pcr;
mod qualify;
pub mod runtime;
mod verify;
pub mod wire;

#[cfg(test)]
mod tests;

pub use credential::{
    make_credential, make_credential_ecc_p256, make_credential_rsa, CredentialChallenge,
};
pub use ekbind::{
    certificates_from_pem_or_der, check_ek_binding, is_ca_certificate, subject_of, EkBinding,
    EkCertDigest, MAX_BOUND_CAS, MAX_BOUND_EKS,
};
pub use ekcert::{ek_spki, verify_ek_chain, EkTrust, TCG_KP_EK_CERTIFICATE};
pub use error::AttestError;
pub use eventlog::{EventLog, EventLogError};
pub use host_blob::{HostBlobError, HostEvidence, HOST_EVIDENCE_NV_BASE};
pub use ima::{ImaError, ImaLog};
pub use measured_boot::{AllowedEvents, EventPins, MeasuredBootError, MeasuredBootReport};
pub use pcr::{check_reference, PcrSet};
pub use qualify::{host_qualifying_data, quote_qualifying_data, QUOTE_DOMAIN};
pub use runtime::{FileRule, RuntimePolicy, RuntimeReport};
pub use verify::{
    check_host_freshness, issue_credential, issue_host_credential, verify, verify_quote_only,
    AkBinding, AttestationResult, Evidence, Expected, HostPolicy, HostResult, HostSighting,
    PendingCredential, ReferenceValues, VerifierConfig,
};
pub use wire::{ClockInfo, HashAlg, QuoteInfo};
