//! The Verifier (RFC 9334 vocabulary): evidence in, typed attestation result out.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::credential::{make_credential, CredentialChallenge};
use super::ekcert::{ek_spki, verify_ek_chain, EkTrust};
use super::error::AttestError;
use super::host_blob::HostEvidence;
use super::pcr::{check_quote_pcrs, check_reference, PcrSet};
use super::qualify::host_qualifying_data;
use super::wire::{
    check_ak_attributes, parse_public, parse_quote, parse_signature, verify_signature, ClockInfo,
    HashAlg, QuoteInfo, TpmPublic,
};

/// Verifier configuration: the static policy of one deployment (long-lived, shared by every
/// call, passed by reference). What varies per attestation arrives in [`Expected`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifierConfig {
    /// CAs the vTPM's EK certificate must chain to.
    pub vtpm_ek_trust: EkTrust,
    /// CAs the host TPM's EK certificate must chain to (the TPM vendor CAs).
    pub host_ek_trust: EkTrust,
    /// Refuse quotes whose clock is not marked safe.
    pub require_safe_clock: bool,
}

/// What this attestation requires of the host evidence (a per-call fact: it depends on the
/// license's TCB reference and on the host EK's enrolled AKs).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostPolicy<'a> {
    /// Refuse evidence without host evidence.
    pub required: bool,
    /// If set, the host AK's Name must be one of these (AKs enrolled beforehand with a credential
    /// challenge against the host EK). If unset, any restricted AK is accepted for the host quote:
    /// see `docs/ATTESTATION.md` for what that does and does not prove.
    pub enrolled_aks: Option<&'a [Vec<u8>]>,
}

/// Reference values (carried by the ISV-signed TCB reference).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceValues {
    /// Expected vTPM PCR values.
    pub vtpm: PcrSet,
    /// Expected host TPM PCR values (unchecked if absent).
    #[serde(default)]
    pub host: Option<PcrSet>,
    /// Event pins for vTPM PCRs (`docs/ATTESTATION.md` §10): a pinned PCR is checked by
    /// replaying the firmware event log and allowing only the listed events, instead of by
    /// value (pinned PCRs are not in `vtpm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<super::measured_boot::EventPins>,
    /// The runtime policy (`docs/ATTESTATION.md` §11): when set, the IMA measurement list is
    /// required and every covered entry under one of its patterns must carry a listed digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<super::runtime::RuntimePolicy>,
}

/// Evidence sent by the Attester (the runtime).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// vTPM EK certificate (DER).
    #[serde(with = "crate::encoding::b64")]
    pub ek_cert: Vec<u8>,
    /// AK public area (marshalled TPMT_PUBLIC).
    #[serde(with = "crate::encoding::b64")]
    pub ak_public: Vec<u8>,
    /// Quote (marshalled TPMS_ATTEST).
    #[serde(with = "crate::encoding::b64")]
    pub quote: Vec<u8>,
    /// Quote signature (marshalled TPMT_SIGNATURE).
    #[serde(with = "crate::encoding::b64")]
    pub signature: Vec<u8>,
    /// The quoted PCR values.
    pub pcrs: PcrSet,
    /// The host-evidence blob read from the vTPM NV, if any.
    #[serde(default, with = "crate::encoding::b64_opt")]
    pub host_evidence: Option<Vec<u8>>,
    /// The firmware's measured-boot event log (TCG crypto-agile format, as read from
    /// `/sys/kernel/security/tpm0/binary_bios_measurements`), at most
    /// [`super::measured_boot::MAX_EVENT_LOG_BYTES`]; absent in evidence from older runtimes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::encoding::b64_opt"
    )]
    pub event_log: Option<Vec<u8>>,
    /// The IMA measurement list (`binary_runtime_measurements`), at most
    /// [`super::measured_boot::MAX_IMA_LOG_BYTES`]; replayed to PCR 10 when present.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::encoding::b64_opt"
    )]
    pub ima_log: Option<Vec<u8>>,
}

/// Server-side state of an issued credential challenge. Holds the secret: keep it server-side
/// only, single use. Its `Debug` output leaves the secret out.
#[derive(Clone)]
pub struct PendingCredential {
    ek_cert_sha256: [u8; 32],
    ak_name: Vec<u8>,
    secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for PendingCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCredential")
            .field("ek_cert_sha256", &hex::encode(self.ek_cert_sha256))
            .field("ak_name", &hex::encode(&self.ak_name))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl PendingCredential {
    /// Name of the AK the challenge was made for.
    pub fn ak_name(&self) -> &[u8] {
        &self.ak_name
    }

    /// SHA-256 of the EK certificate the challenge was made for.
    pub fn ek_cert_sha256(&self) -> &[u8; 32] {
        &self.ek_cert_sha256
    }

    /// The credential secret (keep server-side; single use).
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Whether `response` (what TPM2_ActivateCredential returned) is the secret, compared in
    /// constant time: proof that the AK lives in the TPM owning the EK.
    pub fn check_response(&self, response: &[u8]) -> Result<(), AttestError> {
        if bool::from(self.secret[..].ct_eq(response)) {
            Ok(())
        } else {
            Err(AttestError::CredentialMismatch)
        }
    }

    /// Rebuilds the state from its parts, e.g. after a round trip through a database shared by
    /// several service replicas.
    pub fn from_parts(ek_cert_sha256: [u8; 32], ak_name: Vec<u8>, secret: [u8; 32]) -> Self {
        PendingCredential {
            ek_cert_sha256,
            ak_name,
            secret: Zeroizing::new(secret),
        }
    }
}

/// How the AK is shown to live in the TPM that owns the EK.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum AkBinding<'a> {
    /// The Attester answered a credential challenge in this attestation.
    Activated {
        /// The challenge state from [`issue_credential`].
        pending: &'a PendingCredential,
        /// The secret TPM2_ActivateCredential returned.
        response: &'a [u8],
    },
    /// The AK was bound to the EK by an earlier successful challenge (the Relying Party stored
    /// both values from an earlier [`AttestationResult`]).
    Enrolled {
        /// The AK Name.
        ak_name: &'a [u8],
        /// SHA-256 of the EK certificate.
        ek_cert_sha256: &'a [u8; 32],
    },
}

/// What the Verifier expects of this particular attestation.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// Expected qualifying data: [`super::quote_qualifying_data`] of the nonce etc.
    pub qualifying_data: &'a [u8],
    /// Reference PCR values.
    pub reference: &'a ReferenceValues,
    /// AK-to-EK binding proof.
    pub binding: AkBinding<'a>,
    /// What the host evidence must satisfy.
    pub host: HostPolicy<'a>,
    /// Clock info of the last accepted quote from this AK (to refuse counters going backwards).
    pub previous_clock: Option<ClockInfo>,
    /// Current time, seconds since the Unix epoch (certificate validity).
    pub now: u64,
}

/// Result of a verified host-evidence blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostResult {
    /// SHA-256 of the host EK certificate.
    pub ek_cert_sha256: [u8; 32],
    /// Host AK Name.
    pub ak_name: Vec<u8>,
    /// Host quote clock.
    pub clock: ClockInfo,
    /// Host PCR values (verified against the host quote).
    pub pcrs: PcrSet,
}

/// A successful attestation: every check passed. This is what the Relying Party consumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationResult {
    /// SHA-256 of the vTPM EK certificate.
    pub ek_cert_sha256: [u8; 32],
    /// vTPM AK Name (store it to use [`AkBinding::Enrolled`] later).
    pub ak_name: Vec<u8>,
    /// Clock info of the quote (pass as `previous_clock` next time).
    pub clock: ClockInfo,
    /// TPM firmware version.
    pub firmware_version: u64,
    /// vTPM PCR values (verified against the quote and the reference).
    pub pcrs: PcrSet,
    /// Verified host evidence, if present.
    pub host: Option<HostResult>,
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut o = [0u8; 32];
    o.copy_from_slice(&HashAlg::Sha256.digest(b));
    o
}

/// Step 1 of AK binding: validate the EK certificate and AK, and make a credential challenge.
/// Send the returned [`CredentialChallenge`] to the Attester; keep the [`PendingCredential`].
pub fn issue_credential(
    config: &VerifierConfig,
    ek_cert: &[u8],
    ak_public: &[u8],
    now: u64,
) -> Result<(PendingCredential, CredentialChallenge), AttestError> {
    issue_credential_under(&config.vtpm_ek_trust, ek_cert, ak_public, now)
}

/// [`issue_credential`] for a host TPM's AK (host AK enrolment): the EK certificate must chain
/// to `config.host_ek_trust` (the TPM vendor CAs). Check the answer with
/// [`PendingCredential::check_response`].
pub fn issue_host_credential(
    config: &VerifierConfig,
    ek_cert: &[u8],
    ak_public: &[u8],
    now: u64,
) -> Result<(PendingCredential, CredentialChallenge), AttestError> {
    issue_credential_under(&config.host_ek_trust, ek_cert, ak_public, now)
}

fn issue_credential_under(
    trust: &EkTrust,
    ek_cert: &[u8],
    ak_public: &[u8],
    now: u64,
) -> Result<(PendingCredential, CredentialChallenge), AttestError> {
    verify_ek_chain(trust, ek_cert, now)?;
    let ak = parse_public(ak_public)?;
    check_ak_attributes(&ak)?;
    let ak_name = ak.name()?;
    let mut secret = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(&mut secret[..]).map_err(|_| AttestError::Crypto("random"))?;
    let challenge = make_credential(&ek_spki(ek_cert)?, &ak_name, &secret[..])?;
    Ok((
        PendingCredential {
            ek_cert_sha256: sha256(ek_cert),
            ak_name,
            secret,
        },
        challenge,
    ))
}

/// Verify one quote: AK attributes, signature, qualifying data, PCR selection and digest.
fn verify_quote(
    ak: &TpmPublic,
    quote: &[u8],
    signature: &[u8],
    reported: &PcrSet,
    qualifying_data: &[u8],
) -> Result<QuoteInfo, AttestError> {
    check_ak_attributes(ak)?;
    let info = parse_quote(quote)?;
    let sig = parse_signature(signature)?;
    verify_signature(ak, quote, &sig)?;
    if !bool::from(info.extra_data.as_slice().ct_eq(qualifying_data)) {
        return Err(AttestError::QualifyingDataMismatch);
    }
    let digest_alg =
        HashAlg::from_tpm_alg_id(sig.scheme().1).ok_or(AttestError::UnsupportedAlgorithm {
            what: "signature hash",
            alg: sig.scheme().1,
        })?;
    check_quote_pcrs(&info, reported, digest_alg)?;
    Ok(info)
}

fn check_clock(
    clock: &ClockInfo,
    previous: Option<ClockInfo>,
    require_safe: bool,
) -> Result<(), AttestError> {
    if require_safe && !clock.safe {
        return Err(AttestError::ClockNotSafe);
    }
    if let Some(p) = previous {
        let now = (clock.reset_count, clock.restart_count, clock.clock);
        let before = (p.reset_count, p.restart_count, p.clock);
        // Resets only grow; within one reset the restart count and clock only grow.
        if clock.reset_count < p.reset_count
            || (clock.reset_count == p.reset_count && now <= before)
        {
            return Err(AttestError::ClockRegressed);
        }
    }
    Ok(())
}

fn verify_host(
    config: &VerifierConfig,
    enrolled_aks: Option<&[Vec<u8>]>,
    blob: &[u8],
    vtpm_ek_cert: &[u8],
    reference: Option<&PcrSet>,
    now: u64,
) -> Result<HostResult, AttestError> {
    let host = HostEvidence::decode(blob)?;
    let wrap = |e: AttestError| AttestError::Host(Box::new(e));
    verify_ek_chain(&config.host_ek_trust, &host.ek_cert, now).map_err(wrap)?;
    let ak = parse_public(&host.ak_public).map_err(wrap)?;
    let ak_name = ak.name().map_err(wrap)?;
    if let Some(allowed) = enrolled_aks {
        if !allowed
            .iter()
            .any(|a| bool::from(a.as_slice().ct_eq(&ak_name)))
        {
            return Err(AttestError::HostAkNotEnrolled);
        }
    }
    let binding = host_qualifying_data(vtpm_ek_cert);
    let info = match verify_quote(&ak, &host.quote, &host.signature, &host.pcrs, &binding) {
        Err(AttestError::QualifyingDataMismatch) => return Err(AttestError::HostBindingMismatch),
        other => other.map_err(wrap)?,
    };
    if let Some(r) = reference {
        check_reference(&host.pcrs, r).map_err(wrap)?;
    }
    check_clock(&info.clock, None, config.require_safe_clock).map_err(wrap)?;
    Ok(HostResult {
        ek_cert_sha256: sha256(&host.ek_cert),
        ak_name,
        clock: info.clock,
        pcrs: host.pcrs,
    })
}

/// What the Relying Party has recorded about a host TPM's earlier evidence, read (and updated)
/// atomically when the host evidence of [`HostResult`] is recorded. A host quote carries no
/// wall-clock time, only the TPM's clock and reset/restart counters, so its age can only be
/// bounded by when it (or a later quote of the same host TPM reset) was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSighting {
    /// The highest reset count recorded for this host EK *before* this evidence (`None` if the
    /// host EK was never seen).
    pub highest_reset_count: Option<u32>,
    /// Seconds since the Unix epoch at which the service first saw this quote or a later quote
    /// of the same reset (same reset count; restart count and clock not lower). The quote was
    /// made no later than that.
    pub first_seen: u64,
}

/// Freshness of verified host evidence against what was seen before: refuses a quote from
/// before a host TPM reset already seen ([`AttestError::HostEvidenceReplayed`]), then, when
/// `max_age_seconds` is set, a quote first seen more than that long ago
/// ([`AttestError::HostEvidenceStale`]). `now` is seconds since the Unix epoch.
pub fn check_host_freshness(
    host: &HostResult,
    seen: &HostSighting,
    max_age_seconds: Option<u64>,
    now: u64,
) -> Result<(), AttestError> {
    if let Some(highest) = seen.highest_reset_count {
        if host.clock.reset_count < highest {
            return Err(AttestError::HostEvidenceReplayed {
                reset_count: host.clock.reset_count,
                highest,
            });
        }
    }
    if let Some(max_age) = max_age_seconds {
        let age = now.saturating_sub(seen.first_seen);
        if age > max_age {
            return Err(AttestError::HostEvidenceStale { age, max_age });
        }
    }
    Ok(())
}

/// Verify evidence. Checks, in order: vTPM EK certificate chain; AK is a restricted signing key;
/// AK bound to the EK (credential challenge or enrolment); quote structure and signature;
/// qualifying data; PCR selection and digest; PCR values against the reference; clock sanity;
/// then the host evidence (EK chain against the host CAs, optional AK enrolment, signature,
/// binding to this vTPM's EK certificate, PCR digest and reference).
pub fn verify(
    config: &VerifierConfig,
    evidence: &Evidence,
    expected: &Expected<'_>,
) -> Result<AttestationResult, AttestError> {
    verify_ek_chain(&config.vtpm_ek_trust, &evidence.ek_cert, expected.now)?;
    let ek_hash = sha256(&evidence.ek_cert);
    let ak = parse_public(&evidence.ak_public)?;
    check_ak_attributes(&ak)?;
    let ak_name = ak.name()?;
    match expected.binding {
        AkBinding::Activated { pending, response } => {
            if !bool::from(pending.ek_cert_sha256.ct_eq(&ek_hash)) {
                return Err(AttestError::EkCertMismatch);
            }
            if !bool::from(pending.ak_name.as_slice().ct_eq(&ak_name)) {
                return Err(AttestError::AkNameMismatch);
            }
            if !bool::from(pending.secret[..].ct_eq(response)) {
                return Err(AttestError::CredentialMismatch);
            }
        }
        AkBinding::Enrolled {
            ak_name: enrolled,
            ek_cert_sha256,
        } => {
            if !bool::from(ek_cert_sha256.ct_eq(&ek_hash)) {
                return Err(AttestError::EkCertMismatch);
            }
            if !bool::from(enrolled.ct_eq(&ak_name)) {
                return Err(AttestError::AkNameMismatch);
            }
        }
    }
    let info = verify_quote(
        &ak,
        &evidence.quote,
        &evidence.signature,
        &evidence.pcrs,
        expected.qualifying_data,
    )?;
    check_reference(&evidence.pcrs, &expected.reference.vtpm)?;
    super::measured_boot::check(
        &evidence.pcrs,
        evidence.event_log.as_deref(),
        evidence.ima_log.as_deref(),
        expected.reference.events.as_ref(),
    )?;
    if let Some(policy) = &expected.reference.runtime {
        super::runtime::check(&evidence.pcrs, evidence.ima_log.as_deref(), policy)?;
    }
    check_clock(
        &info.clock,
        expected.previous_clock,
        config.require_safe_clock,
    )?;
    let host = match &evidence.host_evidence {
        None if expected.host.required => return Err(AttestError::HostEvidenceMissing),
        None => None,
        Some(blob) => Some(verify_host(
            config,
            expected.host.enrolled_aks,
            blob,
            &evidence.ek_cert,
            expected.reference.host.as_ref(),
            expected.now,
        )?),
    };
    Ok(AttestationResult {
        ek_cert_sha256: ek_hash,
        ak_name,
        clock: info.clock,
        firmware_version: info.firmware_version,
        pcrs: evidence.pcrs.clone(),
        host,
    })
}

/// Verify a standalone quote (no EK, no binding): signature under `ak_public`, qualifying data,
/// PCR digest. For debugging and cross-checks with tpm2-tools.
pub fn verify_quote_only(
    ak_public: &[u8],
    quote: &[u8],
    signature: &[u8],
    pcrs: &PcrSet,
    qualifying_data: &[u8],
) -> Result<QuoteInfo, AttestError> {
    let ak = parse_public(ak_public)?;
    verify_quote(&ak, quote, signature, pcrs, qualifying_data)
}
