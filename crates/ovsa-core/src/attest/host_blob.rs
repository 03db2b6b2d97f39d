//! The host-evidence blob stored in the vTPM's NV memory (format v1), see `docs/ATTESTATION.md`.
//!
//! ```text
//! offset size  field
//! 0      4     magic "OVHE"
//! 4      2     version (u16 BE) = 1
//! 6      2     reserved = 0
//! 8      4     total length of the blob in bytes, header and checksum included (u32 BE)
//! 12     ...   five fields in this order, each u32 BE length + bytes:
//!              host EK certificate (DER), host AK public (TPMT_PUBLIC),
//!              quote (TPMS_ATTEST), signature (TPMT_SIGNATURE), PCR values (see below)
//! end-32 32    SHA-256 of every preceding byte
//! PCR values: u16 BE bank TPM_ALG_ID, u8 count, then count x (u8 PCR index, digest bytes)
//! ```
//! The blob is split over NV indices `0x01000000 + i` of at most 2048 bytes each.

use std::collections::BTreeMap;

use super::pcr::PcrSet;
use super::wire::HashAlg;

/// Magic of the host-evidence blob.
pub const HOST_BLOB_MAGIC: &[u8; 4] = b"OVHE";
/// Current (and only) format version.
pub const HOST_BLOB_VERSION: u16 = 1;
/// First NV index of the host evidence.
pub const HOST_EVIDENCE_NV_BASE: u32 = 0x0100_0000;
/// Largest NV index the blob is split into (TPM2_PT_NV_INDEX_MAX of common TPMs).
pub const NV_INDEX_MAX_SIZE: usize = 2048;
/// Upper bound on a blob (bounds the number of NV indices read).
pub const HOST_BLOB_MAX_SIZE: usize = 32 * NV_INDEX_MAX_SIZE;
/// Size of the fixed header.
pub const HOST_BLOB_HEADER_LEN: usize = 12;
const CHECKSUM_LEN: usize = 32;

/// Why a host-evidence blob could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostBlobError {
    /// No blob (the first NV index is not defined or empty).
    #[error("no host evidence present")]
    Missing,
    /// Wrong magic: not a host-evidence blob.
    #[error("not a host evidence blob (bad magic)")]
    BadMagic,
    /// A version this reader does not know.
    #[error("unsupported host evidence version {0}")]
    UnsupportedVersion(u16),
    /// Fewer bytes than the header announces.
    #[error("host evidence truncated: {have} of {need} bytes")]
    Truncated {
        /// Bytes available.
        have: usize,
        /// Bytes announced.
        need: usize,
    },
    /// The checksum does not match the content.
    #[error("host evidence checksum mismatch")]
    BadChecksum,
    /// Structurally invalid content.
    #[error("host evidence malformed: {0}")]
    Malformed(&'static str),
    /// Larger than [`HOST_BLOB_MAX_SIZE`].
    #[error("host evidence too large")]
    TooLarge,
}

/// Host evidence: what `host-quote` stores in the vTPM NV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEvidence {
    /// Host TPM EK certificate (DER).
    pub ek_cert: Vec<u8>,
    /// Host AK public area (marshalled TPMT_PUBLIC).
    pub ak_public: Vec<u8>,
    /// Host quote (marshalled TPMS_ATTEST).
    pub quote: Vec<u8>,
    /// Quote signature (marshalled TPMT_SIGNATURE).
    pub signature: Vec<u8>,
    /// The quoted host PCR values.
    pub pcrs: PcrSet,
}

impl HostEvidence {
    /// Encode as a v1 blob.
    pub fn encode(&self) -> Result<Vec<u8>, HostBlobError> {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(HOST_BLOB_MAGIC);
        out.extend_from_slice(&HOST_BLOB_VERSION.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes()); // patched below
        let mut pcrs = Vec::new();
        pcrs.extend_from_slice(&self.pcrs.bank.tpm_alg_id().to_be_bytes());
        let count = u8::try_from(self.pcrs.values.len())
            .map_err(|_| HostBlobError::Malformed("PCR count"))?;
        pcrs.push(count);
        for (i, v) in &self.pcrs.values {
            if v.len() != self.pcrs.bank.digest_len() {
                return Err(HostBlobError::Malformed("PCR value length"));
            }
            pcrs.push(*i);
            pcrs.extend_from_slice(v);
        }
        for field in [
            &self.ek_cert,
            &self.ak_public,
            &self.quote,
            &self.signature,
            &pcrs,
        ] {
            let len = u32::try_from(field.len()).map_err(|_| HostBlobError::TooLarge)?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field);
        }
        let total = out.len() + CHECKSUM_LEN;
        if total > HOST_BLOB_MAX_SIZE {
            return Err(HostBlobError::TooLarge);
        }
        out[8..12].copy_from_slice(&(total as u32).to_be_bytes());
        let sum = HashAlg::Sha256.digest(&out);
        out.extend_from_slice(&sum);
        Ok(out)
    }

    /// Decode and validate a blob (magic, version, length, checksum, structure). Bytes after the
    /// announced length are ignored (NV indices may be larger than the blob).
    pub fn decode(blob: &[u8]) -> Result<Self, HostBlobError> {
        let total = blob_total_len(blob)?;
        if blob.len() < total {
            return Err(HostBlobError::Truncated {
                have: blob.len(),
                need: total,
            });
        }
        let blob = &blob[..total];
        let (body, sum) = blob.split_at(total - CHECKSUM_LEN);
        let want = HashAlg::Sha256.digest(body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(want.as_slice(), sum)) {
            return Err(HostBlobError::BadChecksum);
        }
        let mut pos = HOST_BLOB_HEADER_LEN;
        let mut field = || -> Result<&[u8], HostBlobError> {
            let len_end = pos + 4;
            let lb = body
                .get(pos..len_end)
                .ok_or(HostBlobError::Malformed("field length"))?;
            let len = u32::from_be_bytes([lb[0], lb[1], lb[2], lb[3]]) as usize;
            let end = len_end
                .checked_add(len)
                .ok_or(HostBlobError::Malformed("field length"))?;
            let f = body
                .get(len_end..end)
                .ok_or(HostBlobError::Malformed("field overruns blob"))?;
            pos = end;
            Ok(f)
        };
        let ek_cert = field()?.to_vec();
        let ak_public = field()?.to_vec();
        let quote = field()?.to_vec();
        let signature = field()?.to_vec();
        let pcr_bytes = field()?;
        if pos != body.len() {
            return Err(HostBlobError::Malformed("trailing bytes"));
        }
        let pcrs = decode_pcrs(pcr_bytes)?;
        Ok(HostEvidence {
            ek_cert,
            ak_public,
            quote,
            signature,
            pcrs,
        })
    }
}

fn decode_pcrs(b: &[u8]) -> Result<PcrSet, HostBlobError> {
    if b.len() < 3 {
        return Err(HostBlobError::Malformed("PCR values"));
    }
    let bank = HashAlg::from_tpm_alg_id(u16::from_be_bytes([b[0], b[1]]))
        .ok_or(HostBlobError::Malformed("PCR bank"))?;
    let count = b[2] as usize;
    let dl = bank.digest_len();
    if b.len() != 3 + count * (1 + dl) {
        return Err(HostBlobError::Malformed("PCR values length"));
    }
    let mut values = BTreeMap::new();
    for chunk in b[3..].chunks_exact(1 + dl) {
        if values.insert(chunk[0], chunk[1..].to_vec()).is_some() {
            return Err(HostBlobError::Malformed("duplicate PCR"));
        }
    }
    Ok(PcrSet { bank, values })
}

/// From the first bytes of a blob (at least [`HOST_BLOB_HEADER_LEN`]), validate magic and version
/// and return the announced total length. Used by NV readers to know how many indices to read.
pub fn blob_total_len(head: &[u8]) -> Result<usize, HostBlobError> {
    if head.is_empty() || head.iter().all(|&b| b == 0xff) {
        return Err(HostBlobError::Missing);
    }
    if head.len() < HOST_BLOB_HEADER_LEN {
        return Err(HostBlobError::Truncated {
            have: head.len(),
            need: HOST_BLOB_HEADER_LEN,
        });
    }
    if &head[..4] != HOST_BLOB_MAGIC {
        return Err(HostBlobError::BadMagic);
    }
    let version = u16::from_be_bytes([head[4], head[5]]);
    if version != HOST_BLOB_VERSION {
        return Err(HostBlobError::UnsupportedVersion(version));
    }
    let total = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
    if total > HOST_BLOB_MAX_SIZE {
        return Err(HostBlobError::TooLarge);
    }
    if total < HOST_BLOB_HEADER_LEN + 5 * 4 + CHECKSUM_LEN {
        return Err(HostBlobError::Malformed("total length too small"));
    }
    Ok(total)
}

/// Number of NV indices a blob of `total` bytes occupies.
pub fn nv_index_count(total: usize) -> usize {
    total.div_ceil(NV_INDEX_MAX_SIZE)
}
