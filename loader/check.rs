//! One license check (TPM attestation + license service) with a deadline: the part of a load
//! and of a lease renewal that talks to the TPM and the network.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovsa_client::{
    check_license_lease, release_lease, ClientError, ClientOptions, Released, Step, TpmAttester,
};
use ovsa_core::identity::Keystore;
use ovsa_core::license::CustomerLicense;
use ovsa_core::protocol::Purpose;

use crate::state::Shared;

/// How long an unload's release of its lease may take, at most (it runs on its own thread and
/// never delays or fails the unload).
const RELEASE_DEADLINE: Duration = Duration::from_secs(2);

impl Shared {
    /// One license check through the TPM (serialized with every other TPM user of this loader),
    /// over by `deadline`: it runs on its own thread, and a TPM or service that does not answer
    /// makes it fail with [`ClientError::Deadline`] at the deadline. A thread stuck in a TPM
    /// call that never returns holds only its own copies (license, keystore handle, TPM
    /// connection) and drops them when the call returns; the caller has moved on.
    pub(crate) fn check(
        shared: &Arc<Shared>,
        license: &CustomerLicense,
        keystore: &Arc<Keystore>,
        purpose: Purpose,
        lease_id: Option<uuid::Uuid>,
        deadline: Instant,
    ) -> Result<Released, ClientError> {
        let license = shared.effective_license(license);
        let stage = Arc::new(AtomicU8::new(STAGE_TPM_LOCK));
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let spawned = {
            let (shared, keystore, stage) = (shared.clone(), keystore.clone(), stage.clone());
            std::thread::Builder::new()
                .name("ovsa-check".into())
                .spawn(move || {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        shared.check_now(&license, &keystore, purpose, lease_id, deadline, &stage)
                    }))
                    .unwrap_or_else(|_| {
                        Err(ClientError::Protocol(
                            "internal error during the license check (a bug: please report it)"
                                .into(),
                        ))
                    });
                    // The receiver is gone if the deadline passed: the result is dropped here.
                    let _ = tx.send(result);
                })
        };
        if let Err(e) = spawned {
            return Err(ClientError::Protocol(format!(
                "cannot start the license check thread: {e}"
            )));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(ClientError::Deadline(
                shared.deadline_message(stage.load(Ordering::Acquire)),
            )),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(ClientError::Protocol(
                "the license check ended without an answer (a bug: please report it)".into(),
            )),
        }
    }

    /// Ends `lease_id` at the license service (`/v1/release`: the machine's seat is free once
    /// it holds no other lease), best effort: on a detached thread, within
    /// [`RELEASE_DEADLINE`], no TPM work. A failure is only logged: the lease then lapses at the
    /// service after the signed lease + grace. Never blocks the caller.
    pub(crate) fn release_in_background(
        shared: &Arc<Shared>,
        label: String,
        license: &CustomerLicense,
        keystore: &Arc<Keystore>,
        lease_id: uuid::Uuid,
    ) {
        let license = shared.effective_license(license);
        let (thread_shared, keystore) = (shared.clone(), keystore.clone());
        let spawned = std::thread::Builder::new()
            .name("ovsa-release".into())
            .spawn(move || {
                let shared = thread_shared;
                let timeout = RELEASE_DEADLINE.min(Duration::from_secs(
                    shared.config.service_timeout_seconds.max(1),
                ));
                let opts = ClientOptions {
                    timeout,
                    deadline: Some(Instant::now() + timeout),
                };
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    release_lease(&license, &keystore, lease_id, &opts)
                }));
                match result {
                    Ok(Ok(_)) => shared.log.debug(format_args!(
                        "{label}: seat released at the license service"
                    )),
                    Ok(Err(e)) => shared.log.warning(format_args!(
                        "{label}: could not release the seat at the license service (it lapses \
                         after the lease and grace period): {e}"
                    )),
                    Err(_) => shared.log.warning(format_args!(
                        "{label}: internal error while releasing the seat (a bug: please report it)"
                    )),
                }
            });
        if let Err(e) = spawned {
            shared.log.warning(format_args!(
                "cannot start the thread releasing a seat ({e}); it lapses at the license service"
            ));
        }
    }

    /// The license with a configured service URL in place of the license's (the license's
    /// pins stay in force).
    fn effective_license(&self, license: &CustomerLicense) -> CustomerLicense {
        let mut license = license.clone();
        if let Some(url) = &self.config.service_url {
            let mut pins: Vec<_> = license
                .services
                .iter()
                .flat_map(|s| s.pins.clone())
                .collect();
            pins.dedup();
            license.services = vec![ovsa_core::license::ServiceEndpoint {
                url: url.clone(),
                pins,
            }];
        }
        license
    }

    fn check_now(
        &self,
        license: &CustomerLicense,
        keystore: &Keystore,
        purpose: Purpose,
        lease_id: Option<uuid::Uuid>,
        deadline: Instant,
        stage: &AtomicU8,
    ) -> Result<Released, ClientError> {
        let Some(_tpm) = self.lock_tpm(deadline) else {
            return Err(ClientError::Deadline(self.deadline_message(STAGE_TPM_LOCK)));
        };
        stage.store(STAGE_TPM_OPEN, Ordering::Release);
        let mut attester = TpmAttester::open(
            self.config.tcti.as_deref(),
            self.config.ak_cache_dir.as_deref(),
        )?;
        if Instant::now() >= deadline {
            return Err(ClientError::Deadline(self.deadline_message(STAGE_TPM_OPEN)));
        }
        stage.store(STAGE_CONNECT, Ordering::Release);
        check_license_lease(
            license,
            keystore,
            &mut attester,
            purpose,
            lease_id,
            &ClientOptions {
                timeout: Duration::from_secs(self.config.service_timeout_seconds),
                deadline: Some(deadline),
            },
            &mut |step| {
                let s = match step {
                    Step::Connected(_) => STAGE_CHALLENGE,
                    Step::Challenge(_) => STAGE_TPM_ATTEST,
                    Step::Quoted { .. } => STAGE_ATTEST,
                    _ => return,
                };
                stage.store(s, Ordering::Release);
            },
        )
    }

    /// The TPM lock, waiting at most until `deadline` (a check stuck in a TPM that never
    /// answers must not hang every later load).
    fn lock_tpm(&self, deadline: Instant) -> Option<std::sync::MutexGuard<'_, ()>> {
        loop {
            match self.tpm.try_lock() {
                Ok(g) => return Some(g),
                Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    fn deadline_message(&self, stage: u8) -> String {
        let tcti = self
            .config
            .tcti
            .clone()
            .or_else(|| std::env::var("TCTI").ok())
            .unwrap_or_else(|| "device:/dev/tpmrm0".into());
        let what = match stage {
            STAGE_TPM_LOCK => "another check of this loader still holds the TPM (a TPM that does not answer)".to_string(),
            STAGE_TPM_OPEN => format!("the TPM '{tcti}' did not answer (opening it, reading its EK certificate, loading the AK)"),
            STAGE_CONNECT => "the license service did not complete the connection (TCP + TLS handshake)".to_string(),
            STAGE_CHALLENGE => "the license service did not answer the challenge request".to_string(),
            STAGE_TPM_ATTEST => format!("the TPM '{tcti}' did not answer (credential activation, quote)"),
            _ => "the license service did not answer the attestation".to_string(),
        };
        format!(
            "not finished within load_timeout_seconds ({} s): {what}",
            self.config.load_timeout_seconds
        )
    }
}

const STAGE_TPM_LOCK: u8 = 0;
const STAGE_TPM_OPEN: u8 = 1;
const STAGE_CONNECT: u8 = 2;
const STAGE_CHALLENGE: u8 = 3;
const STAGE_TPM_ATTEST: u8 = 4;
const STAGE_ATTEST: u8 = 5;
