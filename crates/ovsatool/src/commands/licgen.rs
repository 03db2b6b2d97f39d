//! `ovsatool licgen`.

use ovsa_core::encoding::{format_rfc3339, now_rfc3339, parse_rfc3339};
use ovsa_core::envelope::Signed;
use ovsa_core::fsutil::MODE_PUBLIC;
use ovsa_core::identity::Certificate;
use ovsa_core::license::policy::Pin;
use ovsa_core::license::{LicenseConfig, Policy, ServiceEndpoint, Validity};

use crate::cli::LicgenArgs;
use crate::error::{CliError, CliResult};
use crate::secrets::load_keystore;

pub fn run(a: &LicgenArgs) -> CliResult<()> {
    let validity = match (a.perpetual, a.days, &a.not_after) {
        (true, None, None) => Validity::Perpetual,
        (false, Some(days), None) => Validity::DaysFromFirstUse { days },
        (false, None, Some(end)) => Validity::Window {
            not_before: a
                .not_before
                .as_deref()
                .map(|d| parse_date(d, false))
                .transpose()?,
            not_after: parse_date(end, true)?,
        },
        _ => {
            return Err(CliError::Usage(
                "give exactly one time limit: --perpetual, --days N or --not-after DATE".into(),
            ))
        }
    };
    let isv = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    let mut pins = vec![Pin(server_pin(&a.server_cert)?)];
    if let Some(next) = &a.next_server_cert {
        pins.push(Pin(server_pin(next)?));
    }
    let config = LicenseConfig {
        name: a.name.clone(),
        policy: Policy {
            validity,
            usage_limit: a.usage_limit,
            instance_limit: a.instance_limit,
        },
        lease_seconds: a.lease,
        services: a
            .server
            .iter()
            .map(|url| ServiceEndpoint {
                url: url.clone(),
                pins: pins.clone(),
            })
            .collect(),
        created: now_rfc3339(),
    };
    let signed = Signed::sign(config, &isv)?;
    signed.save(&a.out, MODE_PUBLIC, a.force)?;
    say!("wrote license config {}", a.out.display());
    say!(
        "{}",
        serde_json::to_string_pretty(signed.body_json()).unwrap_or_default()
    );
    Ok(())
}

fn server_pin(path: &std::path::Path) -> CliResult<[u8; 32]> {
    let cert = Certificate::load(path)?;
    Ok(cert.spki_pin())
}

/// `YYYY-MM-DD` (start or end of that day, UTC) or RFC 3339.
fn parse_date(s: &str, end_of_day: bool) -> CliResult<String> {
    if s.len() == 10 {
        let t = if end_of_day { "23:59:59" } else { "00:00:00" };
        let full = format!("{s}T{t}Z");
        return Ok(format_rfc3339(parse_rfc3339(&full).map_err(|_| {
            CliError::Usage(format!("'{s}' is not a date (YYYY-MM-DD or RFC 3339)"))
        })?));
    }
    Ok(format_rfc3339(parse_rfc3339(s)?))
}
