//! The attester's error type.

use ovsa_core::attest::{self, HashAlg};
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;

use crate::EkKind;

/// Attester errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string could not be parsed.
    #[error("invalid TCTI {tcti:?}: {reason}")]
    BadTcti {
        /// The string given.
        tcti: String,
        /// Why it was refused.
        reason: String,
    },
    /// The TPM could not be reached (no device, simulator not running, wrong port).
    #[error("TPM unreachable via {tcti:?}: {cause}")]
    Unreachable {
        /// The TCTI used.
        tcti: String,
        /// The library error (in the message; not also a `source()`, so chain reporters print it
        /// once).
        cause: tss_esapi::Error,
    },
    /// An NV index that must exist is not defined.
    #[error("NV index {0:#010x} is not defined")]
    NvIndexMissing(u32),
    /// No EK certificate of the requested kind is provisioned.
    #[error("no {0:?} EK certificate provisioned in NV")]
    NoEkCertificate(EkKind),
    /// The TPM is in dictionary-attack lockout.
    #[error("TPM is in dictionary-attack lockout")]
    Lockout,
    /// PCRs changed between every PCR read and quote attempt.
    #[error("PCRs kept changing while quoting ({0} attempts)")]
    PcrsUnstable(u32),
    /// The TPM has no allocated PCR bank of this hash algorithm (e.g. sha1 on a sha256-only
    /// TPM). Found with TPM2_GetCapability(TPM_CAP_PCRS) before any PCR is read.
    #[error(
        "the TPM has no {bank} PCR bank (its PCR banks: {}); use one of those or allocate the bank (tpm2_pcrallocate)",
        bank_list(.available)
    )]
    PcrBankNotAllocated {
        /// The bank asked for.
        bank: HashAlg,
        /// The banks the TPM has allocated (non-empty selections).
        available: Vec<HashAlg>,
    },
    /// A PCR index the TPM's bank does not have.
    #[error("the TPM's {bank} PCR bank has no PCR {pcr} (it has PCRs {})", index_ranges(.present))]
    PcrNotPresent {
        /// The bank.
        bank: HashAlg,
        /// The PCR index asked for.
        pcr: u8,
        /// The PCR indices the bank has.
        present: Vec<u8>,
    },
    /// TPM2_PCR_Read did not return the PCRs asked for within a bounded number of calls.
    #[error(
        "the TPM returned no value for PCR(s) {} of its {bank} bank after {calls} TPM2_PCR_Read calls",
        index_ranges(.missing)
    )]
    PcrReadIncomplete {
        /// The bank.
        bank: HashAlg,
        /// The PCRs still missing.
        missing: Vec<u8>,
        /// TPM2_PCR_Read calls made.
        calls: u32,
    },
    /// The host-evidence blob in NV is unreadable.
    #[error("host evidence: {0}")]
    HostBlob(attest::HostBlobError),
    /// A cached AK blob is unusable.
    #[error("AK blob invalid: {0}")]
    BadAkBlob(String),
    /// A request this attester does not support.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// Writing tpm2-tools files failed.
    #[error("I/O: {0}")]
    Io(std::io::Error),
    /// A TPM command failed.
    #[error("TPM {op} failed: {cause}")]
    Command {
        /// The operation.
        op: &'static str,
        /// The library error (in the message only, as for `Unreachable`).
        cause: tss_esapi::Error,
    },
}

// Causes are part of each message; none is also returned by `source()`, so a reporter that
// walks the chain does not print a cause twice (the `From`s below are written out for that:
// thiserror's `#[from]` would make the field a source).
impl From<attest::HostBlobError> for TpmError {
    fn from(e: attest::HostBlobError) -> Self {
        TpmError::HostBlob(e)
    }
}

impl From<std::io::Error> for TpmError {
    fn from(e: std::io::Error) -> Self {
        TpmError::Io(e)
    }
}

impl TpmError {
    pub(crate) fn cmd(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
        move |source| {
            if let tss_esapi::Error::Tss2Error(rc) = source {
                if rc.kind() == Some(Tss2ResponseCodeKind::Lockout) {
                    return TpmError::Lockout;
                }
            }
            TpmError::Command { op, cause: source }
        }
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, TpmError>;

fn bank_list(banks: &[HashAlg]) -> String {
    if banks.is_empty() {
        return "none".into();
    }
    banks
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `0-7,10` style list of PCR indices.
fn index_ranges(pcrs: &[u8]) -> String {
    if pcrs.is_empty() {
        return "none".into();
    }
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < pcrs.len() {
        let mut j = i;
        while j + 1 < pcrs.len() && pcrs[j + 1] == pcrs[j].wrapping_add(1) {
            j += 1;
        }
        out.push(if i == j {
            pcrs[i].to_string()
        } else {
            format!("{}-{}", pcrs[i], pcrs[j])
        });
        i = j + 1;
    }
    out.join(",")
}

pub(crate) fn is_handle_error(e: &tss_esapi::Error) -> bool {
    matches!(e, tss_esapi::Error::Tss2Error(rc) if rc.kind() == Some(Tss2ResponseCodeKind::Handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a chain reporter (anyhow's `{:#}`, tracing's error chains) prints: each message, then
    /// each `source()`'s.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut cur = e.source();
        while let Some(s) = cur {
            out.push_str(": ");
            out.push_str(&s.to_string());
            cur = s.source();
        }
        out
    }

    #[test]
    fn a_chain_reporter_prints_each_cause_once() {
        let io = TpmError::from(std::io::Error::other("disk on fire"));
        assert_eq!(
            chain(&io).matches("disk on fire").count(),
            1,
            "{}",
            chain(&io)
        );
        let cmd = TpmError::Command {
            op: "Quote",
            cause: tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::InvalidParam),
        };
        let text = chain(&cmd);
        assert_eq!(text, cmd.to_string(), "{text}");
    }
}
