//! `ovsatool host-quote` and `ovsatool attest`: the TPM-facing commands.

use ovsa_core::attest::HashAlg;
use ovsa_core::fsutil::{write_atomic, MODE_PUBLIC};
use ovsa_core::license::PcrBank;
use ovsa_tpm::host::{write_host_evidence, HostQuoteOptions};
use ovsa_tpm::{AkAlg, EkKind, Tpm, TpmError};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ovsa_client::{enroll_host_ak, ClientOptions, TpmAttester};
use ovsa_core::envelope::Signed;
use ovsa_core::license::CustomerLicense;

use crate::cli::{AttestArgs, HostEnrollArgs, HostQuoteArgs};
use crate::error::{CliError, CliResult};
use crate::secrets::load_keystore;

/// Silences tpm2-tss's own logging (it prints `ERROR` lines for conditions this tool handles,
/// e.g. a probed NV index or persistent handle that does not exist) unless the user chose a
/// `TSS2_LOG` level. Call before the first TSS call: tpm2-tss reads `TSS2_LOG` lazily, on its
/// first log line. The tool is single-threaded at that point.
pub(crate) fn quiet_tss_log() {
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+none");
    }
}

fn bank(flag: &str, s: &str) -> CliResult<HashAlg> {
    Ok(s.parse::<PcrBank>()
        .map_err(|e| CliError::Usage(format!("{flag}: {e}")))?
        .to_attest())
}

/// Adds the flag and the TPM to a PCR bank/index error (the library error names the bank and
/// the banks the TPM has); other errors pass through.
pub(crate) fn pcr_error(e: TpmError, flag: &str, which: &str, tcti: &str) -> CliError {
    match e {
        TpmError::PcrBankNotAllocated { .. } | TpmError::PcrNotPresent { .. } => {
            CliError::Usage(format!("{flag}: {which} ({tcti}): {e}"))
        }
        e => e.into(),
    }
}

/// A TCTI string in a comparable form: driver name and its `key=value` options, sorted.
fn normalized_tcti(t: &str) -> (String, Vec<String>) {
    let t = t.trim();
    let (driver, conf) = t.split_once(':').unwrap_or((t, ""));
    let driver = driver
        .trim()
        .trim_start_matches("libtss2-tcti-")
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut opts: Vec<String> = conf
        .split(',')
        .map(|o| o.trim().replace("localhost", "127.0.0.1"))
        .filter(|o| !o.is_empty())
        .collect();
    opts.sort();
    (driver, opts)
}

/// `ak-*.json` files in `dir` (the AK cache of [`TpmAttester`]).
fn cached_aks(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("ak-") && n.ends_with(".json"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Opens the host TPM with its AK cached in `dir` (created, and the AK made, if missing).
fn host_attester(tcti: &str, dir: &Path) -> CliResult<TpmAttester> {
    std::fs::create_dir_all(dir).map_err(|e| ovsa_core::Error::io(dir, e))?;
    Ok(TpmAttester::open(Some(tcti), Some(dir))?)
}

pub fn host_enroll(a: &HostEnrollArgs) -> CliResult<()> {
    quiet_tss_log();
    let license = Signed::<CustomerLicense>::load(&a.license)?;
    let customer = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    let mut host = host_attester(&a.host_tcti, &a.ak_cache_dir)?;
    let enrolled = enroll_host_ak(
        license.body(),
        &customer,
        &mut host,
        &ClientOptions::default(),
        &mut |_| {},
    )?;
    say!(
        "host AK {} enrolled with {} for host EK {} (kept in {}; pass --ak-cache-dir {} to host-quote)",
        ovsa_core::text::escape_controls(&enrolled.response.ak_name),
        ovsa_core::text::escape_controls(&enrolled.service_url),
        ovsa_core::text::escape_controls(&enrolled.response.host_ek_sha256),
        a.ak_cache_dir.display(),
        a.ak_cache_dir.display()
    );
    Ok(())
}

pub fn host_quote(a: &HostQuoteArgs) -> CliResult<()> {
    quiet_tss_log();
    if normalized_tcti(&a.host_tcti) == normalized_tcti(&a.vtpm_tcti) {
        return Err(CliError::Usage(format!(
            "--host-tcti and --vtpm-tcti name the same TPM ({}): the host quote must come from \
the host's hardware TPM and be stored in the VM's vTPM; give the vTPM's TCTI (e.g. its swtpm \
socket) as --vtpm-tcti",
            a.vtpm_tcti.trim()
        )));
    }
    let bank = bank("--bank", &a.bank)?;
    // The host bank first, before an AK is made or anything is written to the vTPM.
    Tpm::open(Some(&a.host_tcti))?
        .check_pcr_bank(bank, &a.pcrs)
        .map_err(|e| pcr_error(e, "--bank", "the host TPM", &a.host_tcti))?;
    let mut host = match &a.ak_cache_dir {
        Some(dir) => {
            let before = cached_aks(dir);
            let host = host_attester(&a.host_tcti, dir)?;
            if cached_aks(dir) != before {
                eprintln!(
                    "ovsatool: warning: --ak-cache-dir {} held no AK of this host TPM, so a fresh one \
was made: it is not enrolled, and license services refuse evidence it signs unless configured \
otherwise; run `ovsatool host-enroll --ak-cache-dir {}` (same directory), then host-quote again",
                    dir.display(),
                    dir.display()
                );
            }
            host
        }
        None => {
            say!("note: no --ak-cache-dir: a fresh host AK signs this evidence; license services accept only AKs enrolled with `ovsatool host-enroll` unless configured otherwise");
            TpmAttester::open(Some(&a.host_tcti), None)?
        }
    };
    let mut vtpm = Tpm::open(Some(&a.vtpm_tcti))?;
    let opts = HostQuoteOptions {
        bank,
        pcrs: a.pcrs.clone(),
        host_ak: Some(host.ak().clone()),
        ..HostQuoteOptions::default()
    };
    let ev = write_host_evidence(host.tpm(), &mut vtpm, &opts)
        .map_err(|e| pcr_error(e, "--bank", "the host TPM", &a.host_tcti))?;
    let host_ek = ovsa_core::identity::Certificate::from_der(&ev.ek_cert)
        .map(|c| c.subject().to_string())
        .unwrap_or_else(|_| "<unparsed>".into());
    say!(
        "host evidence written to the vTPM's NV (host EK '{}', {} PCRs of {}, quote bound to the vTPM's EK certificate)",
        ovsa_core::text::escape_controls(&host_ek),
        ev.pcrs.values.len(),
        ev.pcrs.bank
    );
    Ok(())
}

/// The files `attest` writes into its output directory.
const ATTEST_FILES: [&str; 5] = [
    "quote.msg",
    "quote.sig",
    "pcrs.bin",
    "ak.pub",
    "evidence.json",
];

/// A path as a shell word (single-quoted unless it only has safe characters).
fn sh_word(p: &Path) -> String {
    let s = p.display().to_string();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-+=:,@".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub fn attest(a: &AttestArgs) -> CliResult<()> {
    quiet_tss_log();
    let nonce = hex::decode(a.nonce.trim_start_matches("0x"))
        .map_err(|e| CliError::Usage(format!("--nonce is not hex: {e}")))?;
    if nonce.len() > 64 {
        return Err(CliError::Usage("--nonce is longer than 64 bytes".into()));
    }
    let bank = bank("--bank", &a.bank)?;
    // Every output path is checked before the TPM is touched and before anything is written.
    if a.out_dir.exists() && !a.out_dir.is_dir() {
        return Err(CliError::Usage(format!(
            "--out-dir {}: exists and is not a directory",
            a.out_dir.display()
        )));
    }
    let paths: Vec<PathBuf> = ATTEST_FILES.iter().map(|f| a.out_dir.join(f)).collect();
    let existing: Vec<String> = paths
        .iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() && !a.force {
        return Err(CliError::Usage(format!(
            "{} already exist(s); pass --force to replace, or choose another --out-dir",
            existing.join(", ")
        )));
    }
    let tcti = a.tcti.clone().unwrap_or_else(ovsa_tpm::default_tcti);
    let mut tpm = Tpm::open(Some(&tcti))?;
    tpm.check_pcr_bank(bank, &a.pcrs)
        .map_err(|e| pcr_error(e, "--bank", "the TPM", &tcti))?;
    let ek_cert = tpm.ek_certificate(EkKind::Rsa2048)?;
    let ak = tpm.create_ak(EkKind::Rsa2048, AkAlg::EcdsaP256)?;
    let q = tpm
        .quote(&ak, &nonce, bank, &a.pcrs)
        .map_err(|e| pcr_error(e, "--bank", "the TPM", &tcti))?;
    let host_evidence = ovsa_tpm::host::read_host_evidence_blob_if_present(&mut tpm)?;
    // The platform's logs belong to the kernel's TPM device only; read after the quote (the
    // IMA list only grows). The IMA list goes with a quote that covers PCR 10.
    let logs = if ovsa_core::attest::measured_boot::tcti_is_kernel_device(&tcti) {
        use ovsa_core::attest::measured_boot as mb;
        mb::read_measurement_logs(
            Path::new(mb::EVENT_LOG_PATH),
            a.pcrs
                .contains(&(ovsa_core::attest::ima::IMA_PCR as u8))
                .then_some(Path::new(mb::IMA_LOG_PATH)),
        )?
    } else {
        Default::default()
    };
    let tools = ovsa_tpm::tools::tpm2_tools_files(&q, &ak.public)?;
    let evidence = ovsa_core::attest::Evidence {
        ek_cert,
        ak_public: ak.public.clone(),
        quote: q.attest.clone(),
        signature: q.signature.clone(),
        pcrs: q.pcrs.clone(),
        host_evidence,
        event_log: logs.event_log,
        ima_log: logs.ima_log,
    };
    let json = serde_json::to_vec_pretty(&evidence).map_err(|e| CliError::Usage(e.to_string()))?;
    std::fs::create_dir_all(&a.out_dir).map_err(|e| ovsa_core::Error::io(&a.out_dir, e))?;
    for (path, bytes) in paths.iter().zip(tools.iter().chain([&json])) {
        write_atomic(path, bytes, MODE_PUBLIC, a.force)?;
    }
    say!("wrote {}", ATTEST_FILES.join(", "));
    let f = |n: &str| sh_word(&a.out_dir.join(n));
    say!(
        "verify with: tpm2_checkquote -u {} -m {} -s {} -f {} -g sha256 -q {}",
        f("ak.pub"),
        f("quote.msg"),
        f("quote.sig"),
        f("pcrs.bin"),
        if nonce.is_empty() {
            "''".to_string()
        } else {
            hex::encode(&nonce)
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_tpm_in_other_spellings() {
        let n = normalized_tcti;
        assert_eq!(
            n("swtpm:host=127.0.0.1,port=2321"),
            n(" swtpm:port=2321,host=localhost ")
        );
        assert_eq!(
            n("device:/dev/tpmrm0"),
            n("libtss2-tcti-device.so.0:/dev/tpmrm0")
        );
        assert_ne!(
            n("swtpm:host=127.0.0.1,port=2321"),
            n("swtpm:host=127.0.0.1,port=2323")
        );
    }

    #[test]
    fn shell_words() {
        assert_eq!(sh_word(Path::new("ev/ak.pub")), "ev/ak.pub");
        assert_eq!(sh_word(Path::new("my ev/ak.pub")), "'my ev/ak.pub'");
        assert_eq!(sh_word(Path::new("it's")), "'it'\\''s'");
    }
}
