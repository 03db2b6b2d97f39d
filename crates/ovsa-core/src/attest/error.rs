//! Typed verification errors: every check has its own variant.

use super::host_blob::HostBlobError;
use super::measured_boot::MeasuredBootError;

/// Why a piece of attestation evidence was refused.
///
/// Each check of the Verifier maps to exactly one variant so that callers (and tests) can tell
/// precisely which property failed. Failures found in the *host* evidence are wrapped in
/// [`AttestError::Host`] so the same variant names describe the same check on either TPM.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttestError {
    /// A TPM structure (TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC) could not be parsed.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// The attestation structure does not start with `TPM_GENERATED_VALUE`: not made by a TPM.
    #[error("attestation structure is not TPM-generated (magic {0:#010x})")]
    NotTpmGenerated(u32),
    /// The attestation structure is not a quote (`TPM_ST_ATTEST_QUOTE`).
    #[error("attestation structure is not a quote (type {0:#06x})")]
    NotAQuote(u16),
    /// An algorithm (hash, signature scheme, key type, curve) that this verifier does not accept.
    #[error("unsupported {what} algorithm {alg:#06x}")]
    UnsupportedAlgorithm {
        /// Which field.
        what: &'static str,
        /// The TPM_ALG_ID / TPM_ECC_CURVE value.
        alg: u16,
    },
    /// The AK is not a restricted, fixedTPM signing key, so its signature proves nothing.
    #[error("attestation key is not a restricted fixedTPM signing key (attributes {0:#010x})")]
    AkNotRestrictedSigningKey(u32),
    /// The signature's scheme or hash differs from the scheme fixed in the AK's public area.
    #[error("signature scheme does not match the attestation key")]
    SignatureSchemeMismatch,
    /// The quote signature does not verify under the AK.
    #[error("quote signature is invalid")]
    QuoteSignatureInvalid,
    /// The quote's qualifying data (extraData) is not the expected value: wrong or replayed nonce.
    #[error("quote qualifying data does not match the expected nonce binding")]
    QualifyingDataMismatch,
    /// The PCRs reported alongside the quote are not exactly the PCRs the quote covers.
    #[error("reported PCR values do not match the quote's PCR selection")]
    PcrSelectionMismatch,
    /// The quote's PCR digest is not the hash of the reported PCR values.
    #[error("quote PCR digest does not match the reported PCR values")]
    PcrDigestMismatch,
    /// The quote covers a different PCR bank than the reference.
    #[error("PCR bank mismatch: reference {expected}, quote {found}")]
    PcrBankMismatch {
        /// The bank the reference values are for.
        expected: String,
        /// The bank the quote covers.
        found: String,
    },
    /// A PCR required by the reference is not covered by the quote.
    #[error("PCR {0} required by the reference is not quoted")]
    PcrNotQuoted(u8),
    /// A PCR value differs from the reference value.
    #[error("PCR {0} differs from the reference value")]
    PcrValueMismatch(u8),
    /// The TPM reported that its clock is not safe (it may have been rolled back).
    #[error("TPM clock is not marked safe")]
    ClockNotSafe,
    /// Reset/restart counters or clock went backwards compared with an earlier accepted quote.
    #[error("TPM clock/reset counters went backwards")]
    ClockRegressed,
    /// The EK certificate could not be parsed.
    #[error("EK certificate is malformed: {0}")]
    EkCertMalformed(String),
    /// The EK certificate does not chain to a configured CA.
    #[error("EK certificate does not chain to a trusted CA: {0}")]
    EkCertUntrusted(String),
    /// The EK certificate chains to a CA the service trusts, but the license is bound to other
    /// EK CAs or enrolled EKs (the TCB reference's `vtpm_ek`): a vTPM this license was not sold
    /// for, e.g. a thief's own vTPM used with a customer's stolen files.
    #[error(
        "this vTPM is not allowed for the license: its EK certificate (SHA-256 {ek_sha256}, \
         issued by \"{issuer}\") is not one the license allows ({allowed}); use the vTPM the \
         license was sold for, or ask the ISV for a license bound to this vTPM's EK CA \
         (`ovsatool sale --ek-ca`) or EK (`--ek-cert`)"
    )]
    EkNotAllowedForLicense {
        /// SHA-256 of the refused EK certificate, hex.
        ek_sha256: String,
        /// Its issuer (control characters escaped).
        issuer: String,
        /// What the license allows, one item per CA or EK, `; `-separated.
        allowed: String,
    },
    /// The EK key type is not supported for the credential challenge.
    #[error("EK key type not supported for the credential challenge")]
    EkKeyUnsupported,
    /// The AK in the evidence is not the AK the credential challenge was made for.
    #[error("attestation key is not the one the credential challenge was issued for")]
    AkNameMismatch,
    /// The EK certificate in the evidence is not the one the challenge was made for.
    #[error("EK certificate is not the one the credential challenge was issued for")]
    EkCertMismatch,
    /// The credential returned by TPM2_ActivateCredential is wrong: the AK does not live in the
    /// TPM that owns the EK.
    #[error("credential activation response is wrong: AK not bound to EK")]
    CredentialMismatch,
    /// Host evidence is required but none was supplied (the vTPM NV area is empty).
    #[error("host evidence is missing")]
    HostEvidenceMissing,
    /// The host evidence blob is unreadable.
    #[error("host evidence blob: {0}")]
    HostBlob(HostBlobError),
    /// The host quote is qualified with something other than SHA-256 of this vTPM's EK
    /// certificate: it was made for another vTPM.
    #[error("host quote is bound to a different vTPM")]
    HostBindingMismatch,
    /// The host AK is not in the configured allow-list of enrolled host AKs.
    #[error("host attestation key is not enrolled")]
    HostAkNotEnrolled,
    /// The host evidence is older than the TCB reference's maximum age: the service first saw
    /// this host quote (or a later one from the same host TPM reset) more than `max_age`
    /// seconds ago.
    #[error(
        "host evidence is stale: this host quote was first seen {age} s ago, the TCB reference \
         allows {max_age} s; write fresh host evidence (`ovsatool host-quote` on the host) and \
         restart the VM's attestation"
    )]
    HostEvidenceStale {
        /// Seconds since the service first saw this evidence (a lower bound of its age).
        age: u64,
        /// The TCB reference's maximum age in seconds.
        max_age: u64,
    },
    /// The host quote was made before a host TPM reset the service has already seen evidence
    /// of: an old quote replayed after the host rebooted.
    #[error(
        "host evidence is replayed: its host TPM reset count {reset_count} is below {highest}, \
         already seen for this host TPM (the host rebooted since the quote was made); write \
         fresh host evidence (`ovsatool host-quote` on the host)"
    )]
    HostEvidenceReplayed {
        /// The quote's reset count.
        reset_count: u32,
        /// The highest reset count seen for this host EK.
        highest: u32,
    },
    /// A check on the host evidence failed (the inner error tells which).
    #[error("host evidence: {0}")]
    Host(Box<AttestError>),
    /// The firmware event log, the TCB reference's event pins or the IMA measurement list
    /// refused the evidence (the inner error tells which check and names the PCR).
    #[error("{0}")]
    MeasuredBoot(#[from] MeasuredBootError),
    /// Internal cryptographic failure (random generator, key construction).
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}

// The blob error is part of the message, so it is not also the `source()` (a chain reporter
// would print it twice): the `From` is written out instead of thiserror's `#[from]`.
impl From<HostBlobError> for AttestError {
    fn from(e: HostBlobError) -> Self {
        AttestError::HostBlob(e)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn host_blob_cause_prints_once() {
        let e = AttestError::from(HostBlobError::BadChecksum);
        assert_eq!(
            e.to_string(),
            "host evidence blob: host evidence checksum mismatch"
        );
        assert!(e.source().is_none(), "{e}");
    }
}
