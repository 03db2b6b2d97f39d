//! `POST /v1/challenge`: a fresh single-use nonce and a credential challenge for the AK.

use ovsa_core::attest::{check_ek_binding, issue_credential};
use ovsa_core::crypto::{ct_eq, hash::sha256, random_array};
use ovsa_core::protocol::{ChallengeRequest, ChallengeResponse, Purpose, Reason};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{attest_reason, audit_outcome, parse_body, ApiError, AppState, AuditSubject, ConnInfo};
use crate::store::{LicenseRecord, SessionRecord};
use crate::verifier::host_evidence_required;

json_handler!(
    /// `POST /v1/challenge`.
    handle, "challenge", challenge -> ChallengeResponse
);

/// Checks a taken session can still be answered: not expired, and answered by the TLS client it
/// was issued to. `answer` names the answer in the messages ("attestation", ...).
pub fn check_session_answer(
    session: &SessionRecord,
    conn: &ConnInfo,
    now: OffsetDateTime,
    answer: &str,
) -> Result<(), ApiError> {
    if now > session.expires_at {
        return Err(ApiError::new(
            Reason::SessionExpired,
            format!("the challenge expired before the {answer} arrived; ask for a new one"),
        ));
    }
    if !ct_eq(&session.client_cert_sha256, &conn.client_cert_sha256) {
        return Err(ApiError::new(
            Reason::ClientCertificateMismatch,
            format!("the {answer} came from another client than the challenge"),
        ));
    }
    Ok(())
}

/// Loads the license and checks the TLS client is its customer.
pub async fn license_for_client(
    st: &AppState,
    conn: &ConnInfo,
    guid: Uuid,
) -> Result<LicenseRecord, ApiError> {
    let license = st
        .store
        .license(guid)
        .await
        .map_err(|e| ApiError::internal("loading license", e))?
        .ok_or_else(|| {
            ApiError::new(
                Reason::UnknownLicense,
                format!("license {guid} is not registered with this license service"),
            )
        })?;
    if !ct_eq(&sha256(&license.customer_cert), &conn.client_cert_sha256) {
        return Err(ApiError::new(
            Reason::ClientCertificateMismatch,
            format!(
                "the TLS client certificate is not the customer certificate of license {guid}; connect with the keystore the license was sold to"
            ),
        ));
    }
    Ok(license)
}

async fn challenge(
    st: &AppState,
    conn: &ConnInfo,
    body: &[u8],
) -> Result<ChallengeResponse, ApiError> {
    let req: ChallengeRequest = parse_body(body)?;
    let now = OffsetDateTime::now_utc();
    let result = issue(st, conn, &req, now).await;
    audit_outcome(
        st,
        conn,
        AuditSubject {
            at: now,
            license_guid: Some(req.license_guid),
            action: "challenge",
            purpose: Some(req.purpose),
            instance_id: Some(sha256(&req.ek_certificate)),
        },
        &result,
        |_| ("issued", "challenge issued".into()),
    )
    .await;
    result
}

async fn issue(
    st: &AppState,
    conn: &ConnInfo,
    req: &ChallengeRequest,
    now: OffsetDateTime,
) -> Result<ChallengeResponse, ApiError> {
    if req.purpose == Purpose::EnrollHostAk {
        return Err(ApiError::new(
            Reason::MalformedRequest,
            "purpose enroll_host_ak belongs to /v1/host-ak/challenge; use load or renew here",
        ));
    }
    let license = license_for_client(st, conn, req.license_guid).await?;
    if license.revoked_at.is_some() {
        return Err(ApiError::new(
            Reason::LicenseRevoked,
            format!("license {} was revoked", req.license_guid),
        ));
    }
    let now_secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let (pending, credential) =
        issue_credential(&st.verifier, &req.ek_certificate, &req.ak_public, now_secs)
            .map_err(|e| ApiError::new(attest_reason(&e), e.to_string()))?;
    // The license's EK binding, early: a vTPM the license was not sold for gets no session (the
    // same check runs again on the verified evidence at /v1/attest).
    check_ek_binding(
        &st.verifier,
        license.tcb.vtpm_ek.as_ref(),
        &req.ek_certificate,
        now_secs,
    )
    .map_err(|e| ApiError::new(attest_reason(&e), e.to_string()))?;
    let nonce = random_array::<32>().map_err(|e| ApiError::internal("nonce", e))?;
    let session = SessionRecord::issued(
        &pending,
        req.license_guid,
        req.purpose,
        nonce.to_vec(),
        conn.client_cert_sha256,
        now + st.settings.session_ttl,
    );
    st.store
        .put_session(&session)
        .await
        .map_err(|e| ApiError::internal("storing session", e))?;
    let vtpm = &license.tcb.vtpm;
    Ok(ChallengeResponse {
        session_id: session.session_id,
        nonce: session.nonce.clone(),
        expires_in: u32::try_from(st.settings.session_ttl.as_secs()).unwrap_or(u32::MAX),
        credential,
        pcr_bank: vtpm.bank.to_attest(),
        // Value-pinned and event-pinned PCRs alike.
        pcr_indices: license.tcb.quoted_pcrs(),
        host_evidence_required: host_evidence_required(st.settings.require_host_evidence, &license),
    })
}
