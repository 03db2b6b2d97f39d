//! `ovsatool tcb` (alias `gen-tcb-signature`).

use std::path::Path;

use ovsa_core::attest::measured_boot::{parse_event_type, EventPins, MAX_EVENT_LOG_BYTES};
use ovsa_core::attest::EventLog;
use ovsa_core::encoding::now_rfc3339;
use ovsa_core::envelope::Signed;
use ovsa_core::fsutil::MODE_PUBLIC;
use ovsa_core::license::tcb::{parse_pcr_arg, PcrValue, MAX_HOST_AGE_SECONDS, MAX_PCR_INDEX};
use ovsa_core::license::{PcrBank, PcrSet, TcbReference};

use crate::cli::TcbArgs;
use crate::error::{CliError, CliResult};
use crate::paths::{check_name, check_outputs, named};
use crate::secrets::load_keystore;

/// Largest `--*-pcrs-file` read: `tpm2_pcrread` text of four full banks is ~14 KiB, its
/// serialized binary at most ~34 KiB.
const PCRS_FILE_LIMIT: usize = 256 * 1024;

/// The TCTI of `--from-tpm`: given, or (flag without a value) env TCTI, else TPM2TOOLS_TCTI,
/// else the default device.
fn from_tpm_tcti(a: &TcbArgs) -> Option<String> {
    a.from_tpm.as_deref().map(|t| {
        if t.trim().is_empty() {
            ovsa_tpm::default_tcti()
        } else {
            t.to_string()
        }
    })
}

pub fn run(a: &TcbArgs) -> CliResult<()> {
    // Names and every output path against every input, before any TPM or file work.
    check_name("--name", &a.name)?;
    let mut inputs = vec![named("--keystore", &a.ks.keystore)];
    for (flag, p) in [
        ("--passphrase-file", &a.ks.passphrase_file),
        ("--vtpm-pcrs-file", &a.vtpm_pcrs_file),
        ("--host-pcrs-file", &a.host_pcrs_file),
    ] {
        if let Some(p) = p {
            inputs.push(named(flag, p));
        }
    }
    for p in &a.event_log {
        inputs.push(named("--event-log", p));
    }
    check_outputs(&[named("--out", &a.out)], &inputs, a.force)?;
    if let Some(age) = a.host_max_age {
        if age == 0 || age > MAX_HOST_AGE_SECONDS {
            return Err(CliError::Usage(format!(
                "--host-max-age {age}: give the host evidence's maximum age in seconds, \
                 1..={MAX_HOST_AGE_SECONDS} (10 years); leave it out for no limit"
            )));
        }
    }
    let events = event_pins(a)?;
    let from_tpm = from_tpm_tcti(a);
    if from_tpm.is_some() || a.host_from_tpm.is_some() {
        super::tpm::quiet_tss_log();
    }
    let vtpm = match &from_tpm {
        Some(tcti) => Some(live_pcrs(
            tcti,
            "--vtpm-bank",
            "the vTPM",
            &a.vtpm_bank,
            &a.pcrs,
        )?),
        None => pcr_set(
            "--vtpm-pcrs-file",
            "--vtpm-bank",
            &a.vtpm_bank,
            &a.vtpm_pcr,
            a.vtpm_pcrs_file.as_deref(),
            &a.pcrs,
        )?,
    };
    let vtpm = match (vtpm, &events) {
        (Some(mut set), Some(pins)) => {
            // Event-pinned PCRs are checked by their events, not their values.
            let pinned = pins.pinned_pcrs();
            let dropped: Vec<u8> = set
                .pcrs
                .iter()
                .map(|p| p.index)
                .filter(|i| pinned.contains(i))
                .collect();
            if !dropped.is_empty() {
                say!(
                    "PCRs {} are pinned by events; their values are left out",
                    join(&dropped)
                );
            }
            set.pcrs.retain(|p| !pinned.contains(&p.index));
            set
        }
        (Some(set), None) => set,
        (None, Some(_)) => PcrSet {
            bank: vtpm_bank(a)?,
            pcrs: Vec::new(),
        },
        (None, None) => {
            return Err(CliError::Usage(
                "give the vTPM PCRs: --from-tpm TCTI, --vtpm-pcr INDEX=HEX, --vtpm-pcrs-file \
                 FILE or --event-log FILE"
                    .into(),
            ))
        }
    };
    let host = if let Some(tcti) = &a.host_from_tpm {
        Some(live_pcrs(
            tcti,
            "--host-bank",
            "the host TPM",
            &a.host_bank,
            &a.pcrs,
        )?)
    } else if a.host_evidence {
        let tcti = from_tpm.as_deref().unwrap_or_default();
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
            "--host-pcrs-file",
            "--host-bank",
            &a.host_bank,
            &a.host_pcr,
            a.host_pcrs_file.as_deref(),
            &a.pcrs,
        )?
    };
    let isv = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    let signed = Signed::sign(
        TcbReference {
            name: a.name.clone(),
            vtpm,
            host,
            host_max_age_seconds: a.host_max_age,
            vtpm_ek: None,
            events,
            runtime: None,
            created: now_rfc3339(),
        },
        &isv,
    )?;
    signed.save(&a.out, MODE_PUBLIC, a.force)?;
    say!("wrote TCB reference {}", a.out.display());
    say!("{}", ovsa_core::text::to_json_text(signed.body_json()));
    Ok(())
}

fn vtpm_bank(a: &TcbArgs) -> CliResult<PcrBank> {
    a.vtpm_bank
        .parse()
        .map_err(|e| CliError::Usage(format!("--vtpm-bank: {e}")))
}

/// The event pins of `--event-log` / `--allow-event`, or `None` without either.
fn event_pins(a: &TcbArgs) -> CliResult<Option<EventPins>> {
    if a.event_log.is_empty() && a.allow_event.is_empty() {
        return Ok(None);
    }
    let bank = vtpm_bank(a)?.to_attest();
    if let Some(p) = a.pin_pcrs.iter().find(|p| **p > MAX_PCR_INDEX) {
        return Err(CliError::Usage(format!(
            "--pin-pcrs: PCR {p} is not 0..={MAX_PCR_INDEX}"
        )));
    }
    let mut pins = EventPins::new(bank);
    for path in &a.event_log {
        let what = || format!("--event-log {}", path.display());
        let bytes =
            ovsa_core::fsutil::read_limited_as(path, MAX_EVENT_LOG_BYTES, "firmware event log")?;
        let log = EventLog::parse(&bytes).map_err(|e| {
            CliError::Usage(format!(
                "{}: {e}; give the binary log the guest exposes at \
                 /sys/kernel/security/tpm0/binary_bios_measurements",
                what()
            ))
        })?;
        pins.allow_log(&log, &a.pin_pcrs).map_err(|e| {
            CliError::Usage(format!("{}: {e}; choose the bank with --vtpm-bank", what()))
        })?;
    }
    for arg in &a.allow_event {
        let (pcr, event_type, digest) = parse_allow_event(arg, bank)?;
        pins.allow(pcr, event_type, &digest);
    }
    pins.validate()
        .map_err(|e| CliError::Usage(format!("event pins: {e}")))?;
    Ok(Some(pins))
}

/// Parses `PCR:TYPE:HEX` (`--allow-event`).
fn parse_allow_event(arg: &str, bank: ovsa_core::attest::HashAlg) -> CliResult<(u8, u32, Vec<u8>)> {
    let usage = |m: String| {
        CliError::Usage(format!(
            "--allow-event {arg:?}: {m} (expected PCR:TYPE:HEX, e.g. \
             4:EV_EFI_BOOT_SERVICES_APPLICATION:<{} hex digits>)",
            bank.digest_len() * 2
        ))
    };
    let mut parts = arg.splitn(3, ':');
    let (Some(pcr), Some(ty), Some(hex_digest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(usage("not three fields".into()));
    };
    let pcr = pcr
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= MAX_PCR_INDEX)
        .ok_or_else(|| usage(format!("PCR {pcr:?} is not 0..={MAX_PCR_INDEX}")))?;
    let event_type =
        parse_event_type(ty).ok_or_else(|| usage(format!("unknown event type {ty:?}")))?;
    let digest = hex::decode(hex_digest.trim())
        .ok()
        .filter(|d| d.len() == bank.digest_len())
        .ok_or_else(|| {
            usage(format!(
                "the digest is not {} hex digits",
                bank.digest_len() * 2
            ))
        })?;
    Ok((pcr, event_type, digest))
}

fn live_pcrs(
    tcti: &str,
    bank_flag: &str,
    which: &str,
    bank: &str,
    pcrs: &[u8],
) -> CliResult<PcrSet> {
    let bank: PcrBank = bank
        .parse()
        .map_err(|e| CliError::Usage(format!("{bank_flag}: {e}")))?;
    let mut tpm = ovsa_tpm::Tpm::open(Some(tcti))?;
    let read = tpm
        .read_pcrs(bank.to_attest(), pcrs)
        .map_err(|e| super::tpm::pcr_error(e, bank_flag, which, tcti))?;
    Ok(PcrSet::from_attest(&read)?)
}

fn pcr_set(
    file_flag: &str,
    bank_flag: &str,
    bank: &str,
    args: &[String],
    file: Option<&Path>,
    pcrs: &[u8],
) -> CliResult<Option<PcrSet>> {
    let bank: PcrBank = bank
        .parse()
        .map_err(|e| CliError::Usage(format!("{bank_flag}: {e}")))?;
    if let Some(path) = file {
        return pcrs_file(file_flag, bank_flag, bank, path, pcrs).map(Some);
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

/// Reads the `bank` PCRs from a file written by `tpm2_pcrread`: its text output (any banks;
/// empty ones skipped), its `-F serialized -o` binary, or its default `-o` binary (digests only,
/// of the PCRs `pcrs`). Read through a bounded reader: a huge or endless input (a device, a
/// FIFO) fails after [`PCRS_FILE_LIMIT`] bytes.
fn pcrs_file(
    file_flag: &str,
    bank_flag: &str,
    bank: PcrBank,
    path: &Path,
    pcrs: &[u8],
) -> CliResult<PcrSet> {
    let what = || format!("{file_flag} {}", path.display());
    let bytes = ovsa_core::fsutil::read_limited(path, PCRS_FILE_LIMIT).map_err(|e| match e {
        ovsa_core::Error::InvalidInput(_) => CliError::Usage(format!(
            "{}: larger than {} KiB; expected the output of tpm2_pcrread (text, or its -o file)",
            what(),
            PCRS_FILE_LIMIT / 1024
        )),
        e => e.into(),
    })?;
    let text = std::str::from_utf8(&bytes)
        .ok()
        .filter(|t| t.chars().all(|c| !c.is_control() || c.is_whitespace()))
        .filter(|t| !t.trim().is_empty());
    let usage = |msg: String| CliError::Usage(format!("{}: {msg}", what()));
    let values = if let Some(text) = text {
        let banks = parse_pcrread_text(text).map_err(usage)?;
        let found: Vec<&str> = banks.iter().map(|(b, _)| b.as_str()).collect();
        banks
            .iter()
            .find(|(b, _)| *b == bank.name())
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                usage(format!(
                    "no values of the {} bank (banks with values: {}); choose one with {bank_flag}",
                    bank.name(),
                    if found.is_empty() {
                        "none".to_string()
                    } else {
                        found.join(", ")
                    }
                ))
            })?
    } else if bytes.len() >= ovsa_tpm::tools::PCR_SELECTION_SIZE + 4
        && (bytes.len() - ovsa_tpm::tools::PCR_SELECTION_SIZE - 4)
            % ovsa_tpm::tools::DIGEST_LIST_SIZE
            == 0
    {
        let sets = ovsa_tpm::tools::parse_pcrs_serialized(&bytes)
            .map_err(|e| usage(format!("not tpm2-tools' serialized PCR format: {e}")))?;
        let found: Vec<String> = sets.iter().map(|s| s.bank.to_string()).collect();
        let set = sets
            .into_iter()
            .find(|s| s.bank == bank.to_attest())
            .ok_or_else(|| {
                usage(format!(
                    "no values of the {} bank (banks in the file: {}); choose one with {bank_flag}",
                    bank.name(),
                    found.join(", ")
                ))
            })?;
        set.values
            .into_iter()
            .map(|(index, value)| PcrValue { index, value })
            .collect()
    } else {
        // tpm2_pcrread's default -o format: the digests of the selection, nothing else.
        let len = bank.digest_len();
        let mut sorted = pcrs.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if bytes.len() != sorted.len() * len {
            return Err(usage(format!(
                "{} bytes are neither tpm2_pcrread text, nor its serialized binary, nor the {} \
{}-byte {} values of --pcrs {}; write it with `tpm2_pcrread -F serialized -o FILE {}:{}` (or \
give the PCRs it holds with --pcrs and the bank with {bank_flag})",
                bytes.len(),
                sorted.len(),
                len,
                bank.name(),
                join(&sorted),
                bank.name(),
                join(&sorted)
            )));
        }
        sorted
            .iter()
            .zip(bytes.chunks(len))
            .map(|(&index, v)| PcrValue {
                index,
                value: v.to_vec(),
            })
            .collect()
    };
    PcrSet::new(bank, values).map_err(|e| usage(e.to_string()))
}

fn join(pcrs: &[u8]) -> String {
    pcrs.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
}

/// What `tpm2_pcrread` prints: `BANK:` lines, each followed by `INDEX : 0xHEX` lines. Returns
/// the banks that have values (by lowercase name, in file order); banks without values (not
/// allocated) are skipped, as are unknown bank names. A bank listed twice is refused.
fn parse_pcrread_text(text: &str) -> Result<Vec<(String, Vec<PcrValue>)>, String> {
    let mut banks: Vec<(String, Vec<PcrValue>)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(name) = t.strip_suffix(':').filter(|b| !b.contains(':')) {
            let name = name.trim().to_ascii_lowercase();
            if banks.iter().any(|(b, _)| *b == name) {
                return Err(format!("line {}: bank {name} listed twice", n + 1));
            }
            banks.push((name, Vec::new()));
            continue;
        }
        let (i, v) = t.split_once(':').ok_or_else(|| {
            format!(
                "line {}: expected 'INDEX : 0xVALUE' or 'BANK:' (tpm2_pcrread output)",
                n + 1
            )
        })?;
        let pv = parse_pcr_arg(&format!("{}={}", i.trim(), v.trim()))
            .map_err(|e| format!("line {}: {e}", n + 1))?;
        banks
            .last_mut()
            .ok_or_else(|| format!("line {}: PCR value before any 'BANK:' line", n + 1))?
            .1
            .push(pv);
    }
    banks.retain(|(b, v)| !v.is_empty() && b.parse::<PcrBank>().is_ok());
    Ok(banks)
}
