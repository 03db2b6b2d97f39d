//! `ovsatool check`: the customer's "is my setup OK?" — the runtime's whole client path without
//! OVMS, reporting each step.

use std::process::ExitCode;
use std::time::Instant;

use ovsa_client::{check_license, ClientOptions, Step, TpmAttester};
use ovsa_core::envelope::Signed;
use ovsa_core::license::CustomerLicense;
use ovsa_core::package::Package;
use ovsa_core::protocol::Purpose;

use crate::cli::CheckArgs;
use crate::error::CliResult;
use crate::secrets::load_keystore;

pub fn run(a: &CheckArgs) -> CliResult<ExitCode> {
    let license = Signed::<CustomerLicense>::load(&a.license)?;
    let l = license.body();
    say!(
        "[ok] license {} for '{}' v{} verifies (signed by '{}')",
        l.license_guid,
        l.model_name,
        l.model_version,
        license.signer().subject()
    );
    let package = Package::open(&a.package)?;
    CustomerLicense::check_package(&license, package.header())?;
    say!(
        "[ok] package {} verifies and matches the license",
        a.package.display()
    );
    let customer = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    let cert = l.customer_certificate()?;
    if cert.public_key()? != customer.key().public_key() {
        return Err(ovsa_core::Error::WrongKey {
            what: "license",
            expected: cert.subject().to_string(),
            found: customer.certificate().subject().to_string(),
        }
        .into());
    }
    say!(
        "[ok] keystore holds the key of '{}', the licensed customer",
        cert.subject()
    );
    let mut attester = TpmAttester::open(a.tcti.as_deref(), a.ak_cache.as_deref())?;
    say!("[ok] TPM opened, EK certificate and attestation key ready");
    let purpose = if a.renew_only {
        Purpose::Renew
    } else {
        Purpose::Load
    };
    let start = Instant::now();
    let mut out = std::io::stdout();
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
            let _ = writeln!(out, "{line}");
        },
    )?;
    let r = &released.response;
    say!(
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
    let t = released.timings;
    say!(
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
        say!(
            "[ok] model key unwrapped; {} files, {} bytes decrypted and verified in memory in {:.1} ms (nothing written)",
            model.files.len(),
            bytes,
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    say!("result: OK — this machine can load the model");
    Ok(ExitCode::SUCCESS)
}
