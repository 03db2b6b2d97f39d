//! The license-service wire protocol (version 1): request and response bodies, reason codes, and
//! the sealing of the key share to the runtime's ephemeral key. `docs/PROTOCOL.md` is the
//! normative description; this module is its reference implementation, shared by the service
//! and the client.

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::attest::{CredentialChallenge, Evidence, HashAlg};
use crate::crypto::aead::AeadKey;
use crate::crypto::{kdf, random_array};
use crate::encoding::b64;
use crate::error::{Error, Result};
use crate::license::KeyShare;

/// Path prefix of protocol version 1.
pub const API_PREFIX: &str = "/v1";
/// TLS exporter label binding a quote to the TLS connection (RFC 8446 §7.5).
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-OVSA-attestation-v1";
/// TLS exporter output length.
pub const TLS_EXPORTER_LEN: usize = 32;
/// Largest request body the service accepts, except on `/v1/attest`.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest `/v1/attest` body: [`MAX_REQUEST_BYTES`] for the quote, certificates and host
/// evidence, plus the firmware event log and the IMA list at their bounds
/// ([`crate::attest::measured_boot::MAX_EVENT_LOG_BYTES`], 256 KiB, and
/// [`crate::attest::measured_boot::MAX_IMA_LOG_BYTES`], 512 KiB), base64-encoded (4/3): 1088 KiB,
/// rounded up to 1152 KiB for JSON framing. Only this endpoint takes it: every other body stays
/// at 64 KiB (docs/PROTOCOL.md, docs/THREAT-MODEL.md on what this costs per request slot).
pub const MAX_ATTEST_REQUEST_BYTES: usize = 1152 * 1024;
const SHARE_KDF_LABEL: &[u8] = b"OVSA-v1 key share";

/// Why the runtime is checking the license.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// A model load: counts against the usage limit.
    Load,
    /// A lease renewal of a loaded model: re-attests and re-checks the policy, counts no use,
    /// and releases no key share (a loaded model needs none), so renewals cannot be used to
    /// obtain the model key without counting a load.
    Renew,
    /// Enrolment of a host TPM's AK (`/v1/host-ak/*`): proves the AK that signs host evidence
    /// lives in the host TPM that owns the certified EK. Never valid on `/v1/challenge`.
    EnrollHostAk,
}

/// `POST /v1/challenge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The license being used.
    pub license_guid: Uuid,
    /// Load or renew.
    pub purpose: Purpose,
    /// The vTPM's EK certificate (DER).
    #[serde(with = "b64")]
    pub ek_certificate: Vec<u8>,
    /// The AK's public area (marshalled TPMT_PUBLIC).
    #[serde(with = "b64")]
    pub ak_public: Vec<u8>,
}

/// Response to a challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeResponse {
    /// Identifies this attestation session (single use).
    pub session_id: Uuid,
    /// The fresh nonce to bind into the quote.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// Seconds until the session expires.
    pub expires_in: u32,
    /// The credential challenge for the AK (TPM2_ActivateCredential input).
    pub credential: CredentialChallenge,
    /// The PCR bank to quote.
    pub pcr_bank: HashAlg,
    /// The PCRs to quote.
    pub pcr_indices: Vec<u8>,
    /// Whether host evidence (from the vTPM's NV) must be sent.
    pub host_evidence_required: bool,
}

/// `POST /v1/attest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// From the challenge response.
    pub session_id: Uuid,
    /// The quote and its context.
    pub evidence: Evidence,
    /// What TPM2_ActivateCredential returned.
    #[serde(with = "b64")]
    pub activated_secret: Vec<u8>,
    /// The runtime's ephemeral P-256 public key (uncompressed point) bound into the quote; the
    /// share is sealed to it.
    #[serde(with = "b64")]
    pub ephemeral_public_key: Vec<u8>,
    /// Renewals: the lease (seat holder) being kept, as returned by the load's
    /// [`AttestResponse::lease_id`]. Absent for loads (a load starts a new lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<Uuid>,
}

/// `POST /v1/release`: a loaded model was unloaded; its lease no longer holds a seat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The license.
    pub license_guid: Uuid,
    /// The lease to end ([`AttestResponse::lease_id`] of the load).
    pub lease_id: Uuid,
}

/// Response to a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseResponse {
    /// Whether a live or lapsed lease was found and ended (`false`: unknown, or already
    /// released; releasing is idempotent).
    pub released: bool,
}

/// `POST /v1/host-ak/challenge`: the host admin (`ovsatool host-enroll`, authenticated as the
/// customer of `license_guid`) asks to enrol the AK that will sign the host TPM's evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAkChallengeRequest {
    /// A license of the customer (authorises the request; the enrolment is per host TPM).
    pub license_guid: Uuid,
    /// The host TPM's EK certificate (DER); must chain to a trusted TPM vendor CA.
    #[serde(with = "b64")]
    pub ek_certificate: Vec<u8>,
    /// The host AK's public area (marshalled TPMT_PUBLIC): a restricted signing key.
    #[serde(with = "b64")]
    pub ak_public: Vec<u8>,
}

/// Response to a host AK challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAkChallengeResponse {
    /// Identifies this enrolment session (single use).
    pub session_id: Uuid,
    /// Seconds until the session expires.
    pub expires_in: u32,
    /// The credential challenge for the host AK (TPM2_ActivateCredential input).
    pub credential: CredentialChallenge,
}

/// `POST /v1/host-ak/enroll`: the answer to the host AK's credential challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAkEnrollRequest {
    /// From the challenge response.
    pub session_id: Uuid,
    /// What TPM2_ActivateCredential returned on the host TPM.
    #[serde(with = "b64")]
    pub activated_secret: Vec<u8>,
}

/// The host AK is enrolled: host evidence signed by it is accepted for this host EK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAkEnrollResponse {
    /// SHA-256 of the host EK certificate (hex).
    pub host_ek_sha256: String,
    /// The enrolled AK's Name (hex).
    pub ak_name: String,
}

/// The key share sealed to the runtime's ephemeral key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedShare {
    /// The service's ephemeral P-256 public key (uncompressed point).
    #[serde(with = "b64")]
    pub epk: Vec<u8>,
    /// AES-GCM nonce.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// Share ciphertext || tag.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

/// Successful attestation: the share and the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestResponse {
    /// The license.
    pub license_guid: Uuid,
    /// The sealed key share (loads only; absent for renewals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<SealedShare>,
    /// Seconds until the runtime must check again.
    pub lease_seconds: u32,
    /// Successful loads so far, including this one.
    pub uses: u64,
    /// The usage limit, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_limit: Option<u64>,
    /// When the license ends (RFC 3339), if it has a time limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// The lease that holds this machine's seat: send it with every renewal
    /// ([`AttestRequest::lease_id`]) and to `/v1/release` on unload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<Uuid>,
}

/// Why a request was refused. Stable identifiers: runtimes and monitoring match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// The body is not a valid request (JSON, types, encodings).
    MalformedRequest,
    /// The body exceeds the size limit.
    RequestTooLarge,
    /// No such license is registered.
    UnknownLicense,
    /// The TLS client certificate is not the license's customer certificate.
    ClientCertificateMismatch,
    /// The license was revoked.
    LicenseRevoked,
    /// The license's time limit has passed.
    LicenseExpired,
    /// The license is not valid yet.
    LicenseNotYetValid,
    /// The usage limit is reached.
    UsageLimitReached,
    /// The instance limit is reached: the license's live seats are all held by other machines.
    InstanceLimitReached,
    /// Another live holder of the same vTPM (same EK) exists at an earlier TPM reset: this TPM
    /// looks like a copy (clone) of a vTPM that is still in use.
    TpmCloneSuspected,
    /// The TPM's clock or reset/restart counters went back compared with what this vTPM (EK)
    /// already showed: a copied or rolled-back vTPM state.
    TpmClockRegressed,
    /// No such session: never issued, already used (replay), or expired and purged.
    UnknownSession,
    /// The session expired before the attestation arrived.
    SessionExpired,
    /// The vTPM's EK certificate is not trusted.
    UntrustedEk,
    /// The vTPM's EK is trusted by the service, but the license is bound to other EK CAs or
    /// enrolled EKs (`vtpm_ek` in the license's TCB reference).
    EkNotAllowedForLicense,
    /// The AK is not bound to the EK (credential challenge failed).
    CredentialMismatch,
    /// The quote does not verify (signature, structure, nonce binding).
    QuoteInvalid,
    /// The PCR values differ from the TCB reference.
    PcrMismatch,
    /// The host evidence is missing or does not verify.
    HostEvidenceInvalid,
    /// The firmware event log is missing (the TCB reference pins events), malformed, or does not
    /// replay to the quoted PCR values.
    EventLogMismatch,
    /// An event in a PCR the TCB reference pins by events is not one it allows.
    EventNotAllowed,
    /// The IMA measurement list is malformed or does not replay to the quoted PCR 10, or is
    /// missing while the license binds a runtime policy.
    ImaLogMismatch,
    /// A file measured by IMA under a pattern of the license's runtime policy has a digest the
    /// policy does not list (the message names the file and the digest).
    RuntimeNotAllowed,
    /// The host evidence is older than the TCB reference's maximum host evidence age (first
    /// seen by the service longer ago than that).
    HostEvidenceStale,
    /// The host evidence was made before a host TPM reset the service already saw evidence of
    /// (an old host quote replayed after the host rebooted).
    HostEvidenceReplayed,
    /// The service is overloaded; retry later.
    Busy,
    /// A server-side failure.
    Internal,
}

impl Reason {
    /// The HTTP status that carries this reason.
    pub fn http_status(self) -> u16 {
        match self {
            Reason::MalformedRequest => 400,
            Reason::RequestTooLarge => 413,
            Reason::ClientCertificateMismatch => 401,
            Reason::UnknownLicense | Reason::UnknownSession => 404,
            Reason::SessionExpired => 410,
            Reason::Busy => 503,
            Reason::Internal => 500,
            _ => 403,
        }
    }

    /// Whether a runtime should treat the refusal as final for the license (blacklist) rather
    /// than transient (retry, grace period).
    pub fn is_license_refusal(self) -> bool {
        matches!(
            self,
            Reason::UnknownLicense
                | Reason::LicenseRevoked
                | Reason::LicenseExpired
                | Reason::UsageLimitReached
                | Reason::InstanceLimitReached
                | Reason::ClientCertificateMismatch
        )
    }

    /// The snake_case identifier.
    pub fn as_str(self) -> &'static str {
        // The serde names (a unit test keeps the two in step).
        match self {
            Reason::MalformedRequest => "malformed_request",
            Reason::RequestTooLarge => "request_too_large",
            Reason::UnknownLicense => "unknown_license",
            Reason::ClientCertificateMismatch => "client_certificate_mismatch",
            Reason::LicenseRevoked => "license_revoked",
            Reason::LicenseExpired => "license_expired",
            Reason::LicenseNotYetValid => "license_not_yet_valid",
            Reason::UsageLimitReached => "usage_limit_reached",
            Reason::InstanceLimitReached => "instance_limit_reached",
            Reason::TpmCloneSuspected => "tpm_clone_suspected",
            Reason::TpmClockRegressed => "tpm_clock_regressed",
            Reason::UnknownSession => "unknown_session",
            Reason::SessionExpired => "session_expired",
            Reason::UntrustedEk => "untrusted_ek",
            Reason::EkNotAllowedForLicense => "ek_not_allowed_for_license",
            Reason::CredentialMismatch => "credential_mismatch",
            Reason::QuoteInvalid => "quote_invalid",
            Reason::PcrMismatch => "pcr_mismatch",
            Reason::HostEvidenceInvalid => "host_evidence_invalid",
            Reason::EventLogMismatch => "event_log_mismatch",
            Reason::EventNotAllowed => "event_not_allowed",
            Reason::ImaLogMismatch => "ima_log_mismatch",
            Reason::RuntimeNotAllowed => "runtime_not_allowed",
            Reason::HostEvidenceStale => "host_evidence_stale",
            Reason::HostEvidenceReplayed => "host_evidence_replayed",
            Reason::Busy => "busy",
            Reason::Internal => "internal",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorDetail,
}

/// An error: stable code and a human-readable message (never secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable reason code.
    pub code: Reason,
    /// What happened and what to do.
    pub message: String,
}

fn share_key(
    z: &[u8],
    nonce: &[u8],
    session_id: &Uuid,
    license_guid: &Uuid,
    server_epk: &[u8],
    runtime_epk: &[u8],
) -> Result<AeadKey> {
    let k = kdf::hkdf_sha256(
        z,
        nonce,
        &[
            SHARE_KDF_LABEL,
            session_id.as_bytes(),
            license_guid.as_bytes(),
            server_epk,
            runtime_epk,
        ],
    )?;
    AeadKey::new(&k)
}

/// Seals `share` to the runtime's ephemeral P-256 key (service side).
///
/// `Z = ECDH(service ephemeral, runtime ephemeral)`, `K = HKDF-SHA256(Z, salt = challenge nonce,
/// info = "OVSA-v1 key share" || session_id || license_guid || service epk || runtime epk)`,
/// sealed with AES-256-GCM under a random nonce with AAD = license_guid.
pub fn seal_share(
    share: &KeyShare,
    runtime_epk: &[u8],
    challenge_nonce: &[u8],
    session_id: &Uuid,
    license_guid: &Uuid,
) -> Result<SealedShare> {
    use aws_lc_rs::agreement::{
        agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256,
    };
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let eph = EphemeralPrivateKey::generate(&ECDH_P256, &rng)
        .map_err(|_| Error::Crypto("ECDH key generation"))?;
    let epk = eph
        .compute_public_key()
        .map_err(|_| Error::Crypto("ECDH public key"))?
        .as_ref()
        .to_vec();
    let z = agree_ephemeral(
        eph,
        UnparsedPublicKey::new(&ECDH_P256, runtime_epk),
        Error::malformed(
            "attest request",
            "ephemeral_public_key is not a P-256 point",
        ),
        |z| Ok(Zeroizing::new(z.to_vec())),
    )?;
    let key = share_key(
        &z,
        challenge_nonce,
        session_id,
        license_guid,
        &epk,
        runtime_epk,
    )?;
    let nonce = random_array::<12>()?;
    let ciphertext = key.seal(nonce, license_guid.as_bytes(), share.as_bytes())?;
    Ok(SealedShare {
        epk,
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

/// The runtime's single-use ephemeral key for one attestation.
pub struct RuntimeEphemeral {
    key: aws_lc_rs::agreement::EphemeralPrivateKey,
    public: Vec<u8>,
}

impl RuntimeEphemeral {
    /// Generates a fresh P-256 key.
    pub fn generate() -> Result<Self> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let key = aws_lc_rs::agreement::EphemeralPrivateKey::generate(
            &aws_lc_rs::agreement::ECDH_P256,
            &rng,
        )
        .map_err(|_| Error::Crypto("ECDH key generation"))?;
        let public = key
            .compute_public_key()
            .map_err(|_| Error::Crypto("ECDH public key"))?
            .as_ref()
            .to_vec();
        Ok(RuntimeEphemeral { key, public })
    }

    /// The public point to bind into the quote and send.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// Opens the sealed share (consumes the key: single use).
    pub fn open_share(
        self,
        sealed: &SealedShare,
        challenge_nonce: &[u8],
        session_id: &Uuid,
        license_guid: &Uuid,
    ) -> Result<KeyShare> {
        use aws_lc_rs::agreement::{agree_ephemeral, UnparsedPublicKey, ECDH_P256};
        let public = self.public;
        let z = agree_ephemeral(
            self.key,
            UnparsedPublicKey::new(&ECDH_P256, &sealed.epk),
            Error::malformed("attest response", "service epk is not a P-256 point"),
            |z| Ok(Zeroizing::new(z.to_vec())),
        )?;
        let key = share_key(
            &z,
            challenge_nonce,
            session_id,
            license_guid,
            &sealed.epk,
            &public,
        )?;
        let nonce: [u8; 12] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| Error::malformed("attest response", "share nonce is not 12 bytes"))?;
        let share = key
            .open(nonce, license_guid.as_bytes(), &sealed.ciphertext)
            .ok_or(Error::UnwrapFailed {
                what: "key share from the license service",
            })?;
        KeyShare::from_bytes(&share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_round_trip_and_binding() {
        let share = KeyShare::generate().unwrap();
        let (sid, lic) = (Uuid::new_v4(), Uuid::new_v4());
        let rt = RuntimeEphemeral::generate().unwrap();
        let sealed = seal_share(&share, rt.public_key(), b"nonce", &sid, &lic).unwrap();
        assert_eq!(rt.open_share(&sealed, b"nonce", &sid, &lic).unwrap(), share);
        // Any other context fails.
        let rt = RuntimeEphemeral::generate().unwrap();
        let sealed = seal_share(&share, rt.public_key(), b"nonce", &sid, &lic).unwrap();
        assert!(rt.open_share(&sealed, b"other", &sid, &lic).is_err());
        let rt = RuntimeEphemeral::generate().unwrap();
        let other = RuntimeEphemeral::generate().unwrap();
        let sealed = seal_share(&share, other.public_key(), b"n", &sid, &lic).unwrap();
        assert!(rt.open_share(&sealed, b"n", &sid, &lic).is_err());
        assert!(seal_share(&share, b"not a point", b"n", &sid, &lic).is_err());
    }

    #[test]
    fn reason_codes_are_stable() {
        for r in [
            Reason::UsageLimitReached,
            Reason::PcrMismatch,
            Reason::Internal,
            Reason::HostEvidenceStale,
            Reason::HostEvidenceReplayed,
            Reason::TpmCloneSuspected,
            Reason::TpmClockRegressed,
            Reason::EkNotAllowedForLicense,
            Reason::EventLogMismatch,
            Reason::EventNotAllowed,
            Reason::ImaLogMismatch,
            Reason::RuntimeNotAllowed,
        ] {
            let v = serde_json::to_value(r).unwrap();
            assert_eq!(v.as_str().unwrap(), r.as_str());
        }
        assert_eq!(Reason::ClientCertificateMismatch.http_status(), 401);
        assert_eq!(Reason::HostEvidenceStale.as_str(), "host_evidence_stale");
        assert_eq!(
            Reason::HostEvidenceReplayed.as_str(),
            "host_evidence_replayed"
        );
        assert_eq!(Reason::HostEvidenceReplayed.http_status(), 403);
        assert_eq!(
            Reason::EkNotAllowedForLicense.as_str(),
            "ek_not_allowed_for_license"
        );
        assert_eq!(Reason::EkNotAllowedForLicense.http_status(), 403);
    }
}
