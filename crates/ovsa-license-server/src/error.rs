//! The binary's errors.

use std::net::SocketAddr;

use ovsa_license_server::config::ConfigError;
use ovsa_license_server::store::StoreError;
use ovsa_license_server::tls::TlsError;
use uuid::Uuid;

/// Why a command failed (printed as `ovsa-license-server: error: ...`).
#[derive(Debug, thiserror::Error)]
pub enum MainError {
    /// A setting is missing or unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An admin command named a license the database does not hold.
    #[error("license {guid} is not registered")]
    NotRegistered {
        /// The license.
        guid: Uuid,
    },
    /// `license add` found unusable registrations and imported none.
    #[error(
        "nothing imported: {} of {total} registration(s) cannot be imported:\n  {}",
        problems.len(),
        problems.join("\n  ")
    )]
    NothingImported {
        /// One message per unusable file.
        problems: Vec<String>,
        /// Files given.
        total: usize,
    },
}
