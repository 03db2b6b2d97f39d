//! The one error type of the core crate.
//!
//! Every variant names what was wrong and, where it helps, what to do about it. Variants that a
//! caller must be able to tell apart (each tamper case, each trust failure) are distinct; the
//! messages never contain key material.

use std::path::PathBuf;

/// Errors returned by `ovsa-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// Bytes that should hold an artifact do not parse.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which artifact or field.
        what: &'static str,
        /// What exactly is wrong.
        detail: String,
    },

    /// The artifact is of a version this build does not read.
    #[error("unsupported {what} version {found}: this build reads version {supported}; use a matching ovsatool")]
    UnsupportedVersion {
        /// Which artifact.
        what: &'static str,
        /// Version found in the file.
        found: u64,
        /// Version this build reads.
        supported: u64,
    },

    /// A signed artifact of another type was given (e.g. a license where a TCB reference was expected).
    #[error("expected a {expected} artifact but this file is a {found} artifact")]
    WrongArtifactType {
        /// The artifact type the caller asked for.
        expected: &'static str,
        /// The type written in the file.
        found: String,
    },

    /// A file of another kind was given (e.g. a customer license where a keystore was expected).
    #[error("{} is {found}, not {expected}{hint}", path.display())]
    WrongFile {
        /// The file given.
        path: PathBuf,
        /// What the file is ("a customer license (.lic)").
        found: String,
        /// What was expected ("a keystore").
        expected: String,
        /// What to give instead ("; give the keystore file written by ...").
        hint: String,
    },

    /// The signature over a signed artifact does not verify under the certificate it names.
    #[error("the {what} signature does not verify: the file was modified after signing, or it was not signed by the certificate it carries")]
    BadSignature {
        /// Which artifact.
        what: &'static str,
    },

    /// An artifact is validly signed, but by a certificate other than the one required.
    #[error("the {what} is signed by '{found}', but '{expected}' was required")]
    SignerMismatch {
        /// Which artifact.
        what: &'static str,
        /// Subject of the certificate that was required.
        expected: String,
        /// Subject of the certificate that signed.
        found: String,
    },

    /// A certificate's validity period has ended.
    #[error("certificate '{subject}' expired at {not_after}; renew it (ovsatool keygen --import-cert) and re-issue what it signs")]
    CertificateExpired {
        /// The certificate's subject.
        subject: String,
        /// End of its validity, RFC 3339.
        not_after: String,
    },

    /// A certificate's validity period has not started yet.
    #[error("certificate '{subject}' is not valid before {not_before}; check the system clock")]
    CertificateNotYetValid {
        /// The certificate's subject.
        subject: String,
        /// Start of its validity, RFC 3339.
        not_before: String,
    },

    /// A certificate does not chain to a trusted CA, or is not allowed for its use.
    #[error("certificate '{subject}' is not trusted: {reason}")]
    UntrustedCertificate {
        /// The certificate's subject.
        subject: String,
        /// Why validation failed.
        reason: String,
    },

    /// A certificate or key is unusable (unsupported algorithm, does not parse).
    #[error("unusable certificate or key: {0}")]
    BadCertificate(String),

    /// A package chunk failed AEAD authentication: modified, reordered, swapped between files or
    /// packages, or decrypted with the wrong key.
    #[error("package file '{file}': chunk {chunk} failed authentication (the package was modified, its chunks reordered or swapped, or the model key is wrong); nothing was released")]
    ChunkAuthentication {
        /// Name of the model file inside the package.
        file: String,
        /// Zero-based chunk index.
        chunk: u64,
    },

    /// The package is shorter than its signed header says.
    #[error("package is truncated: {0}")]
    Truncated(String),

    /// The package is longer than its signed header says.
    #[error("package has {0} unexpected bytes after its last chunk")]
    TrailingData(u64),

    /// A license or master license belongs to a different package.
    #[error("the {what} is for package {found} but the package given is {expected}; use the license sold for this package")]
    PackageMismatch {
        /// Which artifact.
        what: &'static str,
        /// Header hash of the package given (hex).
        expected: String,
        /// Header hash the artifact is bound to (hex).
        found: String,
    },

    /// The private key given is not the one the license or master license was made for.
    #[error("the {what} was issued to '{expected}', but the keystore holds the key of '{found}'")]
    WrongKey {
        /// Which artifact.
        what: &'static str,
        /// Subject of the certificate the artifact names.
        expected: String,
        /// Subject of the keystore's certificate.
        found: String,
    },

    /// The license-service key share is required to unwrap a customer license but none was given.
    #[error("the model key needs the license service's key share, which was not supplied; the share is released only by the license service after attestation")]
    MissingShare,

    /// Unwrapping a wrapped model key failed authentication.
    #[error("cannot unwrap the model key of the {what}: the key share or private key is wrong, or the license was altered")]
    UnwrapFailed {
        /// Which artifact.
        what: &'static str,
    },

    /// A keystore problem (missing passphrase, wrong format).
    #[error("keystore: {0}")]
    Keystore(String),

    /// The passphrase does not open the keystore.
    #[error("the passphrase does not open this keystore")]
    BadPassphrase,

    /// A caller-supplied value is invalid.
    #[error("{0}")]
    InvalidInput(String),

    /// The crypto provider failed unexpectedly (not caused by the input).
    #[error("crypto provider failure: {0}")]
    Crypto(&'static str),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Malformed`].
    pub fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            detail: detail.into(),
        }
    }
}
