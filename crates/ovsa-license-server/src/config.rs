//! Service configuration: command line, then environment (`OVSA_LS_*`), then a TOML file
//! (`--config`), then defaults — the first that sets a value wins.
//!
//! ```toml
//! listen = "127.0.0.1:8443"
//! db = "sqlite:/var/lib/ovsa/licenses.db"      # or "postgres://ovsa@db:5432/ovsa"
//! tls_cert = "/etc/ovsa/server.crt"
//! tls_key = "/etc/ovsa/server.key"
//! trust_ek_ca = ["/etc/ovsa/vtpm-ca.pem"]       # vTPM EK CAs
//! trust_host_ek_ca = ["/etc/ovsa/tpm-vendor-ca.pem"]
//! trust_isv = ["/etc/ovsa/isv.crt"]            # whose registrations `license add` accepts
//! require_host_evidence = false
//! allow_unenrolled_host_ak = false             # accept host evidence from never-enrolled host AKs
//! session_ttl_seconds = 60
//! request_timeout_seconds = 10
//! max_connections = 256
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read or parsed.
    #[error("config file {path}: {detail}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A required setting is missing.
    #[error("{0} is required: pass --{1}, set {2}, or set `{3}` in the config file")]
    Missing(&'static str, &'static str, &'static str, &'static str),
    /// A value is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listen address.
    pub listen: Option<SocketAddr>,
    /// Database URL.
    pub db: Option<String>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS key (PEM or OVSA keystore).
    pub tls_key: Option<PathBuf>,
    /// vTPM EK CA certificates.
    #[serde(default)]
    pub trust_ek_ca: Vec<PathBuf>,
    /// Host TPM vendor EK CA certificates.
    #[serde(default)]
    pub trust_host_ek_ca: Vec<PathBuf>,
    /// ISV certificates whose registrations are accepted.
    #[serde(default)]
    pub trust_isv: Vec<PathBuf>,
    /// Refuse attestations without host evidence.
    pub require_host_evidence: Option<bool>,
    /// Accept host evidence from host AKs that were never enrolled.
    pub allow_unenrolled_host_ak: Option<bool>,
    /// Challenge validity.
    pub session_ttl_seconds: Option<u64>,
    /// Per-request time limit.
    pub request_timeout_seconds: Option<u64>,
    /// Connection limit.
    pub max_connections: Option<usize>,
}

impl FileConfig {
    /// Reads the file, or returns an empty config when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
    }
}

/// Default database: an SQLite file in the working directory.
pub const DEFAULT_DB: &str = "sqlite:licenses.db";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// Picks the first of the command-line/env value and the file value.
pub fn pick<T>(cli: Option<T>, file: Option<T>) -> Option<T> {
    cli.or(file)
}

/// Picks a list: the command line/env if non-empty, else the file.
pub fn pick_list(cli: &[PathBuf], file: &[PathBuf]) -> Vec<PathBuf> {
    if cli.is_empty() {
        file.to_vec()
    } else {
        cli.to_vec()
    }
}

/// Reads PEM files of CA certificates into DER trust anchors for the Verifier.
pub fn load_ek_trust(paths: &[PathBuf]) -> Result<ovsa_core::attest::EkTrust, ConfigError> {
    let mut trust = ovsa_core::attest::EkTrust::default();
    for p in paths {
        let certs = ovsa_core::identity::Certificate::load_all(p)
            .map_err(|e| ConfigError::Invalid(format!("EK CA {}: {e}", p.display())))?;
        for c in certs {
            if c.subject() == c.issuer() {
                trust.roots.push(c.der().to_vec());
            } else {
                trust.intermediates.push(c.der().to_vec());
            }
        }
    }
    Ok(trust)
}
