//! The slow part of a load, in four steps: resolve the files the host's options name
//! ([`resolve_artifacts`]), open and cross-check them ([`open_bundle`]), attest and obtain the
//! model key from the license service ([`release_key`]), and decrypt straight into the host's
//! buffers ([`decrypt_into`]). No lock is held except the TPM lock during the check.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovsa_client::{BundleFiles, CustomerBundle, Released};
use ovsa_core::envelope::Signed;
use ovsa_core::identity::Keystore;
use ovsa_core::license::CustomerLicense;
use ovsa_core::package::{FileKind, ModelFormat, ModelKey, Package};
use ovsa_core::protocol::Purpose;
use zeroize::Zeroize;

use crate::lease::{load_deadline, Terms};
use crate::options;
use crate::state::{Granted, Shared, VersionState};
use crate::types::{LoadError, ModelType, OutputBuffers};

/// What the host asked to load, and when.
#[derive(Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) name: &'a str,
    pub(crate) base_path: &'a str,
    pub(crate) version: i32,
    pub(crate) options_json: &'a str,
    /// The start of the load (the deadline counts from here).
    pub(crate) started: Instant,
}

/// A finished load.
pub(crate) struct Fetched {
    pub(crate) model_type: ModelType,
    /// What the lease worker needs.
    pub(crate) granted: Granted,
    /// Where the time went (for the log line).
    pub(crate) breakdown: String,
}

/// Files, keystore, license check, decryption.
pub(crate) fn fetch_and_decrypt(
    shared: &Arc<Shared>,
    request: &Request<'_>,
    state: &VersionState,
    out: &mut dyn OutputBuffers,
) -> Result<Fetched, LoadError> {
    let local = Instant::now();
    let files = resolve_artifacts(request)?;
    let opened = open_bundle(shared, request, &files)?;
    let local = local.elapsed();
    let (key, released) = release_key(shared, request, &opened, state)?;
    let decrypted = match decrypt_into(shared, &opened, &key, out) {
        Ok(d) => d,
        Err(e) => {
            // The service granted a seat this load will not use: give it back.
            if let Some(lease_id) = released.response.lease_id {
                Shared::release_in_background(
                    shared,
                    format!("model {} version {}", request.name, request.version),
                    opened.license.body(),
                    &opened.keystore,
                    lease_id,
                );
            }
            return Err(e);
        }
    };
    let terms = Terms::of(opened.license.body());
    let granted = released.response.lease_seconds;
    let lease = shared.config.lease(granted, terms.lease_seconds);
    for warning in shared
        .config
        .ignored_settings(granted, terms.lease_seconds, terms.grace_seconds)
    {
        shared.log.warning(format_args!(
            "model {} version {}: loader config: {warning}",
            request.name, request.version
        ));
    }
    let breakdown = breakdown(local, &released, &decrypted);
    Ok(Fetched {
        model_type: decrypted.model_type,
        granted: Granted {
            license: opened.license.body().clone(),
            keystore: opened.keystore,
            terms,
            lease,
            lease_id: released.response.lease_id,
        },
        breakdown,
    })
}

/// The three files of a load.
pub(crate) struct Artifacts {
    pub(crate) package: PathBuf,
    pub(crate) license: PathBuf,
    pub(crate) keystore: PathBuf,
}

/// Parses the options and finds `<base_path>/<version>/<controlled_access_file>.{dat,lic}` and
/// the keystore; each must be a file.
pub(crate) fn resolve_artifacts(request: &Request<'_>) -> Result<Artifacts, LoadError> {
    let Request {
        base_path,
        version,
        options_json,
        ..
    } = *request;
    let opts = options::parse(options_json).map_err(|error| LoadError::Options { error })?;
    if base_path.is_empty() {
        return Err(LoadError::EmptyBasePath);
    }
    let version_dir = Path::new(base_path).join(version.to_string());
    if !version_dir.is_dir() {
        return Err(LoadError::NoVersionDir {
            base_path: base_path.to_string(),
            version,
            base_path_exists: Path::new(base_path).is_dir(),
            version_dir,
        });
    }
    let caf = &opts.controlled_access_file;
    let resolve = |key: &str, name: &str| {
        options::resolve(&version_dir, key, name).map_err(|error| LoadError::Options { error })
    };
    let files = Artifacts {
        package: resolve("controlled_access_file", &format!("{caf}.dat"))?,
        license: resolve("controlled_access_file", &format!("{caf}.lic"))?,
        keystore: resolve("keystore", &opts.keystore)?,
    };
    for (what, key, p) in [
        ("model package", "controlled_access_file", &files.package),
        ("license", "controlled_access_file", &files.license),
        ("keystore", "keystore", &files.keystore),
    ] {
        if !p.is_file() {
            return Err(LoadError::NotFound {
                what,
                key,
                path: p.clone(),
                version_dir,
            });
        }
    }
    Ok(files)
}

/// The bundle of a load, checked against the host's request and the loader config.
pub(crate) struct Opened {
    pub(crate) package: Package<File>,
    pub(crate) license: Signed<CustomerLicense>,
    pub(crate) keystore: Arc<Keystore>,
    pub(crate) format: ModelFormat,
}

/// Opens the files with [`CustomerBundle::open`] (the same checks as `ovsatool check`), then
/// the plugin's own: the package is the version the host asked for, signed by a trusted ISV
/// (if `trusted_isv_certs` is set), in a format the loader serves.
pub(crate) fn open_bundle(
    shared: &Shared,
    request: &Request<'_>,
    files: &Artifacts,
) -> Result<Opened, LoadError> {
    let passphrase = std::env::var("OVSA_KEYSTORE_PASSPHRASE").ok();
    let bundle = CustomerBundle::open(
        BundleFiles {
            package: &files.package,
            license: &files.license,
            keystore: &files.keystore,
        },
        passphrase.as_deref(),
        &mut |_| {},
    )
    .map_err(|error| LoadError::Bundle { error })?;
    let header = bundle.package.header();
    check_identity(shared, request, &files.package, header.body())?;
    if !shared.config.trusted_isv_keys.is_empty() {
        let signer = header.signer();
        let key = signer
            .public_key()
            .map_err(|error| LoadError::Signer { error })?;
        if !shared.config.trusted_isv_keys.contains(&key) {
            return Err(LoadError::UntrustedSigner {
                package: files.package.clone(),
                signer: signer.subject().to_string(),
            });
        }
    }
    let format = header
        .body()
        .format()
        .map_err(|error| LoadError::Package { error })?;
    let CustomerBundle {
        package,
        license,
        keystore,
    } = bundle;
    Ok(Opened {
        package,
        license,
        keystore: Arc::new(keystore),
        format,
    })
}

/// The package must be the version the host asked for (refused otherwise: a license sold
/// for version 1 must not serve as version 7); a different model name is only a warning
/// (the host's model names are the customer's choice). See docs/RUNTIME.md.
fn check_identity(
    shared: &Shared,
    request: &Request<'_>,
    dat: &Path,
    header: &ovsa_core::package::PackageHeader,
) -> Result<(), LoadError> {
    let (name, version) = (request.name, request.version);
    let label = header.model_version.as_str();
    let same_version = !label.is_empty()
        && label.bytes().all(|b| b.is_ascii_digit())
        && label.parse::<u64>().ok() == u64::try_from(version).ok();
    if !same_version {
        return Err(LoadError::VersionMismatch {
            package: dat.to_path_buf(),
            model: header.model_name.clone(),
            package_version: label.to_string(),
            requested: version,
        });
    }
    if header.model_name != name {
        shared.log.warning(format_args!(
            "model {name} version {version}: package '{}' holds model '{}' (as the ISV \
             signed it); serving it under the name '{name}'",
            dat.display(),
            header.model_name
        ));
    }
    Ok(())
}

/// Attests and checks the license (`Purpose::Load`, over by `load_timeout_seconds` from the
/// start of the load), then unwraps the model key with the released share. A refusal of the
/// license (or a failure while already blacklisted) blacklists the version until the recheck
/// time, so the host does not retry every poll.
pub(crate) fn release_key(
    shared: &Arc<Shared>,
    request: &Request<'_>,
    opened: &Opened,
    state: &VersionState,
) -> Result<(ModelKey, Released), LoadError> {
    let license = opened.license.body();
    let keystore = &opened.keystore;
    let deadline = load_deadline(&shared.config, request.started);
    let released = Shared::check(shared, license, keystore, Purpose::Load, None, deadline)
        .map_err(|e| {
            if e.is_license_refusal() || state.is_blacklisted() {
                shared.blacklist(state);
            }
            LoadError::Check { error: e }
        })?;
    let key = license
        .unwrap_model_key(keystore, released.share.as_ref())
        .map_err(|error| LoadError::ModelKey { error })?;
    Ok((key, released))
}

/// What [`decrypt_into`] did.
pub(crate) struct Decrypted {
    pub(crate) model_type: ModelType,
    pub(crate) bytes: usize,
    pub(crate) threads: usize,
    pub(crate) allocated: Duration,
    pub(crate) decrypt: Duration,
}

/// Asks the host for buffers of the exact plaintext sizes and decrypts into them; on failure
/// wipes whatever was written.
pub(crate) fn decrypt_into(
    shared: &Shared,
    opened: &Opened,
    key: &ModelKey,
    out: &mut dyn OutputBuffers,
) -> Result<Decrypted, LoadError> {
    let package = &opened.package;
    let header = package.header().body();
    let size = |kind: FileKind| -> Result<(usize, usize), LoadError> {
        let i = header.find(kind).ok_or(LoadError::MissingFile { kind })?;
        let size = header.files[i].size;
        let size = usize::try_from(size).map_err(|_| LoadError::TooLarge { size })?;
        Ok((i, size))
    };
    let (model_kind, weights_kind, model_type) = match opened.format {
        ModelFormat::Ir => (FileKind::IrXml, Some(FileKind::IrBin), ModelType::Ir),
        ModelFormat::Onnx => (FileKind::Onnx, None, ModelType::Onnx),
    };
    let (model_index, model_size) = size(model_kind)?;
    let weights = weights_kind.map(size).transpose()?;
    let threads = shared
        .config
        .decrypt_threads
        .unwrap_or_else(ovsa_core::package::reader::default_threads);
    let start = Instant::now();
    let (model_buf, weights_buf) = out
        .allocate(model_size, weights.map(|(_, s)| s))
        .map_err(|error| LoadError::Buffers { error })?;
    let allocated = start.elapsed();
    let start = Instant::now();
    let decrypted = package
        .decrypt_file_into(model_index, key, model_buf, threads)
        .and_then(|()| match weights {
            Some((i, _)) => package.decrypt_file_into(i, key, weights_buf, threads),
            None => Ok(()),
        });
    if let Err(e) = decrypted {
        model_buf.zeroize();
        weights_buf.zeroize();
        return Err(LoadError::Package { error: e });
    }
    Ok(Decrypted {
        model_type,
        bytes: model_size + weights.map_or(0, |(_, s)| s),
        threads,
        allocated,
        decrypt: start.elapsed(),
    })
}

/// The load's log line detail: where the time went.
fn breakdown(local: Duration, released: &Released, d: &Decrypted) -> String {
    let t = &released.timings;
    format!(
        "{} bytes; files and keys {} ms, TLS connect {} ms, service {} ms, TPM {} ms ({} commands), host buffers {} ms, decrypt {} ms ({} threads); uses {}{}",
        d.bytes,
        local.as_millis(),
        t.connect.as_millis(),
        t.service.as_millis(),
        t.tpm.as_millis(),
        t.tpm_commands,
        d.allocated.as_millis(),
        d.decrypt.as_millis(),
        d.threads,
        released.response.uses,
        released
            .response
            .usage_limit
            .map_or(String::new(), |l| format!(" of {l}")),
    )
}
