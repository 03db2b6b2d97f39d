//! State shared by the loader and its lease workers: the configuration, the logger, the TPM lock
//! and the per-version blacklist flags. Neither [`crate::loader`] nor [`crate::worker`] owns it;
//! both hold an `Arc<Shared>`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovsa_core::identity::Keystore;
use ovsa_core::license::CustomerLicense;

use crate::config::LoaderConfig;
use crate::log::Logger;

/// What one loader shares with its lease workers.
pub(crate) struct Shared {
    pub(crate) config: LoaderConfig,
    pub(crate) log: Logger,
    /// Serializes TPM use: a TPM (and swtpm) serves one connection at a time.
    pub(crate) tpm: Mutex<()>,
    /// Origin of [`VersionState::recheck_at_ms`].
    epoch: Instant,
}

impl Shared {
    pub(crate) fn new(config: LoaderConfig) -> Self {
        let log = Logger::new(config.log_level);
        Shared {
            config,
            log,
            tpm: Mutex::new(()),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks `state` blacklisted; an unloaded version reports OK again after the recheck delay.
    /// Returns whether the flag was newly set.
    pub(crate) fn blacklist(&self, state: &VersionState) -> bool {
        let recheck = self
            .now_ms()
            .saturating_add(self.config.blacklist_recheck_seconds.saturating_mul(1000));
        state.recheck_at_ms.store(recheck, Ordering::Release);
        !state.blacklisted.swap(true, Ordering::AcqRel)
    }

    /// Clears the flag; returns whether it was set.
    pub(crate) fn unblacklist(&self, state: &VersionState) -> bool {
        state.blacklisted.swap(false, Ordering::AcqRel)
    }

    /// Whether an unloaded blacklisted version has reached its recheck time.
    pub(crate) fn recheck_due(&self, state: &VersionState) -> bool {
        self.now_ms() >= state.recheck_at_ms.load(Ordering::Acquire)
    }
}

/// Per-version flags shared with the lease worker.
#[derive(Debug, Default)]
pub(crate) struct VersionState {
    blacklisted: AtomicBool,
    /// Milliseconds since the loader's epoch after which an unloaded blacklisted version
    /// reports OK again (so the host retries the load, which re-checks the license).
    recheck_at_ms: AtomicU64,
}

impl VersionState {
    pub(crate) fn is_blacklisted(&self) -> bool {
        self.blacklisted.load(Ordering::Acquire)
    }
}

/// What a successful load hands to the lease worker.
pub(crate) struct Granted {
    pub(crate) license: CustomerLicense,
    pub(crate) keystore: Arc<Keystore>,
    /// The lease and grace period the ISV signed into the license.
    pub(crate) terms: crate::lease::Terms,
    /// The first lease ([`LoaderConfig::lease`]: granted, signed, override).
    pub(crate) lease: Duration,
    /// The service's lease id holding this machine's seat: renewals name it, the unload
    /// releases it (absent from services that predate seats).
    pub(crate) lease_id: Option<uuid::Uuid>,
}
