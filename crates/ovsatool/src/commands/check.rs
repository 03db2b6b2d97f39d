//! `ovsatool check`: the customer's "is my setup OK?" — the runtime's whole client path without
//! OVMS, reporting each step.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ovsa_client::{
    check_license, release_lease, BundleError, BundleFiles, BundleStep, ClientOptions,
    CustomerBundle, Step, TpmAttester,
};
use ovsa_core::protocol::Purpose;

use serde_json::{json, Value};

use crate::cli::CheckArgs;
use crate::error::{CliError, CliResult};
use crate::secrets;

/// Where step lines go: stdout, or (with --json) a list that ends up in the JSON result.
struct Steps {
    json: bool,
    lines: Vec<String>,
    result: serde_json::Map<String, Value>,
}

impl Steps {
    fn say(&mut self, line: String) -> CliResult<()> {
        if self.json {
            self.lines.push(line);
        } else {
            // Step lines quote service URLs, names and errors from the customer's files.
            say!("{}", ovsa_core::text::escape_controls(&line));
        }
        Ok(())
    }
}

/// How long releasing the check's lease may take: best effort, the check has its answer by then.
const RELEASE_DEADLINE: Duration = Duration::from_secs(3);

/// Prints one step line (or records it with --json).
macro_rules! step {
    ($steps:expr, $($t:tt)*) => { $steps.say(format!($($t)*))? };
}

pub fn run(a: &CheckArgs) -> CliResult<ExitCode> {
    // The check talks to a TPM: tpm2-tss's own ERROR lines are noise beside the step report.
    super::tpm::quiet_tss_log();
    let mut steps = Steps {
        json: a.json,
        lines: Vec::new(),
        result: serde_json::Map::new(),
    };
    let outcome = run_steps(a, &mut steps);
    if !a.json {
        return outcome;
    }
    let mut out = steps.result;
    out.insert(
        "steps".into(),
        Value::Array(steps.lines.into_iter().map(Value::String).collect()),
    );
    let code = match outcome {
        Ok(_) => {
            out.insert("result".into(), json!("ok"));
            ExitCode::SUCCESS
        }
        Err(CliError::Output(e)) => return Err(CliError::Output(e)),
        Err(e) => {
            out.insert("result".into(), json!("failed"));
            out.insert("error".into(), json!(e.to_string()));
            eprintln!(
                "ovsatool: error: {}",
                ovsa_core::text::escape_controls(&e.to_string())
            );
            ExitCode::FAILURE
        }
    };
    say!("{}", ovsa_core::text::to_json_text(&Value::Object(out)));
    Ok(code)
}

fn run_steps(a: &CheckArgs, steps: &mut Steps) -> CliResult<ExitCode> {
    // The same opening and cross-checks as the runtime plugin (ovsa_client::CustomerBundle), so
    // that `check` refuses exactly the bundles the plugin refuses, with the same message.
    let passphrase = secrets::passphrase(a.ks.passphrase_file.as_deref())?;
    let mut reported: Result<(), CliError> = Ok(());
    let opened = CustomerBundle::open(
        BundleFiles {
            package: &a.package,
            license: &a.license,
            keystore: &a.ks.keystore,
        },
        passphrase.as_ref().map(|p| p.as_str()),
        &mut |step| {
            if reported.is_err() {
                return;
            }
            reported = match step {
                BundleStep::LicenseVerified(license) => {
                    let l = license.body();
                    steps.result.insert("license".into(), json!(l.license_guid));
                    steps.result.insert("model".into(), json!(l.model_name));
                    steps
                        .result
                        .insert("model_version".into(), json!(l.model_version));
                    steps.say(format!(
                        "[ok] license {} for '{}' v{} verifies (signed by '{}')",
                        l.license_guid,
                        l.model_name,
                        l.model_version,
                        license.signer().subject()
                    ))
                }
                BundleStep::LicenseMatchesPackage(_) => steps.say(format!(
                    "[ok] package {} verifies and matches the license",
                    a.package.display()
                )),
                BundleStep::KeystoreMatches(keystore) => steps.say(format!(
                    "[ok] keystore holds the certificate and key of '{}', the licensed customer",
                    keystore.certificate().subject()
                )),
                _ => Ok(()),
            };
        },
    );
    reported?;
    let CustomerBundle {
        package,
        license,
        keystore: customer,
    } = opened.map_err(|e| match e {
        BundleError::Keystore { path, error }
            if matches!(*error, ovsa_core::Error::BadPassphrase) =>
        {
            CliError::Usage(format!(
                "{}: the passphrase does not open this keystore (check --passphrase-file or {})",
                path.display(),
                secrets::PASSPHRASE_ENV
            ))
        }
        other => CliError::Usage(other.to_string()),
    })?;
    secrets::warn_if_exposed(&a.ks.keystore);
    let l = license.body();
    let mut attester = TpmAttester::open(a.tcti.as_deref(), a.ak_cache.as_deref())?;
    step!(
        steps,
        "[ok] TPM opened, EK certificate and attestation key ready"
    );
    let purpose = if a.renew_only {
        Purpose::Renew
    } else {
        Purpose::Load
    };
    let start = Instant::now();
    let mut out = std::io::stdout();
    let mut live: Vec<String> = Vec::new();
    let json_mode = steps.json;
    let released = check_license(
        l,
        &customer,
        &mut attester,
        purpose,
        &ClientOptions::default(),
        &mut |s| {
            use std::io::Write as _;
            let line = match s {
                Step::Connected(url) => {
                    format!("[ok] connected to {url} (TLS 1.3, server key pinned)")
                }
                Step::Unreachable(e) => format!("[..] {e}; trying the next service"),
                Step::Challenge(c) => format!(
                    "[ok] challenge received: quote {:?} PCRs {:?}{}",
                    c.pcr_bank,
                    c.pcr_indices,
                    if c.host_evidence_required {
                        " + host evidence"
                    } else {
                        ""
                    }
                ),
                Step::CredentialActivated => {
                    "[ok] credential activated (AK proven to live in this TPM)".into()
                }
                Step::Quoted { host_evidence, .. } => format!(
                    "[ok] quote made{}",
                    if *host_evidence {
                        ", host evidence attached"
                    } else {
                        ""
                    }
                ),
            };
            if json_mode {
                live.push(line);
            } else {
                let _ = writeln!(out, "{}", ovsa_core::text::escape_controls(&line));
            }
        },
    );
    steps.lines.append(&mut live);
    let released = released?;
    let r = &released.response;
    steps
        .result
        .insert("service".into(), json!(released.service_url));
    steps.result.insert("uses".into(), json!(r.uses));
    steps
        .result
        .insert("usage_limit".into(), json!(r.usage_limit));
    steps
        .result
        .insert("lease_seconds".into(), json!(r.lease_seconds));
    steps.result.insert("not_after".into(), json!(r.not_after));
    steps
        .result
        .insert("spent_a_use".into(), json!(!a.renew_only));
    step!(
        steps,
        "[ok] attestation accepted by {}: uses {}{}, lease {} s{}",
        released.service_url,
        r.uses,
        r.usage_limit
            .map(|l| format!(" of {l}"))
            .unwrap_or_default(),
        r.lease_seconds,
        r.not_after
            .as_deref()
            .map(|t| format!(", valid until {t}"))
            .unwrap_or_default()
    );
    // The check is not a load that stays: give its seat back at once rather than hold it for
    // lease + grace (best effort, short deadline; a failure only means the seat lapses later).
    if let Some(lease) = r.lease_id {
        let opts = ClientOptions {
            timeout: RELEASE_DEADLINE,
            deadline: Some(Instant::now() + RELEASE_DEADLINE),
        };
        let outcome = release_lease(l, &customer, lease, &opts);
        steps
            .result
            .insert("lease_released".into(), json!(outcome.is_ok()));
        match outcome {
            Ok(_) => step!(
                steps,
                "[ok] lease {lease} released: this check holds no seat of the license"
            ),
            Err(e) => step!(
                steps,
                "[..] could not release lease {lease} ({e}); its seat lapses after the lease \
                 ({} s) and the grace period",
                r.lease_seconds
            ),
        }
    }
    let t = released.timings;
    steps.result.insert(
        "timings_ms".into(),
        json!({
            "connect": t.connect.as_secs_f64() * 1e3,
            "service": t.service.as_secs_f64() * 1e3,
            "tpm": t.tpm.as_secs_f64() * 1e3,
            "tpm_commands": t.tpm_commands,
            "total": start.elapsed().as_secs_f64() * 1e3,
        }),
    );
    step!(steps,
        "     timings: connect {:.1} ms, service {:.1} ms, TPM {:.1} ms ({} commands), total {:.1} ms",
        t.connect.as_secs_f64() * 1e3,
        t.service.as_secs_f64() * 1e3,
        t.tpm.as_secs_f64() * 1e3,
        t.tpm_commands,
        start.elapsed().as_secs_f64() * 1e3
    );
    if let Some(share) = &released.share {
        let key = l.unwrap_model_key(&customer, Some(share))?;
        let start = Instant::now();
        let model = package.decrypt_model(&key, ovsa_core::package::reader::default_threads())?;
        let bytes: usize = model.files.iter().map(|(_, b)| b.len()).sum();
        steps
            .result
            .insert("model_bytes_verified".into(), json!(bytes));
        step!(steps,
            "[ok] model key unwrapped; {} files, {} bytes decrypted and verified in memory in {:.1} ms (nothing written)",
            model.files.len(),
            bytes,
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    step!(steps, "result: OK — this machine can load the model");
    Ok(ExitCode::SUCCESS)
}
