//! Client errors: each says which step failed and whether retrying can help.

use ovsa_core::protocol::Reason;

/// Errors of the license client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The license service could not be reached (DNS, TCP, TLS handshake, timeout).
    #[error("license service {url} unreachable: {detail}")]
    Unreachable {
        /// The service URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The server's TLS key matches none of the license's pins.
    #[error("license service {url} presented a key that the license does not pin (SHA-256 SPKI {found}); refusing to talk to it")]
    PinMismatch {
        /// The service URL.
        url: String,
        /// The pin of the key it presented.
        found: String,
    },
    /// The service refused this client's TLS certificate during or right after the handshake
    /// (a TLS `access_denied` alert): no license registered there is sold to it.
    #[error(
        "the license service {url} does not know this client certificate: the license must be \
         registered with `ovsa-license-server license add` on the service, and the keystore must \
         be the customer's one the license was sold to"
    )]
    UnknownClientCertificate {
        /// The service URL.
        url: String,
    },
    /// The service refused the request.
    #[error("license service refused ({reason}): {message}")]
    Refused {
        /// Stable reason code.
        reason: Reason,
        /// The service's message.
        message: String,
    },
    /// The service answered something that is not the protocol.
    #[error("license service protocol error: {0}")]
    Protocol(String),
    /// The check did not finish before its deadline ([`crate::ClientOptions::deadline`]): a
    /// service that accepts but does not answer, or a TPM that does not answer.
    #[error("{0}")]
    Deadline(String),
    /// A TPM operation failed.
    #[error("TPM: {0}")]
    Tpm(ovsa_tpm::TpmError),
    /// A format or crypto failure.
    #[error(transparent)]
    Core(#[from] ovsa_core::Error),
}

// The TPM error is part of the message, so it is not also the `source()` (a chain reporter
// would print it twice): the `From` is written out instead of thiserror's `#[from]`.
impl From<ovsa_tpm::TpmError> for ClientError {
    fn from(e: ovsa_tpm::TpmError) -> Self {
        ClientError::Tpm(e)
    }
}

impl ClientError {
    /// Whether the license itself was refused (revoked, expired, limits): final, unlike
    /// network failures, which a runtime may ride out within its grace period.
    pub fn is_license_refusal(&self) -> bool {
        matches!(self, ClientError::Refused { reason, .. } if reason.is_license_refusal())
    }
}
