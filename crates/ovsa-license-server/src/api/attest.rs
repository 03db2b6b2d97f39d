//! `POST /v1/attest`: verify the evidence (Verifier), apply the policy (Relying Party), release
//! the key share sealed to the runtime's ephemeral key.

use ovsa_core::encoding::format_rfc3339;
use ovsa_core::license::KeyShare;
use ovsa_core::protocol::{seal_share, AttestRequest, AttestResponse, Purpose, Reason};
use time::OffsetDateTime;

use super::challenge::{check_session_answer, license_for_client};
use super::{
    attestation_refused, audit, audit_outcome, parse_body, ApiError, AppState, AuditSubject,
    ConnInfo,
};
use crate::relying_party::{decide, Decision};
use crate::store::{AuditEntry, ClockMark, LicenseRecord, SeatRequest, SessionRecord};
use crate::tpm_clock::previous_clock_floor;
use crate::verifier::{
    check_host_evidence_freshness, host_ek_of, host_evidence_required, verify_attestation, Facts,
};

json_handler!(
    /// `POST /v1/attest`.
    handle, "attest", attest -> AttestResponse
);

async fn attest(st: &AppState, conn: &ConnInfo, body: &[u8]) -> Result<AttestResponse, ApiError> {
    let req: AttestRequest = parse_body(body)?;
    let now = OffsetDateTime::now_utc();
    // Single use: the session is deleted as it is read, so a replay finds nothing.
    let session = match st
        .store
        .take_session(req.session_id)
        .await
        .map_err(|e| ApiError::internal("loading session", e))?
    {
        Some(session) => session,
        None => {
            // A replay is the refusal an operator most wants to see: audit it too (the session,
            // and with it the license, is unknown by now).
            let e = ApiError::new(
                Reason::UnknownSession,
                "unknown attestation session: it was already used (replay), expired, or never issued; ask for a new challenge",
            );
            audit(
                st,
                AuditEntry {
                    at: now,
                    license_guid: None,
                    client: conn.audit_name(),
                    action: "attest".into(),
                    purpose: None,
                    result: "refused".into(),
                    reason: Some(e.reason),
                    message: format!("session {}: {}", req.session_id, e.message),
                    instance_id: None,
                },
            )
            .await;
            return Err(e);
        }
    };
    let mut instance = None;
    let result = async {
        if session.purpose == Purpose::EnrollHostAk {
            return Err(ApiError::new(
                Reason::UnknownSession,
                "this session is a host AK enrolment, not an attestation; ask /v1/challenge for one",
            ));
        }
        check_session_answer(&session, conn, now, "attestation")?;
        let license = license_for_client(st, conn, session.license_guid).await?;
        let verified = verify_evidence(st, conn, &session, &license, &req, now).await?;
        instance = Some(verified.ek_cert_sha256);
        let purpose = session.purpose;
        // Seal before counting the use: a request whose ephemeral key cannot receive the share
        // is refused without spending a use (the seal is only returned if the policy grants).
        let sealed = match purpose {
            Purpose::Renew | Purpose::EnrollHostAk => None,
            Purpose::Load => {
                let share = KeyShare::from_bytes(&license.key_share)
                    .map_err(|e| ApiError::internal("stored key share", e))?;
                Some(
                    seal_share(
                        &share,
                        &req.ephemeral_public_key,
                        &session.nonce,
                        &session.session_id,
                        &session.license_guid,
                    )
                    .map_err(|e| ApiError::new(Reason::MalformedRequest, e.to_string()))?,
                )
            }
        };
        // A load starts a lease named by its session id; a renewal keeps the lease it names
        // (a client that names none starts a new lease on the same seat).
        let lease_id = match purpose {
            Purpose::Renew => req.lease_id.unwrap_or(session.session_id),
            Purpose::Load | Purpose::EnrollHostAk => session.session_id,
        };
        let seat = SeatRequest {
            instance_id: verified.ek_cert_sha256,
            lease_id,
            clock: ClockMark::from(&verified.clock),
        };
        let decision = st
            .store
            .record_use(session.license_guid, &seat, now, &|state| {
                decide(state, purpose, now)
            })
            .await
            .map_err(|e| ApiError::internal("recording use", e))?
            .ok_or_else(|| ApiError::new(Reason::UnknownLicense, "license was removed"))?;
        match decision {
            Decision::Refuse(reason) => {
                Err(ApiError::new(reason, refusal_message(reason, &license)))
            }
            Decision::Grant {
                uses, not_after, ..
            } => Ok(AttestResponse {
                license_guid: session.license_guid,
                share: sealed,
                lease_seconds: license.lease_seconds,
                uses,
                usage_limit: license.policy.usage_limit,
                not_after: not_after.map(format_rfc3339),
                lease_id: Some(lease_id),
            }),
        }
    }
    .await;
    audit_outcome(
        st,
        conn,
        AuditSubject {
            at: now,
            license_guid: Some(session.license_guid),
            action: "attest",
            purpose: Some(session.purpose),
            instance_id: instance,
        },
        &result,
        |r| match r.share {
            Some(_) => (
                "granted",
                format!(
                    "key share released; uses {}; lease {}",
                    r.uses,
                    lease_text(r)
                ),
            ),
            None => (
                "granted",
                format!("lease renewed; uses {}; lease {}", r.uses, lease_text(r)),
            ),
        },
    )
    .await;
    result
}

fn lease_text(r: &AttestResponse) -> String {
    r.lease_id.map(|l| l.to_string()).unwrap_or_default()
}

/// Gathers the per-call facts (the session's credential challenge, the enrolled host AKs, the
/// vTPM's clock high-water mark), runs
/// the Verifier, then records verified host evidence and checks its freshness against what was
/// seen before (`host_evidence_replayed`, `host_evidence_stale`).
async fn verify_evidence(
    st: &AppState,
    conn: &ConnInfo,
    session: &SessionRecord,
    license: &LicenseRecord,
    req: &AttestRequest,
    now: OffsetDateTime,
) -> Result<ovsa_core::attest::AttestationResult, ApiError> {
    let pending = session
        .pending_credential()
        .map_err(|e| ApiError::internal("session", e))?;
    let enrolled = match host_ek_of(req) {
        Some(host_ek) if !st.settings.allow_unenrolled_host_ak => Some(
            st.store
                .host_aks(host_ek)
                .await
                .map_err(|e| ApiError::internal("loading enrolled host AKs", e))?,
        ),
        _ => None,
    };
    // Advisory here (read outside the transaction; the store's transaction re-checks it
    // atomically): a quote whose clock went back is refused before any seat is looked at.
    let previous_clock = st
        .store
        .tpm_clock(session.ek_cert_sha256)
        .await
        .map_err(|e| ApiError::internal("loading the TPM clock high-water mark", e))?
        .map(previous_clock_floor);
    let facts = Facts {
        nonce: &session.nonce,
        pending: &pending,
        license,
        request: req,
        tls_exporter: &conn.exporter,
        host_evidence_required: host_evidence_required(st.settings.require_host_evidence, license),
        enrolled_host_aks: enrolled.as_deref(),
        previous_clock,
        now,
    };
    let verified = verify_attestation(&st.verifier, &facts).map_err(|e| attestation_refused(&e))?;
    if let Some(host) = &verified.host {
        // Recorded only now that the host quote's signature verified: a forged high reset count
        // would make the host's real evidence look replayed.
        let seen = st
            .store
            .record_host_evidence(host.ek_cert_sha256, &host.clock, now)
            .await
            .map_err(|e| ApiError::internal("recording host evidence", e))?;
        check_host_evidence_freshness(host, &seen, license, now)
            .map_err(|e| attestation_refused(&e))?;
    }
    Ok(verified)
}

fn refusal_message(reason: Reason, license: &LicenseRecord) -> String {
    let guid = license.license_guid;
    match reason {
        Reason::LicenseRevoked => format!("license {guid} was revoked"),
        Reason::LicenseExpired => format!("license {guid} has expired"),
        Reason::LicenseNotYetValid => format!("license {guid} is not valid yet"),
        Reason::UsageLimitReached => format!(
            "license {guid} has reached its usage limit of {} loads",
            license.policy.usage_limit.unwrap_or_default()
        ),
        Reason::InstanceLimitReached => format!(
            "license {guid} is in use on {} machines, its instance limit: unload the model \
             elsewhere (or wait until that machine's lease of {} s + grace {} s lapses)",
            license.policy.instance_limit.unwrap_or_default(),
            license.lease_seconds,
            license.grace_seconds
        ),
        Reason::TpmCloneSuspected => format!(
            "this vTPM (same EK) is still in use for license {guid} or another license at an \
             earlier TPM reset: a copy (clone) of a vTPM in use is refused; after a reboot \
             without a clean unload, retry once the earlier boot's leases lapse (lease {} s + \
             grace {} s)",
            license.lease_seconds, license.grace_seconds
        ),
        Reason::TpmClockRegressed => "the vTPM's clock or reset/restart counters are behind \
             what this vTPM (same EK) already showed: a copied or rolled-back vTPM state is \
             refused"
            .to_string(),
        other => format!("refused: {other}"),
    }
}
