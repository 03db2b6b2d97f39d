//! `ovsatool licgen`.

use ovsa_core::encoding::{format_rfc3339, now_rfc3339, parse_rfc3339};
use ovsa_core::envelope::Signed;
use ovsa_core::fsutil::MODE_PUBLIC;
use ovsa_core::identity::Certificate;
use ovsa_core::license::policy::Pin;
use ovsa_core::license::{LicenseConfig, Policy, ServiceEndpoint, Validity};

use crate::cli::LicgenArgs;
use crate::error::{CliError, CliResult};
use crate::paths::{check_name, check_outputs, named};
use crate::secrets::load_keystore;

pub fn run(a: &LicgenArgs) -> CliResult<()> {
    check_name("--name", &a.name)?;
    if a.not_before.is_some() && a.not_after.is_none() {
        return Err(CliError::Usage(
            "--not-before only starts a date window that --not-after ends; give --not-after DATE too (--perpetual and --days have no start date)".into(),
        ));
    }
    let mut inputs = vec![
        named("--keystore", &a.ks.keystore),
        named("--server-cert", &a.server_cert),
    ];
    if let Some(p) = &a.ks.passphrase_file {
        inputs.push(named("--passphrase-file", p));
    }
    if let Some(p) = &a.next_server_cert {
        inputs.push(named("--next-server-cert", p));
    }
    check_outputs(&[named("--out", &a.out)], &inputs, a.force)?;
    let validity = match (a.perpetual, a.days, &a.not_after) {
        (true, None, None) => Validity::Perpetual,
        (false, Some(days), None) => Validity::DaysFromFirstUse { days },
        (false, None, Some(end)) => window(a.not_before.as_deref(), end)?,
        _ => {
            return Err(CliError::Usage(
                "give exactly one time limit: --perpetual, --days N or --not-after DATE".into(),
            ))
        }
    };
    let isv = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    let mut pins = vec![Pin(server_pin("--server-cert", &a.server_cert)?)];
    if let Some(next) = &a.next_server_cert {
        pins.push(Pin(server_pin("--next-server-cert", next)?));
    }
    let config = LicenseConfig {
        name: a.name.clone(),
        policy: Policy {
            validity,
            usage_limit: a.usage_limit,
            instance_limit: a.instance_limit,
        },
        lease_seconds: a.lease,
        grace_seconds: a.grace_seconds,
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
    say!("{}", ovsa_core::text::to_json_text(signed.body_json()));
    Ok(())
}

/// A date window: it must end in the future and after it starts.
fn window(not_before: Option<&str>, not_after: &str) -> CliResult<Validity> {
    let end = parse_date(not_after, true)?;
    let start = not_before.map(|d| parse_date(d, false)).transpose()?;
    let end_t = parse_rfc3339(&end)?;
    if end_t <= time::OffsetDateTime::now_utc() {
        return Err(CliError::Usage(format!(
            "--not-after {not_after} is in the past ({end}): no license sold with this config could ever be used; give a future date"
        )));
    }
    if let Some(start) = &start {
        if parse_rfc3339(start)? >= end_t {
            return Err(CliError::Usage(format!(
                "--not-before {} is not before --not-after {not_after}: the window would be empty",
                not_before.unwrap_or_default()
            )));
        }
    }
    Ok(Validity::Window {
        not_before: start,
        not_after: end,
    })
}

fn server_pin(flag: &str, path: &std::path::Path) -> CliResult<[u8; 32]> {
    let cert = Certificate::load(path)?;
    cert.require_v3(&format!("{flag} {}", path.display()))?;
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
