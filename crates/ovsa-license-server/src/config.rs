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
//! passphrase_file = "/etc/ovsa/server.pass"     # when tls_key is a passphrase-protected keystore
//! ```
//!
//! Every file the service reads (configuration, TLS certificate and key, CA certificates,
//! passphrase, registrations) goes through [`read_input`], which refuses anything larger than a
//! small limit and names the setting it came from. `docs/SERVICE.md` lists every setting.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

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
    /// An input file is unreadable, too large or unusable.
    #[error("{setting} {path}: {detail}")]
    Input {
        /// The setting that named the file (e.g. `--tls-cert`).
        setting: String,
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

impl ConfigError {
    fn input(setting: &str, path: &Path, detail: impl Into<String>) -> Self {
        ConfigError::Input {
            setting: setting.to_string(),
            path: path.display().to_string(),
            detail: detail.into(),
        }
    }
}

/// Size limit of every input file but the passphrase file (certificates, keys, configuration,
/// registrations): 1 MiB.
pub const MAX_INPUT_FILE: usize = ovsa_core::encoding::MAX_JSON_ARTIFACT;
/// Size limit of a passphrase file.
pub const MAX_PASSPHRASE_FILE: usize = 4096;

/// Reads a whole input file named by `setting` (e.g. `--tls-cert`), refusing directories and
/// files larger than `limit` bytes (so `/dev/zero` or a wrong multi-gigabyte file fails at once,
/// with a message naming the setting and the file).
pub fn read_input(path: &Path, setting: &str, limit: usize) -> Result<Vec<u8>, ConfigError> {
    let file =
        std::fs::File::open(path).map_err(|e| ConfigError::input(setting, path, e.to_string()))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(ConfigError::input(
            setting,
            path,
            "is a directory, not a file",
        ));
    }
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    file.take(cap)
        .read_to_end(&mut out)
        .map_err(|e| ConfigError::input(setting, path, e.to_string()))?;
    if out.len() > limit {
        return Err(ConfigError::input(
            setting,
            path,
            format!("is larger than {limit} bytes; is it the right file?"),
        ));
    }
    Ok(out)
}

/// Reads a keystore passphrase from the first line of `path` (`--passphrase-file`).
pub fn read_passphrase(path: &Path) -> Result<Zeroizing<String>, ConfigError> {
    let setting = "--passphrase-file";
    let bytes = Zeroizing::new(read_input(path, setting, MAX_PASSPHRASE_FILE)?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ConfigError::input(setting, path, "is not UTF-8 text"))?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        return Err(ConfigError::input(
            setting,
            path,
            "the first line is empty; write the passphrase on the first line",
        ));
    }
    Ok(Zeroizing::new(line.to_string()))
}

/// A numeric setting with its names and allowed range, for [`Bounded::check`].
#[derive(Debug, Clone, Copy)]
pub struct Bounded {
    /// Command-line flag.
    pub flag: &'static str,
    /// Environment variable.
    pub env: &'static str,
    /// TOML key.
    pub key: &'static str,
    /// Smallest accepted value.
    pub min: u64,
    /// Largest accepted value.
    pub max: u64,
    /// Value when nothing sets it.
    pub default: u64,
}

/// `--session-ttl`: seconds a challenge stays valid.
pub const SESSION_TTL: Bounded = Bounded {
    flag: "--session-ttl",
    env: "OVSA_LS_SESSION_TTL",
    key: "session_ttl_seconds",
    min: 1,
    max: 86_400,
    default: 60,
};
/// `--request-timeout`: seconds one request may take.
pub const REQUEST_TIMEOUT: Bounded = Bounded {
    flag: "--request-timeout",
    env: "OVSA_LS_REQUEST_TIMEOUT",
    key: "request_timeout_seconds",
    min: 1,
    max: 3_600,
    default: 10,
};
/// `--max-connections`: connections served at once.
pub const MAX_CONNECTIONS: Bounded = Bounded {
    flag: "--max-connections",
    env: "OVSA_LS_MAX_CONNECTIONS",
    key: "max_connections",
    min: 1,
    max: 65_536,
    default: 256,
};

impl Bounded {
    /// The value (or the default when `None`), refused outside `min..=max`.
    pub fn check(&self, value: Option<u64>) -> Result<u64, ConfigError> {
        let v = value.unwrap_or(self.default);
        if (self.min..=self.max).contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::Invalid(format!(
                "{} ({}, `{}` in the config file) must be between {} and {}; got {v}",
                self.flag, self.env, self.key, self.min, self.max
            )))
        }
    }
}

/// Resolves a `HOST:PORT` listen address (an IP address or a host name such as
/// `localhost:8443`) to the first address it resolves to.
pub async fn resolve_listen(addr: &str) -> Result<SocketAddr, ConfigError> {
    let bad = |detail: String| {
        ConfigError::Invalid(format!(
            "listen address '{addr}' (--listen, OVSA_LS_LISTEN, `listen`): {detail}; \
             use HOST:PORT, e.g. 127.0.0.1:8443, [::1]:8443 or localhost:8443"
        ))
    };
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a);
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
        _ => return Err(bad("no port".into())),
    }
    let mut addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| bad(format!("cannot resolve the host name: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| bad("the host name resolves to no address".into()))
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listen address (`HOST:PORT`; the host may be a name).
    pub listen: Option<String>,
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
    pub max_connections: Option<u64>,
    /// File holding the passphrase of a protected keystore given as `tls_key`.
    pub passphrase_file: Option<PathBuf>,
}

impl FileConfig {
    /// Reads the file, or returns an empty config when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let bytes = read_input(path, "--config", MAX_INPUT_FILE)?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::File {
            path: path.display().to_string(),
            detail: "not UTF-8 text".into(),
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

/// Reads PEM (or DER) files of CA certificates, named by `setting` (`--trust-ek-ca` or
/// `--trust-host-ek-ca`), into the Verifier's trust: self-signed certificates become trust
/// anchors, the others intermediates. Refused at start-up, naming the file: a file without any
/// certificate, and an intermediate whose issuer is in none of the files (no self-signed root
/// to anchor it: every EK certificate under it would be refused as untrusted). Roots and
/// intermediates may come in one file or several.
pub fn load_ek_trust(
    paths: &[PathBuf],
    setting: &str,
) -> Result<ovsa_core::attest::EkTrust, ConfigError> {
    let mut all = Vec::new();
    for p in paths {
        let bytes = read_input(p, setting, MAX_INPUT_FILE)?;
        let is_pem = bytes.trim_ascii_start().starts_with(b"-----BEGIN");
        let certs =
            ovsa_core::identity::Certificate::chain_from_pem_or_der(&bytes).map_err(|e| {
                if is_pem {
                    ConfigError::input(setting, p, e.to_string())
                } else {
                    ConfigError::input(
                        setting,
                        p,
                        "holds no CERTIFICATE block (PEM) and is not a DER certificate; give the \
                     CA certificate(s) in PEM",
                    )
                }
            })?;
        if certs.is_empty() {
            return Err(ConfigError::input(
                setting,
                p,
                "holds no CERTIFICATE block; give the CA certificate(s) in PEM",
            ));
        }
        all.extend(certs.into_iter().map(|c| (p, c)));
    }
    let mut trust = ovsa_core::attest::EkTrust::default();
    for (p, c) in &all {
        if c.subject() == c.issuer() {
            trust.roots.push(c.der().to_vec());
            continue;
        }
        if !all.iter().any(|(_, i)| i.subject() == c.issuer()) {
            return Err(ConfigError::input(
                setting,
                p,
                format!(
                    "certificate '{}' is not self-signed and its issuer '{}' is in none of the \
                     {setting} files, so it anchors nothing and every EK certificate under it \
                     would be refused as untrusted; add the root CA certificate of that chain \
                     (self-signed) to the file or as another {setting}",
                    crate::text::escape_controls(c.subject()),
                    crate::text::escape_controls(c.issuer())
                ),
            ));
        }
        trust.intermediates.push(c.der().to_vec());
    }
    Ok(trust)
}
