//! `POST /v1/host-ak/challenge` and `POST /v1/host-ak/enroll`: host AK enrolment.
//!
//! Host evidence is made offline on the physical host (`ovsatool host-quote`), so no verifier
//! can challenge the AK that signs it at attestation time. Enrolment closes that gap once per
//! host AK: the host admin, authenticated as the customer of a license, sends the host TPM's EK
//! certificate and AK; the service makes a credential challenge under that EK (it must chain to a
//! trusted TPM vendor CA); only the TPM owning the EK can activate it for that AK. The AK's Name
//! is then stored for that EK, and host evidence is accepted only when signed by an enrolled AK
//! of its EK (unless the operator allows unenrolled host AKs).

use ovsa_core::attest::issue_host_credential;
use ovsa_core::crypto::{hash::sha256, random_array};
use ovsa_core::protocol::{
    HostAkChallengeRequest, HostAkChallengeResponse, HostAkEnrollRequest, HostAkEnrollResponse,
    Purpose, Reason,
};
use time::OffsetDateTime;

use super::challenge::{check_session_answer, license_for_client};
use super::{attest_reason, audit_outcome, parse_body, ApiError, AppState, AuditSubject, ConnInfo};
use crate::store::SessionRecord;

json_handler!(
    /// `POST /v1/host-ak/challenge`.
    challenge, "host_ak_challenge", issue_challenge -> HostAkChallengeResponse
);

json_handler!(
    /// `POST /v1/host-ak/enroll`.
    enroll, "host_ak_enroll", finish -> HostAkEnrollResponse
);

async fn issue_challenge(
    st: &AppState,
    conn: &ConnInfo,
    body: &[u8],
) -> Result<HostAkChallengeResponse, ApiError> {
    let req: HostAkChallengeRequest = parse_body(body)?;
    let now = OffsetDateTime::now_utc();
    let result = async {
        license_for_client(st, conn, req.license_guid).await?;
        let now_secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        let (pending, credential) =
            issue_host_credential(&st.verifier, &req.ek_certificate, &req.ak_public, now_secs)
                .map_err(|e| {
                    ApiError::new(attest_reason(&e), format!("host AK enrolment refused: {e}"))
                })?;
        let nonce = random_array::<32>().map_err(|e| ApiError::internal("nonce", e))?;
        let session = SessionRecord::issued(
            &pending,
            req.license_guid,
            Purpose::EnrollHostAk,
            nonce.to_vec(),
            conn.client_cert_sha256,
            now + st.settings.session_ttl,
        );
        st.store
            .put_session(&session)
            .await
            .map_err(|e| ApiError::internal("storing session", e))?;
        Ok::<_, ApiError>(HostAkChallengeResponse {
            session_id: session.session_id,
            expires_in: u32::try_from(st.settings.session_ttl.as_secs()).unwrap_or(u32::MAX),
            credential,
        })
    }
    .await;
    audit_outcome(
        st,
        conn,
        AuditSubject {
            at: now,
            license_guid: Some(req.license_guid),
            action: "host_ak_challenge",
            purpose: Some(Purpose::EnrollHostAk),
            instance_id: Some(sha256(&req.ek_certificate)),
        },
        &result,
        |_| ("issued", "host AK challenge issued".into()),
    )
    .await;
    result
}

async fn finish(
    st: &AppState,
    conn: &ConnInfo,
    body: &[u8],
) -> Result<HostAkEnrollResponse, ApiError> {
    let req: HostAkEnrollRequest = parse_body(body)?;
    let now = OffsetDateTime::now_utc();
    let session = st
        .store
        .take_session(req.session_id)
        .await
        .map_err(|e| ApiError::internal("loading session", e))?;
    let (license_guid, instance) = session.as_ref().map_or((None, None), |s| {
        (Some(s.license_guid), Some(s.ek_cert_sha256))
    });
    let result = async {
        let session = session
            .as_ref()
            .filter(|s| s.purpose == Purpose::EnrollHostAk)
            .ok_or_else(|| {
                ApiError::new(
                    Reason::UnknownSession,
                    "unknown host AK enrolment session: already used (replay), expired, or never issued; ask for a new challenge",
                )
            })?;
        check_session_answer(session, conn, now, "host AK answer")?;
        let pending = session
            .pending_credential()
            .map_err(|e| ApiError::internal("session", e))?;
        pending.check_response(&req.activated_secret).map_err(|e| {
            ApiError::new(attest_reason(&e), format!("host AK enrolment refused: {e}"))
        })?;
        st.store
            .enroll_host_ak(
                session.ek_cert_sha256,
                &session.ak_name,
                session.license_guid,
                now,
            )
            .await
            .map_err(|e| ApiError::internal("storing the host AK", e))?;
        Ok::<_, ApiError>(HostAkEnrollResponse {
            host_ek_sha256: hex::encode(session.ek_cert_sha256),
            ak_name: hex::encode(&session.ak_name),
        })
    }
    .await;
    audit_outcome(
        st,
        conn,
        AuditSubject {
            at: now,
            license_guid,
            action: "host_ak_enroll",
            purpose: Some(Purpose::EnrollHostAk),
            instance_id: instance,
        },
        &result,
        |r| {
            (
                "granted",
                format!(
                    "host AK {} enrolled for host EK {}",
                    r.ak_name, r.host_ek_sha256
                ),
            )
        },
    )
    .await;
    result
}
