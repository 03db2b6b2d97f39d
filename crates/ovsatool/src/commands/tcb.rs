//! `ovsatool tcb` (alias `gen-tcb-signature`).

use std::path::Path;

use ovsa_core::encoding::now_rfc3339;
use ovsa_core::envelope::Signed;
use ovsa_core::fsutil::MODE_PUBLIC;
use ovsa_core::license::tcb::{parse_pcr_arg, parse_tpm2_pcrread};
use ovsa_core::license::{PcrBank, PcrSet, TcbReference};

use crate::cli::TcbArgs;
use crate::error::{CliError, CliResult};
use crate::secrets::load_keystore;

pub fn run(a: &TcbArgs) -> CliResult<()> {
    let vtpm = match &a.from_tpm {
        Some(tcti) => Some(live_pcrs(tcti, &a.vtpm_bank, &a.pcrs)?),
        None => pcr_set(
            "vTPM",
            &a.vtpm_bank,
            &a.vtpm_pcr,
            a.vtpm_pcrs_file.as_deref(),
        )?,
    }
    .ok_or_else(|| {
        CliError::Usage(
            "give the vTPM PCRs: --from-tpm TCTI, --vtpm-pcr INDEX=HEX or --vtpm-pcrs-file FILE"
                .into(),
        )
    })?;
    let host = if let Some(tcti) = &a.host_from_tpm {
        Some(live_pcrs(tcti, &a.host_bank, &a.pcrs)?)
    } else if a.host_evidence {
        let tcti = a.from_tpm.as_deref().unwrap_or_default();
        let mut vtpm_tpm = ovsa_tpm::Tpm::open(Some(tcti))?;
        let ev = ovsa_tpm::host::read_host_evidence(&mut vtpm_tpm)?;
        // Sign only host PCRs that a host quote really covers: its signature under the host AK,
        // its PCR digest and its binding to this vTPM's EK certificate must verify.
        let vtpm_ek = vtpm_tpm.ek_certificate(ovsa_tpm::EkKind::Rsa2048)?;
        ovsa_core::attest::verify_quote_only(
            &ev.ak_public,
            &ev.quote,
            &ev.signature,
            &ev.pcrs,
            &ovsa_core::attest::host_qualifying_data(&vtpm_ek),
        )
        .map_err(|e| {
            CliError::Usage(format!(
                "the host evidence in the vTPM's NV ({tcti}) does not verify: {e}; run `ovsatool host-quote` for this vTPM again"
            ))
        })?;
        Some(PcrSet::from_attest(&ev.pcrs)?)
    } else {
        pcr_set(
            "host",
            &a.host_bank,
            &a.host_pcr,
            a.host_pcrs_file.as_deref(),
        )?
    };
    let isv = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    let signed = Signed::sign(
        TcbReference {
            name: a.name.clone(),
            vtpm,
            host,
            created: now_rfc3339(),
        },
        &isv,
    )?;
    signed.save(&a.out, MODE_PUBLIC, a.force)?;
    say!("wrote TCB reference {}", a.out.display());
    say!(
        "{}",
        serde_json::to_string_pretty(signed.body_json()).unwrap_or_default()
    );
    Ok(())
}

fn live_pcrs(tcti: &str, bank: &str, pcrs: &[u8]) -> CliResult<PcrSet> {
    let bank: PcrBank = bank.parse()?;
    let mut tpm = ovsa_tpm::Tpm::open(Some(tcti))?;
    let read = tpm.read_pcrs(bank.to_attest(), pcrs)?;
    Ok(PcrSet::from_attest(&read)?)
}

fn pcr_set(
    which: &str,
    bank: &str,
    args: &[String],
    file: Option<&Path>,
) -> CliResult<Option<PcrSet>> {
    let bank: PcrBank = bank.parse()?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| ovsa_core::Error::io(path, e))?;
        let sets = parse_tpm2_pcrread(&text)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        return sets
            .into_iter()
            .find(|s| s.bank == bank)
            .map(Some)
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "{}: no {} bank in the file (choose it with --{}-bank)",
                    path.display(),
                    bank.name(),
                    which.to_ascii_lowercase()
                ))
            });
    }
    if args.is_empty() {
        return Ok(None);
    }
    let values = args
        .iter()
        .map(|s| parse_pcr_arg(s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(PcrSet::new(bank, values)?))
}
