//! The Linux IMA measurement list (`/sys/kernel/security/ima/binary_runtime_measurements`):
//! parse, replay into PCR 10, and the file measurements it records.
//!
//! Parse, don't validate: [`ImaLog::parse`] gives typed entries or an [`ImaError`] with the byte
//! offset; [`ImaLog::replay`] recomputes the PCR the list claims, to be compared with a verified
//! quote ([`ImaLog::check_quoted`]); [`ImaEntry::file`] yields the (path, file digest) of
//! `ima-ng` / `ima-sig` entries for a runtime policy.
//!
//! Binary layout per entry (integers in the kernel's native byte order, little-endian on the x86
//! and arm64 guests this project targets; `ima_canonical_fmt` makes them little-endian
//! everywhere): `pcr u32, template_digest [20] (SHA-1 of the template data), name_len u32,
//! name[name_len], data_len u32, data[data_len]`. `ima-ng` data: `u32 len, "<alg>:\0" ||
//! file digest` then `u32 len, path '\0'`; `ima-sig` adds `u32 len, signature`.
//!
//! Replay in bank `H`: `PCR = H(PCR || H(template data))`, starting from zero; a *violation*
//! entry (a file measured while open for writing: all-zero template digest) extends all-ones
//! (`0xff` * digest length) instead, as the kernel does.

use super::le_reader::{LeReader, Short};
use super::pcr::PcrSet;
use super::wire::HashAlg;

/// Limits that keep a hostile list from costing more than a real one.
pub mod limits {
    /// Bytes of one list (a guest that ran a few hundred programs: 50-200 KiB).
    pub const MAX_LOG_BYTES: usize = 16 << 20;
    /// Entries in one list.
    pub const MAX_ENTRIES: usize = 100_000;
    /// Bytes of a template name.
    pub const MAX_TEMPLATE_NAME: u32 = 255;
    /// Bytes of one entry's template data.
    pub const MAX_TEMPLATE_DATA: u32 = 64 << 10;
}

/// Why an IMA measurement list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImaError {
    /// The list ends inside an entry.
    #[error("IMA measurement list truncated at byte {offset}: {what} needs {needed} more bytes")]
    Truncated {
        /// Byte offset of the entry.
        offset: usize,
        /// Which field.
        what: &'static str,
        /// Missing bytes.
        needed: usize,
    },
    /// A field is outside its limits.
    #[error("IMA measurement list: {what} at byte {offset} is out of bounds ({value})")]
    OutOfBounds {
        /// Which field.
        what: &'static str,
        /// Byte offset of the entry.
        offset: usize,
        /// The value found.
        value: u64,
    },
    /// A template this verifier cannot hash or read (only `ima-ng` and `ima-sig`).
    #[error("IMA entry {entry} uses template {name:?}; boot the guest with ima_template=ima-ng")]
    UnsupportedTemplate {
        /// Entry number (0-based).
        entry: usize,
        /// The template name.
        name: String,
    },
    /// An `ima-ng`/`ima-sig` entry whose fields do not parse.
    #[error("IMA entry {entry}: malformed {what}")]
    MalformedTemplate {
        /// Entry number.
        entry: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// The entry's SHA-1 template digest is not the SHA-1 of its template data.
    #[error("IMA entry {entry}: template digest does not match its template data")]
    TemplateDigestMismatch {
        /// Entry number.
        entry: usize,
    },
    /// An entry extends another PCR than the one replayed.
    #[error("IMA entry {entry} extends PCR {pcr}, not the IMA PCR {expected}")]
    WrongPcr {
        /// Entry number.
        entry: usize,
        /// The PCR the entry names.
        pcr: u32,
        /// The PCR being replayed.
        expected: u32,
    },
    /// The quote does not cover the IMA PCR.
    #[error("the quote does not cover PCR {0}, which the IMA list extends")]
    PcrNotQuoted(u32),
    /// Replaying the list does not give the quoted PCR value.
    #[error("replaying the IMA measurement list does not give the quoted value of PCR {0}")]
    ReplayMismatch(u32),
}

/// The PCR IMA extends by default (`CONFIG_IMA_MEASURE_PCR_IDX`).
pub const IMA_PCR: u32 = 10;

/// One measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaEntry {
    /// The PCR it extends.
    pub pcr: u32,
    /// SHA-1 of the template data (all zero for a violation).
    pub template_digest: [u8; 20],
    /// Template name (`ima-ng`, `ima-sig`).
    pub template_name: String,
    /// Template data (what the PCR extend hashes).
    pub template_data: Vec<u8>,
    /// File digest algorithm name as IMA writes it (`sha256`, ...).
    pub file_alg: String,
    /// File digest.
    pub file_digest: Vec<u8>,
    /// The measured file's path (as the kernel saw it; not trustworthy for files outside the
    /// policy: it is whatever name the file was opened under).
    pub path: String,
}

impl ImaEntry {
    /// Whether this is a violation record (measured while open for writing or similar).
    pub fn is_violation(&self) -> bool {
        self.template_digest == [0u8; 20]
    }

    /// The file measurement: path and (algorithm, digest).
    pub fn file(&self) -> (&str, &str, &[u8]) {
        (&self.path, &self.file_alg, &self.file_digest)
    }
}

/// A parsed IMA measurement list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaLog {
    /// Entries in list order.
    pub entries: Vec<ImaEntry>,
}

impl From<Short> for ImaError {
    fn from(s: Short) -> Self {
        ImaError::Truncated {
            offset: s.offset,
            what: s.what,
            needed: s.needed,
        }
    }
}

/// Splits template data into its length-prefixed fields.
fn fields(data: &[u8], entry: usize) -> Result<Vec<&[u8]>, ImaError> {
    let mut out = Vec::new();
    let mut r = LeReader::new(data);
    while !r.done() {
        let len = r
            .u32("field length", 0)
            .map_err(|_| ImaError::MalformedTemplate {
                entry,
                what: "field length",
            })?;
        let f = r
            .take(len as usize, "field", 0)
            .map_err(|_| ImaError::MalformedTemplate {
                entry,
                what: "field longer than the template data",
            })?;
        out.push(f);
    }
    Ok(out)
}

/// Parses a `d-ng` field: `"<alg>:\0" || digest`.
fn parse_dng(f: &[u8], entry: usize) -> Result<(String, Vec<u8>), ImaError> {
    let bad = |what| ImaError::MalformedTemplate { entry, what };
    let colon = f
        .iter()
        .position(|&b| b == b':')
        .ok_or(bad("file digest (no algorithm prefix)"))?;
    if f.get(colon + 1) != Some(&0) {
        return Err(bad("file digest (no NUL after the algorithm)"));
    }
    let alg = std::str::from_utf8(&f[..colon])
        .ok()
        .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .ok_or(bad("file digest algorithm name"))?;
    Ok((alg.to_string(), f[colon + 2..].to_vec()))
}

/// Parses an `n-ng` field: the path and a terminating NUL.
fn parse_nng(f: &[u8], entry: usize) -> Result<String, ImaError> {
    let name = f.strip_suffix(&[0]).unwrap_or(f);
    String::from_utf8(name.to_vec()).map_err(|_| ImaError::MalformedTemplate {
        entry,
        what: "file name (not UTF-8)",
    })
}

impl ImaLog {
    /// Parses a binary IMA measurement list (`ima-ng` / `ima-sig` templates).
    pub fn parse(bytes: &[u8]) -> Result<ImaLog, ImaError> {
        if bytes.len() > limits::MAX_LOG_BYTES {
            return Err(ImaError::OutOfBounds {
                what: "list size",
                offset: 0,
                value: bytes.len() as u64,
            });
        }
        let mut r = LeReader::new(bytes);
        let mut entries = Vec::new();
        while !r.done() {
            let offset = r.pos();
            let entry = entries.len();
            if entry >= limits::MAX_ENTRIES {
                return Err(ImaError::OutOfBounds {
                    what: "number of entries",
                    offset,
                    value: entry as u64 + 1,
                });
            }
            let pcr = r.u32("pcr", offset)?;
            let mut template_digest = [0u8; 20];
            template_digest.copy_from_slice(r.take(20, "template digest", offset)?);
            let name_len = r.u32("template name length", offset)?;
            if name_len == 0 || name_len > limits::MAX_TEMPLATE_NAME {
                return Err(ImaError::OutOfBounds {
                    what: "template name length",
                    offset,
                    value: u64::from(name_len),
                });
            }
            let name = r.take(name_len as usize, "template name", offset)?;
            let template_name = String::from_utf8_lossy(name).into_owned();
            if template_name != "ima-ng" && template_name != "ima-sig" {
                return Err(ImaError::UnsupportedTemplate {
                    entry,
                    name: template_name,
                });
            }
            let data_len = r.u32("template data length", offset)?;
            if data_len > limits::MAX_TEMPLATE_DATA {
                return Err(ImaError::OutOfBounds {
                    what: "template data length",
                    offset,
                    value: u64::from(data_len),
                });
            }
            let template_data = r.take(data_len as usize, "template data", offset)?.to_vec();
            let f = fields(&template_data, entry)?;
            let expected_fields = if template_name == "ima-sig" { 3 } else { 2 };
            if f.len() != expected_fields {
                return Err(ImaError::MalformedTemplate {
                    entry,
                    what: "number of template fields",
                });
            }
            let (file_alg, file_digest) = parse_dng(f[0], entry)?;
            let path = parse_nng(f[1], entry)?;
            let e = ImaEntry {
                pcr,
                template_digest,
                template_name,
                template_data,
                file_alg,
                file_digest,
                path,
            };
            if !e.is_violation()
                && HashAlg::Sha1.digest(&e.template_data) != e.template_digest.as_slice()
            {
                return Err(ImaError::TemplateDigestMismatch { entry });
            }
            entries.push(e);
        }
        Ok(ImaLog { entries })
    }

    /// Replays the list into `pcr` in `bank`. Every entry must name `pcr`.
    pub fn replay(&self, bank: HashAlg, pcr: u32) -> Result<Vec<u8>, ImaError> {
        let len = bank.digest_len();
        let mut value = vec![0u8; len];
        let ones = vec![0xffu8; len];
        for (i, e) in self.entries.iter().enumerate() {
            if e.pcr != pcr {
                return Err(ImaError::WrongPcr {
                    entry: i,
                    pcr: e.pcr,
                    expected: pcr,
                });
            }
            let digest = if e.is_violation() {
                ones.clone()
            } else {
                bank.digest(&e.template_data)
            };
            value = bank.digest_parts([value.as_slice(), digest.as_slice()]);
        }
        Ok(value)
    }

    /// Checks the list against a verified quote: the quote must cover [`IMA_PCR`] and its value
    /// must be the list's replay.
    pub fn check_quoted(&self, quoted: &PcrSet) -> Result<(), ImaError> {
        let index = IMA_PCR as u8;
        let value = quoted
            .values
            .get(&index)
            .ok_or(ImaError::PcrNotQuoted(IMA_PCR))?;
        if self.replay(quoted.bank, IMA_PCR)? != *value {
            return Err(ImaError::ReplayMismatch(IMA_PCR));
        }
        Ok(())
    }
}

/// Builds a binary IMA list (tests and fuzz seeds).
#[derive(Debug, Clone, Default)]
pub struct ImaLogBuilder {
    bytes: Vec<u8>,
}

impl ImaLogBuilder {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an `ima-ng` entry for a file with contents `content` at `path` (sha256).
    pub fn file(self, path: &str, content: &[u8]) -> Self {
        let digest = HashAlg::Sha256.digest(content);
        self.entry(path, "sha256", &digest, false)
    }

    /// Appends an `ima-ng` entry with the given file digest; `violation` zeroes the template
    /// digest as the kernel does for a violation.
    pub fn entry(mut self, path: &str, alg: &str, digest: &[u8], violation: bool) -> Self {
        let mut dng = format!("{alg}:").into_bytes();
        dng.push(0);
        dng.extend_from_slice(digest);
        let mut nng = path.as_bytes().to_vec();
        nng.push(0);
        let mut data = Vec::new();
        for f in [&dng, &nng] {
            data.extend_from_slice(&(f.len() as u32).to_le_bytes());
            data.extend_from_slice(f);
        }
        let td = if violation {
            vec![0u8; 20]
        } else {
            HashAlg::Sha1.digest(&data)
        };
        self.bytes.extend_from_slice(&IMA_PCR.to_le_bytes());
        self.bytes.extend_from_slice(&td);
        self.bytes.extend_from_slice(&6u32.to_le_bytes());
        self.bytes.extend_from_slice(b"ima-ng");
        self.bytes
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(&data);
        self
    }

    /// The list's bytes.
    pub fn build(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        ImaLogBuilder::new()
            .entry("boot_aggregate", "sha256", &[0x11; 32], false)
            .file("/usr/bin/ovms", b"server")
            .file("/opt/ovsa/lib/libovsaruntime.so", b"plugin")
            .entry("/tmp/written-while-open", "sha256", &[0; 32], true)
            .build()
    }

    #[test]
    fn parses_entries_and_files() {
        let log = ImaLog::parse(&sample()).unwrap();
        assert_eq!(log.entries.len(), 4);
        let (path, alg, digest) = log.entries[2].file();
        assert_eq!(path, "/opt/ovsa/lib/libovsaruntime.so");
        assert_eq!(alg, "sha256");
        assert_eq!(digest, HashAlg::Sha256.digest(b"plugin").as_slice());
        assert!(log.entries[3].is_violation());
    }

    #[test]
    fn replay_extends_template_hashes_and_ones_for_violations() {
        let log = ImaLog::parse(&sample()).unwrap();
        for bank in [HashAlg::Sha1, HashAlg::Sha256] {
            let mut expect = vec![0u8; bank.digest_len()];
            for e in &log.entries[..3] {
                expect = bank.digest_parts([expect.as_slice(), &bank.digest(&e.template_data)]);
            }
            expect = bank.digest_parts([expect.as_slice(), &vec![0xff; bank.digest_len()]]);
            assert_eq!(log.replay(bank, IMA_PCR).unwrap(), expect);
        }
        let mut quoted = PcrSet::new(HashAlg::Sha256);
        quoted
            .values
            .insert(10, log.replay(HashAlg::Sha256, 10).unwrap());
        log.check_quoted(&quoted).unwrap();
        quoted.values.get_mut(&10).unwrap()[5] ^= 1;
        assert_eq!(log.check_quoted(&quoted), Err(ImaError::ReplayMismatch(10)));
        quoted.values.clear();
        assert_eq!(log.check_quoted(&quoted), Err(ImaError::PcrNotQuoted(10)));
    }

    #[test]
    fn a_removed_entry_breaks_the_replay() {
        let full = ImaLog::parse(&sample()).unwrap();
        let mut cut = full.clone();
        cut.entries.remove(2); // hide the plugin's measurement
        assert_ne!(
            full.replay(HashAlg::Sha256, 10).unwrap(),
            cut.replay(HashAlg::Sha256, 10).unwrap()
        );
    }

    #[test]
    fn truncations_and_edits_are_errors_not_panics() {
        let log = sample();
        for n in 0..log.len() {
            let _ = ImaLog::parse(&log[..n]);
        }
        // An edited file digest no longer matches the SHA-1 template digest. Layout of the
        // end: digest (32) | n-ng length (4) | "/bin/sh\0" (8).
        let mut bad = ImaLogBuilder::new().file("/bin/sh", b"sh").build();
        let n = bad.len();
        bad[n - 13] ^= 1;
        assert_eq!(
            ImaLog::parse(&bad),
            Err(ImaError::TemplateDigestMismatch { entry: 0 })
        );
        // Another template.
        let mut other = Vec::new();
        other.extend_from_slice(&10u32.to_le_bytes());
        other.extend_from_slice(&[1; 20]);
        other.extend_from_slice(&3u32.to_le_bytes());
        other.extend_from_slice(b"ima");
        other.extend_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            ImaLog::parse(&other),
            Err(ImaError::UnsupportedTemplate { .. })
        ));
        // A huge template data length.
        let mut huge = Vec::new();
        huge.extend_from_slice(&10u32.to_le_bytes());
        huge.extend_from_slice(&[1; 20]);
        huge.extend_from_slice(&6u32.to_le_bytes());
        huge.extend_from_slice(b"ima-ng");
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            ImaLog::parse(&huge),
            Err(ImaError::OutOfBounds { .. })
        ));
        // An entry for another PCR cannot be replayed into PCR 10.
        let mut pcr11 = ImaLogBuilder::new().file("/bin/sh", b"sh").build();
        pcr11[0] = 11;
        let l = ImaLog::parse(&pcr11).unwrap();
        assert!(matches!(
            l.replay(HashAlg::Sha256, 10),
            Err(ImaError::WrongPcr { pcr: 11, .. })
        ));
    }
}
