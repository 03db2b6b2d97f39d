//! The whole client path of one license check: connect (pinned mutual TLS 1.3) → challenge →
//! credential activation → quote bound to nonce, ephemeral key and TLS channel → attest →
//! open the sealed share. Tries the license's services in order when one is unreachable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ovsa_core::attest::{quote_qualifying_data, Evidence};
use ovsa_core::identity::Keystore;
use ovsa_core::license::{CustomerLicense, KeyShare};
use ovsa_core::protocol::{
    AttestRequest, AttestResponse, ChallengeRequest, ChallengeResponse, HostAkChallengeRequest,
    HostAkChallengeResponse, HostAkEnrollRequest, HostAkEnrollResponse, Purpose, ReleaseRequest,
    ReleaseResponse, RuntimeEphemeral,
};
use uuid::Uuid;

use crate::attester::Attester;
use crate::error::ClientError;
use crate::http::Connection;
use crate::tls::client_config;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Connect / read / write timeout per service.
    pub timeout: Duration,
    /// When the whole exchange with the service must be over: every connect, read and write
    /// waits at most until then (a service that accepts but answers slowly or never cannot
    /// stretch the check beyond it). `None`: only the per-operation `timeout`.
    pub deadline: Option<Instant>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(10),
            deadline: None,
        }
    }
}

/// Where the time of one check went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// TCP + TLS handshake.
    pub connect: Duration,
    /// Round trips to the service (challenge + attest), excluding TPM work.
    pub service: Duration,
    /// TPM work (credential activation, quote, NV read).
    pub tpm: Duration,
    /// TPM commands issued.
    pub tpm_commands: u64,
}

/// A successful check.
#[derive(Debug)]
pub struct Released {
    /// The key share (secret): present for loads, absent for renewals.
    pub share: Option<KeyShare>,
    /// The service's answer (lease, uses, expiry).
    pub response: AttestResponse,
    /// The service that answered.
    pub service_url: String,
    /// Where the time went.
    pub timings: Timings,
}

/// Steps reported to an observer (for `ovsatool check` and logs).
#[derive(Debug, Clone)]
pub enum Step {
    /// Connected to a service.
    Connected(String),
    /// A service could not be reached; trying the next.
    Unreachable(String),
    /// Challenge received.
    Challenge(ChallengeResponse),
    /// Credential activated.
    CredentialActivated,
    /// Quote made.
    Quoted {
        /// PCRs quoted.
        pcrs: Vec<u8>,
        /// Host evidence attached.
        host_evidence: bool,
    },
}

/// Runs one check for `license` with the customer's keystore and TPM. A load starts a new
/// lease (`response.lease_id`, which holds the machine's seat); for a renewal that keeps a
/// lease, use [`check_license_lease`].
pub fn check_license(
    license: &CustomerLicense,
    customer: &Keystore,
    attester: &mut dyn Attester,
    purpose: Purpose,
    opts: &ClientOptions,
    observe: &mut dyn FnMut(&Step),
) -> Result<Released, ClientError> {
    check_license_lease(license, customer, attester, purpose, None, opts, observe)
}

/// [`check_license`] naming the lease a renewal keeps (`lease_id` from the load's response;
/// ignored by the service for loads).
pub fn check_license_lease(
    license: &CustomerLicense,
    customer: &Keystore,
    attester: &mut dyn Attester,
    purpose: Purpose,
    lease_id: Option<Uuid>,
    opts: &ClientOptions,
    observe: &mut dyn FnMut(&Step),
) -> Result<Released, ClientError> {
    let (conn, connect) = connect_any(license, customer, opts, observe)?;
    attest_on(conn, license, attester, purpose, lease_id, connect, observe)
}

/// Ends a lease (`POST /v1/release`, after unloading a model): the machine's seat is free once
/// it holds no other live lease of the license. No TPM work. `Ok(false)`: the service knew no
/// such lease (already released, or lapsed and purged).
pub fn release_lease(
    license: &CustomerLicense,
    customer: &Keystore,
    lease_id: Uuid,
    opts: &ClientOptions,
) -> Result<bool, ClientError> {
    let (mut conn, _) = connect_any(license, customer, opts, &mut |_| {})?;
    let response: ReleaseResponse = conn.post_json(
        "/v1/release",
        &ReleaseRequest {
            license_guid: license.license_guid,
            lease_id,
        },
    )?;
    Ok(response.released)
}

/// Connects (pinned mutual TLS 1.3 as `customer`) to the first reachable service of `license`.
fn connect_any(
    license: &CustomerLicense,
    customer: &Keystore,
    opts: &ClientOptions,
    observe: &mut dyn FnMut(&Step),
) -> Result<(Connection, Duration), ClientError> {
    let mut last = None;
    for service in &license.services {
        let config = Arc::new(
            client_config(customer, &service.pins)
                .map_err(|e| ClientError::Protocol(format!("TLS configuration: {e}")))?,
        );
        let start = Instant::now();
        match Connection::open_with_deadline(&service.url, config, opts.timeout, opts.deadline) {
            Ok(conn) => {
                observe(&Step::Connected(service.url.clone()));
                return Ok((conn, start.elapsed()));
            }
            Err(e @ ClientError::Unreachable { .. }) if !passed(opts.deadline) => {
                observe(&Step::Unreachable(e.to_string()));
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last
        .unwrap_or_else(|| ClientError::Protocol("the license names no license service".into())))
}

fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// An enrolled host AK (see [`enroll_host_ak`]).
#[derive(Debug, Clone)]
pub struct HostAkEnrolled {
    /// The service's answer (host EK certificate hash and AK Name, hex).
    pub response: HostAkEnrollResponse,
    /// The service that enrolled it.
    pub service_url: String,
}

/// Enrols `host`'s AK with the license service of `license` (`ovsatool host-enroll`, on the
/// physical host): the service challenges the AK under the host EK (which must chain to a
/// trusted TPM vendor CA) and, once the host TPM has activated the credential, accepts host
/// evidence signed by this AK. `host` must keep using the same AK (a cached AK) for
/// `ovsatool host-quote`.
pub fn enroll_host_ak(
    license: &CustomerLicense,
    customer: &Keystore,
    host: &mut dyn Attester,
    opts: &ClientOptions,
    observe: &mut dyn FnMut(&Step),
) -> Result<HostAkEnrolled, ClientError> {
    let (mut conn, _) = connect_any(license, customer, opts, observe)?;
    let challenge: HostAkChallengeResponse = conn.post_json(
        "/v1/host-ak/challenge",
        &HostAkChallengeRequest {
            license_guid: license.license_guid,
            ek_certificate: host.ek_certificate()?,
            ak_public: host.ak_public()?,
        },
    )?;
    let activated = host.activate_credential(&challenge.credential)?;
    observe(&Step::CredentialActivated);
    let response: HostAkEnrollResponse = conn.post_json(
        "/v1/host-ak/enroll",
        &HostAkEnrollRequest {
            session_id: challenge.session_id,
            activated_secret: activated.to_vec(),
        },
    )?;
    Ok(HostAkEnrolled {
        response,
        service_url: conn.url().to_string(),
    })
}

fn attest_on(
    mut conn: Connection,
    license: &CustomerLicense,
    attester: &mut dyn Attester,
    purpose: Purpose,
    lease_id: Option<Uuid>,
    connect: Duration,
    observe: &mut dyn FnMut(&Step),
) -> Result<Released, ClientError> {
    let mut t = Timings {
        connect,
        ..Timings::default()
    };
    let commands_before = attester.command_count();
    let tpm_start = Instant::now();
    let ek_certificate = attester.ek_certificate()?;
    let ak_public = attester.ak_public()?;
    t.tpm += tpm_start.elapsed();

    let s = Instant::now();
    let challenge: ChallengeResponse = conn.post_json(
        "/v1/challenge",
        &ChallengeRequest {
            license_guid: license.license_guid,
            purpose,
            ek_certificate: ek_certificate.clone(),
            ak_public: ak_public.clone(),
        },
    )?;
    t.service += s.elapsed();
    observe(&Step::Challenge(challenge.clone()));

    let tpm_start = Instant::now();
    let activated = attester.activate_credential(&challenge.credential)?;
    observe(&Step::CredentialActivated);
    let ephemeral = RuntimeEphemeral::generate()?;
    let exporter = conn.exporter()?;
    let qualifying =
        quote_qualifying_data(&challenge.nonce, ephemeral.public_key(), Some(&exporter));
    let quote = attester.quote(&qualifying, challenge.pcr_bank, &challenge.pcr_indices)?;
    let host_evidence = if challenge.host_evidence_required {
        Some(attester.host_evidence()?.ok_or_else(|| {
            ClientError::Protocol(
                "the license requires host evidence but the vTPM holds none: run `ovsatool host-quote` on the host before starting the VM".into(),
            )
        })?)
    } else {
        None
    };
    // After the quote: the IMA list only grows, and the Verifier accepts a list whose first
    // entries replay to the quoted PCR 10. It is sent only when PCR 10 is quoted.
    let logs = attester.measurement_logs(
        challenge
            .pcr_indices
            .contains(&(ovsa_core::attest::ima::IMA_PCR as u8)),
    )?;
    t.tpm += tpm_start.elapsed();
    observe(&Step::Quoted {
        pcrs: challenge.pcr_indices.clone(),
        host_evidence: host_evidence.is_some(),
    });

    let s = Instant::now();
    let response: AttestResponse = conn.post_json(
        "/v1/attest",
        &AttestRequest {
            session_id: challenge.session_id,
            evidence: Evidence {
                ek_cert: ek_certificate,
                ak_public,
                quote: quote.attest,
                signature: quote.signature,
                pcrs: quote.pcrs,
                host_evidence,
                event_log: logs.event_log,
                ima_log: logs.ima_log,
            },
            activated_secret: activated.to_vec(),
            ephemeral_public_key: ephemeral.public_key().to_vec(),
            lease_id: lease_id.filter(|_| purpose == Purpose::Renew),
        },
    )?;
    t.service += s.elapsed();
    if response.license_guid != license.license_guid {
        return Err(ClientError::Protocol(
            "the service answered for another license".into(),
        ));
    }
    let share = match (&response.share, purpose) {
        (Some(sealed), Purpose::Load) => Some(ephemeral.open_share(
            sealed,
            &challenge.nonce,
            &challenge.session_id,
            &license.license_guid,
        )?),
        (None, Purpose::Renew) => None,
        _ => {
            return Err(ClientError::Protocol(
                "the service sent a key share where none belongs, or none where one was due".into(),
            ))
        }
    };
    t.tpm_commands = attester.command_count().saturating_sub(commands_before);
    Ok(Released {
        share,
        service_url: conn.url().to_string(),
        response,
        timings: t,
    })
}
