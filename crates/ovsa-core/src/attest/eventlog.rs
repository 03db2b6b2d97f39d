//! The firmware's measured-boot event log: TCG PC Client Platform Firmware Profile, crypto-agile
//! format (what Linux exposes at `/sys/kernel/security/tpm0/binary_bios_measurements`).
//!
//! Parse, don't validate: [`EventLog::parse`] turns the bytes into typed events or a precise
//! [`EventLogError`] naming the byte offset; [`EventLog::replay`] recomputes the PCR values the
//! log claims; [`EventLog::check_quoted`] compares them with the values a verified quote reports,
//! so an event in the log can be trusted exactly as far as the quote that covers its PCR.
//!
//! Layout (all integers little-endian):
//! - The first event is a `TCG_PCR_EVENT` (SHA-1 format): `pcrIndex u32, eventType u32,
//!   digest [20], eventSize u32, event[eventSize]`, of type `EV_NO_ACTION` whose data is the
//!   `TCG_EfiSpecIDEvent`: `signature "Spec ID Event03\0", platformClass u32, specVersionMinor u8,
//!   specVersionMajor u8, specErrata u8, uintnSize u8, numberOfAlgorithms u32,
//!   {algorithmId u16, digestSize u16} * n, vendorInfoSize u8, vendorInfo`.
//! - Every further event is a `TCG_PCR_EVENT2`: `pcrIndex u32, eventType u32, count u32,
//!   {hashAlg u16, digest[size of hashAlg from the header]} * count, eventSize u32,
//!   event[eventSize]`.
//! - Replay: every PCR starts at zero, except that an `EV_NO_ACTION` event with the signature
//!   `"StartupLocality\0"` sets the last byte of PCR 0's initial value to the locality; each
//!   event other than `EV_NO_ACTION` extends `PCR[pcrIndex] = H(PCR[pcrIndex] || digest)` in
//!   every bank it carries a digest for.

use std::collections::BTreeMap;

use super::le_reader::{LeReader, Short};
use super::pcr::PcrSet;
use super::wire::HashAlg;

/// `EV_NO_ACTION`: informational, never extended.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// `EV_SEPARATOR`.
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// `EV_EVENT_TAG`: a tagged event (Linux's EFI stub uses it for the initrd and the command line).
pub const EV_EVENT_TAG: u32 = 0x0000_0006;
/// `EV_IPL`: initial program loader (e.g. GRUB's command line).
pub const EV_IPL: u32 = 0x0000_000D;
/// `EV_EFI_VARIABLE_DRIVER_CONFIG`: a Secure Boot variable (PK, KEK, db, dbx, SecureBoot).
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
/// `EV_EFI_VARIABLE_BOOT`.
pub const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
/// `EV_EFI_BOOT_SERVICES_APPLICATION`: an EFI application, e.g. the kernel's EFI stub.
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// `EV_EFI_VARIABLE_AUTHORITY`: the db entry that authorised an image.
pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00E0;

/// Limits that keep a hostile log from costing more than a real one.
pub mod limits {
    /// Bytes of one whole log (real OVMF logs are 20-60 KiB).
    pub const MAX_LOG_BYTES: usize = 4 << 20;
    /// Events in one log.
    pub const MAX_EVENTS: usize = 10_000;
    /// Digests in one event (one per bank).
    pub const MAX_DIGESTS: u32 = 8;
    /// Algorithms in the Spec ID header.
    pub const MAX_ALGORITHMS: u32 = 8;
    /// Bytes of one event's data.
    pub const MAX_EVENT_DATA: u32 = 1 << 20;
}

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";

/// Why an event log was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    /// The log ends inside a structure.
    #[error("event log truncated at byte {offset}: {what} needs {needed} more bytes")]
    Truncated {
        /// Byte offset where the structure starts.
        offset: usize,
        /// Which structure.
        what: &'static str,
        /// How many bytes were missing.
        needed: usize,
    },
    /// The log is empty or does not start with the crypto-agile Spec ID event.
    #[error("not a crypto-agile TCG event log: {0}")]
    NotCryptoAgile(&'static str),
    /// A structure holds a value outside its limits.
    #[error("event log: {what} at byte {offset} is out of bounds ({value})")]
    OutOfBounds {
        /// Which field.
        what: &'static str,
        /// Byte offset of the event.
        offset: usize,
        /// The value found.
        value: u64,
    },
    /// An event carries a digest for an algorithm the header did not declare.
    #[error("event {event} carries a digest of undeclared algorithm {alg:#06x}")]
    UndeclaredAlgorithm {
        /// Sequence number of the event (0 = the Spec ID event).
        event: usize,
        /// TPM_ALG_ID.
        alg: u16,
    },
    /// An event lacks the digest of a bank the log declares (replay of that bank impossible).
    #[error("event {event} has no {bank} digest")]
    MissingDigest {
        /// Sequence number of the event.
        event: usize,
        /// The bank.
        bank: HashAlg,
    },
    /// The log has no digests for the quoted bank.
    #[error("the event log has no {0} digests; quote a bank the firmware measures into")]
    BankNotInLog(HashAlg),
    /// Replaying the log does not give the quoted value of a PCR: the log was edited, or events
    /// were extended outside it.
    #[error("replaying the event log does not give the quoted value of PCR {pcr}")]
    ReplayMismatch {
        /// The PCR.
        pcr: u8,
    },
}

/// The header of a crypto-agile log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecId {
    /// Platform class (0 = client, 1 = server).
    pub platform_class: u32,
    /// (major, minor, errata) of the spec the log follows.
    pub spec_version: (u8, u8, u8),
    /// Size of UINTN in bytes (4 or 8).
    pub uintn_size: u8,
    /// Declared algorithms: (TPM_ALG_ID, digest size).
    pub algorithms: Vec<(u16, u16)>,
}

/// One digest of an event: the bank it extends (if this verifier knows the algorithm) and the
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDigest {
    /// TPM_ALG_ID.
    pub alg_id: u16,
    /// The digest.
    pub digest: Vec<u8>,
}

/// One event (`TCG_PCR_EVENT2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Sequence number in the log (the Spec ID header is 0).
    pub seq: usize,
    /// The PCR it extends.
    pub pcr: u32,
    /// Event type (`EV_*`).
    pub event_type: u32,
    /// One digest per bank.
    pub digests: Vec<EventDigest>,
    /// The event data (what was measured, or a description of it).
    pub data: Vec<u8>,
}

impl Event {
    /// The digest of `bank`, if the event carries one.
    pub fn digest(&self, bank: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|d| d.alg_id == bank.tpm_alg_id())
            .map(|d| d.digest.as_slice())
    }

    /// The event type's name from the TCG PC Client spec, or `"unknown"`.
    pub fn type_name(&self) -> &'static str {
        event_type_name(self.event_type)
    }
}

/// The name of an event type (`EV_*`) from the TCG PC Client Platform Firmware Profile.
pub fn event_type_name(t: u32) -> &'static str {
    match t {
        0x0 => "EV_PREBOOT_CERT",
        0x1 => "EV_POST_CODE",
        0x2 => "EV_UNUSED",
        EV_NO_ACTION => "EV_NO_ACTION",
        EV_SEPARATOR => "EV_SEPARATOR",
        0x5 => "EV_ACTION",
        EV_EVENT_TAG => "EV_EVENT_TAG",
        0x7 => "EV_S_CRTM_CONTENTS",
        0x8 => "EV_S_CRTM_VERSION",
        0x9 => "EV_CPU_MICROCODE",
        0xA => "EV_PLATFORM_CONFIG_FLAGS",
        0xB => "EV_TABLE_OF_DEVICES",
        0xC => "EV_COMPACT_HASH",
        EV_IPL => "EV_IPL",
        0xE => "EV_IPL_PARTITION_DATA",
        0xF => "EV_NONHOST_CODE",
        0x10 => "EV_NONHOST_CONFIG",
        0x11 => "EV_NONHOST_INFO",
        0x12 => "EV_OMIT_BOOT_DEVICE_EVENTS",
        EV_EFI_VARIABLE_DRIVER_CONFIG => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        EV_EFI_VARIABLE_BOOT => "EV_EFI_VARIABLE_BOOT",
        EV_EFI_BOOT_SERVICES_APPLICATION => "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
        0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x8000_0006 => "EV_EFI_GPT_EVENT",
        0x8000_0007 => "EV_EFI_ACTION",
        0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
        0x8000_000A => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000_000B => "EV_EFI_HANDOFF_TABLES2",
        0x8000_000C => "EV_EFI_VARIABLE_BOOT2",
        0x8000_0010 => "EV_EFI_HCRTM_EVENT",
        EV_EFI_VARIABLE_AUTHORITY => "EV_EFI_VARIABLE_AUTHORITY",
        0x8000_00E1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x8000_00E2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        _ => "unknown",
    }
}

/// A parsed crypto-agile event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// The Spec ID header.
    pub spec: SpecId,
    /// The locality of the `StartupLocality` event, if the log has one.
    pub startup_locality: Option<u8>,
    /// The events after the header, in log order.
    pub events: Vec<Event>,
}

impl From<Short> for EventLogError {
    fn from(s: Short) -> Self {
        EventLogError::Truncated {
            offset: s.offset,
            what: s.what,
            needed: s.needed,
        }
    }
}

fn parse_spec_id(data: &[u8], offset: usize) -> Result<SpecId, EventLogError> {
    let mut r = LeReader::new(data);
    let sig = r.take(16, "Spec ID signature", offset)?;
    if sig != SPEC_ID_SIGNATURE {
        return Err(EventLogError::NotCryptoAgile(
            "the first event is not the \"Spec ID Event03\" header (a SHA-1-only log?)",
        ));
    }
    let platform_class = r.u32("platformClass", offset)?;
    let minor = r.u8("specVersionMinor", offset)?;
    let major = r.u8("specVersionMajor", offset)?;
    let errata = r.u8("specErrata", offset)?;
    let uintn_size = r.u8("uintnSize", offset)?;
    let n = r.u32("numberOfAlgorithms", offset)?;
    if n == 0 || n > limits::MAX_ALGORITHMS {
        return Err(EventLogError::OutOfBounds {
            what: "numberOfAlgorithms",
            offset,
            value: u64::from(n),
        });
    }
    let mut algorithms = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let alg = r.u16("algorithmId", offset)?;
        let size = r.u16("digestSize", offset)?;
        if size == 0 || size > 64 {
            return Err(EventLogError::OutOfBounds {
                what: "digestSize",
                offset,
                value: u64::from(size),
            });
        }
        if let Some(known) = HashAlg::from_tpm_alg_id(alg) {
            if known.digest_len() != usize::from(size) {
                return Err(EventLogError::OutOfBounds {
                    what: "digestSize of a known algorithm",
                    offset,
                    value: u64::from(size),
                });
            }
        }
        algorithms.push((alg, size));
    }
    let vendor = usize::from(r.u8("vendorInfoSize", offset)?);
    r.take(vendor, "vendorInfo", offset)?;
    Ok(SpecId {
        platform_class,
        spec_version: (major, minor, errata),
        uintn_size,
        algorithms,
    })
}

impl EventLog {
    /// Parses a crypto-agile event log.
    pub fn parse(bytes: &[u8]) -> Result<EventLog, EventLogError> {
        if bytes.len() > limits::MAX_LOG_BYTES {
            return Err(EventLogError::OutOfBounds {
                what: "log size",
                offset: 0,
                value: bytes.len() as u64,
            });
        }
        if bytes.is_empty() {
            return Err(EventLogError::NotCryptoAgile("the log is empty"));
        }
        let mut r = LeReader::new(bytes);
        // The header event, in the SHA-1 TCG_PCR_EVENT format.
        let _pcr = r.u32("header pcrIndex", 0)?;
        let ty = r.u32("header eventType", 0)?;
        r.take(20, "header digest", 0)?;
        let size = r.u32("header eventSize", 0)?;
        if ty != EV_NO_ACTION {
            return Err(EventLogError::NotCryptoAgile(
                "the first event is not EV_NO_ACTION",
            ));
        }
        if size > limits::MAX_EVENT_DATA {
            return Err(EventLogError::OutOfBounds {
                what: "header eventSize",
                offset: 0,
                value: u64::from(size),
            });
        }
        let spec = parse_spec_id(r.take(size as usize, "Spec ID event", 0)?, 0)?;
        let mut events = Vec::new();
        let mut startup_locality = None;
        while !r.done() {
            let offset = r.pos();
            let seq = events.len() + 1;
            if events.len() >= limits::MAX_EVENTS {
                return Err(EventLogError::OutOfBounds {
                    what: "number of events",
                    offset,
                    value: events.len() as u64 + 1,
                });
            }
            let pcr = r.u32("pcrIndex", offset)?;
            let event_type = r.u32("eventType", offset)?;
            let count = r.u32("digest count", offset)?;
            if count > limits::MAX_DIGESTS {
                return Err(EventLogError::OutOfBounds {
                    what: "digest count",
                    offset,
                    value: u64::from(count),
                });
            }
            let mut digests = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let alg_id = r.u16("hashAlg", offset)?;
                let size = spec
                    .algorithms
                    .iter()
                    .find(|(a, _)| *a == alg_id)
                    .map(|(_, s)| usize::from(*s))
                    .ok_or(EventLogError::UndeclaredAlgorithm {
                        event: seq,
                        alg: alg_id,
                    })?;
                digests.push(EventDigest {
                    alg_id,
                    digest: r.take(size, "digest", offset)?.to_vec(),
                });
            }
            let size = r.u32("eventSize", offset)?;
            if size > limits::MAX_EVENT_DATA {
                return Err(EventLogError::OutOfBounds {
                    what: "eventSize",
                    offset,
                    value: u64::from(size),
                });
            }
            let data = r.take(size as usize, "event data", offset)?.to_vec();
            if event_type == EV_NO_ACTION
                && pcr == 0
                && data.len() == 17
                && data[..16] == STARTUP_LOCALITY_SIGNATURE[..]
            {
                startup_locality = Some(data[16]);
            }
            events.push(Event {
                seq,
                pcr,
                event_type,
                digests,
                data,
            });
        }
        Ok(EventLog {
            spec,
            startup_locality,
            events,
        })
    }

    /// Whether the header declares `bank`.
    pub fn has_bank(&self, bank: HashAlg) -> bool {
        self.spec
            .algorithms
            .iter()
            .any(|(a, _)| *a == bank.tpm_alg_id())
    }

    /// Replays the log in `bank`: the PCR values it claims, for every PCR it extends.
    pub fn replay(&self, bank: HashAlg) -> Result<BTreeMap<u32, Vec<u8>>, EventLogError> {
        if !self.has_bank(bank) {
            return Err(EventLogError::BankNotInLog(bank));
        }
        let len = bank.digest_len();
        let mut pcrs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for e in &self.events {
            if e.event_type == EV_NO_ACTION {
                continue;
            }
            let digest = e
                .digest(bank)
                .ok_or(EventLogError::MissingDigest { event: e.seq, bank })?;
            let cur = pcrs.entry(e.pcr).or_insert_with(|| {
                let mut init = vec![0u8; len];
                if e.pcr == 0 {
                    if let Some(l) = self.startup_locality {
                        init[len - 1] = l;
                    }
                }
                init
            });
            *cur = bank.digest_parts([cur.as_slice(), digest]);
        }
        Ok(pcrs)
    }

    /// Checks the log against PCR values a verified quote reports: every quoted PCR that the log
    /// extends must equal the log's replay. Returns the PCRs that were checked. PCRs the log does
    /// not touch are left to the TCB reference (e.g. PCR 10, which IMA extends).
    pub fn check_quoted(&self, quoted: &PcrSet) -> Result<Vec<u8>, EventLogError> {
        let replayed = self.replay(quoted.bank)?;
        let mut checked = Vec::new();
        for (&index, value) in &quoted.values {
            if let Some(r) = replayed.get(&u32::from(index)) {
                if r != value {
                    return Err(EventLogError::ReplayMismatch { pcr: index });
                }
                checked.push(index);
            }
        }
        Ok(checked)
    }

    /// The events that extend `pcr`, in log order.
    pub fn events_for(&self, pcr: u32) -> impl Iterator<Item = &Event> {
        self.events
            .iter()
            .filter(move |e| e.pcr == pcr && e.event_type != EV_NO_ACTION)
    }
}

/// Builds a crypto-agile log (tests, fuzz seeds, and tools that synthesise reference logs).
#[derive(Debug, Clone)]
pub struct EventLogBuilder {
    banks: Vec<HashAlg>,
    bytes: Vec<u8>,
}

impl EventLogBuilder {
    /// A log with the Spec ID header declaring `banks`.
    pub fn new(banks: &[HashAlg]) -> Self {
        let mut spec = Vec::new();
        spec.extend_from_slice(SPEC_ID_SIGNATURE);
        spec.extend_from_slice(&0u32.to_le_bytes()); // client
        spec.extend_from_slice(&[0, 2, 0, 2]); // minor, major, errata, uintnSize (2 = 64-bit)
        spec.extend_from_slice(&(banks.len() as u32).to_le_bytes());
        for b in banks {
            spec.extend_from_slice(&b.tpm_alg_id().to_le_bytes());
            spec.extend_from_slice(&(b.digest_len() as u16).to_le_bytes());
        }
        spec.push(0); // vendorInfoSize
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 20]);
        bytes.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&spec);
        EventLogBuilder {
            banks: banks.to_vec(),
            bytes,
        }
    }

    /// Appends an event whose digests are the hashes of `measured` in every bank.
    pub fn measure(self, pcr: u32, event_type: u32, measured: &[u8], data: &[u8]) -> Self {
        let digests: Vec<(HashAlg, Vec<u8>)> = self
            .banks
            .iter()
            .map(|b| (*b, b.digest(measured)))
            .collect();
        self.event(pcr, event_type, &digests, data)
    }

    /// Appends an event with the given digests.
    pub fn event(
        mut self,
        pcr: u32,
        event_type: u32,
        digests: &[(HashAlg, Vec<u8>)],
        data: &[u8],
    ) -> Self {
        self.bytes.extend_from_slice(&pcr.to_le_bytes());
        self.bytes.extend_from_slice(&event_type.to_le_bytes());
        self.bytes
            .extend_from_slice(&(digests.len() as u32).to_le_bytes());
        for (alg, d) in digests {
            self.bytes
                .extend_from_slice(&alg.tpm_alg_id().to_le_bytes());
            self.bytes.extend_from_slice(d);
        }
        self.bytes
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(data);
        self
    }

    /// Appends the `StartupLocality` event.
    pub fn startup_locality(self, locality: u8) -> Self {
        let mut data = STARTUP_LOCALITY_SIGNATURE.to_vec();
        data.push(locality);
        let zero: Vec<(HashAlg, Vec<u8>)> = self
            .banks
            .iter()
            .map(|b| (*b, vec![0u8; b.digest_len()]))
            .collect();
        self.event(0, EV_NO_ACTION, &zero, &data)
    }

    /// The log's bytes.
    pub fn build(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extend(bank: HashAlg, pcr: &[u8], d: &[u8]) -> Vec<u8> {
        bank.digest_parts([pcr, d])
    }

    fn sample() -> Vec<u8> {
        EventLogBuilder::new(&[HashAlg::Sha1, HashAlg::Sha256])
            .startup_locality(3)
            .measure(0, 0x8, b"crtm version", b"crtm version")
            .measure(4, EV_EFI_BOOT_SERVICES_APPLICATION, b"kernel image", b"")
            .measure(9, EV_EVENT_TAG, b"initrd", b"Linux initrd")
            .measure(0, EV_SEPARATOR, &[0, 0, 0, 0], &[0, 0, 0, 0])
            .build()
    }

    #[test]
    fn parses_and_replays_every_declared_bank() {
        let log = EventLog::parse(&sample()).unwrap();
        assert_eq!(log.spec.algorithms.len(), 2);
        assert_eq!(log.startup_locality, Some(3));
        assert_eq!(log.events.len(), 5);
        assert_eq!(
            log.events[2].type_name(),
            "EV_EFI_BOOT_SERVICES_APPLICATION"
        );
        for bank in [HashAlg::Sha1, HashAlg::Sha256] {
            let pcrs = log.replay(bank).unwrap();
            let mut p0 = vec![0u8; bank.digest_len()];
            p0[bank.digest_len() - 1] = 3;
            p0 = extend(bank, &p0, &bank.digest(b"crtm version"));
            p0 = extend(bank, &p0, &bank.digest(&[0, 0, 0, 0]));
            assert_eq!(pcrs[&0], p0);
            let p4 = extend(
                bank,
                &vec![0; bank.digest_len()],
                &bank.digest(b"kernel image"),
            );
            assert_eq!(pcrs[&4], p4);
            assert_eq!(pcrs.len(), 3);
        }
        assert_eq!(log.events_for(9).count(), 1);
    }

    #[test]
    fn check_quoted_compares_the_pcrs_the_log_extends() {
        let log = EventLog::parse(&sample()).unwrap();
        let replay = log.replay(HashAlg::Sha256).unwrap();
        let mut quoted = PcrSet::new(HashAlg::Sha256);
        for i in [0u8, 4, 9] {
            quoted.values.insert(i, replay[&u32::from(i)].clone());
        }
        quoted.values.insert(10, vec![7; 32]); // IMA's PCR: not in the firmware log
        assert_eq!(log.check_quoted(&quoted).unwrap(), vec![0, 4, 9]);
        quoted.values.get_mut(&4).unwrap()[0] ^= 1;
        assert_eq!(
            log.check_quoted(&quoted),
            Err(EventLogError::ReplayMismatch { pcr: 4 })
        );
        let sha384 = PcrSet::new(HashAlg::Sha384);
        assert_eq!(
            log.check_quoted(&sha384),
            Err(EventLogError::BankNotInLog(HashAlg::Sha384))
        );
    }

    #[test]
    fn an_edited_event_changes_the_replay() {
        let good = sample();
        let mut bad = good.clone();
        // Flip one byte of the last event's sha256 digest (its data is 4 bytes, then the
        // 4-byte size: the digest ends 8 bytes before the end).
        let n = bad.len();
        bad[n - 9] ^= 0x80;
        let a = EventLog::parse(&good)
            .unwrap()
            .replay(HashAlg::Sha256)
            .unwrap();
        let b = EventLog::parse(&bad)
            .unwrap()
            .replay(HashAlg::Sha256)
            .unwrap();
        assert_ne!(a[&0], b[&0]);
        assert_eq!(a[&4], b[&4]);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let log = sample();
        let mut boundaries = 0;
        for n in 0..log.len() {
            match EventLog::parse(&log[..n]) {
                Err(_) => {}
                // A cut exactly between two events is a shorter, valid log.
                Ok(l) => {
                    boundaries += 1;
                    assert!(l.events.len() < 5);
                }
            }
        }
        assert_eq!(boundaries, 5, "header + 4 complete prefixes");
    }

    #[test]
    fn malformed_headers_and_events_are_refused_with_their_reason() {
        assert!(matches!(
            EventLog::parse(&[]),
            Err(EventLogError::NotCryptoAgile(_))
        ));
        // A SHA-1-only (pre-crypto-agile) log: first event is not the Spec ID event.
        let mut sha1_log = sample();
        sha1_log[32] = b'X';
        assert!(matches!(
            EventLog::parse(&sha1_log),
            Err(EventLogError::NotCryptoAgile(_))
        ));
        // An event with a digest of an undeclared algorithm.
        let log = EventLogBuilder::new(&[HashAlg::Sha256])
            .event(0, 1, &[(HashAlg::Sha384, vec![0; 48])], b"")
            .build();
        assert!(matches!(
            EventLog::parse(&log),
            Err(EventLogError::UndeclaredAlgorithm { alg: 0x000c, .. })
        ));
        // A huge digest count.
        let mut log = EventLogBuilder::new(&[HashAlg::Sha256]).build();
        log.extend_from_slice(&0u32.to_le_bytes());
        log.extend_from_slice(&1u32.to_le_bytes());
        log.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            EventLog::parse(&log),
            Err(EventLogError::OutOfBounds {
                what: "digest count",
                ..
            })
        ));
        // A huge event size.
        let mut log = EventLogBuilder::new(&[HashAlg::Sha256]).build();
        log.extend_from_slice(&0u32.to_le_bytes());
        log.extend_from_slice(&1u32.to_le_bytes());
        log.extend_from_slice(&0u32.to_le_bytes());
        log.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            EventLog::parse(&log),
            Err(EventLogError::OutOfBounds {
                what: "eventSize",
                ..
            })
        ));
        // An event missing the digest of a declared bank cannot be replayed in that bank.
        let log = EventLogBuilder::new(&[HashAlg::Sha1, HashAlg::Sha256])
            .event(4, 1, &[(HashAlg::Sha1, vec![1; 20])], b"")
            .build();
        let log = EventLog::parse(&log).unwrap();
        assert!(log.replay(HashAlg::Sha1).is_ok());
        assert_eq!(
            log.replay(HashAlg::Sha256),
            Err(EventLogError::MissingDigest {
                event: 1,
                bank: HashAlg::Sha256
            })
        );
    }
}
