//! The Verifier step of an attestation (RFC 9334): evidence in, attestation result out, using
//! [`ovsa_core::attest::verify`] with the session's nonce, the runtime's ephemeral key and the
//! TLS channel bound into the expected qualifying data.

use ovsa_core::attest::{
    quote_qualifying_data, verify, AkBinding, AttestError, AttestationResult, Expected,
    HostEvidence,
};
use ovsa_core::crypto::hash::sha256;
use ovsa_core::protocol::{AttestRequest, Reason};
use time::OffsetDateTime;

use crate::api::{ApiError, AppState, ConnInfo};
use crate::store::{LicenseRecord, SessionRecord};

/// Maps a verification failure to its protocol reason.
pub fn attest_reason(e: &AttestError) -> Reason {
    use AttestError as E;
    match e {
        E::EkCertMalformed(_) | E::EkCertUntrusted(_) | E::EkKeyUnsupported => Reason::UntrustedEk,
        E::AkNameMismatch | E::EkCertMismatch | E::CredentialMismatch => Reason::CredentialMismatch,
        E::PcrBankMismatch { .. } | E::PcrNotQuoted(_) | E::PcrValueMismatch(_) => {
            Reason::PcrMismatch
        }
        E::HostEvidenceMissing
        | E::HostBlob(_)
        | E::HostBindingMismatch
        | E::HostAkNotEnrolled
        | E::Host(_) => Reason::HostEvidenceInvalid,
        E::Crypto(_) => Reason::Internal,
        _ => Reason::QuoteInvalid,
    }
}

/// The host AKs the Verifier accepts for the host evidence of `req`: those enrolled for its host
/// EK (`None`, i.e. any restricted AK, only if the operator allows unenrolled host AKs or there
/// is no decodable host evidence, which the Verifier then refuses or ignores on its own).
async fn enrolled_host_aks(
    st: &AppState,
    req: &AttestRequest,
) -> Result<Option<Vec<Vec<u8>>>, ApiError> {
    if st.settings.allow_unenrolled_host_ak {
        return Ok(None);
    }
    let Some(host) = req
        .evidence
        .host_evidence
        .as_deref()
        .and_then(|b| HostEvidence::decode(b).ok())
    else {
        return Ok(None);
    };
    let names = st
        .store
        .host_aks(sha256(&host.ek_cert))
        .await
        .map_err(|e| ApiError::internal("loading enrolled host AKs", e))?;
    Ok(Some(names))
}

/// Verifies the evidence of `req` for `session`.
pub async fn verify_session_evidence(
    st: &AppState,
    conn: &ConnInfo,
    session: &SessionRecord,
    license: &LicenseRecord,
    req: &AttestRequest,
    now: OffsetDateTime,
) -> Result<AttestationResult, ApiError> {
    let pending = session
        .pending_credential()
        .map_err(|e| ApiError::internal("session", e))?;
    let qualifying = quote_qualifying_data(
        &session.nonce,
        &req.ephemeral_public_key,
        Some(&conn.exporter),
    );
    let reference = license.tcb.reference_values();
    let mut config = st.verifier.clone();
    config.require_host_evidence |= license.tcb.host.is_some();
    config.enrolled_host_aks = enrolled_host_aks(st, req).await?;
    let expected = Expected {
        qualifying_data: &qualifying,
        reference: &reference,
        binding: AkBinding::Activated {
            pending: &pending,
            response: &req.activated_secret,
        },
        previous_clock: None,
        now: u64::try_from(now.unix_timestamp()).unwrap_or(0),
    };
    verify(&config, &req.evidence, &expected).map_err(|e| {
        let hint = if matches!(e, AttestError::HostAkNotEnrolled) {
            " (enrol the host AK first: `ovsatool host-enroll` on the host, then `ovsatool host-quote --ak-cache-dir` with the same directory)"
        } else {
            ""
        };
        ApiError::new(attest_reason(&e), format!("attestation refused: {e}{hint}"))
    })
}
