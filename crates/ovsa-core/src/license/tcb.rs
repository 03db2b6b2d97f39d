//! The TCB reference: the PCR values a machine must report, for the vTPM inside the VM and the
//! host TPM below it, signed by the ISV.

use serde::{Deserialize, Serialize};

use crate::encoding::hexbytes;
use crate::envelope::{Artifact, Signed};
use crate::error::{Error, Result};
use crate::identity::Keystore;

/// Highest PCR index of a PC-client TPM.
pub const MAX_PCR_INDEX: u8 = 23;

/// Largest `host_max_age_seconds` of a TCB reference: ten years.
pub const MAX_HOST_AGE_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// A PCR bank (hash algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PcrBank {
    /// SHA-1 (legacy).
    Sha1,
    /// SHA-256 (the default).
    Sha256,
    /// SHA-384.
    Sha384,
}

impl PcrBank {
    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            PcrBank::Sha1 => 20,
            PcrBank::Sha256 => 32,
            PcrBank::Sha384 => 48,
        }
    }

    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            PcrBank::Sha1 => "sha1",
            PcrBank::Sha256 => "sha256",
            PcrBank::Sha384 => "sha384",
        }
    }
}

impl PcrBank {
    /// The Verifier's hash algorithm for this bank.
    pub fn to_attest(self) -> crate::attest::HashAlg {
        match self {
            PcrBank::Sha1 => crate::attest::HashAlg::Sha1,
            PcrBank::Sha256 => crate::attest::HashAlg::Sha256,
            PcrBank::Sha384 => crate::attest::HashAlg::Sha384,
        }
    }

    /// The bank of a Verifier hash algorithm.
    pub fn from_attest(alg: crate::attest::HashAlg) -> Result<Self> {
        match alg {
            crate::attest::HashAlg::Sha1 => Ok(PcrBank::Sha1),
            crate::attest::HashAlg::Sha256 => Ok(PcrBank::Sha256),
            crate::attest::HashAlg::Sha384 => Ok(PcrBank::Sha384),
            other => Err(Error::InvalidInput(format!(
                "PCR bank {other:?} is not supported in TCB references"
            ))),
        }
    }
}

impl std::str::FromStr for PcrBank {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sha1" => Ok(PcrBank::Sha1),
            "sha256" => Ok(PcrBank::Sha256),
            "sha384" => Ok(PcrBank::Sha384),
            _ => Err(Error::InvalidInput(format!(
                "unknown PCR bank '{s}': use sha256 (default), sha384 or sha1"
            ))),
        }
    }
}

/// One expected PCR value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrValue {
    /// PCR index (0..=23).
    pub index: u8,
    /// Expected value (hex in files).
    #[serde(with = "hexbytes")]
    pub value: Vec<u8>,
}

/// Expected values of some PCRs of one bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrSet {
    /// The bank.
    pub bank: PcrBank,
    /// The values, by ascending index.
    pub pcrs: Vec<PcrValue>,
}

impl PcrSet {
    /// Builds a set, sorting by index and checking it.
    pub fn new(bank: PcrBank, mut pcrs: Vec<PcrValue>) -> Result<Self> {
        pcrs.sort_by_key(|p| p.index);
        let set = PcrSet { bank, pcrs };
        set.validate("PCR set")?;
        Ok(set)
    }

    /// Checks indices (ascending, unique, <= 23) and value lengths.
    pub fn validate(&self, what: &'static str) -> Result<()> {
        if self.pcrs.is_empty() {
            return Err(Error::malformed(what, "no PCR values"));
        }
        self.validate_entries(what)
    }

    /// [`PcrSet::validate`] without the "at least one value" rule (a TCB reference whose vTPM
    /// PCRs are all pinned by events lists no values).
    pub fn validate_entries(&self, what: &'static str) -> Result<()> {
        let mut prev: Option<u8> = None;
        for p in &self.pcrs {
            if p.index > MAX_PCR_INDEX {
                return Err(Error::malformed(
                    what,
                    format!("PCR index {} > {MAX_PCR_INDEX}", p.index),
                ));
            }
            if prev.is_some_and(|q| q >= p.index) {
                return Err(Error::malformed(
                    what,
                    format!("PCR {} listed twice or out of order", p.index),
                ));
            }
            if p.value.len() != self.bank.digest_len() {
                return Err(Error::malformed(
                    what,
                    format!(
                        "PCR {} value is {} bytes; a {} PCR is {} bytes",
                        p.index,
                        p.value.len(),
                        self.bank.name(),
                        self.bank.digest_len()
                    ),
                ));
            }
            prev = Some(p.index);
        }
        Ok(())
    }

    /// The same values in the Verifier's representation.
    pub fn to_attest(&self) -> crate::attest::PcrSet {
        let mut set = crate::attest::PcrSet::new(self.bank.to_attest());
        for p in &self.pcrs {
            set.values.insert(p.index, p.value.clone());
        }
        set
    }

    /// Builds a set from the Verifier's representation (e.g. PCRs read from a live TPM).
    pub fn from_attest(set: &crate::attest::PcrSet) -> Result<Self> {
        let bank = PcrBank::from_attest(set.bank)?;
        let pcrs = set
            .values
            .iter()
            .map(|(index, value)| PcrValue {
                index: *index,
                value: value.clone(),
            })
            .collect();
        PcrSet::new(bank, pcrs)
    }

    /// The expected value of PCR `index`, if listed.
    pub fn get(&self, index: u8) -> Option<&[u8]> {
        self.pcrs
            .iter()
            .find(|p| p.index == index)
            .map(|p| p.value.as_slice())
    }
}

/// Parses `INDEX=HEX` (as given on the command line).
pub fn parse_pcr_arg(arg: &str) -> Result<PcrValue> {
    let (i, v) = arg.split_once('=').ok_or_else(|| {
        Error::InvalidInput(format!(
            "PCR value '{arg}' is not INDEX=HEX (example: 0=3d45...)"
        ))
    })?;
    let index = i
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|i| *i <= MAX_PCR_INDEX)
        .ok_or_else(|| Error::InvalidInput(format!("PCR index '{i}' is not 0..=23")))?;
    let v = v.trim();
    let v = v
        .strip_prefix("0x")
        .or_else(|| v.strip_prefix("0X"))
        .unwrap_or(v);
    let value =
        hex::decode(v).map_err(|e| Error::InvalidInput(format!("PCR {index} value: {e}")))?;
    Ok(PcrValue { index, value })
}

/// Parses the output of `tpm2_pcrread` (YAML-like: `sha256:` then `  0 : 0x...` lines), returning
/// one set per bank found.
pub fn parse_tpm2_pcrread(text: &str) -> Result<Vec<PcrSet>> {
    let mut sets: Vec<(PcrBank, Vec<PcrValue>)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(bank) = t.strip_suffix(':') {
            sets.push((bank.parse()?, Vec::new()));
            continue;
        }
        let (i, v) = t.split_once(':').ok_or_else(|| {
            Error::InvalidInput(format!(
                "line {}: expected 'INDEX : 0xVALUE' or 'BANK:'",
                n + 1
            ))
        })?;
        let pv = parse_pcr_arg(&format!("{}={}", i.trim(), v.trim()))?;
        sets.last_mut()
            .ok_or_else(|| {
                Error::InvalidInput(format!("line {}: PCR value before any bank line", n + 1))
            })?
            .1
            .push(pv);
    }
    sets.into_iter().map(|(b, v)| PcrSet::new(b, v)).collect()
}

/// Body of a TCB reference (`.tcb`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcbReference {
    /// Name of this reference (e.g. "prod-vm-2026-11").
    pub name: String,
    /// Expected vTPM (guest) PCRs.
    pub vtpm: PcrSet,
    /// Expected host TPM PCRs, when host evidence is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<PcrSet>,
    /// Maximum age of the host evidence, in seconds: the service refuses a host quote it first
    /// saw (it, or a later quote of the same host TPM reset) longer ago than this
    /// (`host_evidence_stale`). Absent: no limit (and references signed without it verify
    /// unchanged). Setting it requires host evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_max_age_seconds: Option<u64>,
    /// The vTPMs allowed to attest for a license sold with this reference: EKs under these CAs
    /// or these enrolled EKs (set per customer by `ovsatool sale --ek-ca/--ek-cert`). Absent: any
    /// vTPM whose EK chains to a CA the license service trusts (references and licenses signed
    /// before the field verify unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtpm_ek: Option<crate::attest::EkBinding>,
    /// Event pins for vTPM PCRs (`docs/ATTESTATION.md` §10): each pinned PCR is accepted when
    /// the firmware event log replays to its quoted value and every event in it is one of the
    /// listed (type, digest) pairs; its value is not listed in `vtpm`. Absent: every vTPM PCR is
    /// checked by value (and references signed without it verify unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<crate::attest::EventPins>,
    /// The runtime policy bound by `ovsatool sale --runtime-policy` (`docs/ATTESTATION.md`
    /// §11): PCR 10 is quoted and the IMA list checked against it. Absent: no runtime check
    /// (references and licenses signed without it verify unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<crate::attest::RuntimePolicy>,
    /// Creation time, RFC 3339.
    pub created: String,
}

impl TcbReference {
    /// The reference values the Verifier checks quotes against.
    pub fn reference_values(&self) -> crate::attest::ReferenceValues {
        crate::attest::ReferenceValues {
            vtpm: self.vtpm.to_attest(),
            host: self.host.as_ref().map(PcrSet::to_attest),
            events: self.events.clone(),
            runtime: self.runtime.clone(),
        }
    }

    /// The vTPM PCRs a quote must cover: the value-pinned ones, the event-pinned ones and, with
    /// a runtime policy, PCR 10 (IMA), ascending.
    pub fn quoted_pcrs(&self) -> Vec<u8> {
        let mut v: Vec<u8> = self.vtpm.pcrs.iter().map(|p| p.index).collect();
        if let Some(e) = &self.events {
            v.extend(e.pinned_pcrs());
        }
        if self.runtime.is_some() {
            v.push(crate::attest::ima::IMA_PCR as u8);
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

impl TcbReference {
    /// The license's copy of `tcb` bound to the vTPMs `binding` allows (added to any binding the
    /// reference already carries), signed again by `isv`, which must be the key that signed
    /// `tcb`: `ovsatool sale --ek-ca/--ek-cert`.
    pub fn bind_ek(
        tcb: &Signed<TcbReference>,
        binding: &crate::attest::EkBinding,
        isv: &Keystore,
    ) -> Result<Signed<TcbReference>> {
        super::master::require_same_key("TCB reference", tcb.signer(), isv)?;
        let mut body = tcb.body().clone();
        body.vtpm_ek = Some(match &body.vtpm_ek {
            Some(have) => have.merged(binding),
            None => binding.clone(),
        });
        Signed::sign(body, isv)
    }
}

impl Artifact for TcbReference {
    const TYPE: &'static str = "tcb-reference";
    const VERSION: u64 = 1;

    fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.len() > 256 {
            return Err(Error::malformed(
                "TCB reference",
                "name must be 1..=256 bytes",
            ));
        }
        match &self.events {
            None => self.vtpm.validate("TCB reference (vTPM)")?,
            Some(pins) => {
                self.vtpm.validate_entries("TCB reference (vTPM)")?;
                pins.validate()
                    .map_err(|e| Error::malformed("TCB reference (event pins)", e))?;
                if pins.bank != self.vtpm.bank.to_attest() {
                    return Err(Error::malformed(
                        "TCB reference (event pins)",
                        format!(
                            "the pins are {} digests but the vTPM PCRs are {}; use one bank",
                            pins.bank,
                            self.vtpm.bank.name()
                        ),
                    ));
                }
                if let Some(p) = pins
                    .pinned_pcrs()
                    .into_iter()
                    .find(|p| self.vtpm.get(*p).is_some())
                {
                    return Err(Error::malformed(
                        "TCB reference (event pins)",
                        format!("PCR {p} is pinned both by value and by events; pin it one way"),
                    ));
                }
            }
        }
        if let Some(h) = &self.host {
            h.validate("TCB reference (host)")?;
        }
        if let Some(age) = self.host_max_age_seconds {
            if age == 0 || age > MAX_HOST_AGE_SECONDS {
                return Err(Error::malformed(
                    "TCB reference",
                    format!(
                        "host_max_age_seconds is {age}; it must be 1..={MAX_HOST_AGE_SECONDS} (10 years)"
                    ),
                ));
            }
        }
        if let Some(r) = &self.runtime {
            r.validate()
                .map_err(|e| Error::malformed("TCB reference (runtime policy)", e))?;
        }
        if let Some(b) = &self.vtpm_ek {
            b.validate()
                .map_err(|e| Error::malformed("TCB reference", format!("vtpm_ek: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcrread_format() {
        let text = "sha256:\n  0 : 0x0000000000000000000000000000000000000000000000000000000000000000\n  7 : 0x1111111111111111111111111111111111111111111111111111111111111111\nsha1:\n  0 : 0x0000000000000000000000000000000000000000\n";
        let sets = parse_tpm2_pcrread(text).unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].bank, PcrBank::Sha256);
        assert_eq!(sets[0].get(7).unwrap(), &[0x11; 32]);
        assert!(parse_tpm2_pcrread("  0 : 0x00").is_err());
        assert!(parse_tpm2_pcrread("sha256:\n  0 : 0x00\n").is_err());
    }

    #[test]
    fn sets_are_checked() {
        let v = |index, n| PcrValue {
            index,
            value: vec![0; n],
        };
        assert!(PcrSet::new(PcrBank::Sha256, vec![v(1, 32), v(0, 32)]).is_ok());
        assert!(PcrSet::new(PcrBank::Sha256, vec![v(1, 32), v(1, 32)]).is_err());
        assert!(PcrSet::new(PcrBank::Sha256, vec![v(24, 32)]).is_err());
        assert!(PcrSet::new(PcrBank::Sha256, vec![v(0, 20)]).is_err());
        assert!(PcrSet::new(PcrBank::Sha256, vec![]).is_err());
        assert!(parse_pcr_arg("3=0xAB").is_ok());
        assert!(parse_pcr_arg("3:AB").is_err());
        assert!(parse_pcr_arg("30=AB").is_err());
    }

    /// `host_max_age_seconds` is optional and left out when absent, so a reference signed before
    /// it existed serialises (and so verifies) byte for byte; when present it is checked.
    #[test]
    fn host_max_age_is_optional_and_checked() {
        let vtpm = PcrSet::new(
            PcrBank::Sha256,
            vec![PcrValue {
                index: 0,
                value: vec![0; 32],
            }],
        )
        .unwrap();
        let mut tcb = TcbReference {
            name: "t".into(),
            vtpm,
            host: None,
            host_max_age_seconds: None,
            vtpm_ek: None,
            events: None,
            runtime: None,
            created: "2026-01-01T00:00:00Z".into(),
        };
        let json = serde_json::to_string(&tcb).unwrap();
        assert!(!json.contains("host_max_age_seconds"), "{json}");
        let back: TcbReference = serde_json::from_str(&json).unwrap();
        assert_eq!(back, tcb);
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        tcb.host_max_age_seconds = Some(3600);
        tcb.validate().unwrap();
        let json = serde_json::to_string(&tcb).unwrap();
        assert!(json.contains("\"host_max_age_seconds\":3600"), "{json}");
        assert_eq!(serde_json::from_str::<TcbReference>(&json).unwrap(), tcb);
        for bad in [0, MAX_HOST_AGE_SECONDS + 1] {
            tcb.host_max_age_seconds = Some(bad);
            let e = tcb.validate().unwrap_err().to_string();
            assert!(e.contains("host_max_age_seconds"), "{e}");
        }
    }
}
