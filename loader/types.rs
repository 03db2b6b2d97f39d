//! The host-facing types of a load: what it produced, how it failed, where the plaintext goes.

use std::path::PathBuf;

use zeroize::Zeroize;

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

/// A failed load: a one-line reason without secrets, saying what was wrong and what to do.
///
/// A cause (a file, package, license-service or TPM error) is part of the message and is not
/// also returned by [`std::error::Error::source`], so an error-chain reporter prints it once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The host passed an empty model name.
    #[error("the model name is empty")]
    EmptyName,
    /// The host passed a negative version.
    #[error("invalid model version {version}")]
    InvalidVersion {
        /// The version asked for.
        version: i32,
    },
    /// Another load of the same version has not finished.
    #[error("a load of this version is already in progress")]
    InProgress,
    /// The load panicked (a bug); the host's buffers were wiped.
    #[error("internal error while loading (a bug: please report it); buffers wiped")]
    Internal,
    /// The host unloaded the version while it was loading; the buffers were wiped.
    #[error("the version was unloaded while it was loading; buffers wiped")]
    UnloadedWhileLoading,
    /// The model's `custom_loader_options` are unusable.
    #[error("{error}")]
    Options {
        /// What is wrong with them.
        error: crate::options::OptionsError,
    },
    /// The host passed an empty base path.
    #[error("the base path is empty")]
    EmptyBasePath,
    /// `<base_path>/<version>` is not a directory.
    #[error(
        "base path '{base_path}' {}: version {version} must be the directory '{}' \
         holding the .dat and .lic files (check the model's base_path)",
        if *.base_path_exists { "has no such version directory" } else { "does not exist or is not a directory" },
        .version_dir.display()
    )]
    NoVersionDir {
        /// The model's base path.
        base_path: String,
        /// The version asked for.
        version: i32,
        /// `<base_path>/<version>`.
        version_dir: PathBuf,
        /// Whether the base path itself is a directory.
        base_path_exists: bool,
    },
    /// The package, license or keystore file is not there.
    #[error(
        "{what} '{}' not found (custom_loader_options '{key}'; relative names \
         resolve inside the version directory '{}')",
        .path.display(),
        .version_dir.display()
    )]
    NotFound {
        /// "model package", "license" or "keystore".
        what: &'static str,
        /// The option naming the file.
        key: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// The version directory.
        version_dir: PathBuf,
    },
    /// The package, license and keystore do not open or do not belong together (the checks
    /// of `ovsatool check`).
    #[error("{error}")]
    Bundle {
        /// The failed check.
        error: ovsa_client::BundleError,
    },
    /// The package signer's key is unreadable.
    #[error("model package signer: {error}")]
    Signer {
        /// Why.
        error: ovsa_core::Error,
    },
    /// `trusted_isv_certs` is set and the package's signer is not in it.
    #[error(
        "model package '{}' is signed by '{signer}', which is not in trusted_isv_certs",
        .package.display()
    )]
    UntrustedSigner {
        /// The package file.
        package: PathBuf,
        /// The signer's certificate subject.
        signer: String,
    },
    /// The package is not the version the host asked for.
    #[error(
        "model package '{}' is version '{package_version}' of model '{model}', but the host \
         asked for version {requested}: a package (and its license) only serves the version \
         it was protected as; put it in the version directory {package_version}, or protect \
         the model as version {requested}",
        .package.display()
    )]
    VersionMismatch {
        /// The package file.
        package: PathBuf,
        /// The model name in the package.
        model: String,
        /// The version label in the package.
        package_version: String,
        /// The version the host asked for.
        requested: i32,
    },
    /// The package is unusable (format, or decryption failed).
    #[error("model package: {error}")]
    Package {
        /// Why.
        error: ovsa_core::Error,
    },
    /// The license check (attestation, license service) failed.
    #[error("license check: {error}")]
    Check {
        /// Why.
        error: ovsa_client::ClientError,
    },
    /// The model key could not be unwrapped with the released share.
    #[error("model key: {error}")]
    ModelKey {
        /// Why.
        error: ovsa_core::Error,
    },
    /// The package lacks a file its format needs.
    #[error("model package has no {} file", file_kind_name(*.kind))]
    MissingFile {
        /// The missing file.
        kind: ovsa_core::package::FileKind,
    },
    /// A model file is larger than this machine's address space.
    #[error("model file too large for memory")]
    TooLarge {
        /// Its size in bytes.
        size: u64,
    },
    /// The host could not provide the output buffers.
    #[error("output buffers: {error}")]
    Buffers {
        /// The host's reason.
        error: BufferError,
    },
}

/// A model file kind as a user reads it (not the enum's Debug name).
fn file_kind_name(kind: ovsa_core::package::FileKind) -> &'static str {
    use ovsa_core::package::FileKind;
    match kind {
        FileKind::IrXml => "IR topology (.xml)",
        FileKind::IrBin => "IR weights (.bin)",
        FileKind::Onnx => "ONNX (.onnx)",
    }
}

/// Why the host could not provide an output buffer ([`OutputBuffers::allocate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BufferError {
    /// The host gave no memory for a buffer (its allocation callback returned NULL).
    #[error("the host could not allocate {size} bytes for the {what}")]
    NotAllocated {
        /// "model" or "weights".
        what: &'static str,
        /// The size asked for, in bytes.
        size: usize,
    },
    /// A buffer's pages could not be excluded from core dumps (`madvise(MADV_DONTDUMP)`).
    #[error(
        "could not exclude the {size}-byte {what} buffer from core dumps \
         (madvise MADV_DONTDUMP: {detail}); nothing was decrypted"
    )]
    NotExcludedFromDumps {
        /// "model" or "weights".
        what: &'static str,
        /// The buffer's size, in bytes.
        size: usize,
        /// The system's error text.
        detail: String,
    },
    /// Plugin-owned memory for a buffer could not be mapped.
    #[error("could not map {size} bytes for the {what} excluded from core dumps: {detail}")]
    NotMapped {
        /// "model" or "weights".
        what: &'static str,
        /// The size asked for, in bytes.
        size: usize,
        /// The system's error text.
        detail: String,
    },
    /// The process could not be made non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`).
    #[error(
        "could not make the process non-dumpable (prctl PR_SET_DUMPABLE: {detail}); \
         nothing was decrypted"
    )]
    ProcessDumpable {
        /// The system's error text.
        detail: String,
    },
}

/// The host's output buffers. The loader asks for each buffer's exact size once, then decrypts
/// into it; the memory belongs to the host.
pub trait OutputBuffers {
    /// Allocates the model buffer (`model_size` bytes) and, for IR, the weights buffer
    /// (`weights_size` bytes), returning both (the weights slice is empty for ONNX).
    fn allocate(
        &mut self,
        model_size: usize,
        weights_size: Option<usize>,
    ) -> Result<(&mut [u8], &mut [u8]), BufferError>;

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
    ) -> Result<(&mut [u8], &mut [u8]), BufferError> {
        self.model.resize(model_size, 0);
        self.weights.resize(weights_size.unwrap_or(0), 0);
        Ok((&mut self.model, &mut self.weights))
    }

    fn wipe(&mut self) {
        self.model.zeroize();
        self.weights.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::path::Path;

    use super::*;

    /// Every message of a chain, as an error-chain reporter (anyhow, eyre) prints it.
    fn chain(e: &dyn std::error::Error) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(s) = next {
            out.push(s.to_string());
            next = s.source();
        }
        out
    }

    #[test]
    fn messages_are_unchanged_and_causes_print_once() {
        let dir = Path::new("/models/m/7");
        let cases = [
            (LoadError::EmptyName, "the model name is empty".to_string()),
            (
                LoadError::InvalidVersion { version: -1 },
                "invalid model version -1".into(),
            ),
            (
                LoadError::NoVersionDir {
                    base_path: "/models/m".into(),
                    version: 7,
                    version_dir: dir.into(),
                    base_path_exists: true,
                },
                "base path '/models/m' has no such version directory: version 7 must be the \
                 directory '/models/m/7' holding the .dat and .lic files (check the model's \
                 base_path)"
                    .into(),
            ),
            (
                LoadError::NoVersionDir {
                    base_path: "/models/m".into(),
                    version: 7,
                    version_dir: dir.into(),
                    base_path_exists: false,
                },
                "base path '/models/m' does not exist or is not a directory: version 7 must be \
                 the directory '/models/m/7' holding the .dat and .lic files (check the model's \
                 base_path)"
                    .into(),
            ),
            (
                LoadError::NotFound {
                    what: "keystore",
                    key: "keystore",
                    path: dir.join("c.ks"),
                    version_dir: dir.into(),
                },
                "keystore '/models/m/7/c.ks' not found (custom_loader_options 'keystore'; \
                 relative names resolve inside the version directory '/models/m/7')"
                    .into(),
            ),
            (
                LoadError::VersionMismatch {
                    package: dir.join("m.dat"),
                    model: "test".into(),
                    package_version: "1".into(),
                    requested: 7,
                },
                "model package '/models/m/7/m.dat' is version '1' of model 'test', but the host \
                 asked for version 7: a package (and its license) only serves the version it \
                 was protected as; put it in the version directory 1, or protect the model as \
                 version 7"
                    .into(),
            ),
            (
                LoadError::Options {
                    error: crate::options::OptionsError::Missing { key: "keystore" },
                },
                "custom_loader_options lacks 'keystore' (required: keystore, \
                 controlled_access_file)"
                    .into(),
            ),
            (
                LoadError::Check {
                    error: ovsa_client::ClientError::Protocol("bad frame".into()),
                },
                "license check: license service protocol error: bad frame".into(),
            ),
            (
                LoadError::ModelKey {
                    error: ovsa_core::Error::malformed("share", "wrong length"),
                },
                format!(
                    "model key: {}",
                    ovsa_core::Error::malformed("share", "wrong length")
                ),
            ),
            (
                LoadError::Buffers {
                    error: BufferError::NotAllocated {
                        what: "model",
                        size: 9,
                    },
                },
                "output buffers: the host could not allocate 9 bytes for the model".into(),
            ),
            (
                LoadError::MissingFile {
                    kind: ovsa_core::package::FileKind::IrBin,
                },
                "model package has no IR weights (.bin) file".into(),
            ),
            (
                LoadError::MissingFile {
                    kind: ovsa_core::package::FileKind::IrXml,
                },
                "model package has no IR topology (.xml) file".into(),
            ),
            (
                LoadError::MissingFile {
                    kind: ovsa_core::package::FileKind::Onnx,
                },
                "model package has no ONNX (.onnx) file".into(),
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
            // The cause is in the message; it is not also the source (printed twice).
            assert!(e.source().is_none(), "{e}");
            assert_eq!(chain(&e), [text]);
        }
    }
}
