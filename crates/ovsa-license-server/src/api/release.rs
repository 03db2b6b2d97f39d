//! `POST /v1/release`: a runtime unloaded a model; the lease it held ends, and with it the
//! machine's seat once the machine holds no other live lease of the license.
//!
//! Authenticated like the other calls (the TLS client certificate must be the license's
//! customer certificate) but not attested: ending a lease only gives a seat back, so a customer
//! can only release their own seats. Idempotent: an unknown or already released lease answers
//! `released: false`.

use ovsa_core::protocol::{ReleaseRequest, ReleaseResponse};
use time::OffsetDateTime;

use super::challenge::license_for_client;
use super::{audit_outcome, parse_body, ApiError, AppState, AuditSubject, ConnInfo};

json_handler!(
    /// `POST /v1/release`.
    handle, "release", release -> ReleaseResponse
);

async fn release(st: &AppState, conn: &ConnInfo, body: &[u8]) -> Result<ReleaseResponse, ApiError> {
    let req: ReleaseRequest = parse_body(body)?;
    let now = OffsetDateTime::now_utc();
    let result = async {
        license_for_client(st, conn, req.license_guid).await?;
        let released = st
            .store
            .release_lease(req.license_guid, req.lease_id)
            .await
            .map_err(|e| ApiError::internal("releasing lease", e))?;
        Ok(ReleaseResponse { released })
    }
    .await;
    audit_outcome(
        st,
        conn,
        AuditSubject {
            at: now,
            license_guid: Some(req.license_guid),
            action: "release",
            purpose: None,
            instance_id: None,
        },
        &result,
        |r| {
            let what = if r.released {
                "released"
            } else {
                "unknown or already released"
            };
            ("released", format!("lease {} {what}", req.lease_id))
        },
    )
    .await;
    result
}
