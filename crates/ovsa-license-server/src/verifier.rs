//! The Verifier step of an attestation (RFC 9334): evidence in, attestation result out.
//!
//! Free of transport, like rustls's `WebPkiServerVerifier`: the static policy (trusted EK CAs,
//! clock policy) comes by reference as a [`VerifierConfig`], everything that varies per call
//! (the session's nonce and credential challenge, the license's TCB reference, the enrolled host
//! AKs, the TLS exporter) arrives in [`Facts`], and the answer is a typed
//! `Result<AttestationResult, AttestError>`. Mapping a refusal to a protocol reason, a hint and
//! an HTTP error is the API layer's job (`api::attestation_refused`).

use ovsa_core::attest::{
    check_ek_binding, check_host_freshness, quote_qualifying_data, verify, AkBinding, AttestError,
    AttestationResult, Expected, HostEvidence, HostPolicy, HostResult, HostSighting,
    PendingCredential, VerifierConfig,
};
use ovsa_core::crypto::hash::sha256;
use ovsa_core::protocol::AttestRequest;
use time::OffsetDateTime;

use crate::store::LicenseRecord;

/// The per-call facts of one attestation.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The nonce of the session the evidence answers.
    pub nonce: &'a [u8],
    /// The session's credential challenge (server-side state).
    pub pending: &'a PendingCredential,
    /// The license the session is for (its TCB reference).
    pub license: &'a LicenseRecord,
    /// The Attester's request: evidence, ephemeral key, credential answer.
    pub request: &'a AttestRequest,
    /// The TLS exporter of the connection the request came on.
    pub tls_exporter: &'a [u8],
    /// Whether host evidence is required ([`host_evidence_required`]).
    pub host_evidence_required: bool,
    /// The host AKs enrolled for the host EK of the evidence, or `None` if any restricted AK is
    /// accepted (the operator allowed unenrolled host AKs).
    pub enrolled_host_aks: Option<&'a [Vec<u8>]>,
    /// The vTPM's clock high-water mark lowered by the skew window
    /// ([`crate::tpm_clock::previous_clock_floor`]), if this EK was seen before: a quote at or
    /// below it within the same reset is refused ([`AttestError::ClockRegressed`]).
    pub previous_clock: Option<ovsa_core::attest::ClockInfo>,
    /// Now.
    pub now: OffsetDateTime,
}

/// Whether a check against `license` needs host evidence: the deployment requires it for every
/// license (`--require-host-evidence`), or the license's TCB reference pins host PCRs or limits
/// the host evidence's age. The one place this is decided: the challenge announces it and the
/// Verifier enforces it.
pub fn host_evidence_required(deployment_requires: bool, license: &LicenseRecord) -> bool {
    deployment_requires || license.tcb.host.is_some() || license.tcb.host_max_age_seconds.is_some()
}

/// The freshness check of verified host evidence (the Relying Party's half of the host checks,
/// after the store recorded the sighting): no reset count below the highest seen for the host
/// EK, and, when the license's TCB reference sets `host_max_age_seconds`, first seen no longer
/// ago than that.
pub fn check_host_evidence_freshness(
    host: &HostResult,
    seen: &HostSighting,
    license: &LicenseRecord,
    now: OffsetDateTime,
) -> Result<(), AttestError> {
    check_host_freshness(
        host,
        seen,
        license.tcb.host_max_age_seconds,
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    )
}

/// SHA-256 of the host EK certificate in `req`'s host evidence, if it carries decodable host
/// evidence (the key under which enrolled host AKs are stored). Undecodable evidence is left to
/// the Verifier to refuse.
pub fn host_ek_of(req: &AttestRequest) -> Option<[u8; 32]> {
    let blob = req.evidence.host_evidence.as_deref()?;
    let host = HostEvidence::decode(blob).ok()?;
    Some(sha256(&host.ek_cert))
}

/// Verifies the evidence of one attestation under `policy`, then the license's EK binding
/// (`vtpm_ek` of its TCB reference): a vTPM whose EK the service trusts but the license does not
/// allow is refused with `ek_not_allowed_for_license`.
pub fn verify_attestation(
    policy: &VerifierConfig,
    facts: &Facts<'_>,
) -> Result<AttestationResult, AttestError> {
    let req = facts.request;
    let qualifying = quote_qualifying_data(
        facts.nonce,
        &req.ephemeral_public_key,
        Some(facts.tls_exporter),
    );
    let reference = facts.license.tcb.reference_values();
    let expected = Expected {
        qualifying_data: &qualifying,
        reference: &reference,
        binding: AkBinding::Activated {
            pending: facts.pending,
            response: &req.activated_secret,
        },
        host: HostPolicy {
            required: facts.host_evidence_required,
            enrolled_aks: facts.enrolled_host_aks,
        },
        previous_clock: facts.previous_clock,
        now: u64::try_from(facts.now.unix_timestamp()).unwrap_or(0),
    };
    let result = verify(policy, &req.evidence, &expected)?;
    check_ek_binding(
        policy,
        facts.license.tcb.vtpm_ek.as_ref(),
        &req.evidence.ek_cert,
        expected.now,
    )?;
    Ok(result)
}
