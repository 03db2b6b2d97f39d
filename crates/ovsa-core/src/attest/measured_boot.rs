//! Measured boot and runtime measurements in the Verifier: the firmware event log replayed to the
//! quoted PCRs, per-event pins from the TCB reference, and the IMA measurement list replayed to
//! PCR 10.
//!
//! [`check`] runs after the quote's signature, qualifying data and PCR digest have verified, so
//! the quoted PCR values it compares with are the TPM's. What it checks (docs/ATTESTATION.md §10):
//!
//! 1. Sizes: the event log at most [`MAX_EVENT_LOG_BYTES`], the IMA list at most
//!    [`MAX_IMA_LOG_BYTES`] ([`MeasuredBootError::LogTooLarge`]).
//! 2. Event log, when the evidence carries one: it parses ([`EventLog::parse`]) and, replayed in
//!    the quoted bank, gives the quoted value of every quoted PCR it extends
//!    ([`MeasuredBootError::EventLogMismatch`] naming the first PCR that differs).
//! 3. Event pins, when the reference has them ([`EventPins`]): the log is required, the pins'
//!    bank is the quoted bank, every pinned PCR is quoted and equals the log's replay (a pinned
//!    PCR the log never extends must be quoted as its initial value), and every event the log
//!    extends into a pinned PCR is allowed: its (event type, digest in the bank) pair is listed
//!    for that PCR ([`MeasuredBootError::EventNotAllowed`] naming the PCR, the type and the
//!    digest). A pinned PCR's whole value is not compared with a reference value: this check
//!    replaces it.
//! 4. IMA list, when the evidence carries one: it parses ([`ImaLog::parse`]) and replays to the
//!    quoted PCR 10 ([`MeasuredBootError::ImaLogMismatch`]). The runtime policy, when the
//!    reference has one, is checked by [`super::runtime::check`] on the covered entries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::eventlog::{event_type_name, EventLog, EventLogError, EV_NO_ACTION};
use super::ima::{ImaError, ImaLog};
use super::pcr::PcrSet;
use super::wire::HashAlg;

/// Largest firmware event log an Evidence may carry (raw bytes, before base64). OVMF's log with
/// direct kernel boot is ~2 KiB per bank; distribution boots through shim and GRUB, which log
/// every GRUB command, are 20-60 KiB; 256 KiB leaves room for large Secure Boot databases.
pub const MAX_EVENT_LOG_BYTES: usize = 256 << 10;

/// Largest IMA measurement list an Evidence may carry (raw bytes, before base64): ~150 bytes
/// per `ima-ng` entry, so about 3,500 measured files.
pub const MAX_IMA_LOG_BYTES: usize = 512 << 10;

/// Largest number of pinned PCRs, allowed event types per PCR and digests per type in a
/// reference (bounds the work of a hostile or mistaken reference).
pub const MAX_PINNED_DIGESTS: usize = 1024;

/// Why the measured-boot or IMA evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeasuredBootError {
    /// A log in the evidence is larger than the protocol allows.
    #[error("the {what} is {size} bytes; the limit is {max}")]
    LogTooLarge {
        /// Which log.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The firmware event log does not parse.
    #[error("the firmware event log is malformed: {0}")]
    EventLogMalformed(EventLogError),
    /// The firmware event log does not replay to the quoted value of a PCR.
    #[error(
        "the firmware event log does not replay to the quoted value of PCR {pcr}: the log was \
         edited, events were dropped, or the PCR was extended outside the log"
    )]
    EventLogMismatch {
        /// The PCR.
        pcr: u8,
    },
    /// The firmware event log has no digests of the quoted bank.
    #[error("the firmware event log has no {0} digests (the quoted bank)")]
    EventLogBank(HashAlg),
    /// The TCB reference pins events but the evidence carries no firmware event log.
    #[error(
        "the TCB reference pins boot events (PCRs {pcrs:?}) but the evidence carries no firmware \
         event log; the runtime sends /sys/kernel/security/tpm0/binary_bios_measurements when \
         the guest firmware writes one (OVMF does; boot the guest with UEFI)"
    )]
    EventLogMissing {
        /// The pinned PCRs.
        pcrs: Vec<u8>,
    },
    /// The reference's pins are for another bank than the quote.
    #[error("the TCB reference pins {pins} events but the quote covers the {quoted} bank")]
    PinBankMismatch {
        /// Bank of the pins.
        pins: HashAlg,
        /// Quoted bank.
        quoted: HashAlg,
    },
    /// A pinned PCR is not quoted.
    #[error("PCR {0} is pinned by events in the TCB reference but is not quoted")]
    PinnedPcrNotQuoted(u8),
    /// An event in a pinned PCR is not allowed by the reference.
    #[error(
        "PCR {pcr}: event {event_type} with digest {digest} (event {seq} of the log) is not \
         allowed by the TCB reference"
    )]
    EventNotAllowed {
        /// The PCR.
        pcr: u8,
        /// The event type's TCG name (or `0x...` when unknown).
        event_type: String,
        /// The event's digest in the pinned bank, hex.
        digest: String,
        /// Sequence number of the event in the log.
        seq: usize,
    },
    /// The IMA measurement list does not parse.
    #[error("the IMA measurement list is malformed: {0}")]
    ImaLogMalformed(ImaError),
    /// The IMA measurement list does not replay to the quoted PCR 10 (or PCR 10 is not quoted).
    #[error("the IMA measurement list does not match the quote: {0}")]
    ImaLogMismatch(ImaError),
    /// The license binds a runtime policy but the evidence carries no IMA measurement list.
    #[error(
        "the license requires runtime integrity (an IMA runtime policy) but the evidence carries \
         no IMA measurement list; boot the guest with `ima_policy=tcb ima_template=ima-ng`, run \
         the runtime as root (it reads /sys/kernel/security/ima/binary_runtime_measurements) and \
         reach the TPM through the kernel (device:/dev/tpmrm0)"
    )]
    ImaLogMissing,
    /// A file measured under a runtime-policy pattern has a digest the policy does not list.
    #[error(
        "runtime integrity: {shown} was measured with {alg} digest {digest}{v} (IMA entry \
         {entry}), which the license's runtime policy does not allow for that path",
        shown = crate::text::escape_controls(path),
        v = if *violation { " (an IMA violation: measured while open for writing)" } else { "" }
    )]
    RuntimeNotAllowed {
        /// Entry number in the IMA list (0-based).
        entry: usize,
        /// The path IMA recorded (raw; escape before printing).
        path: String,
        /// The file digest algorithm IMA used.
        alg: String,
        /// The file digest, hex.
        digest: String,
        /// Whether the entry is a violation record.
        violation: bool,
    },
}

/// One allowed kind of event in a pinned PCR: an event type and the digests (in the pins' bank)
/// an event of that type may carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedEvents {
    /// The event type: its TCG name (`EV_EFI_BOOT_SERVICES_APPLICATION`) or `0x` + 8 hex digits.
    #[serde(rename = "type", with = "event_type_serde")]
    pub event_type: u32,
    /// Allowed digests, lower-case hex.
    #[serde(with = "hex_list")]
    pub digests: Vec<Vec<u8>>,
}

/// Event pins of a TCB reference: for each pinned PCR, the events it may contain.
///
/// JSON: `{"bank": "sha256", "pcrs": {"4": [{"type": "EV_EFI_BOOT_SERVICES_APPLICATION",
/// "digests": ["<hex>", ...]}, ...], "9": [...]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventPins {
    /// The bank the digests are in (the quoted bank).
    pub bank: HashAlg,
    /// Pinned PCR -> the allowed events.
    pub pcrs: BTreeMap<u8, Vec<AllowedEvents>>,
}

impl EventPins {
    /// Empty pins for `bank`.
    pub fn new(bank: HashAlg) -> Self {
        EventPins {
            bank,
            pcrs: BTreeMap::new(),
        }
    }

    /// The pinned PCRs, ascending.
    pub fn pinned_pcrs(&self) -> Vec<u8> {
        self.pcrs.keys().copied().collect()
    }

    /// Allows `digest` for events of `event_type` in `pcr` (idempotent; keeps the lists sorted).
    pub fn allow(&mut self, pcr: u8, event_type: u32, digest: &[u8]) {
        let kinds = self.pcrs.entry(pcr).or_default();
        let kind = match kinds.iter().position(|k| k.event_type == event_type) {
            Some(i) => &mut kinds[i],
            None => {
                kinds.push(AllowedEvents {
                    event_type,
                    digests: Vec::new(),
                });
                kinds.sort_by_key(|k| k.event_type);
                let i = kinds
                    .iter()
                    .position(|k| k.event_type == event_type)
                    .unwrap_or(0);
                &mut kinds[i]
            }
        };
        if let Err(at) = kind.digests.binary_search_by(|d| d.as_slice().cmp(digest)) {
            kind.digests.insert(at, digest.to_vec());
        }
    }

    /// Allows every event `log` extends into each of `pcrs` (a reference boot's log). Fails if
    /// the log has no digests of the pins' bank.
    pub fn allow_log(&mut self, log: &EventLog, pcrs: &[u8]) -> Result<(), MeasuredBootError> {
        if !log.has_bank(self.bank) {
            return Err(MeasuredBootError::EventLogBank(self.bank));
        }
        for &pcr in pcrs {
            // A pinned PCR with no event still pins: nothing may be extended into it.
            self.pcrs.entry(pcr).or_default();
            for e in log.events_for(u32::from(pcr)) {
                let d = e
                    .digest(self.bank)
                    .ok_or(MeasuredBootError::EventLogMalformed(
                        EventLogError::MissingDigest {
                            event: e.seq,
                            bank: self.bank,
                        },
                    ))?;
                self.allow(pcr, e.event_type, d);
            }
        }
        Ok(())
    }

    /// Checks the pins: PCR indices 0..=23, digests of the bank's length, lists sorted and
    /// unique, at most [`MAX_PINNED_DIGESTS`] digests in all. Returns a message on failure.
    pub fn validate(&self) -> Result<(), String> {
        if self.pcrs.is_empty() {
            return Err("event pins name no PCR".into());
        }
        let mut total = 0usize;
        for (pcr, kinds) in &self.pcrs {
            if *pcr > 23 {
                return Err(format!("pinned PCR {pcr} is not 0..=23"));
            }
            let mut prev: Option<u32> = None;
            for k in kinds {
                if prev.is_some_and(|p| p >= k.event_type) {
                    return Err(format!(
                        "PCR {pcr}: event type {} listed twice or out of order",
                        event_type_label(k.event_type)
                    ));
                }
                prev = Some(k.event_type);
                if k.digests.is_empty() {
                    return Err(format!(
                        "PCR {pcr}: event type {} lists no digest",
                        event_type_label(k.event_type)
                    ));
                }
                for (i, d) in k.digests.iter().enumerate() {
                    if d.len() != self.bank.digest_len() {
                        return Err(format!(
                            "PCR {pcr}: a {} digest is {} bytes; {} digests are {} bytes",
                            event_type_label(k.event_type),
                            d.len(),
                            self.bank,
                            self.bank.digest_len()
                        ));
                    }
                    if i > 0 && k.digests[i - 1] >= *d {
                        return Err(format!(
                            "PCR {pcr}: {} digests listed twice or out of order",
                            event_type_label(k.event_type)
                        ));
                    }
                }
                total += k.digests.len();
            }
        }
        if total > MAX_PINNED_DIGESTS {
            return Err(format!(
                "{total} pinned digests; at most {MAX_PINNED_DIGESTS}"
            ));
        }
        Ok(())
    }

    fn allows(&self, pcr: u8, event_type: u32, digest: &[u8]) -> bool {
        self.pcrs.get(&pcr).is_some_and(|kinds| {
            kinds
                .iter()
                .filter(|k| k.event_type == event_type)
                .any(|k| k.digests.iter().any(|d| d.as_slice() == digest))
        })
    }
}

/// An event type as the pins show it: the TCG name, or `0x` + 8 hex digits when unknown.
pub fn event_type_label(t: u32) -> String {
    match event_type_name(t) {
        "unknown" => format!("{t:#010x}"),
        name => name.to_string(),
    }
}

/// Parses an event type: a TCG name (`EV_IPL`) or a number (`0x0000000d`, `13`).
pub fn parse_event_type(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u32::from_str_radix(h, 16).ok();
    }
    if let Ok(n) = s.parse::<u32>() {
        return Some(n);
    }
    // Every name the TCG PC Client profile defines is in `event_type_name`; search its domain.
    (0u32..=0x12)
        .chain(0x8000_0000..=0x8000_0010)
        .chain(0x8000_00E0..=0x8000_00E2)
        .find(|&t| event_type_name(t) != "unknown" && event_type_name(t).eq_ignore_ascii_case(s))
}

mod event_type_serde {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::event_type_label(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_event_type(&s).ok_or_else(|| {
            D::Error::custom(format!(
                "unknown event type {s:?}: use a TCG name (EV_EFI_BOOT_SERVICES_APPLICATION) or 0x + 8 hex digits"
            ))
        })
    }
}

mod hex_list {
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(hex::encode).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|h| hex::decode(h).map_err(D::Error::custom))
            .collect()
    }
}

/// What the measured-boot check established (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeasuredBootReport {
    /// Quoted PCRs the event log was replayed to.
    pub replayed: Vec<u8>,
    /// PCRs accepted by their event pins.
    pub pinned: Vec<u8>,
    /// When the evidence carried an IMA list: how many of its first entries replay to the
    /// quoted PCR 10 (entries after them were appended after the quote).
    pub ima_entries: Option<usize>,
}

/// Checks the event log, the event pins and the IMA list of verified evidence against the
/// quoted `pcrs` (see the module documentation for the order and each refusal).
pub fn check(
    pcrs: &PcrSet,
    event_log: Option<&[u8]>,
    ima_log: Option<&[u8]>,
    pins: Option<&EventPins>,
) -> Result<MeasuredBootReport, MeasuredBootError> {
    let too_large = |what, size, max| MeasuredBootError::LogTooLarge { what, size, max };
    if let Some(l) = event_log.filter(|l| l.len() > MAX_EVENT_LOG_BYTES) {
        return Err(too_large(
            "firmware event log",
            l.len(),
            MAX_EVENT_LOG_BYTES,
        ));
    }
    if let Some(l) = ima_log.filter(|l| l.len() > MAX_IMA_LOG_BYTES) {
        return Err(too_large(
            "IMA measurement list",
            l.len(),
            MAX_IMA_LOG_BYTES,
        ));
    }
    let mut report = MeasuredBootReport::default();
    let log = match event_log {
        Some(bytes) => Some(EventLog::parse(bytes).map_err(MeasuredBootError::EventLogMalformed)?),
        None => None,
    };
    let replay = match &log {
        Some(log) => {
            let replay = log.replay(pcrs.bank).map_err(|e| match e {
                EventLogError::BankNotInLog(b) => MeasuredBootError::EventLogBank(b),
                e => MeasuredBootError::EventLogMalformed(e),
            })?;
            for (&index, value) in &pcrs.values {
                if let Some(r) = replay.get(&u32::from(index)) {
                    if r != value {
                        return Err(MeasuredBootError::EventLogMismatch { pcr: index });
                    }
                    report.replayed.push(index);
                }
            }
            Some(replay)
        }
        None => None,
    };
    if let Some(pins) = pins {
        check_pins(pcrs, log.as_ref(), replay.as_ref(), pins)?;
        report.pinned = pins.pinned_pcrs();
    }
    if let Some(bytes) = ima_log {
        let ima = ImaLog::parse(bytes).map_err(MeasuredBootError::ImaLogMalformed)?;
        report.ima_entries = Some(check_ima(pcrs, &ima)?);
    }
    Ok(report)
}

/// The shortest prefix of `ima` that replays to the quoted PCR 10 (see [`check`]).
pub(super) fn covered_prefix(pcrs: &PcrSet, ima: &ImaLog) -> Result<usize, MeasuredBootError> {
    check_ima(pcrs, ima)
}

/// The shortest prefix of `ima` that replays to the quoted PCR 10: the list only grows, and an
/// Attester reads it after quoting, so entries appended in between are not covered by the
/// quote (and are not trusted: the caller gets how many are).
fn check_ima(pcrs: &PcrSet, ima: &ImaLog) -> Result<usize, MeasuredBootError> {
    let pcr = super::ima::IMA_PCR;
    let quoted = pcrs
        .values
        .get(&(pcr as u8))
        .ok_or(MeasuredBootError::ImaLogMismatch(ImaError::PcrNotQuoted(
            pcr,
        )))?;
    let bank = pcrs.bank;
    let mut value = vec![0u8; bank.digest_len()];
    if value == *quoted {
        return Ok(0);
    }
    let ones = vec![0xffu8; bank.digest_len()];
    for (i, e) in ima.entries.iter().enumerate() {
        if e.pcr != pcr {
            return Err(MeasuredBootError::ImaLogMalformed(ImaError::WrongPcr {
                entry: i,
                pcr: e.pcr,
                expected: pcr,
            }));
        }
        let digest = if e.is_violation() {
            ones.clone()
        } else {
            bank.digest(&e.template_data)
        };
        value = bank.digest_parts([value.as_slice(), digest.as_slice()]);
        if value == *quoted {
            return Ok(i + 1);
        }
    }
    Err(MeasuredBootError::ImaLogMismatch(ImaError::ReplayMismatch(
        pcr,
    )))
}

fn check_pins(
    pcrs: &PcrSet,
    log: Option<&EventLog>,
    replay: Option<&BTreeMap<u32, Vec<u8>>>,
    pins: &EventPins,
) -> Result<(), MeasuredBootError> {
    let (Some(log), Some(replay)) = (log, replay) else {
        return Err(MeasuredBootError::EventLogMissing {
            pcrs: pins.pinned_pcrs(),
        });
    };
    if pins.bank != pcrs.bank {
        return Err(MeasuredBootError::PinBankMismatch {
            pins: pins.bank,
            quoted: pcrs.bank,
        });
    }
    for &pcr in pins.pcrs.keys() {
        let quoted = pcrs
            .values
            .get(&pcr)
            .ok_or(MeasuredBootError::PinnedPcrNotQuoted(pcr))?;
        // The replay above compared every PCR the log extends; a pinned PCR the log never
        // extends must still hold its reset value, or something was extended outside the log.
        if !replay.contains_key(&u32::from(pcr)) {
            let mut initial = vec![0u8; pcrs.bank.digest_len()];
            if pcr == 0 {
                if let Some(l) = log.startup_locality {
                    if let Some(last) = initial.last_mut() {
                        *last = l;
                    }
                }
            }
            if *quoted != initial {
                return Err(MeasuredBootError::EventLogMismatch { pcr });
            }
        }
        for e in log.events.iter().filter(|e| e.pcr == u32::from(pcr)) {
            if e.event_type == EV_NO_ACTION {
                continue;
            }
            // `replay` succeeded in this bank, so every extending event has its digest.
            let digest = e.digest(pins.bank).unwrap_or_default();
            if !pins.allows(pcr, e.event_type, digest) {
                return Err(MeasuredBootError::EventNotAllowed {
                    pcr,
                    event_type: event_type_label(e.event_type),
                    digest: hex::encode(digest),
                    seq: e.seq,
                });
            }
        }
    }
    Ok(())
}

/// Where Linux exposes the firmware's event log of the platform TPM (`/dev/tpm0`).
pub const EVENT_LOG_PATH: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

/// Where Linux exposes the IMA measurement list (binary, the format [`ImaLog::parse`] reads).
pub const IMA_LOG_PATH: &str = "/sys/kernel/security/ima/binary_runtime_measurements";

/// The logs an Attester sends with its quote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeasurementLogs {
    /// The firmware event log (crypto-agile), if the platform has one.
    pub event_log: Option<Vec<u8>>,
    /// The IMA measurement list, if asked for and present.
    pub ima_log: Option<Vec<u8>>,
}

/// Whether a TCTI string names the kernel's TPM device (`device:/dev/tpm0`,
/// `device:/dev/tpmrm0`, `libtss2-tcti-device.so.0:...`): only then is the event log in
/// securityfs the log of the quoting TPM.
pub fn tcti_is_kernel_device(tcti: &str) -> bool {
    let name = tcti.split(':').next().unwrap_or("").trim();
    name == "device" || name.starts_with("libtss2-tcti-device")
}

/// Reads one securityfs log, bounded: `Ok(None)` when it does not exist or this process may not
/// read it (the Verifier then has no log: a TCB that pins events refuses with
/// `EventLogMissing`), an error when it is larger than `limit`.
fn read_log(path: &std::path::Path, limit: usize, what: &str) -> crate::Result<Option<Vec<u8>>> {
    use crate::fsutil::{read_bounded, BoundedReadError};
    match read_bounded(path, limit) {
        Ok(b) => Ok(Some(b)),
        Err(BoundedReadError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            Ok(None)
        }
        Err(BoundedReadError::Io(e)) => Err(crate::Error::io(path, e)),
        Err(BoundedReadError::Directory) => Err(crate::Error::InvalidInput(format!(
            "{} is a directory; expected the {what}",
            path.display()
        ))),
        Err(BoundedReadError::TooLarge) => Err(crate::Error::InvalidInput(format!(
            "the {what} at {} is larger than {} KiB, the most the attestation protocol carries",
            path.display(),
            limit >> 10
        ))),
    }
}

/// Reads what an Attester sends with a quote: the firmware event log at `event_log` (kept only
/// if it parses as a crypto-agile log: SeaBIOS writes a SHA-1-format log, which the Verifier
/// could not replay) and, when `with_ima`, the IMA list at `ima_log`. Read the IMA list *after*
/// quoting: it only grows, and the Verifier accepts a list whose first entries replay to the
/// quoted PCR 10 (entries appended after the quote are not covered by it).
pub fn read_measurement_logs(
    event_log: &std::path::Path,
    ima_log: Option<&std::path::Path>,
) -> crate::Result<MeasurementLogs> {
    let event_log = read_log(event_log, MAX_EVENT_LOG_BYTES, "firmware event log")?
        .filter(|b| EventLog::parse(b).is_ok());
    let ima_log = match ima_log {
        Some(p) => read_log(p, MAX_IMA_LOG_BYTES, "IMA measurement list")?,
        None => None,
    };
    Ok(MeasurementLogs { event_log, ima_log })
}
