//! The loader: one object per OVMS `loader_name`, all state inside it (no globals).
//!
//! `load` runs the client path (attest the vTPM, license service, unwrap the model key) and
//! decrypts the package straight into the host's buffers. Each loaded version gets a lease
//! worker ([`crate::lease`]) that renews the license and flips the version's blacklist flag,
//! which [`Loader::blacklist_status`] only reads.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ovsa_client::{check_license, ClientError, ClientOptions, Released, Step, TpmAttester};
use ovsa_core::envelope::Signed;
use ovsa_core::identity::Keystore;
use ovsa_core::license::CustomerLicense;
use ovsa_core::package::{FileKind, ModelFormat, Package};
use ovsa_core::protocol::Purpose;
use zeroize::Zeroize;

use crate::config::LoaderConfig;
use crate::lease::{self, Worker};
use crate::log::Logger;
use crate::options;

/// What a successful load produced (mirrors `ovms::CustomLoaderStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    /// OpenVINO IR: XML in the model buffer, weights in the weights buffer.
    Ir,
    /// ONNX: the model in the model buffer, no weights.
    Onnx,
}

/// Blacklist answer (mirrors `ovms::CustomLoaderStatus::{OK, MODEL_BLACKLISTED}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlacklistStatus {
    /// Serve (or load) the version.
    Ok,
    /// The license no longer allows this version: unload it.
    Blacklisted,
}

/// A failed load: a one-line reason without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// The host's output buffers. The loader asks for each buffer's exact size once, then decrypts
/// into it; the memory belongs to the host.
pub trait OutputBuffers {
    /// Allocates the model buffer (`model_size` bytes) and, for IR, the weights buffer
    /// (`weights_size` bytes), returning both (the weights slice is empty for ONNX).
    fn allocate(
        &mut self,
        model_size: usize,
        weights_size: Option<usize>,
    ) -> Result<(&mut [u8], &mut [u8]), String>;

    /// Zeroizes whatever [`OutputBuffers::allocate`] handed out (a load that failed after the
    /// decryption finished).
    fn wipe(&mut self);
}

/// Plain vectors as output buffers (Rust hosts and tests).
#[derive(Default)]
pub struct VecBuffers {
    /// The model (IR XML or ONNX).
    pub model: Vec<u8>,
    /// The IR weights.
    pub weights: Vec<u8>,
}

impl OutputBuffers for VecBuffers {
    fn allocate(
        &mut self,
        model_size: usize,
        weights_size: Option<usize>,
    ) -> Result<(&mut [u8], &mut [u8]), String> {
        self.model.resize(model_size, 0);
        self.weights.resize(weights_size.unwrap_or(0), 0);
        Ok((&mut self.model, &mut self.weights))
    }

    fn wipe(&mut self) {
        self.model.zeroize();
        self.weights.zeroize();
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

pub(crate) struct Inner {
    pub(crate) config: LoaderConfig,
    pub(crate) log: Logger,
    /// Serializes TPM use: a TPM (and swtpm) serves one connection at a time.
    pub(crate) tpm: Mutex<()>,
    versions: RwLock<HashMap<Key, Entry>>,
    epoch: Instant,
}

impl Inner {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks `state` blacklisted; an unloaded version reports OK again after the recheck delay.
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

    /// One license check through the TPM (serialized with every other TPM user of this loader),
    /// over by `deadline`: it runs on its own thread, and a TPM or service that does not answer
    /// makes it fail with [`ClientError::Deadline`] at the deadline. A thread stuck in a TPM
    /// call that never returns holds only its own copies (license, keystore handle, TPM
    /// connection) and drops them when the call returns; the caller has moved on.
    pub(crate) fn check(
        inner: &Arc<Inner>,
        license: &CustomerLicense,
        keystore: &Arc<Keystore>,
        purpose: Purpose,
        deadline: Instant,
    ) -> Result<Released, ClientError> {
        // A configured service URL replaces the license's; the license's pins stay in force.
        let mut license = license.clone();
        if let Some(url) = &inner.config.service_url {
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
        let stage = Arc::new(AtomicU8::new(STAGE_TPM_LOCK));
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let spawned = {
            let (inner, keystore, stage) = (inner.clone(), keystore.clone(), stage.clone());
            std::thread::Builder::new()
                .name("ovsa-check".into())
                .spawn(move || {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        inner.check_now(&license, &keystore, purpose, deadline, &stage)
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
                inner.deadline_message(stage.load(Ordering::Acquire)),
            )),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(ClientError::Protocol(
                "the license check ended without an answer (a bug: please report it)".into(),
            )),
        }
    }

    fn check_now(
        &self,
        license: &CustomerLicense,
        keystore: &Keystore,
        purpose: Purpose,
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
        check_license(
            license,
            keystore,
            &mut attester,
            purpose,
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

/// A loader: the state of one OVMS `loader_name`.
pub struct Loader {
    inner: Arc<Inner>,
}

impl Loader {
    /// A loader with `config`.
    pub fn new(config: LoaderConfig) -> Self {
        let log = Logger::new(config.log_level);
        Loader {
            inner: Arc::new(Inner {
                config,
                log,
                tpm: Mutex::new(()),
                versions: RwLock::new(HashMap::new()),
                epoch: Instant::now(),
            }),
        }
    }

    /// A loader configured by `config_path` (`None`/empty: defaults).
    pub fn from_config_file(config_path: Option<&str>) -> Result<Self, String> {
        Ok(Loader::new(LoaderConfig::load(config_path)?))
    }

    /// The configuration in use.
    pub fn config(&self) -> &LoaderConfig {
        &self.inner.config
    }

    /// Whether `(name, version)` is blacklisted. Reads flags only: no I/O, never waits on a
    /// load or a lease check (the map lock is only ever held for map updates).
    pub fn blacklist_status(&self, name: &str, version: i32) -> BlacklistStatus {
        let versions = self
            .inner
            .versions
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let Some(entry) = versions.get(&(name.to_string(), version)) else {
            return BlacklistStatus::Ok;
        };
        if !entry.state.blacklisted.load(Ordering::Acquire) {
            return BlacklistStatus::Ok;
        }
        match entry.activity {
            Activity::Loaded { .. } => BlacklistStatus::Blacklisted,
            // The host is retrying (the load re-checks the license): do not make it cancel.
            Activity::Loading { .. } => BlacklistStatus::Ok,
            // Let the host retry once the recheck time has come.
            Activity::Unloaded
                if self.inner.now_ms() >= entry.state.recheck_at_ms.load(Ordering::Acquire) =>
            {
                BlacklistStatus::Ok
            }
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
                self.inner.log.info(format_args!(
                    "model {name} version {version}: loaded ({t:?}) in {} ms ({breakdown})",
                    started.elapsed().as_millis()
                ));
                Ok(t)
            }
            Err(e) => {
                self.inner.log.error(format_args!(
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
            return Err(LoadError("the model name is empty".into()));
        }
        if version < 0 {
            return Err(LoadError(format!("invalid model version {version}")));
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
            self.fetch_and_decrypt(&request, &state, &mut *out)
        }))
        .unwrap_or_else(|_| {
            out.wipe();
            Err(LoadError(
                "internal error while loading (a bug: please report it); buffers wiped".into(),
            ))
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
        let mut versions = self
            .inner
            .versions
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let cancelled = Arc::new(AtomicBool::new(false));
        let state = match versions.get_mut(key) {
            Some(Entry {
                activity: Activity::Loading { .. },
                ..
            }) => {
                return Err(LoadError(
                    "a load of this version is already in progress".into(),
                ))
            }
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
        result: Result<(ModelType, Granted, String), LoadError>,
    ) -> Result<(ModelType, String), LoadError> {
        let mut versions = self
            .inner
            .versions
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let ours = matches!(versions.get(&key), Some(Entry { activity: Activity::Loading { cancelled: c }, .. }) if Arc::ptr_eq(c, &cancelled));
        match result {
            Ok((model_type, granted, breakdown)) if ours && !cancelled.load(Ordering::Acquire) => {
                let was_blacklisted = self.inner.unblacklist(&state);
                let worker =
                    lease::spawn(self.inner.clone(), &key.0, key.1, state.clone(), granted);
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
                    self.inner.log.info(format_args!(
                        "model {} version {}: license valid again; no longer blacklisted",
                        key.0, key.1
                    ));
                }
                Ok((model_type, breakdown))
            }
            Ok(_) => Err(LoadError(
                "the version was unloaded while it was loading; buffers wiped".into(),
            )),
            Err(e) => {
                if ours {
                    if state.blacklisted.load(Ordering::Acquire) {
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

    /// Everything slow: files, keystore, license check, decryption. No lock is held except the
    /// TPM lock during the check.
    fn fetch_and_decrypt(
        &self,
        request: &Request<'_>,
        state: &VersionState,
        out: &mut dyn OutputBuffers,
    ) -> Result<(ModelType, Granted, String), LoadError> {
        let Request {
            name,
            base_path,
            version,
            options_json,
            started,
        } = *request;
        let local = Instant::now();
        let opts = options::parse(options_json).map_err(LoadError)?;
        if base_path.is_empty() {
            return Err(LoadError("the base path is empty".into()));
        }
        let version_dir = Path::new(base_path).join(version.to_string());
        if !version_dir.is_dir() {
            let why = if Path::new(base_path).is_dir() {
                "has no such version directory"
            } else {
                "does not exist or is not a directory"
            };
            return Err(LoadError(format!(
                "base path '{base_path}' {why}: version {version} must be the directory '{}' \
                 holding the .dat and .lic files (check the model's base_path)",
                version_dir.display()
            )));
        }
        let caf = &opts.controlled_access_file;
        let dat = options::resolve(
            &version_dir,
            "controlled_access_file",
            &format!("{caf}.dat"),
        )
        .map_err(LoadError)?;
        let lic = options::resolve(
            &version_dir,
            "controlled_access_file",
            &format!("{caf}.lic"),
        )
        .map_err(LoadError)?;
        let ks = options::resolve(&version_dir, "keystore", &opts.keystore).map_err(LoadError)?;
        for (what, key, p) in [
            ("model package", "controlled_access_file", &dat),
            ("license", "controlled_access_file", &lic),
            ("keystore", "keystore", &ks),
        ] {
            if !p.is_file() {
                return Err(LoadError(format!(
                    "{what} '{}' not found (custom_loader_options '{key}'; relative names \
                     resolve inside the version directory '{}')",
                    p.display(),
                    version_dir.display()
                )));
            }
        }
        let package = Package::open(&dat).map_err(|e| LoadError(format!("model package: {e}")))?;
        let license = Signed::<CustomerLicense>::load(&lic)
            .map_err(|e| LoadError(format!("license '{}': {e}", lic.display())))?;
        CustomerLicense::check_package(&license, package.header()).map_err(|e| {
            LoadError(format!(
                "license '{}' does not belong to package '{}': {e}",
                lic.display(),
                dat.display()
            ))
        })?;
        self.check_identity(name, version, &dat, package.header().body())?;
        if !self.inner.config.trusted_isv_keys.is_empty() {
            let signer = package.header().signer();
            let key = signer
                .public_key()
                .map_err(|e| LoadError(format!("model package signer: {e}")))?;
            if !self.inner.config.trusted_isv_keys.contains(&key) {
                return Err(LoadError(format!(
                    "model package '{}' is signed by '{}', which is not in trusted_isv_certs",
                    dat.display(),
                    signer.subject()
                )));
            }
        }
        let format = package
            .header()
            .body()
            .format()
            .map_err(|e| LoadError(format!("model package: {e}")))?;
        let passphrase = std::env::var("OVSA_KEYSTORE_PASSPHRASE").ok();
        let keystore = Arc::new(
            Keystore::load(&ks, passphrase.as_deref())
                .map_err(|e| LoadError(format!("keystore '{}': {e}", ks.display())))?,
        );
        if license.body().customer_certificate != keystore.certificate().der() {
            return Err(LoadError(format!(
                "keystore '{}' holds '{}', but the license was sold to another certificate",
                ks.display(),
                keystore.certificate().subject()
            )));
        }
        let local = local.elapsed();
        let deadline = started
            .checked_add(Duration::from_secs(self.inner.config.load_timeout_seconds))
            .unwrap_or_else(|| {
                Instant::now() + Duration::from_secs(crate::config::MAX_SETTING_SECONDS)
            });
        let released = Inner::check(
            &self.inner,
            license.body(),
            &keystore,
            Purpose::Load,
            deadline,
        )
        .map_err(|e| {
            if e.is_license_refusal() || state.blacklisted.load(Ordering::Acquire) {
                // Final (or still failing while blacklisted): report blacklisted until the
                // recheck delay, so the host does not retry every poll.
                self.inner.blacklist(state);
            }
            LoadError(format!("license check: {e}"))
        })?;
        let key = license
            .body()
            .unwrap_model_key(&keystore, released.share.as_ref())
            .map_err(|e| LoadError(format!("model key: {e}")))?;
        let header = package.header().body();
        let size = |kind: FileKind| -> Result<(usize, usize), LoadError> {
            let i = header
                .find(kind)
                .ok_or_else(|| LoadError(format!("model package has no {kind:?} file")))?;
            let size = usize::try_from(header.files[i].size)
                .map_err(|_| LoadError("model file too large for memory".into()))?;
            Ok((i, size))
        };
        let (model_kind, weights_kind, model_type) = match format {
            ModelFormat::Ir => (FileKind::IrXml, Some(FileKind::IrBin), ModelType::Ir),
            ModelFormat::Onnx => (FileKind::Onnx, None, ModelType::Onnx),
        };
        let (model_index, model_size) = size(model_kind)?;
        let weights = weights_kind.map(size).transpose()?;
        let threads = self
            .inner
            .config
            .decrypt_threads
            .unwrap_or_else(ovsa_core::package::reader::default_threads);
        let decrypt_start = Instant::now();
        let (model_buf, weights_buf) = out
            .allocate(model_size, weights.map(|(_, s)| s))
            .map_err(|e| LoadError(format!("output buffers: {e}")))?;
        let allocated = decrypt_start.elapsed();
        let decrypt_start = Instant::now();
        let decrypted = package
            .decrypt_file_into(model_index, &key, model_buf, threads)
            .and_then(|()| match weights {
                Some((i, _)) => package.decrypt_file_into(i, &key, weights_buf, threads),
                None => Ok(()),
            });
        if let Err(e) = decrypted {
            model_buf.zeroize();
            weights_buf.zeroize();
            return Err(LoadError(format!("model package: {e}")));
        }
        let lease = self.inner.config.lease(released.response.lease_seconds);
        let t = &released.timings;
        let bytes = model_size + weights.map_or(0, |(_, s)| s);
        let breakdown = format!(
            "{bytes} bytes; files and keys {} ms, TLS connect {} ms, service {} ms, TPM {} ms ({} commands), host buffers {} ms, decrypt {} ms ({} threads); uses {}{}",
            local.as_millis(),
            t.connect.as_millis(),
            t.service.as_millis(),
            t.tpm.as_millis(),
            t.tpm_commands,
            allocated.as_millis(),
            decrypt_start.elapsed().as_millis(),
            threads,
            released.response.uses,
            released
                .response
                .usage_limit
                .map_or(String::new(), |l| format!(" of {l}")),
        );
        Ok((
            model_type,
            Granted {
                license: license.body().clone(),
                keystore,
                lease,
            },
            breakdown,
        ))
    }

    /// The package must be the version the host asked for (refused otherwise: a license sold
    /// for version 1 must not serve as version 7); a different model name is only a warning
    /// (the host's model names are the customer's choice). See docs/RUNTIME.md.
    fn check_identity(
        &self,
        name: &str,
        version: i32,
        dat: &Path,
        header: &ovsa_core::package::PackageHeader,
    ) -> Result<(), LoadError> {
        let label = header.model_version.as_str();
        let same_version = !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_digit())
            && label.parse::<u64>().ok() == u64::try_from(version).ok();
        if !same_version {
            return Err(LoadError(format!(
                "model package '{}' is version '{label}' of model '{}', but the host asked for \
                 version {version}: a package (and its license) only serves the version it was \
                 protected as; put it in the version directory {label}, or protect the model \
                 as version {version}",
                dat.display(),
                header.model_name
            )));
        }
        if header.model_name != name {
            self.inner.log.warning(format_args!(
                "model {name} version {version}: package '{}' holds model '{}' (as the ISV \
                 signed it); serving it under the name '{name}'",
                dat.display(),
                header.model_name
            ));
        }
        Ok(())
    }

    /// Unloads `(name, version)`: stops its lease worker (without waiting for a check in
    /// flight). Idempotent; unknown versions are fine. A blacklisted version stays known (and
    /// blacklisted until its recheck time) so the host does not reload it at once.
    pub fn unload(&self, name: &str, version: i32) {
        let mut versions = self
            .inner
            .versions
            .write()
            .unwrap_or_else(|p| p.into_inner());
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
        if !entry.state.blacklisted.load(Ordering::Acquire) {
            versions.remove(&key);
        }
        // Log after releasing the map: a slow stderr must never hold up the status poll.
        drop(versions);
        if was_loaded {
            self.inner
                .log
                .info(format_args!("model {name} version {version}: unloaded"));
        }
    }

    /// Forgets every version of `name` (the model was removed from the host's config).
    pub fn retire(&self, name: &str) {
        let mut versions = self
            .inner
            .versions
            .write()
            .unwrap_or_else(|p| p.into_inner());
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
        self.inner.log.info(format_args!("model {name}: retired"));
    }

    /// Stops every worker and forgets every version.
    pub fn shutdown(&self) {
        let mut versions = self
            .inner
            .versions
            .write()
            .unwrap_or_else(|p| p.into_inner());
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
        self.inner
            .versions
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

/// What the host asked to load, and when.
#[derive(Clone, Copy)]
struct Request<'a> {
    name: &'a str,
    base_path: &'a str,
    version: i32,
    options_json: &'a str,
    /// The start of the load (the deadline counts from here).
    started: Instant,
}

/// What a successful check hands to the lease worker.
pub(crate) struct Granted {
    pub(crate) license: CustomerLicense,
    pub(crate) keystore: Arc<Keystore>,
    pub(crate) lease: Duration,
}
