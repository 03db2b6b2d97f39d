//! `ovsatool runtime-policy`: the ISV-signed runtime policy (docs/ATTESTATION.md §11).

use std::path::Path;

use ovsa_core::attest::ima::ImaLog;
use ovsa_core::attest::measured_boot::MAX_IMA_LOG_BYTES;
use ovsa_core::attest::runtime::{file_sha256, parse_ascii_list, validate_pattern};
use ovsa_core::encoding::now_rfc3339;
use ovsa_core::envelope::Signed;
use ovsa_core::fsutil::MODE_PUBLIC;
use ovsa_core::license::RuntimePolicy;
use ovsa_core::text::escape_controls;

use crate::cli::RuntimePolicyArgs;
use crate::error::{CliError, CliResult};
use crate::paths::{check_name, check_outputs, named};
use crate::secrets::load_keystore;

/// Largest reference list read: the text form of a list at the protocol's bound is ~2x the
/// binary one.
const IMA_FILE_LIMIT: usize = 4 * MAX_IMA_LOG_BYTES;

/// (path, alg, digest) of every file measurement in a reference list, binary or text.
fn read_reference_list(path: &Path) -> CliResult<Vec<(String, String, Vec<u8>)>> {
    let bytes = ovsa_core::fsutil::read_limited_as(path, IMA_FILE_LIMIT, "IMA measurement list")?;
    if let Ok(log) = ImaLog::parse(&bytes) {
        return Ok(log
            .entries
            .into_iter()
            .map(|e| (e.path, e.file_alg, e.file_digest))
            .collect());
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        CliError::Usage(format!(
            "--ima-log {}: neither a binary IMA list (binary_runtime_measurements, ima-ng) nor \
             UTF-8 text (ascii_runtime_measurements)",
            path.display()
        ))
    })?;
    parse_ascii_list(text).map_err(|e| {
        CliError::Usage(format!(
            "--ima-log {}: not an IMA measurement list: {e}",
            path.display()
        ))
    })
}

pub fn run(a: &RuntimePolicyArgs) -> CliResult<()> {
    check_name("--name", &a.name)?;
    if a.file.is_empty() && a.pattern.is_empty() {
        return Err(CliError::Usage(
            "give --file PATTERN=PATH and/or --ima-log FILE --pattern PATTERN: a runtime policy \
             lists at least one pattern"
                .into(),
        ));
    }
    if !a.ima_log.is_empty() && a.pattern.is_empty() {
        return Err(CliError::Usage(
            "--ima-log needs --pattern: which files of the list the policy constrains (example: \
             --pattern '**/libovsaruntime.so')"
                .into(),
        ));
    }
    let mut files = Vec::new();
    for f in &a.file {
        let (pattern, path) = f.split_once('=').ok_or_else(|| {
            CliError::Usage(format!(
                "--file {}: expected PATTERN=PATH (example: /opt/ovsa/lib/libovsaruntime.so=build/libovsaruntime.so)",
                escape_controls(f)
            ))
        })?;
        validate_pattern(pattern)
            .map_err(|e| CliError::Usage(format!("--file {}: pattern: {e}", escape_controls(f))))?;
        files.push((pattern.to_string(), Path::new(path).to_path_buf()));
    }
    for p in &a.pattern {
        validate_pattern(p)
            .map_err(|e| CliError::Usage(format!("--pattern {}: {e}", escape_controls(p))))?;
    }
    let mut inputs = vec![named("--keystore", &a.ks.keystore)];
    if let Some(p) = &a.ks.passphrase_file {
        inputs.push(named("--passphrase-file", p));
    }
    inputs.extend(a.ima_log.iter().map(|p| named("--ima-log", p)));
    inputs.extend(files.iter().map(|(_, p)| named("--file", p)));
    check_outputs(&[named("--out", &a.out)], &inputs, a.force)?;

    let mut policy = RuntimePolicy::new(a.name.clone(), now_rfc3339());
    for (pattern, path) in &files {
        let d = file_sha256(path)?;
        policy.allow(pattern, Some(d)).map_err(CliError::Usage)?;
        say!(
            "{pattern}: {} ({})",
            hex::encode(d),
            escape_controls(&path.display().to_string())
        );
    }
    let mut lists = Vec::new();
    for p in &a.ima_log {
        lists.push((p, read_reference_list(p)?));
    }
    for pattern in &a.pattern {
        let mut found = 0usize;
        for (list_path, entries) in &lists {
            for (path, alg, digest) in entries {
                if !ovsa_core::attest::runtime::pattern_matches(pattern, path) {
                    continue;
                }
                let d: [u8; 32] = match (alg.as_str(), <[u8; 32]>::try_from(digest.as_slice())) {
                    ("sha256", Ok(d)) if d != [0; 32] => d,
                    _ => {
                        return Err(CliError::Usage(format!(
                            "--ima-log {}: {} is recorded with a {alg} digest{}; the policy \
                             lists sha256 digests (boot the reference guest with ima_hash=sha256 \
                             and without writers of that file)",
                            list_path.display(),
                            escape_controls(path),
                            if digest.iter().all(|b| *b == 0) {
                                " of zeros (an IMA violation)"
                            } else {
                                ""
                            }
                        )))
                    }
                };
                policy.allow(pattern, Some(d)).map_err(CliError::Usage)?;
                found += 1;
            }
        }
        if found == 0 {
            return Err(CliError::Usage(format!(
                "--pattern {}: no entry of the --ima-log list(s) is under it; patterns match the \
                 path as IMA records it (see ascii_runtime_measurements), or use --file",
                escape_controls(pattern)
            )));
        }
        say!("{pattern}: {found} measurement(s) from the reference list");
    }
    let isv = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    let signed = Signed::sign(policy, &isv)?;
    signed.save(&a.out, MODE_PUBLIC, a.force)?;
    let digests: usize = signed.body().files.iter().map(|r| r.sha256.len()).sum();
    say!(
        "wrote runtime policy {} ({} patterns, {digests} digests); bind it with `ovsatool sale --runtime-policy`",
        a.out.display(),
        signed.body().files.len()
    );
    Ok(())
}
