//! The license policy config made by `ovsatool licgen`: what a sold license allows and which
//! license services enforce it.

use serde::{Deserialize, Serialize};

use crate::encoding::{hex32, parse_rfc3339};
use crate::envelope::Artifact;
use crate::error::{Error, Result};

/// Shortest lease (re-check interval) in seconds. Short leases multiply the license service's
/// load (one attestation per loaded model per lease); 60 s or more suits production.
pub const MIN_LEASE_SECONDS: u32 = 1;
/// Longest lease in seconds.
pub const MAX_LEASE_SECONDS: u32 = 86_400;
/// Default lease in seconds.
pub const DEFAULT_LEASE_SECONDS: u32 = 3_600;
/// Longest grace period in seconds (how long past an expired lease a runtime that cannot reach
/// the license service keeps serving).
pub const MAX_GRACE_SECONDS: u32 = 86_400;
/// Default grace period in seconds: also the grace of licenses signed before the field existed.
pub const DEFAULT_GRACE_SECONDS: u32 = 300;

/// Serde default of `grace_seconds` ([`DEFAULT_GRACE_SECONDS`]).
pub(crate) fn default_grace_seconds() -> u32 {
    DEFAULT_GRACE_SECONDS
}

/// Whether `grace_seconds` is the default, which is not serialized: a license or config signed
/// before the field existed re-serializes to exactly the bytes that were signed, and one with
/// the default grace stays readable by runtimes that predate the field.
#[allow(clippy::trivially_copy_pass_by_ref)]
pub(crate) fn is_default_grace_seconds(grace: &u32) -> bool {
    *grace == DEFAULT_GRACE_SECONDS
}

/// How long a license is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Validity {
    /// No time limit.
    Perpetual,
    /// Valid for `days` days from the first successful activation at the license service.
    DaysFromFirstUse {
        /// Number of days.
        days: u32,
    },
    /// Valid between two absolute instants (RFC 3339).
    Window {
        /// Start (optional: valid from sale).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_before: Option<String>,
        /// End.
        not_after: String,
    },
}

/// The limits of a license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Time limit.
    pub validity: Validity,
    /// Maximum number of model loads (successful attested checks), if limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_limit: Option<u64>,
    /// Maximum number of distinct attested machines, if limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_limit: Option<u32>,
}

impl Policy {
    /// Checks the limits are sensible.
    pub fn validate(&self) -> Result<()> {
        let bad = |d: String| Err(Error::malformed("license policy", d));
        match &self.validity {
            Validity::Perpetual => {}
            Validity::DaysFromFirstUse { days } => {
                if !(1..=36_500).contains(days) {
                    return bad(format!("{days} days is out of range 1..=36500"));
                }
            }
            Validity::Window {
                not_before,
                not_after,
            } => {
                let end = parse_rfc3339(not_after)?;
                if let Some(nb) = not_before {
                    if parse_rfc3339(nb)? >= end {
                        return bad("not_before must be earlier than not_after".into());
                    }
                }
            }
        }
        if self.usage_limit == Some(0) {
            return bad("usage limit must be at least 1".into());
        }
        if self.instance_limit == Some(0) {
            return bad("instance limit must be at least 1".into());
        }
        Ok(())
    }

    /// End of a window validity, if any.
    pub fn window_end(&self) -> Option<time::OffsetDateTime> {
        match &self.validity {
            Validity::Window { not_after, .. } => parse_rfc3339(not_after).ok(),
            _ => None,
        }
    }
}

/// A license service and the pins of its TLS key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEndpoint {
    /// `https://host:port` (an optional path prefix is allowed).
    pub url: String,
    /// SHA-256 of the server's SubjectPublicKeyInfo: the current key, then optionally the next
    /// key (for rotation). The client accepts either.
    pub pins: Vec<Pin>,
}

/// A SHA-256 SPKI pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pin(#[serde(with = "hex32")] pub [u8; 32]);

impl ServiceEndpoint {
    /// Checks the URL and pins.
    pub fn validate(&self) -> Result<()> {
        validate_url(&self.url)?;
        if self.pins.is_empty() || self.pins.len() > 2 {
            return Err(Error::malformed(
                "license service",
                format!(
                    "{}: give the current key pin and optionally the next one",
                    self.url
                ),
            ));
        }
        Ok(())
    }
}

/// Checks that `url` is `https://HOST[:PORT][/PATH]`.
pub fn validate_url(url: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidInput(format!(
            "license service URL '{url}' {why}; expected https://HOST:PORT"
        )))
    };
    let Some(rest) = url.strip_prefix("https://") else {
        return bad("does not start with https://");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) {
        return bad("has no valid host");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, rest)) => match rest.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return bad("has characters after the IPv6 address"),
            },
            None => return bad("has an unterminated IPv6 address"),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return bad("has no host");
    }
    if !authority.starts_with('[') && host.contains(':') {
        return bad("has a ':' in its host name (IPv6 addresses go in brackets)");
    }
    if authority.starts_with('[') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return bad("has an invalid IPv6 address");
    }
    if let Some(p) = port {
        if p.parse::<u16>().ok().filter(|p| *p != 0).is_none() {
            return bad("has an invalid port");
        }
    }
    Ok(())
}

/// Body of a license policy config (`ovsatool licgen`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseConfig {
    /// Human-readable name of this offer (e.g. "30-day trial").
    pub name: String,
    /// The limits.
    pub policy: Policy,
    /// Seconds between license re-checks by the runtime.
    pub lease_seconds: u32,
    /// How long past an expired lease the runtime keeps serving while the license service is
    /// unreachable, seconds. Absent in configs made before the field: [`DEFAULT_GRACE_SECONDS`].
    #[serde(
        default = "default_grace_seconds",
        skip_serializing_if = "is_default_grace_seconds"
    )]
    pub grace_seconds: u32,
    /// License services, in order of preference.
    pub services: Vec<ServiceEndpoint>,
    /// Creation time, RFC 3339.
    pub created: String,
}

impl Artifact for LicenseConfig {
    const TYPE: &'static str = "license-config";
    const VERSION: u64 = 1;

    fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        validate_lease(self.lease_seconds)?;
        validate_grace(self.grace_seconds)?;
        if self.services.is_empty() {
            return Err(Error::malformed(
                "license config",
                "at least one license service (--server) is required",
            ));
        }
        self.services.iter().try_for_each(ServiceEndpoint::validate)
    }
}

/// Checks a lease length.
pub fn validate_lease(lease: u32) -> Result<()> {
    if (MIN_LEASE_SECONDS..=MAX_LEASE_SECONDS).contains(&lease) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "lease of {lease} s is out of range {MIN_LEASE_SECONDS}..={MAX_LEASE_SECONDS} s (1 second to 24 hours)"
        )))
    }
}

/// Checks a grace period.
pub fn validate_grace(grace: u32) -> Result<()> {
    if grace <= MAX_GRACE_SECONDS {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "grace period of {grace} s is out of range 0..={MAX_GRACE_SECONDS} s (up to 24 hours)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for good in [
            "https://h:8443",
            "https://lic.example.com",
            "https://[::1]:443/x",
            "https://127.0.0.1:1/api",
        ] {
            validate_url(good).unwrap();
        }
        for bad in [
            "http://h:1",
            "https://",
            "https://:1",
            "https://h:0",
            "https://h:99999",
            "https://u@h:1",
            "ftp://h",
        ] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_limits() {
        let p = |validity, usage_limit, instance_limit| Policy {
            validity,
            usage_limit,
            instance_limit,
        };
        p(Validity::Perpetual, Some(1), Some(1)).validate().unwrap();
        assert!(p(Validity::Perpetual, Some(0), None).validate().is_err());
        assert!(p(Validity::DaysFromFirstUse { days: 0 }, None, None)
            .validate()
            .is_err());
        assert!(p(
            Validity::Window {
                not_before: Some("2030-01-01T00:00:00Z".into()),
                not_after: "2029-01-01T00:00:00Z".into()
            },
            None,
            None
        )
        .validate()
        .is_err());
    }
}
