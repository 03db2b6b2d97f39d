//! Service configuration: command line, then environment (`OVSA_LS_*`), then a TOML file
//! (`--config`), then defaults — the first that sets a value wins.
//!
//! Each setting is described once, by a [`Setting`] (string and path settings, lists, switches)
//! or a [`Bounded`] (numbers) constant that holds its flag, environment variable, TOML key and
//! default. [`resolve_serve`], [`resolve_db`], [`resolve_config_path`] and [`resolve_trust_isv`]
//! apply the precedence; they read the environment only from the [`Env`] they are given (the
//! binary builds it from the process environment; tests build it from a list), and the library
//! reads no environment variable itself.
//!
//! ```toml
//! listen = "127.0.0.1:8443"
//! db = "sqlite:/var/lib/ovsa/licenses.db"      # or "postgres://ovsa@db:5432/ovsa"
//! tls_cert = "/etc/ovsa/server.crt"
//! tls_key = "/etc/ovsa/server.key"
//! trust_ek_ca = ["/etc/ovsa/vtpm-ca.pem"]       # vTPM EK CAs
//! trust_host_ek_ca = ["/etc/ovsa/tpm-vendor-ca.pem"]
//! metrics_client_cert = ["/etc/ovsa/prometheus.crt"]  # operator certificates: may GET /metrics
//! trust_isv = ["/etc/ovsa/isv.crt"]            # whose registrations `license add` accepts
//! require_ek_binding = false                   # `license add` refuses licenses not bound to EK CAs/EKs
//! require_host_evidence = false
//! allow_unenrolled_host_ak = false             # accept host evidence from never-enrolled host AKs
//! session_ttl_seconds = 60
//! request_timeout_seconds = 10
//! max_connections = 256                       # request slots (connections past their handshake)
//! max_handshakes = 4096                        # connections in their TLS handshake, all sources
//! max_handshakes_per_source = 64               # ... from one IPv4 address or IPv6 /64
//! handshake_timeout_seconds = 3
//! passphrase_file = "/etc/ovsa/server.pass"     # when tls_key is a passphrase-protected keystore
//! ```
//!
//! Every file the service reads (configuration, TLS certificate and key, CA certificates,
//! passphrase, registrations) goes through [`read_input`], which refuses anything larger than a
//! small limit and names the setting it came from. `docs/SERVICE.md` lists every setting.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    #[error("{what} is required: pass {flag}, set {env}, or set `{key}` in the config file")]
    Missing {
        /// What is missing, for the message (e.g. "the TLS certificate").
        what: &'static str,
        /// Its command-line flag (e.g. `--tls-cert`).
        flag: &'static str,
        /// Its environment variable.
        env: &'static str,
        /// Its TOML key.
        key: &'static str,
    },
    /// A number is outside its allowed range.
    #[error(
        "{flag} ({env}, `{key}` in the config file) must be between {min} and {max}; got {value}"
    )]
    OutOfRange {
        /// Command-line flag.
        flag: &'static str,
        /// Environment variable.
        env: &'static str,
        /// TOML key.
        key: &'static str,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
        /// The value given.
        value: u64,
    },
    /// An environment variable holds a value its setting cannot use.
    #[error("environment variable {env} (the {flag} setting): {detail}")]
    Env {
        /// The variable.
        env: &'static str,
        /// The flag it stands for.
        flag: &'static str,
        /// What is wrong and what to do.
        detail: String,
    },
    /// The listen address cannot be used.
    #[error(
        "listen address '{addr}' (--listen, OVSA_LS_LISTEN, `listen`): {detail}; \
         use HOST:PORT, e.g. 127.0.0.1:8443, [::1]:8443 or localhost:8443"
    )]
    Listen {
        /// The address as given.
        addr: String,
        /// What is wrong.
        detail: String,
    },
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
    use ovsa_core::fsutil::{read_bounded, BoundedReadError};
    read_bounded(path, limit).map_err(|e| match e {
        BoundedReadError::Io(e) => ConfigError::input(setting, path, e.to_string()),
        BoundedReadError::Directory => {
            ConfigError::input(setting, path, "is a directory, not a file")
        }
        BoundedReadError::TooLarge => ConfigError::input(
            setting,
            path,
            format!("is larger than {limit} bytes; is it the right file?"),
        ),
    })
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
/// `--max-connections`: request slots, connections past their TLS handshake served at once.
pub const MAX_CONNECTIONS: Bounded = Bounded {
    flag: "--max-connections",
    env: "OVSA_LS_MAX_CONNECTIONS",
    key: "max_connections",
    min: 1,
    max: 65_536,
    default: 256,
};
/// `--max-handshakes`: connections in their TLS handshake at once, all sources together.
pub const MAX_HANDSHAKES: Bounded = Bounded {
    flag: "--max-handshakes",
    env: "OVSA_LS_MAX_HANDSHAKES",
    key: "max_handshakes",
    min: 1,
    max: 65_536,
    default: 4_096,
};
/// `--max-handshakes-per-source`: connections in their TLS handshake at once from one IPv4
/// address or IPv6 /64.
pub const MAX_HANDSHAKES_PER_SOURCE: Bounded = Bounded {
    flag: "--max-handshakes-per-source",
    env: "OVSA_LS_MAX_HANDSHAKES_PER_SOURCE",
    key: "max_handshakes_per_source",
    min: 1,
    max: 65_536,
    default: 64,
};
/// `--handshake-timeout`: seconds from accept to the end of the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Bounded = Bounded {
    flag: "--handshake-timeout",
    env: "OVSA_LS_HANDSHAKE_TIMEOUT",
    key: "handshake_timeout_seconds",
    min: 1,
    max: 60,
    default: 3,
};

impl Bounded {
    /// The value (or the default when `None`), refused outside `min..=max`.
    pub fn check(&self, value: Option<u64>) -> Result<u64, ConfigError> {
        let v = value.unwrap_or(self.default);
        if (self.min..=self.max).contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::OutOfRange {
                flag: self.flag,
                env: self.env,
                key: self.key,
                min: self.min,
                max: self.max,
                value: v,
            })
        }
    }
}

/// Resolves a `HOST:PORT` listen address (an IP address or a host name such as
/// `localhost:8443`) to the first address it resolves to.
pub async fn resolve_listen(addr: &str) -> Result<SocketAddr, ConfigError> {
    let bad = |detail: String| ConfigError::Listen {
        addr: addr.to_string(),
        detail,
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
    /// Operator certificates: admitted at the handshake, the only readers of `/metrics`.
    #[serde(default)]
    pub metrics_client_cert: Vec<PathBuf>,
    /// Refuse attestations without host evidence.
    pub require_host_evidence: Option<bool>,
    /// Accept host evidence from host AKs that were never enrolled.
    pub allow_unenrolled_host_ak: Option<bool>,
    /// `license add` refuses registrations whose license is not bound to EK CAs or enrolled EKs.
    pub require_ek_binding: Option<bool>,
    /// Challenge validity.
    pub session_ttl_seconds: Option<u64>,
    /// Per-request time limit.
    pub request_timeout_seconds: Option<u64>,
    /// Request slots.
    pub max_connections: Option<u64>,
    /// Connections in their TLS handshake, all sources.
    pub max_handshakes: Option<u64>,
    /// Connections in their TLS handshake from one source.
    pub max_handshakes_per_source: Option<u64>,
    /// TLS handshake time limit.
    pub handshake_timeout_seconds: Option<u64>,
    /// File holding the passphrase of a protected keystore given as `tls_key`.
    pub passphrase_file: Option<PathBuf>,
    /// The registration keystore of `license add`.
    pub registration_key: Option<PathBuf>,
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
/// The environment variable holding a keystore passphrase, used when no passphrase file is set.
pub const KEYSTORE_PASSPHRASE_ENV: &str = "OVSA_KEYSTORE_PASSPHRASE";

/// A string, path, list or switch setting: its names in each layer and its default.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Command-line flag.
    pub flag: &'static str,
    /// Environment variable.
    pub env: &'static str,
    /// TOML key (empty: not settable in the file).
    pub key: &'static str,
    /// Value when nothing sets it, as text (`None`: no default).
    pub default: Option<&'static str>,
}

/// `--config`: the TOML file itself.
pub const CONFIG: Setting = Setting {
    flag: "--config",
    env: "OVSA_LS_CONFIG",
    key: "",
    default: None,
};
/// `--db`: the database URL.
pub const DB: Setting = Setting {
    flag: "--db",
    env: "OVSA_LS_DB",
    key: "db",
    default: Some(DEFAULT_DB),
};
/// `--listen`: the listen address.
pub const LISTEN: Setting = Setting {
    flag: "--listen",
    env: "OVSA_LS_LISTEN",
    key: "listen",
    default: Some(DEFAULT_LISTEN),
};
/// `--tls-cert`: the TLS certificate chain (required).
pub const TLS_CERT: Setting = Setting {
    flag: "--tls-cert",
    env: "OVSA_LS_TLS_CERT",
    key: "tls_cert",
    default: None,
};
/// `--tls-key`: the TLS key or keystore (required).
pub const TLS_KEY: Setting = Setting {
    flag: "--tls-key",
    env: "OVSA_LS_TLS_KEY",
    key: "tls_key",
    default: None,
};
/// `--passphrase-file`: the keystore passphrase file (else [`KEYSTORE_PASSPHRASE_ENV`]).
pub const PASSPHRASE_FILE: Setting = Setting {
    flag: "--passphrase-file",
    env: "OVSA_LS_PASSPHRASE_FILE",
    key: "passphrase_file",
    default: None,
};
/// `--trust-ek-ca`: vTPM EK CA certificates (required, repeatable).
pub const TRUST_EK_CA: Setting = Setting {
    flag: "--trust-ek-ca",
    env: "OVSA_LS_TRUST_EK_CA",
    key: "trust_ek_ca",
    default: None,
};
/// `--trust-host-ek-ca`: host TPM vendor EK CA certificates (repeatable).
pub const TRUST_HOST_EK_CA: Setting = Setting {
    flag: "--trust-host-ek-ca",
    env: "OVSA_LS_TRUST_HOST_EK_CA",
    key: "trust_host_ek_ca",
    default: None,
};
/// `license add --trust-isv`: ISV certificates whose registrations are accepted (required).
pub const TRUST_ISV: Setting = Setting {
    flag: "--trust-isv",
    env: "OVSA_LS_TRUST_ISV",
    key: "trust_isv",
    default: None,
};
/// `--registration-key`: the keystore whose certificate the ISV passes to
/// `ovsatool sale --registration-cert` (`license add` opens the sealed shares with it).
pub const REGISTRATION_KEY: Setting = Setting {
    flag: "--registration-key",
    env: "OVSA_LS_REGISTRATION_KEY",
    key: "registration_key",
    default: None,
};
/// `--metrics-client-cert`: operator certificates (repeatable), the only clients besides
/// registered customers admitted at the TLS handshake, and the only readers of `/metrics`.
pub const METRICS_CLIENT_CERT: Setting = Setting {
    flag: "--metrics-client-cert",
    env: "OVSA_LS_METRICS_CLIENT_CERT",
    key: "metrics_client_cert",
    default: None,
};
/// `--require-host-evidence`.
pub const REQUIRE_HOST_EVIDENCE: Setting = Setting {
    flag: "--require-host-evidence",
    env: "OVSA_LS_REQUIRE_HOST_EVIDENCE",
    key: "require_host_evidence",
    default: Some("false"),
};
/// `--allow-unenrolled-host-ak`.
pub const ALLOW_UNENROLLED_HOST_AK: Setting = Setting {
    flag: "--allow-unenrolled-host-ak",
    env: "OVSA_LS_ALLOW_UNENROLLED_HOST_AK",
    key: "allow_unenrolled_host_ak",
    default: Some("false"),
};

/// `license add --require-ek-binding`: refuse registrations whose license is not bound to EK CAs
/// or enrolled EKs (`ovsatool sale --ek-ca/--ek-cert`); without it such a registration is
/// imported with a warning.
pub const REQUIRE_EK_BINDING: Setting = Setting {
    flag: "--require-ek-binding",
    env: "OVSA_LS_REQUIRE_EK_BINDING",
    key: "require_ek_binding",
    default: Some("false"),
};

/// The environment as configuration resolution sees it: variable name to value. The binary
/// builds it from the process environment; tests build it from a list, so nothing here reads
/// or changes the process environment.
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<String, OsString>);

impl Env {
    /// An environment holding these variables (names that are not UTF-8 are left out).
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        Env(vars
            .into_iter()
            .filter_map(|(k, v)| k.into().into_string().ok().map(|k| (k, v.into())))
            .collect())
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&OsStr> {
        self.0.get(name).map(OsString::as_os_str)
    }

    fn error(s: &Setting, detail: impl Into<String>) -> ConfigError {
        ConfigError::Env {
            env: s.env,
            flag: s.flag,
            detail: detail.into(),
        }
    }

    /// A text setting from the environment (any value, the empty one included).
    fn text(&self, s: &Setting) -> Result<Option<String>, ConfigError> {
        self.get(s.env)
            .map(|v| {
                v.to_str().map(str::to_string).ok_or_else(|| {
                    Env::error(s, "is not valid UTF-8; set it to valid text or unset it")
                })
            })
            .transpose()
    }

    /// A path setting from the environment (an empty value is refused).
    fn path(&self, s: &Setting) -> Result<Option<PathBuf>, ConfigError> {
        match self.get(s.env) {
            Some(v) if v.is_empty() => Err(Env::error(
                s,
                "is set but empty; give a file name or unset it",
            )),
            Some(v) => Ok(Some(PathBuf::from(v))),
            None => Ok(None),
        }
    }

    /// A list of paths from the environment, comma-separated (no empty element).
    fn paths(&self, s: &Setting) -> Result<Vec<PathBuf>, ConfigError> {
        let Some(v) = self.text(s)? else {
            return Ok(Vec::new());
        };
        v.split(',')
            .map(|p| {
                if p.is_empty() {
                    Err(Env::error(
                        s,
                        format!(
                            "'{}' has an empty file name; give comma-separated file names",
                            crate::text::escape_controls(&v)
                        ),
                    ))
                } else {
                    Ok(PathBuf::from(p))
                }
            })
            .collect()
    }

    /// A switch from the environment: `true` or `false`.
    fn switch(&self, s: &Setting) -> Result<Option<bool>, ConfigError> {
        match self.text(s)?.as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(Env::error(
                s,
                format!(
                    "'{}' is not a switch value; use true or false",
                    crate::text::escape_controls(other)
                ),
            )),
        }
    }

    /// A number from the environment.
    fn number(&self, b: &Bounded) -> Result<Option<u64>, ConfigError> {
        let s = Setting {
            flag: b.flag,
            env: b.env,
            key: b.key,
            default: None,
        };
        self.text(&s)?
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    Env::error(
                        &s,
                        format!(
                            "'{}' is not a whole number; use one from {} to {}",
                            crate::text::escape_controls(&v),
                            b.min,
                            b.max
                        ),
                    )
                })
            })
            .transpose()
    }
}

/// The first layer that sets a value: command line, environment, file.
fn first<T>(cli: Option<T>, env: Option<T>, file: Option<T>) -> Option<T> {
    cli.or(env).or(file)
}

/// A list: the first layer that gives a non-empty one.
fn first_list(cli: &[PathBuf], env: Vec<PathBuf>, file: &[PathBuf]) -> Vec<PathBuf> {
    if !cli.is_empty() {
        cli.to_vec()
    } else if !env.is_empty() {
        env
    } else {
        file.to_vec()
    }
}

fn missing(what: &'static str, s: &Setting) -> ConfigError {
    ConfigError::Missing {
        what,
        flag: s.flag,
        env: s.env,
        key: s.key,
    }
}

/// The config file to read: `--config`, else `OVSA_LS_CONFIG`, else none.
pub fn resolve_config_path(flag: Option<&Path>, env: &Env) -> Result<Option<PathBuf>, ConfigError> {
    match flag {
        Some(p) => Ok(Some(p.to_path_buf())),
        None => env.path(&CONFIG),
    }
}

/// The database URL: `--db`, else `OVSA_LS_DB`, else `db` in the file, else [`DEFAULT_DB`].
pub fn resolve_db(flag: Option<&str>, env: &Env, file: &FileConfig) -> Result<String, ConfigError> {
    Ok(
        first(flag.map(str::to_string), env.text(&DB)?, file.db.clone())
            .unwrap_or_else(|| DEFAULT_DB.to_string()),
    )
}

/// Where a keystore's passphrase comes from: `--passphrase-file`, else `OVSA_LS_PASSPHRASE_FILE`,
/// else `passphrase_file` in the file, else the [`KEYSTORE_PASSPHRASE_ENV`] variable.
pub fn resolve_passphrase(
    flag: Option<PathBuf>,
    env: &Env,
    file: &FileConfig,
) -> Result<KeyPassphrase, ConfigError> {
    Ok(
        match first(
            flag,
            env.path(&PASSPHRASE_FILE)?,
            file.passphrase_file.clone(),
        ) {
            Some(p) => KeyPassphrase::File(p),
            None => match env.get(KEYSTORE_PASSPHRASE_ENV) {
                Some(v) if !v.is_empty() => KeyPassphrase::Value(Zeroizing::new(
                    v.to_str()
                        .ok_or_else(|| ConfigError::Env {
                            env: KEYSTORE_PASSPHRASE_ENV,
                            flag: PASSPHRASE_FILE.flag,
                            detail: "is not valid UTF-8; use --passphrase-file instead".into(),
                        })?
                        .to_string(),
                )),
                _ => KeyPassphrase::None,
            },
        },
    )
}

/// `license add`'s registration keystore (the key registrations' shares are sealed to):
/// `--registration-key`, else `OVSA_LS_REGISTRATION_KEY`, else `registration_key` in the file;
/// required.
pub fn resolve_registration_key(
    flag: Option<PathBuf>,
    env: &Env,
    file: &FileConfig,
) -> Result<PathBuf, ConfigError> {
    first(
        flag,
        env.path(&REGISTRATION_KEY)?,
        file.registration_key.clone(),
    )
    .ok_or_else(|| {
        missing(
            "the registration keystore (the key share in each registration is sealed to it)",
            &REGISTRATION_KEY,
        )
    })
}

/// `license add`'s ISV certificates: `--trust-isv`, else `OVSA_LS_TRUST_ISV`, else `trust_isv`
/// in the file; at least one is required.
pub fn resolve_trust_isv(
    flag: &[PathBuf],
    env: &Env,
    file: &FileConfig,
) -> Result<Vec<PathBuf>, ConfigError> {
    let isvs = first_list(flag, env.paths(&TRUST_ISV)?, &file.trust_isv);
    if isvs.is_empty() {
        return Err(missing(
            "the ISV certificate that signs registrations",
            &TRUST_ISV,
        ));
    }
    Ok(isvs)
}

/// `license add`'s [`REQUIRE_EK_BINDING`] switch: `--require-ek-binding` (it can only say
/// true), else `OVSA_LS_REQUIRE_EK_BINDING`, else `require_ek_binding` in the file, else false.
pub fn resolve_require_ek_binding(
    flag: bool,
    env: &Env,
    file: &FileConfig,
) -> Result<bool, ConfigError> {
    Ok(first(
        flag.then_some(true),
        env.switch(&REQUIRE_EK_BINDING)?,
        file.require_ek_binding,
    )
    .unwrap_or(REQUIRE_EK_BINDING.default == Some("true")))
}

/// What `serve`'s command line set (`None`, empty or `false`: not given).
#[derive(Debug, Clone, Default)]
pub struct ServeFlags {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--passphrase-file`.
    pub passphrase_file: Option<PathBuf>,
    /// `--trust-ek-ca` (repeatable).
    pub trust_ek_ca: Vec<PathBuf>,
    /// `--trust-host-ek-ca` (repeatable).
    pub trust_host_ek_ca: Vec<PathBuf>,
    /// `--metrics-client-cert` (repeatable).
    pub metrics_client_cert: Vec<PathBuf>,
    /// `--require-host-evidence`.
    pub require_host_evidence: bool,
    /// `--allow-unenrolled-host-ak`.
    pub allow_unenrolled_host_ak: bool,
    /// `--session-ttl`.
    pub session_ttl: Option<u64>,
    /// `--request-timeout`.
    pub request_timeout: Option<u64>,
    /// `--max-connections`.
    pub max_connections: Option<u64>,
    /// `--max-handshakes`.
    pub max_handshakes: Option<u64>,
    /// `--max-handshakes-per-source`.
    pub max_handshakes_per_source: Option<u64>,
    /// `--handshake-timeout`.
    pub handshake_timeout: Option<u64>,
}

/// Where the TLS keystore's passphrase comes from.
#[derive(Clone, Default)]
pub enum KeyPassphrase {
    /// No passphrase (a PEM key or an unprotected keystore).
    #[default]
    None,
    /// The first line of this file (`--passphrase-file`).
    File(PathBuf),
    /// This value ([`KEYSTORE_PASSPHRASE_ENV`]).
    Value(Zeroizing<String>),
}

impl std::fmt::Debug for KeyPassphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyPassphrase::None => f.write_str("None"),
            KeyPassphrase::File(p) => f.debug_tuple("File").field(p).finish(),
            KeyPassphrase::Value(_) => f.write_str("Value(***)"),
        }
    }
}

impl KeyPassphrase {
    /// The passphrase itself, reading the file if it comes from one.
    pub fn load(&self) -> Result<Option<Zeroizing<String>>, ConfigError> {
        match self {
            KeyPassphrase::None => Ok(None),
            KeyPassphrase::File(p) => read_passphrase(p).map(Some),
            KeyPassphrase::Value(v) => Ok(Some(v.clone())),
        }
    }
}

/// `serve`'s settings, every layer applied (files not read yet, host names not resolved).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeConfig {
    /// Listen address as given (`HOST:PORT`; see [`resolve_listen`]).
    pub listen: String,
    /// TLS certificate chain.
    pub tls_cert: PathBuf,
    /// TLS key or keystore.
    pub tls_key: PathBuf,
    /// The keystore passphrase's source.
    pub passphrase: KeyPassphrase,
    /// vTPM EK CA files (at least one).
    pub trust_ek_ca: Vec<PathBuf>,
    /// Host TPM vendor EK CA files.
    pub trust_host_ek_ca: Vec<PathBuf>,
    /// Operator certificate files (may be empty: then nobody reads `/metrics`).
    pub metrics_client_cert: Vec<PathBuf>,
    /// Refuse attestations without host evidence.
    pub require_host_evidence: bool,
    /// Accept host evidence from never-enrolled host AKs.
    pub allow_unenrolled_host_ak: bool,
    /// Challenge validity, seconds.
    pub session_ttl: u64,
    /// Per-request time limit, seconds.
    pub request_timeout: u64,
    /// Request slots.
    pub max_connections: u64,
    /// Connections in their TLS handshake, all sources.
    pub max_handshakes: u64,
    /// Connections in their TLS handshake from one source.
    pub max_handshakes_per_source: u64,
    /// TLS handshake time limit, seconds.
    pub handshake_timeout: u64,
}

/// Applies command line > environment > file > default to every `serve` setting, and checks
/// ranges and required settings (in that order: numbers, then the TLS certificate, key and vTPM
/// EK CAs).
pub fn resolve_serve(
    flags: &ServeFlags,
    env: &Env,
    file: &FileConfig,
) -> Result<ServeConfig, ConfigError> {
    let listen = first(
        flags.listen.clone(),
        env.text(&LISTEN)?,
        file.listen.clone(),
    )
    .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let session_ttl = SESSION_TTL.check(first(
        flags.session_ttl,
        env.number(&SESSION_TTL)?,
        file.session_ttl_seconds,
    ))?;
    let request_timeout = REQUEST_TIMEOUT.check(first(
        flags.request_timeout,
        env.number(&REQUEST_TIMEOUT)?,
        file.request_timeout_seconds,
    ))?;
    let max_connections = MAX_CONNECTIONS.check(first(
        flags.max_connections,
        env.number(&MAX_CONNECTIONS)?,
        file.max_connections,
    ))?;
    let max_handshakes = MAX_HANDSHAKES.check(first(
        flags.max_handshakes,
        env.number(&MAX_HANDSHAKES)?,
        file.max_handshakes,
    ))?;
    let max_handshakes_per_source = MAX_HANDSHAKES_PER_SOURCE.check(first(
        flags.max_handshakes_per_source,
        env.number(&MAX_HANDSHAKES_PER_SOURCE)?,
        file.max_handshakes_per_source,
    ))?;
    let handshake_timeout = HANDSHAKE_TIMEOUT.check(first(
        flags.handshake_timeout,
        env.number(&HANDSHAKE_TIMEOUT)?,
        file.handshake_timeout_seconds,
    ))?;
    let tls_cert = first(
        flags.tls_cert.clone(),
        env.path(&TLS_CERT)?,
        file.tls_cert.clone(),
    )
    .ok_or_else(|| missing("the TLS certificate", &TLS_CERT))?;
    let tls_key = first(
        flags.tls_key.clone(),
        env.path(&TLS_KEY)?,
        file.tls_key.clone(),
    )
    .ok_or_else(|| missing("the TLS key", &TLS_KEY))?;
    let trust_ek_ca = first_list(
        &flags.trust_ek_ca,
        env.paths(&TRUST_EK_CA)?,
        &file.trust_ek_ca,
    );
    if trust_ek_ca.is_empty() {
        return Err(missing("at least one vTPM EK CA", &TRUST_EK_CA));
    }
    let trust_host_ek_ca = first_list(
        &flags.trust_host_ek_ca,
        env.paths(&TRUST_HOST_EK_CA)?,
        &file.trust_host_ek_ca,
    );
    let metrics_client_cert = first_list(
        &flags.metrics_client_cert,
        env.paths(&METRICS_CLIENT_CERT)?,
        &file.metrics_client_cert,
    );
    let passphrase = resolve_passphrase(flags.passphrase_file.clone(), env, file)?;
    let switch = |flag: bool, s: &Setting, file: Option<bool>| -> Result<bool, ConfigError> {
        let cli = flag.then_some(true);
        Ok(first(cli, env.switch(s)?, file).unwrap_or(s.default == Some("true")))
    };
    Ok(ServeConfig {
        listen,
        tls_cert,
        tls_key,
        passphrase,
        trust_ek_ca,
        trust_host_ek_ca,
        metrics_client_cert,
        require_host_evidence: switch(
            flags.require_host_evidence,
            &REQUIRE_HOST_EVIDENCE,
            file.require_host_evidence,
        )?,
        allow_unenrolled_host_ak: switch(
            flags.allow_unenrolled_host_ak,
            &ALLOW_UNENROLLED_HOST_AK,
            file.allow_unenrolled_host_ak,
        )?,
        session_ttl,
        request_timeout,
        max_connections,
        max_handshakes,
        max_handshakes_per_source,
        handshake_timeout,
    })
}

/// Reads the operator certificates (`--metrics-client-cert`: PEM or DER files, each one or more
/// certificates) and returns each certificate's DER. A file without any certificate is refused,
/// naming it.
pub fn load_client_certs(paths: &[PathBuf], setting: &str) -> Result<Vec<Vec<u8>>, ConfigError> {
    let mut out = Vec::new();
    for p in paths {
        let bytes = read_input(p, setting, MAX_INPUT_FILE)?;
        const HINT: &str = "give the operator's client certificate in PEM (its key stays with \
                            the operator, e.g. in Prometheus' tls_config)";
        let certs = ovsa_core::identity::Certificate::chain_from_pem_or_der(&bytes)
            .map_err(|e| ConfigError::input(setting, p, format!("{e}; {HINT}")))?;
        if certs.is_empty() {
            return Err(ConfigError::input(
                setting,
                p,
                format!("holds no certificate; {HINT}"),
            ));
        }
        out.extend(certs.iter().map(|c| c.der().to_vec()));
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    //! Precedence: for each setting tested, every layer (command line, environment, TOML file,
    //! default) wins over the ones below it. The environment is an explicit [`Env`]: nothing
    //! here reads or changes the process environment.
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::from_vars(vars.iter().map(|(k, v)| (*k, *v)))
    }

    /// The smallest complete `serve` configuration, from the file layer only.
    fn file() -> FileConfig {
        FileConfig {
            tls_cert: Some("file.crt".into()),
            tls_key: Some("file.key".into()),
            trust_ek_ca: vec!["file-ek.pem".into()],
            ..FileConfig::default()
        }
    }

    fn serve(flags: &ServeFlags, env: &Env, file: &FileConfig) -> ServeConfig {
        resolve_serve(flags, env, file).unwrap()
    }

    #[test]
    fn precedence_db_each_layer_wins_over_the_ones_below() {
        let none = Env::default();
        let mut f = FileConfig::default();
        assert_eq!(resolve_db(None, &none, &f).unwrap(), DEFAULT_DB);
        f.db = Some("sqlite:file.db".into());
        assert_eq!(resolve_db(None, &none, &f).unwrap(), "sqlite:file.db");
        let e = env(&[("OVSA_LS_DB", "sqlite:env.db")]);
        assert_eq!(resolve_db(None, &e, &f).unwrap(), "sqlite:env.db");
        assert_eq!(
            resolve_db(Some("sqlite:cli.db"), &e, &f).unwrap(),
            "sqlite:cli.db"
        );
    }

    #[test]
    fn precedence_listen_each_layer_wins_over_the_ones_below() {
        let mut flags = ServeFlags::default();
        let mut f = file();
        assert_eq!(serve(&flags, &Env::default(), &f).listen, DEFAULT_LISTEN);
        f.listen = Some("127.0.0.1:1".into());
        assert_eq!(serve(&flags, &Env::default(), &f).listen, "127.0.0.1:1");
        let e = env(&[("OVSA_LS_LISTEN", "127.0.0.1:2")]);
        assert_eq!(serve(&flags, &e, &f).listen, "127.0.0.1:2");
        flags.listen = Some("127.0.0.1:3".into());
        assert_eq!(serve(&flags, &e, &f).listen, "127.0.0.1:3");
    }

    #[test]
    fn precedence_session_ttl_each_layer_wins_over_the_ones_below() {
        let mut flags = ServeFlags::default();
        let mut f = file();
        assert_eq!(
            serve(&flags, &Env::default(), &f).session_ttl,
            SESSION_TTL.default
        );
        f.session_ttl_seconds = Some(11);
        assert_eq!(serve(&flags, &Env::default(), &f).session_ttl, 11);
        let e = env(&[("OVSA_LS_SESSION_TTL", "22")]);
        assert_eq!(serve(&flags, &e, &f).session_ttl, 22);
        flags.session_ttl = Some(33);
        assert_eq!(serve(&flags, &e, &f).session_ttl, 33);
        // The winner is range-checked, whichever layer it came from.
        let e = env(&[("OVSA_LS_SESSION_TTL", "0")]);
        flags.session_ttl = None;
        let msg = resolve_serve(&flags, &e, &f).unwrap_err().to_string();
        assert_eq!(
            msg,
            "--session-ttl (OVSA_LS_SESSION_TTL, `session_ttl_seconds` in the config file) must \
             be between 1 and 86400; got 0"
        );
    }

    #[test]
    fn precedence_handshake_limits_each_layer_wins_over_the_ones_below() {
        let mut flags = ServeFlags::default();
        let mut f = file();
        let c = serve(&flags, &Env::default(), &f);
        assert_eq!(
            (
                c.max_handshakes,
                c.max_handshakes_per_source,
                c.handshake_timeout
            ),
            (4096, 64, 3)
        );
        f.max_handshakes = Some(100);
        f.max_handshakes_per_source = Some(10);
        f.handshake_timeout_seconds = Some(5);
        let c = serve(&flags, &Env::default(), &f);
        assert_eq!(
            (
                c.max_handshakes,
                c.max_handshakes_per_source,
                c.handshake_timeout
            ),
            (100, 10, 5)
        );
        let e = env(&[
            ("OVSA_LS_MAX_HANDSHAKES", "200"),
            ("OVSA_LS_MAX_HANDSHAKES_PER_SOURCE", "20"),
            ("OVSA_LS_HANDSHAKE_TIMEOUT", "6"),
        ]);
        let c = serve(&flags, &e, &f);
        assert_eq!(
            (
                c.max_handshakes,
                c.max_handshakes_per_source,
                c.handshake_timeout
            ),
            (200, 20, 6)
        );
        flags.max_handshakes = Some(300);
        flags.max_handshakes_per_source = Some(30);
        flags.handshake_timeout = Some(7);
        let c = serve(&flags, &e, &f);
        assert_eq!(
            (
                c.max_handshakes,
                c.max_handshakes_per_source,
                c.handshake_timeout
            ),
            (300, 30, 7)
        );
        flags.handshake_timeout = Some(61);
        let msg = resolve_serve(&flags, &e, &f).unwrap_err().to_string();
        assert_eq!(
            msg,
            "--handshake-timeout (OVSA_LS_HANDSHAKE_TIMEOUT, `handshake_timeout_seconds` in the \
             config file) must be between 1 and 60; got 61"
        );
    }

    #[test]
    fn precedence_tls_cert_each_layer_wins_and_missing_names_every_layer() {
        let mut flags = ServeFlags::default();
        let mut f = file();
        f.tls_cert = None;
        let msg = resolve_serve(&flags, &Env::default(), &f)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "the TLS certificate is required: pass --tls-cert, set OVSA_LS_TLS_CERT, or set \
             `tls_cert` in the config file"
        );
        f.tls_cert = Some("file.crt".into());
        assert_eq!(
            serve(&flags, &Env::default(), &f).tls_cert,
            Path::new("file.crt")
        );
        let e = env(&[("OVSA_LS_TLS_CERT", "env.crt")]);
        assert_eq!(serve(&flags, &e, &f).tls_cert, Path::new("env.crt"));
        flags.tls_cert = Some("cli.crt".into());
        assert_eq!(serve(&flags, &e, &f).tls_cert, Path::new("cli.crt"));
    }

    #[test]
    fn precedence_trust_ek_ca_lists_each_layer_wins_over_the_ones_below() {
        let mut flags = ServeFlags::default();
        let f = file();
        assert_eq!(
            serve(&flags, &Env::default(), &f).trust_ek_ca,
            [PathBuf::from("file-ek.pem")]
        );
        let e = env(&[("OVSA_LS_TRUST_EK_CA", "a.pem,b.pem")]);
        assert_eq!(
            serve(&flags, &e, &f).trust_ek_ca,
            [PathBuf::from("a.pem"), PathBuf::from("b.pem")]
        );
        flags.trust_ek_ca = vec!["cli.pem".into()];
        assert_eq!(
            serve(&flags, &e, &f).trust_ek_ca,
            [PathBuf::from("cli.pem")]
        );
        // Host EK CAs: no default (empty).
        assert!(serve(&flags, &e, &f).trust_host_ek_ca.is_empty());
    }

    #[test]
    fn precedence_metrics_client_cert_each_layer_wins_over_the_ones_below() {
        let mut flags = ServeFlags::default();
        let mut f = file();
        // Default: none (then nobody may read /metrics).
        assert!(serve(&flags, &Env::default(), &f)
            .metrics_client_cert
            .is_empty());
        f.metrics_client_cert = vec!["file-op.crt".into()];
        assert_eq!(
            serve(&flags, &Env::default(), &f).metrics_client_cert,
            [PathBuf::from("file-op.crt")]
        );
        let e = env(&[("OVSA_LS_METRICS_CLIENT_CERT", "a.crt,b.crt")]);
        assert_eq!(
            serve(&flags, &e, &f).metrics_client_cert,
            [PathBuf::from("a.crt"), PathBuf::from("b.crt")]
        );
        flags.metrics_client_cert = vec!["cli.crt".into()];
        assert_eq!(
            serve(&flags, &e, &f).metrics_client_cert,
            [PathBuf::from("cli.crt")]
        );
    }

    #[test]
    fn precedence_require_host_evidence_each_layer_wins_over_the_ones_below() {
        let mut flags = ServeFlags::default();
        let mut f = file();
        assert!(!serve(&flags, &Env::default(), &f).require_host_evidence);
        f.require_host_evidence = Some(true);
        assert!(serve(&flags, &Env::default(), &f).require_host_evidence);
        // The environment says false: it wins over the file's true.
        let e = env(&[("OVSA_LS_REQUIRE_HOST_EVIDENCE", "false")]);
        assert!(!serve(&flags, &e, &f).require_host_evidence);
        // The flag (it can only say true) wins over the environment's false.
        flags.require_host_evidence = true;
        assert!(serve(&flags, &e, &f).require_host_evidence);
    }

    #[test]
    fn precedence_require_ek_binding_each_layer_wins_over_the_ones_below() {
        let resolve =
            |flag: bool, e: &Env, f: &FileConfig| resolve_require_ek_binding(flag, e, f).unwrap();
        let mut f = FileConfig::default();
        // Default: off (unbound registrations are imported with a warning).
        assert!(!resolve(false, &Env::default(), &f));
        f.require_ek_binding = Some(true);
        assert!(resolve(false, &Env::default(), &f));
        // The environment says false: it wins over the file's true.
        let e = env(&[("OVSA_LS_REQUIRE_EK_BINDING", "false")]);
        assert!(!resolve(false, &e, &f));
        // ... and true over the file's false.
        f.require_ek_binding = Some(false);
        let on = env(&[("OVSA_LS_REQUIRE_EK_BINDING", "true")]);
        assert!(resolve(false, &on, &f));
        // The flag (it can only say true) wins over the environment's false.
        assert!(resolve(true, &e, &f));
        // A value that is not a switch names the variable and what to use.
        let bad = env(&[("OVSA_LS_REQUIRE_EK_BINDING", "yes")]);
        let msg = resolve_require_ek_binding(false, &bad, &f)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("OVSA_LS_REQUIRE_EK_BINDING") && msg.contains("use true or false"),
            "{msg}"
        );
    }

    #[test]
    fn precedence_config_path_and_trust_isv() {
        let e = env(&[
            ("OVSA_LS_CONFIG", "env.toml"),
            ("OVSA_LS_TRUST_ISV", "env-isv.crt"),
        ]);
        assert_eq!(resolve_config_path(None, &Env::default()).unwrap(), None);
        assert_eq!(
            resolve_config_path(None, &e).unwrap(),
            Some(PathBuf::from("env.toml"))
        );
        assert_eq!(
            resolve_config_path(Some(Path::new("cli.toml")), &e).unwrap(),
            Some(PathBuf::from("cli.toml"))
        );
        let mut f = FileConfig::default();
        let msg = resolve_trust_isv(&[], &Env::default(), &f)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("the ISV certificate that signs registrations is required: pass --trust-isv, set OVSA_LS_TRUST_ISV"), "{msg}");
        f.trust_isv = vec!["file-isv.crt".into()];
        assert_eq!(
            resolve_trust_isv(&[], &Env::default(), &f).unwrap(),
            [PathBuf::from("file-isv.crt")]
        );
        assert_eq!(
            resolve_trust_isv(&[], &e, &f).unwrap(),
            [PathBuf::from("env-isv.crt")]
        );
        assert_eq!(
            resolve_trust_isv(&["cli-isv.crt".into()], &e, &f).unwrap(),
            [PathBuf::from("cli-isv.crt")]
        );
    }

    #[test]
    fn passphrase_file_layers_win_over_the_passphrase_variable() {
        let mut flags = ServeFlags::default();
        let mut f = file();
        let pass = |flags: &ServeFlags, e: &Env, f: &FileConfig| serve(flags, e, f).passphrase;
        assert!(matches!(
            pass(&flags, &Env::default(), &f),
            KeyPassphrase::None
        ));
        // An empty OVSA_KEYSTORE_PASSPHRASE counts as unset.
        let e = env(&[(KEYSTORE_PASSPHRASE_ENV, "")]);
        assert!(matches!(pass(&flags, &e, &f), KeyPassphrase::None));
        let e = env(&[(KEYSTORE_PASSPHRASE_ENV, "s3cret")]);
        match pass(&flags, &e, &f) {
            KeyPassphrase::Value(v) => assert_eq!(v.as_str(), "s3cret"),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{:?}", pass(&flags, &e, &f)).contains("s3cret"));
        f.passphrase_file = Some("file.pass".into());
        assert!(
            matches!(pass(&flags, &e, &f), KeyPassphrase::File(p) if p == Path::new("file.pass"))
        );
        let e = env(&[
            (KEYSTORE_PASSPHRASE_ENV, "s3cret"),
            ("OVSA_LS_PASSPHRASE_FILE", "env.pass"),
        ]);
        assert!(
            matches!(pass(&flags, &e, &f), KeyPassphrase::File(p) if p == Path::new("env.pass"))
        );
        flags.passphrase_file = Some("cli.pass".into());
        assert!(
            matches!(pass(&flags, &e, &f), KeyPassphrase::File(p) if p == Path::new("cli.pass"))
        );
    }

    #[test]
    fn unusable_environment_values_name_the_variable() {
        let flags = ServeFlags::default();
        let f = file();
        for (var, value, want) in [
            (
                "OVSA_LS_MAX_CONNECTIONS",
                "many",
                "'many' is not a whole number",
            ),
            ("OVSA_LS_TLS_KEY", "", "is set but empty"),
            (
                "OVSA_LS_TRUST_EK_CA",
                "a.pem,,b.pem",
                "has an empty file name",
            ),
            (
                "OVSA_LS_ALLOW_UNENROLLED_HOST_AK",
                "yes",
                "use true or false",
            ),
        ] {
            let msg = resolve_serve(&flags, &env(&[(var, value)]), &f)
                .unwrap_err()
                .to_string();
            assert!(
                msg.starts_with(&format!("environment variable {var} (the --"))
                    && msg.contains(want),
                "{msg}"
            );
        }
    }
}
