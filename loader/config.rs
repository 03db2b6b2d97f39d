//! The loader config file (`loader_config_file` in OVMS's `custom_loader_config_list`).
//!
//! Optional; JSON; unknown keys are rejected so that a typo does not silently fall back to a
//! default. See docs/RUNTIME.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::log::LogLevel;

/// Largest accepted config file.
const MAX_CONFIG_LEN: u64 = 1 << 20;

const KNOWN: [&str; 12] = [
    "tcti",
    "service_url",
    "trusted_isv_certs",
    "ak_cache_dir",
    "lease_seconds_override",
    "grace_seconds",
    "retry_seconds",
    "blacklist_recheck_seconds",
    "service_timeout_seconds",
    "load_timeout_seconds",
    "decrypt_threads",
    "log_level",
];

/// Upper bound of every duration setting in seconds (10 years): far beyond any sensible value,
/// and small enough that the lease worker's `Instant` arithmetic can never overflow.
pub const MAX_SETTING_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// Why the loader config was refused. Each message names the setting (and, from
/// [`LoaderConfig::load`], the file); a cause is part of the message and is not also the
/// [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read (missing, unreadable).
    #[error("loader config file '{}': {detail}", .path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        detail: String,
    },
    /// The file is not a regular file, or is too large.
    #[error("loader config file '{}': not a regular file of at most {max} bytes", .path.display())]
    NotRegularFile {
        /// The config file.
        path: PathBuf,
        /// The size limit in bytes.
        max: u64,
    },
    /// The file's content is refused ([`LoaderConfig::parse`]).
    #[error("loader config file '{}': {error}", .path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What is wrong with the content.
        error: Box<ConfigError>,
    },
    /// `ak_cache_dir` cannot be created.
    #[error("loader config file '{}': cannot create ak_cache_dir '{}': {detail}", .path.display(), .dir.display())]
    AkCacheDir {
        /// The config file.
        path: PathBuf,
        /// The directory (resolved against the config file's directory).
        dir: PathBuf,
        /// The I/O error.
        detail: String,
    },
    /// A `trusted_isv_certs` file is missing or not a certificate.
    #[error("loader config file '{}': trusted_isv_certs: {error}", .path.display())]
    TrustedIsvCert {
        /// The config file.
        path: PathBuf,
        /// Why the certificate is unusable (names its file).
        error: ovsa_core::Error,
    },
    /// The content is not JSON.
    #[error("invalid JSON: {detail}")]
    Json {
        /// The JSON parser's message.
        detail: String,
    },
    /// The content is JSON, but not an object.
    #[error("must be a JSON object")]
    NotObject,
    /// A key is not a known setting (a typo must not fall back to a default).
    #[error("unknown setting '{key}' (known: {})", KNOWN.join(", "))]
    UnknownSetting {
        /// The key.
        key: String,
    },
    /// A setting's value has the wrong JSON type.
    #[error("'{key}' must be {expected}, got {got}")]
    WrongType {
        /// The setting.
        key: String,
        /// The expected type ("a string", ...).
        expected: &'static str,
        /// The value given (JSON).
        got: String,
    },
    /// A value that passed the type check is still refused (e.g. an unknown `log_level`).
    #[error("invalid setting: {detail}")]
    Invalid {
        /// The deserializer's message.
        detail: String,
    },
    /// A duration setting exceeds [`MAX_SETTING_SECONDS`].
    #[error("{key} must be at most {max} (10 years)")]
    TooLarge {
        /// The setting.
        key: &'static str,
        /// Its value.
        value: u64,
        /// The largest accepted value.
        max: u64,
    },
    /// A setting is 0 but must be at least 1.
    #[error("{key} must be at least 1")]
    Zero {
        /// The setting.
        key: &'static str,
    },
    /// `service_url` is not an acceptable URL.
    #[error("service_url: {error}")]
    ServiceUrl {
        /// Why.
        error: ovsa_core::Error,
    },
    /// `tcti` is empty.
    #[error("tcti must not be empty (omit it to use env TCTI)")]
    EmptyTcti,
}

/// The loader's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoaderConfig {
    /// TCTI of the (v)TPM. Default: env `TCTI`, else `device:/dev/tpmrm0`.
    #[serde(default)]
    pub tcti: Option<String>,
    /// Directory caching the TPM-wrapped attestation key (created if missing; relative paths
    /// resolve against the config file's directory). Default: no cache (an AK per check).
    #[serde(default)]
    pub ak_cache_dir: Option<PathBuf>,
    /// Renew at least every this many seconds (tests, tighter control). At least 1. It can
    /// only shorten the lease the ISV signed into the license (and the service grants): a
    /// longer value is ignored with a warning ([`LoaderConfig::lease`]).
    #[serde(default)]
    pub lease_seconds_override: Option<u32>,
    /// How long past an expired lease a loaded version keeps serving while the license service
    /// is unreachable. Default: the license's signed `grace_seconds` (300 s when the license
    /// predates the field); it can only shorten that: a longer value is ignored with a warning
    /// ([`LoaderConfig::grace`]).
    #[serde(default)]
    pub grace_seconds: Option<u64>,
    /// Seconds between renewal attempts while the service is unreachable. Default: the lease,
    /// at most 30.
    #[serde(default)]
    pub retry_seconds: Option<u64>,
    /// After a blacklisted version was unloaded, how long it reports blacklisted before it
    /// reports OK again so the host retries the load (which re-checks the license). Default 60.
    #[serde(default = "default_recheck")]
    pub blacklist_recheck_seconds: u64,
    /// Timeout of each connection to the license service, seconds. Default 10.
    #[serde(default = "default_timeout")]
    pub service_timeout_seconds: u64,
    /// Deadline of the TPM and license-service part of a load (from the start of the load)
    /// and of each lease renewal, seconds: a TPM or service that does not answer makes the
    /// load fail with `MODEL_LOAD_ERROR` after this long instead of hanging the host. Default 30.
    #[serde(default = "default_load_timeout")]
    pub load_timeout_seconds: u64,
    /// Threads decrypting one model. Default: available parallelism, at most 8.
    #[serde(default)]
    pub decrypt_threads: Option<usize>,
    /// `off`, `error`, `warning`, `info` (default) or `debug`.
    #[serde(default)]
    pub log_level: LogLevel,
    /// Reach the license service at this `https://HOST:PORT` instead of the URLs in the license
    /// (e.g. an internal name or proxy). The license's pins still decide which server key is
    /// accepted, so this cannot weaken the server authentication.
    #[serde(default)]
    pub service_url: Option<String>,
    /// ISV certificates (PEM/DER files; relative paths resolve against the config file's
    /// directory). If given, only packages (and licenses) signed by one of these keys load.
    #[serde(default)]
    pub trusted_isv_certs: Vec<PathBuf>,
    /// The public keys of `trusted_isv_certs`, read by [`LoaderConfig::load`].
    #[serde(skip)]
    pub trusted_isv_keys: Vec<ovsa_core::crypto::PublicKey>,
}

fn default_recheck() -> u64 {
    60
}
fn default_timeout() -> u64 {
    10
}
fn default_load_timeout() -> u64 {
    30
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            tcti: None,
            ak_cache_dir: None,
            lease_seconds_override: None,
            grace_seconds: None,
            retry_seconds: None,
            blacklist_recheck_seconds: default_recheck(),
            service_timeout_seconds: default_timeout(),
            load_timeout_seconds: default_load_timeout(),
            decrypt_threads: None,
            log_level: LogLevel::default(),
            service_url: None,
            trusted_isv_certs: Vec::new(),
            trusted_isv_keys: Vec::new(),
        }
    }
}

impl LoaderConfig {
    /// Reads the config file; `None` or an empty path means all defaults.
    pub fn load(path: Option<&str>) -> Result<Self, ConfigError> {
        let path = match path {
            None => return Ok(LoaderConfig::default()),
            Some(p) if p.trim().is_empty() => return Ok(LoaderConfig::default()),
            Some(p) => Path::new(p),
        };
        let read = |e: std::io::Error| ConfigError::Read {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if !meta.is_file() || meta.len() > MAX_CONFIG_LEN {
            return Err(ConfigError::NotRegularFile {
                path: path.to_path_buf(),
                max: MAX_CONFIG_LEN,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let mut config = Self::parse(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            error: Box::new(e),
        })?;
        if let Some(dir) = config.ak_cache_dir.take() {
            let dir = if dir.is_relative() {
                path.parent().unwrap_or(Path::new(".")).join(dir)
            } else {
                dir
            };
            std::fs::create_dir_all(&dir).map_err(|e| ConfigError::AkCacheDir {
                path: path.to_path_buf(),
                dir: dir.clone(),
                detail: e.to_string(),
            })?;
            config.ak_cache_dir = Some(dir);
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for cert in &config.trusted_isv_certs {
            let file = if cert.is_relative() {
                base.join(cert)
            } else {
                cert.clone()
            };
            let key = ovsa_core::identity::Certificate::load(&file)
                .and_then(|c| c.public_key())
                .map_err(|error| ConfigError::TrustedIsvCert {
                    path: path.to_path_buf(),
                    error,
                })?;
            config.trusted_isv_keys.push(key);
        }
        Ok(config)
    }

    /// Parses and validates config JSON (paths are not touched).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Json {
                detail: e.to_string(),
            })?;
        let Some(object) = value.as_object() else {
            return Err(ConfigError::NotObject);
        };
        for (key, v) in object {
            let expected = match key.as_str() {
                "tcti" | "ak_cache_dir" | "log_level" | "service_url" => "a string",
                "trusted_isv_certs" => "an array of strings",
                "lease_seconds_override"
                | "grace_seconds"
                | "retry_seconds"
                | "blacklist_recheck_seconds"
                | "service_timeout_seconds"
                | "load_timeout_seconds"
                | "decrypt_threads" => "a non-negative integer",
                _ => return Err(ConfigError::UnknownSetting { key: key.clone() }),
            };
            let ok = match expected {
                "a string" => v.is_string(),
                "an array of strings" => v
                    .as_array()
                    .is_some_and(|a| a.iter().all(serde_json::Value::is_string)),
                _ => v.is_u64(),
            };
            if !ok {
                return Err(ConfigError::WrongType {
                    key: key.clone(),
                    expected,
                    got: v.to_string(),
                });
            }
        }
        let config: LoaderConfig =
            serde_json::from_value(value).map_err(|e| ConfigError::Invalid {
                detail: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("grace_seconds", self.grace_seconds),
            ("retry_seconds", self.retry_seconds),
            (
                "blacklist_recheck_seconds",
                Some(self.blacklist_recheck_seconds),
            ),
            (
                "service_timeout_seconds",
                Some(self.service_timeout_seconds),
            ),
            ("load_timeout_seconds", Some(self.load_timeout_seconds)),
        ] {
            if let Some(value) = value.filter(|v| *v > MAX_SETTING_SECONDS) {
                return Err(ConfigError::TooLarge {
                    key: name,
                    value,
                    max: MAX_SETTING_SECONDS,
                });
            }
        }
        for (key, zero) in [
            (
                "lease_seconds_override",
                self.lease_seconds_override == Some(0),
            ),
            ("retry_seconds", self.retry_seconds == Some(0)),
            ("service_timeout_seconds", self.service_timeout_seconds == 0),
            ("load_timeout_seconds", self.load_timeout_seconds == 0),
            ("decrypt_threads", self.decrypt_threads == Some(0)),
        ] {
            if zero {
                return Err(ConfigError::Zero { key });
            }
        }
        if let Some(url) = &self.service_url {
            ovsa_core::license::policy::validate_url(url)
                .map_err(|error| ConfigError::ServiceUrl { error })?;
        }
        if matches!(&self.tcti, Some(t) if t.trim().is_empty()) {
            return Err(ConfigError::EmptyTcti);
        }
        Ok(())
    }

    /// The renewal interval: the shortest of the lease the service granted (`granted`), the
    /// lease the ISV signed into the license (`signed`) and `lease_seconds_override`. An
    /// override can only shorten the signed lease, never lengthen it.
    pub fn lease(&self, granted: u32, signed: u32) -> Duration {
        let lease = granted
            .min(signed)
            .min(self.lease_seconds_override.unwrap_or(u32::MAX));
        Duration::from_secs(u64::from(lease.max(1)))
    }

    /// The grace period: the license's signed `grace_seconds`, or `grace_seconds` of this
    /// config if that is shorter.
    pub fn grace(&self, signed: u32) -> Duration {
        let signed = u64::from(signed);
        Duration::from_secs(self.grace_seconds.map_or(signed, |g| g.min(signed)))
    }

    /// Warnings for the settings that [`LoaderConfig::lease`] and [`LoaderConfig::grace`]
    /// ignore for a license whose signed terms are `signed_lease` and `signed_grace` seconds
    /// and a lease of `granted` seconds from the service: each names the setting, both values
    /// and the one used.
    pub fn ignored_settings(
        &self,
        granted: u32,
        signed_lease: u32,
        signed_grace: u32,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let lease = self.lease(granted, signed_lease).as_secs();
        if let Some(o) = self
            .lease_seconds_override
            .filter(|o| u64::from(*o) > lease)
        {
            out.push(format!(
                "lease_seconds_override {o} s ignored: it would lengthen the {lease} s lease the \
                 license allows (an override can only shorten it); renewing every {lease} s"
            ));
        }
        if granted > signed_lease {
            out.push(format!(
                "the license service granted a {granted} s lease, longer than the {signed_lease} s \
                 the ISV signed into the license; renewing every {lease} s"
            ));
        }
        if let Some(g) = self.grace_seconds.filter(|g| *g > u64::from(signed_grace)) {
            out.push(format!(
                "grace_seconds {g} s ignored: it would lengthen the {signed_grace} s grace period \
                 the license allows (it can only shorten it); using {signed_grace} s"
            ));
        }
        out
    }

    /// Interval between attempts while the service is unreachable.
    pub fn retry(&self, lease: Duration) -> Duration {
        match self.retry_seconds {
            Some(s) => Duration::from_secs(s),
            None => lease.min(Duration::from_secs(30)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = LoaderConfig::parse("{}").unwrap();
        assert_eq!(c.grace_seconds, None);
        assert_eq!(c.grace(300), Duration::from_secs(300));
        assert_eq!(c.grace(7), Duration::from_secs(7));
        assert_eq!(c.load_timeout_seconds, 30);
        assert_eq!(c.lease(60, 60), Duration::from_secs(60));
        // The service cannot lengthen the signed lease either.
        assert_eq!(c.lease(600, 60), Duration::from_secs(60));
        assert!(c.ignored_settings(60, 60, 300).is_empty());
        let c = LoaderConfig::parse(
            r#"{"tcti":"swtpm:port=1","lease_seconds_override":2,"grace_seconds":0,"log_level":"debug"}"#,
        )
        .unwrap();
        assert_eq!(c.lease(60, 60), Duration::from_secs(2));
        assert_eq!(c.grace(300), Duration::ZERO);
        assert!(c.ignored_settings(60, 60, 300).is_empty());
        assert_eq!(c.retry(c.lease(60, 60)), Duration::from_secs(2));
        assert_eq!(c.log_level, LogLevel::Debug);
        let c = LoaderConfig::parse(r#"{"service_url":"https://lic.internal:8443"}"#).unwrap();
        assert_eq!(c.service_url.as_deref(), Some("https://lic.internal:8443"));
    }

    #[test]
    fn overrides_only_shorten_the_signed_lease_and_grace() {
        let c = LoaderConfig::parse(
            r#"{"lease_seconds_override":315360000,"grace_seconds":315360000}"#,
        )
        .unwrap();
        assert_eq!(c.lease(2, 2), Duration::from_secs(2));
        assert_eq!(c.grace(1), Duration::from_secs(1));
        assert_eq!(
            c.ignored_settings(2, 2, 1),
            [
                "lease_seconds_override 315360000 s ignored: it would lengthen the 2 s lease the \
                 license allows (an override can only shorten it); renewing every 2 s",
                "grace_seconds 315360000 s ignored: it would lengthen the 1 s grace period the \
                 license allows (it can only shorten it); using 1 s",
            ]
        );
        let w = c.ignored_settings(600, 60, 300);
        assert!(
            w[1].contains("granted a 600 s lease, longer than the 60 s"),
            "{w:?}"
        );
    }

    #[test]
    fn trusted_isv_certs_are_loaded_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let (ks, _) = ovsa_core::identity::Keystore::generate(
            ovsa_core::crypto::KeyAlgorithm::EcdsaP256,
            "CN=isv",
            10,
        )
        .unwrap();
        std::fs::write(dir.path().join("isv.crt"), ks.certificate().to_pem()).unwrap();
        let cfg = dir.path().join("loader.json");
        std::fs::write(&cfg, r#"{"trusted_isv_certs":["isv.crt"]}"#).unwrap();
        let c = LoaderConfig::load(Some(cfg.to_str().unwrap())).unwrap();
        assert_eq!(c.trusted_isv_keys, vec![ks.key().public_key()]);
        std::fs::write(&cfg, r#"{"trusted_isv_certs":["missing.crt"]}"#).unwrap();
        let e = LoaderConfig::load(Some(cfg.to_str().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.crt"), "{e}");
    }

    #[test]
    fn errors_are_typed_and_name_the_file_once() {
        use std::error::Error as _;
        let e = LoaderConfig::parse(r#"{"retry_seconds":0}"#).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Zero {
                    key: "retry_seconds"
                }
            ),
            "{e:?}"
        );
        let e = LoaderConfig::parse(r#"{"grace_seconds":315360001}"#).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::TooLarge {
                    key: "grace_seconds",
                    value: 315360001,
                    max: MAX_SETTING_SECONDS
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "grace_seconds must be at most 315360000 (10 years)"
        );
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("loader.json");
        std::fs::write(&cfg, r#"{"retry_seconds":0}"#).unwrap();
        let e = LoaderConfig::load(Some(cfg.to_str().unwrap())).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "loader config file '{}': retry_seconds must be at least 1",
                cfg.display()
            )
        );
        assert!(
            matches!(&e, ConfigError::Parse { path, error }
                if path == &cfg && matches!(**error, ConfigError::Zero { key: "retry_seconds" })),
            "{e:?}"
        );
        // The inner error is in the message, so it is not also the source.
        assert!(e.source().is_none());
        std::fs::write(&cfg, r#"{"trusted_isv_certs":["missing.crt"]}"#).unwrap();
        let e = LoaderConfig::load(Some(cfg.to_str().unwrap())).unwrap_err();
        assert!(matches!(e, ConfigError::TrustedIsvCert { .. }), "{e:?}");
        assert!(e.source().is_none());
        let e = LoaderConfig::load(Some(dir.path().to_str().unwrap())).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "loader config file '{}': not a regular file of at most 1048576 bytes",
                dir.path().display()
            )
        );
    }

    #[test]
    fn rejects_bad_configs() {
        for bad in [
            "{\"retry_seconds\":9223372036854775807}",
            "{\"grace_seconds\":18446744073709551615}",
            "{\"blacklist_recheck_seconds\":315360001}",
            "{\"service_timeout_seconds\":315360001}",
            "{\"load_timeout_seconds\":315360001}",
            "{\"load_timeout_seconds\":0}",
            "",
            "[]",
            "{\"unknown\":1}",
            "{\"lease_seconds_override\":0}",
            "{\"grace_seconds\":\"10\"}",
            "{\"log_level\":\"loud\"}",
            "{\"tcti\":\"\"}",
            "{\"service_url\":\"http://h:1\"}",
            "{\"trusted_isv_certs\":\"isv.crt\"}",
            "{\"trusted_isv_certs\":[1]}",
        ] {
            assert!(LoaderConfig::parse(bad).is_err(), "{bad}");
        }
        assert!(LoaderConfig::load(Some("/nonexistent/ovsa.json"))
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/ovsa.json"));
        assert!(LoaderConfig::parse(r#"{"grace_seconds":"10"}"#)
            .unwrap_err()
            .to_string()
            .contains("'grace_seconds' must be a non-negative integer"));
        assert!(LoaderConfig::parse(r#"{"tctl":"x"}"#)
            .unwrap_err()
            .to_string()
            .contains("unknown setting 'tctl'"));
        assert!(LoaderConfig::load(Some("")).is_ok());
        assert!(LoaderConfig::load(None).is_ok());
    }
}
