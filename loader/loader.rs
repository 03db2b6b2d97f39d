//! The loader: one object per OVMS `loader_name`, all state inside it (no globals).
//!
//! `load` registers the version, runs [`crate::fetch`] (files, license check, decryption into
//! the host's buffers) and starts a lease worker ([`crate::worker`], driving the
//! [`crate::lease`] policy) for each loaded version. The worker flips the version's blacklist
//! flag ([`crate::state`]), which [`Loader::blacklist_status`] only reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::config::{ConfigError, LoaderConfig};
use crate::fetch::{self, Fetched, Request};
use crate::state::{Shared, VersionState};
use crate::worker::{self, Worker};

pub use crate::types::{
    BlacklistStatus, BufferError, LoadError, ModelType, OutputBuffers, VecBuffers,
};

enum Activity {
    Loading { cancelled: Arc<AtomicBool> },
    Loaded { worker: Worker },
    Unloaded,
}

struct Entry {
    state: Arc<VersionState>,
    activity: Activity,
}

type Key = (String, i32);

/// A loader: the state of one OVMS `loader_name`.
pub struct Loader {
    shared: Arc<Shared>,
    versions: RwLock<HashMap<Key, Entry>>,
}

impl Loader {
    /// A loader with `config`.
    pub fn new(config: LoaderConfig) -> Self {
        Loader {
            shared: Arc::new(Shared::new(config)),
            versions: RwLock::new(HashMap::new()),
        }
    }

    /// A loader configured by `config_path` (`None`/empty: defaults).
    pub fn from_config_file(config_path: Option<&str>) -> Result<Self, ConfigError> {
        Ok(Loader::new(LoaderConfig::load(config_path)?))
    }

    /// The configuration in use.
    pub fn config(&self) -> &LoaderConfig {
        &self.shared.config
    }

    /// Whether `(name, version)` is blacklisted. Reads flags only: no I/O, never waits on a
    /// load or a lease check (the map lock is only ever held for map updates).
    pub fn blacklist_status(&self, name: &str, version: i32) -> BlacklistStatus {
        let versions = self.versions.read().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = versions.get(&(name.to_string(), version)) else {
            return BlacklistStatus::Ok;
        };
        if !entry.state.is_blacklisted() {
            return BlacklistStatus::Ok;
        }
        match entry.activity {
            Activity::Loaded { .. } => BlacklistStatus::Blacklisted,
            // The host is retrying (the load re-checks the license): do not make it cancel.
            Activity::Loading { .. } => BlacklistStatus::Ok,
            // Let the host retry once the recheck time has come.
            Activity::Unloaded if self.shared.recheck_due(&entry.state) => BlacklistStatus::Ok,
            Activity::Unloaded => BlacklistStatus::Blacklisted,
        }
    }

    /// Loads version `version` of `name` from `base_path/version` with `options_json`,
    /// decrypting into `out`.
    pub fn load(
        &self,
        name: &str,
        base_path: &str,
        version: i32,
        options_json: &str,
        out: &mut dyn OutputBuffers,
    ) -> Result<ModelType, LoadError> {
        let started = Instant::now();
        match self.load_inner(name, base_path, version, options_json, out, started) {
            Ok((t, breakdown)) => {
                self.shared.log.info(format_args!(
                    "model {name} version {version}: loaded ({t:?}) in {} ms ({breakdown})",
                    started.elapsed().as_millis()
                ));
                Ok(t)
            }
            Err(e) => {
                self.shared.log.error(format_args!(
                    "model {name} version {version}: load failed: {e}"
                ));
                Err(e)
            }
        }
    }

    fn load_inner(
        &self,
        name: &str,
        base_path: &str,
        version: i32,
        options_json: &str,
        out: &mut dyn OutputBuffers,
        started: Instant,
    ) -> Result<(ModelType, String), LoadError> {
        if name.is_empty() {
            return Err(LoadError::EmptyName);
        }
        if version < 0 {
            return Err(LoadError::InvalidVersion { version });
        }
        let key: Key = (name.to_string(), version);
        let (state, cancelled) = self.begin_load(&key)?;
        // A panic (a bug) must neither leave partial plaintext in the host's buffers nor leave
        // the version stuck in "loading": catch it here, wipe, and finish the load as failed.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let request = Request {
                name,
                base_path,
                version,
                options_json,
                started,
            };
            fetch::fetch_and_decrypt(&self.shared, &request, &state, &mut *out)
        }))
        .unwrap_or_else(|_| {
            out.wipe();
            Err(LoadError::Internal)
        });
        let decrypted = result.is_ok();
        let finished = self.finish_load(key, state, cancelled, result);
        if decrypted && finished.is_err() {
            out.wipe();
        }
        finished
    }

    /// Registers the load; an earlier worker of the same version is stopped (reload).
    fn begin_load(&self, key: &Key) -> Result<(Arc<VersionState>, Arc<AtomicBool>), LoadError> {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        let cancelled = Arc::new(AtomicBool::new(false));
        let state = match versions.get_mut(key) {
            Some(Entry {
                activity: Activity::Loading { .. },
                ..
            }) => return Err(LoadError::InProgress),
            Some(entry) => {
                if let Activity::Loaded { worker } =
                    std::mem::replace(&mut entry.activity, Activity::Unloaded)
                {
                    worker.stop();
                }
                entry.activity = Activity::Loading {
                    cancelled: cancelled.clone(),
                };
                entry.state.clone()
            }
            None => {
                let state = Arc::new(VersionState::default());
                versions.insert(
                    key.clone(),
                    Entry {
                        state: state.clone(),
                        activity: Activity::Loading {
                            cancelled: cancelled.clone(),
                        },
                    },
                );
                state
            }
        };
        Ok((state, cancelled))
    }

    fn finish_load(
        &self,
        key: Key,
        state: Arc<VersionState>,
        cancelled: Arc<AtomicBool>,
        result: Result<Fetched, LoadError>,
    ) -> Result<(ModelType, String), LoadError> {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        let ours = matches!(versions.get(&key), Some(Entry { activity: Activity::Loading { cancelled: c }, .. }) if Arc::ptr_eq(c, &cancelled));
        match result {
            Ok(Fetched {
                model_type,
                granted,
                breakdown,
            }) if ours && !cancelled.load(Ordering::Acquire) => {
                let was_blacklisted = self.shared.unblacklist(&state);
                let worker =
                    worker::spawn(self.shared.clone(), &key.0, key.1, state.clone(), granted);
                versions.insert(
                    key.clone(),
                    Entry {
                        state,
                        activity: Activity::Loaded { worker },
                    },
                );
                // Log after releasing the map: a slow stderr must never hold up the status poll.
                drop(versions);
                if was_blacklisted {
                    self.shared.log.info(format_args!(
                        "model {} version {}: license valid again; no longer blacklisted",
                        key.0, key.1
                    ));
                }
                Ok((model_type, breakdown))
            }
            Ok(_) => Err(LoadError::UnloadedWhileLoading),
            Err(e) => {
                if ours {
                    if state.is_blacklisted() {
                        versions.insert(
                            key,
                            Entry {
                                state,
                                activity: Activity::Unloaded,
                            },
                        );
                    } else {
                        versions.remove(&key);
                    }
                }
                Err(e)
            }
        }
    }

    /// Unloads `(name, version)`: stops its lease worker (without waiting for a check in
    /// flight). Idempotent; unknown versions are fine. A blacklisted version stays known (and
    /// blacklisted until its recheck time) so the host does not reload it at once.
    pub fn unload(&self, name: &str, version: i32) {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        let key = (name.to_string(), version);
        let Some(entry) = versions.get_mut(&key) else {
            return;
        };
        let was_loaded = match std::mem::replace(&mut entry.activity, Activity::Unloaded) {
            Activity::Loaded { worker } => {
                worker.stop();
                true
            }
            Activity::Loading { cancelled } => {
                cancelled.store(true, Ordering::Release);
                false
            }
            Activity::Unloaded => false,
        };
        if !entry.state.is_blacklisted() {
            versions.remove(&key);
        }
        // Log after releasing the map: a slow stderr must never hold up the status poll.
        drop(versions);
        if was_loaded {
            self.shared
                .log
                .info(format_args!("model {name} version {version}: unloaded"));
        }
    }

    /// Forgets every version of `name` (the model was removed from the host's config).
    pub fn retire(&self, name: &str) {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        versions.retain(|(n, _), entry| {
            if n != name {
                return true;
            }
            match std::mem::replace(&mut entry.activity, Activity::Unloaded) {
                Activity::Loaded { worker } => worker.stop(),
                Activity::Loading { cancelled } => cancelled.store(true, Ordering::Release),
                Activity::Unloaded => {}
            }
            false
        });
        drop(versions);
        self.shared.log.info(format_args!("model {name}: retired"));
    }

    /// Stops every worker and forgets every version.
    pub fn shutdown(&self) {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        for (_, entry) in versions.drain() {
            match entry.activity {
                Activity::Loaded { worker } => worker.stop(),
                Activity::Loading { cancelled } => cancelled.store(true, Ordering::Release),
                Activity::Unloaded => {}
            }
        }
    }

    /// Number of versions with a running lease worker (diagnostics).
    pub fn loaded_versions(&self) -> usize {
        self.versions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|e| matches!(e.activity, Activity::Loaded { .. }))
            .count()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.shutdown();
    }
}
