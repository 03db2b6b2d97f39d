//! The CLI's error type.

/// Errors reported by `ovsatool` commands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// An error from the core library (formats, crypto, verification).
    #[error(transparent)]
    Core(#[from] ovsa_core::Error),
    /// A TPM operation failed.
    #[error("TPM: {0}")]
    Tpm(ovsa_tpm::TpmError),
    /// The license check failed.
    #[error(transparent)]
    Client(#[from] ovsa_client::ClientError),
    /// The command line asks for something inconsistent.
    #[error("{0}")]
    Usage(String),
    /// Writing to the terminal failed.
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
}

// Causes that are part of the message are not also the `source()` (a chain reporter would print
// them twice): these `From`s are written out instead of thiserror's `#[from]`.
impl From<ovsa_tpm::TpmError> for CliError {
    fn from(e: ovsa_tpm::TpmError) -> Self {
        CliError::Tpm(e)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Output(e)
    }
}

/// Result alias for the CLI.
pub type CliResult<T> = Result<T, CliError>;
