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
    Tpm(#[from] ovsa_tpm::TpmError),
    /// The license check failed.
    #[error(transparent)]
    Client(#[from] ovsa_client::ClientError),
    /// The command line asks for something inconsistent.
    #[error("{0}")]
    Usage(String),
    /// Writing to the terminal failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// Result alias for the CLI.
pub type CliResult<T> = Result<T, CliError>;
