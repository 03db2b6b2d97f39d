//! The HTTP API (`docs/PROTOCOL.md`): routes, shared state, connection identity, errors.

/// Defines the axum handler of a JSON endpoint: bounded body, request timeout, metrics and
/// refusal logging ([`json_endpoint`]), then `$inner(&state, &conn, body)`.
macro_rules! json_handler {
    ($(#[$m:meta])* $name:ident, $label:literal, $inner:ident -> $resp:ty) => {
        $(#[$m])*
        pub async fn $name(
            axum::extract::State(st): axum::extract::State<std::sync::Arc<super::AppState>>,
            conn: super::Conn,
            headers: axum::http::HeaderMap,
            body: axum::body::Body,
        ) -> Result<axum::Json<$resp>, super::ApiError> {
            super::json_endpoint(&st, $label, &conn, &headers, body, async |b| {
                $inner(&st, &conn, b).await
            })
            .await
        }
    };
}

mod attest;
mod challenge;
mod host_ak;
mod release;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use ovsa_core::attest::{AttestError, VerifierConfig};
use ovsa_core::protocol::{
    ErrorDetail, ErrorResponse, Reason, MAX_ATTEST_REQUEST_BYTES, MAX_REQUEST_BYTES,
};

use crate::metrics::Metrics;
use crate::store::{AuditEntry, Store};

/// Service settings that handlers need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a challenge stays valid.
    pub session_ttl: Duration,
    /// Refuse attestations without host evidence, whatever the TCB reference says (see
    /// [`crate::verifier::host_evidence_required`]).
    pub require_host_evidence: bool,
    /// Upper bound on one request's handling.
    pub request_timeout: Duration,
    /// Accept host evidence signed by a host AK that was never enrolled (`/v1/host-ak/*`).
    /// Off by default: such evidence proves only that *some* restricted key signed it, not that
    /// the key lives in the certified host TPM.
    pub allow_unenrolled_host_ak: bool,
}

/// Shared state of the handlers.
pub struct AppState {
    /// Storage.
    pub store: Store,
    /// The Verifier's static policy (trusted EK CAs, clock policy).
    pub verifier: VerifierConfig,
    /// Settings.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Metrics,
}

/// What the TLS layer established about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's certificate (DER).
    pub client_cert: Vec<u8>,
    /// Its SHA-256.
    pub client_cert_sha256: [u8; 32],
    /// Its subject, for the audit log.
    pub client_subject: String,
    /// The TLS exporter value the quote must be bound to.
    pub exporter: [u8; ovsa_core::protocol::TLS_EXPORTER_LEN],
    /// Peer address.
    pub peer: std::net::SocketAddr,
    /// The certificate is an operator certificate (`--metrics-client-cert`): may read `/metrics`.
    pub operator: bool,
}

impl ConnInfo {
    /// How the client appears in the audit log.
    pub fn audit_name(&self) -> String {
        format!(
            "{} (sha256:{})",
            self.client_subject,
            hex::encode(&self.client_cert_sha256[..8])
        )
    }
}

/// A refusal: reason code + message, rendered as an [`ErrorResponse`].
#[derive(Debug)]
pub struct ApiError {
    /// Stable code.
    pub reason: Reason,
    /// Message for the runtime's log (never secret).
    pub message: String,
}

impl ApiError {
    /// Makes an error.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ApiError {
            reason,
            message: message.into(),
        }
    }

    /// An internal failure; details go to the server log, not to the client.
    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(
            "{context}: {}",
            crate::text::escape_controls(&e.to_string())
        );
        ApiError::new(
            Reason::Internal,
            "internal error; see the license service log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.reason.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorResponse {
            error: ErrorDetail {
                code: self.reason,
                message: self.message,
            },
        };
        (status, Json(body)).into_response()
    }
}

/// The protocol reason of a Verifier refusal.
pub fn attest_reason(e: &AttestError) -> Reason {
    use AttestError as E;
    match e {
        E::EkCertMalformed(_) | E::EkCertUntrusted(_) | E::EkKeyUnsupported => Reason::UntrustedEk,
        E::EkNotAllowedForLicense { .. } => Reason::EkNotAllowedForLicense,
        E::AkNameMismatch | E::EkCertMismatch | E::CredentialMismatch => Reason::CredentialMismatch,
        E::PcrBankMismatch { .. } | E::PcrNotQuoted(_) | E::PcrValueMismatch(_) => {
            Reason::PcrMismatch
        }
        E::HostEvidenceMissing
        | E::HostBlob(_)
        | E::HostBindingMismatch
        | E::HostAkNotEnrolled
        | E::Host(_) => Reason::HostEvidenceInvalid,
        E::HostEvidenceStale { .. } => Reason::HostEvidenceStale,
        E::HostEvidenceReplayed { .. } => Reason::HostEvidenceReplayed,
        E::ClockRegressed => Reason::TpmClockRegressed,
        E::MeasuredBoot(m) => measured_boot_reason(m),
        E::Crypto(_) => Reason::Internal,
        _ => Reason::QuoteInvalid,
    }
}

fn measured_boot_reason(e: &ovsa_core::attest::MeasuredBootError) -> Reason {
    use ovsa_core::attest::MeasuredBootError as M;
    match e {
        M::EventNotAllowed { .. } => Reason::EventNotAllowed,
        M::PinnedPcrNotQuoted(_) | M::PinBankMismatch { .. } => Reason::PcrMismatch,
        M::ImaLogMalformed(_) | M::ImaLogMismatch(_) | M::ImaLogMissing => Reason::ImaLogMismatch,
        M::RuntimeNotAllowed { .. } => Reason::RuntimeNotAllowed,
        M::LogTooLarge { what, .. } if what.starts_with("IMA") => Reason::ImaLogMismatch,
        _ => Reason::EventLogMismatch,
    }
}

/// A Verifier refusal of an attestation as the client sees it: reason, message, and what to do
/// where the fix is on the customer's side.
pub fn attestation_refused(e: &AttestError) -> ApiError {
    let hint = if matches!(e, AttestError::HostAkNotEnrolled) {
        " (enrol the host AK first: `ovsatool host-enroll` on the host, then `ovsatool host-quote --ak-cache-dir` with the same directory)"
    } else {
        ""
    };
    ApiError::new(attest_reason(e), format!("attestation refused: {e}{hint}"))
}

/// Parses a JSON body into `T`, refusing with `malformed_request` and the parser's message.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            Reason::MalformedRequest,
            format!("invalid request body: {e}"),
        )
    })
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        Reason::RequestTooLarge,
        format!("request body exceeds the {limit}-byte limit"),
    )
}

/// The body limit of an endpoint: [`MAX_ATTEST_REQUEST_BYTES`] for `/v1/attest`, whose evidence
/// may carry the firmware event log and the IMA list, [`MAX_REQUEST_BYTES`] for every other.
pub fn body_limit(endpoint: &str) -> usize {
    if endpoint == "attest" {
        MAX_ATTEST_REQUEST_BYTES
    } else {
        MAX_REQUEST_BYTES
    }
}

/// Reads a request body: refused at once when its declared length is over the limit, cut off
/// when it grows past the limit, and bounded in time (a client trickling its body cannot hold a
/// connection slot beyond the request timeout).
pub async fn read_body(
    st: &AppState,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(st.settings.request_timeout, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            Reason::MalformedRequest,
            "the request body did not arrive in time",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(limit)),
        Ok(Err(e)) => Err(ApiError::new(
            Reason::MalformedRequest,
            format!("unreadable request body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/challenge", post(challenge::handle))
        .route("/v1/attest", post(attest::handle))
        .route("/v1/host-ak/challenge", post(host_ak::challenge))
        .route("/v1/host-ak/enroll", post(host_ak::enroll))
        .route("/v1/release", post(release::handle))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(
            MAX_ATTEST_REQUEST_BYTES,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        Reason::MalformedRequest,
        "no such endpoint: the API is POST /v1/challenge, POST /v1/attest, POST /v1/release, GET /healthz, GET /metrics",
    )
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    match st.store.license(uuid::Uuid::nil()).await {
        Ok(_) => {
            Json(serde_json::json!({"status": "ok", "storage": st.store.backend()})).into_response()
        }
        Err(e) => {
            tracing::error!("health check: storage: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "unavailable", "storage": st.store.backend()})),
            )
                .into_response()
        }
    }
}

/// `/metrics`: only for operator certificates (`--metrics-client-cert`); customers are refused.
async fn metrics(State(st): State<Arc<AppState>>, conn: Conn) -> Response {
    if !conn.operator {
        return ApiError::new(
            Reason::ClientCertificateMismatch,
            "GET /metrics is served only to the operator certificates given by \
             --metrics-client-cert (metrics_client_cert in the config file); this connection's \
             client certificate is not one of them",
        )
        .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}

/// Runs a handler body with the request timeout, records metrics, and logs refusals.
pub async fn instrumented<T, F>(
    st: &AppState,
    endpoint: &'static str,
    conn: &ConnInfo,
    fut: F,
) -> Result<Json<T>, ApiError>
where
    F: std::future::Future<Output = Result<T, ApiError>>,
{
    let start = Instant::now();
    let result = match tokio::time::timeout(st.settings.request_timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            Reason::Busy,
            "request timed out; retry later",
        )),
    };
    let reason = result.as_ref().err().map(|e| e.reason.as_str());
    st.metrics
        .observe(endpoint, reason, start.elapsed().as_secs_f64());
    if let Err(e) = &result {
        tracing::info!(
            endpoint,
            client = %crate::text::escape_controls(&conn.audit_name()),
            peer = %conn.peer,
            reason = e.reason.as_str(),
            "refused: {}",
            crate::text::escape_controls(&e.message)
        );
    }
    result.map(Json)
}

/// One JSON endpoint: reads the bounded body, then runs `handler` on it under the request
/// timeout, with metrics and refusal logging ([`instrumented`]).
pub async fn json_endpoint<T, H>(
    st: &AppState,
    endpoint: &'static str,
    conn: &ConnInfo,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    handler: H,
) -> Result<Json<T>, ApiError>
where
    H: AsyncFnOnce(&[u8]) -> Result<T, ApiError>,
{
    match read_body(st, headers, body, body_limit(endpoint)).await {
        Ok(bytes) => instrumented(st, endpoint, conn, handler(&bytes)).await,
        Err(e) => instrumented(st, endpoint, conn, async { Err(e) }).await,
    }
}

/// Appends to the audit log; a failure to audit is logged (the decision stands).
pub async fn audit(st: &AppState, entry: AuditEntry) {
    if let Err(e) = st.store.append_audit(&entry).await {
        tracing::error!("audit log write failed: {e}");
    }
}

/// What the audit row of one request is about (everything but its outcome).
pub struct AuditSubject {
    /// Time of the decision.
    pub at: time::OffsetDateTime,
    /// License concerned, if known.
    pub license_guid: Option<uuid::Uuid>,
    /// The action (`challenge`, `attest`, ...).
    pub action: &'static str,
    /// Load / renew / host AK enrolment.
    pub purpose: Option<ovsa_core::protocol::Purpose>,
    /// SHA-256 of the EK certificate concerned.
    pub instance_id: Option<[u8; 32]>,
}

/// Audits the outcome of one request: on success `ok` gives the result word and the message, a
/// refusal is audited with its reason and message.
pub async fn audit_outcome<T>(
    st: &AppState,
    conn: &ConnInfo,
    subject: AuditSubject,
    result: &Result<T, ApiError>,
    ok: impl FnOnce(&T) -> (&'static str, String),
) {
    let (res, reason, message) = match result {
        Ok(r) => {
            let (res, message) = ok(r);
            (res, None, message)
        }
        Err(e) => ("refused", Some(e.reason), e.message.clone()),
    };
    audit(
        st,
        AuditEntry {
            at: subject.at,
            license_guid: subject.license_guid,
            client: conn.audit_name(),
            action: subject.action.into(),
            purpose: subject.purpose,
            result: res.into(),
            reason,
            message,
            instance_id: subject.instance_id,
        },
    )
    .await;
}

/// Extracts the connection identity (always present: the TLS layer inserts it).
pub type Conn = Extension<Arc<ConnInfo>>;
