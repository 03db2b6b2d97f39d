//! tpm2-tools compatible files, so users can check a quote with the standard tools:
//!
//! ```sh
//! tpm2_checkquote -u ak.pub -m quote.msg -s quote.sig -f pcrs.bin -g sha256 -q <qualifying hex>
//! ```
//!
//! `pcrs.bin` is in tpm2-tools' own *serialized* PCR format (what `tpm2_quote -o` and
//! `tpm2_pcrread -F serialized -o` write, and what `tpm2_checkquote -f` reads when no `-l` is
//! given). Its layout is the in-memory layout of the tpm2-tss structures on a little-endian
//! 64-bit machine (tpm2-tools `lib/pcr.c`, `pcr_fwrite_serialized`):
//!
//! ```text
//! TPML_PCR_SELECTION   132 bytes: u32le count, 16 x TPMS_PCR_SELECTION
//!                      (u16le hash, u8 sizeofSelect, u8 pcrSelect[4], 1 pad byte)
//! u32le n              number of TPML_DIGEST that follow
//! n x TPML_DIGEST      532 bytes each: u32le count (<= 8), 8 x TPM2B_DIGEST
//!                      (u16le size, u8 buffer[64])
//! ```
//!
//! The digests follow the selection in order: banks in selection order, PCRs ascending, at most
//! 8 per TPML_DIGEST. (The raw "values" format, digests only, is what `tpm2_checkquote -l`
//! reads; tpm2-tools 5.4 mis-reads it for 8 or more PCRs, so it is not written here.)

use std::path::Path;

use crate::{QuoteOutput, Result, TpmError};
use ovsa_core::attest::{HashAlg, PcrSet};

/// Names of the files written by [`write_tpm2_tools_files`].
pub const FILES: [&str; 4] = ["quote.msg", "quote.sig", "pcrs.bin", "ak.pub"];

/// Size of a serialized TPML_PCR_SELECTION (tpm2-tss on x86-64/aarch64).
pub const PCR_SELECTION_SIZE: usize = 4 + 16 * 8;
/// Size of a serialized TPML_DIGEST.
pub const DIGEST_LIST_SIZE: usize = 4 + 8 * (2 + 64);
/// Largest serialized PCR file: every selectable PCR (32) of all 16 banks, 8 per list.
pub const MAX_SERIALIZED_SIZE: usize = PCR_SELECTION_SIZE + 4 + 64 * DIGEST_LIST_SIZE;

/// A serialized PCR file that is not in tpm2-tools' format.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PcrsFileError(String);

fn bad(msg: impl Into<String>) -> PcrsFileError {
    PcrsFileError(msg.into())
}

/// `pcrs` in tpm2-tools' serialized format (see the module documentation).
pub fn pcrs_serialized(pcrs: &PcrSet) -> Vec<u8> {
    let mut out = Vec::with_capacity(PCR_SELECTION_SIZE + 4 + 3 * DIGEST_LIST_SIZE);
    // TPML_PCR_SELECTION: one bank.
    out.extend_from_slice(&1u32.to_le_bytes());
    let mut select = [0u8; 4];
    for &i in pcrs.values.keys() {
        if let Some(b) = select.get_mut(usize::from(i / 8)) {
            *b |= 1 << (i % 8);
        }
    }
    out.extend_from_slice(&pcrs.bank.tpm_alg_id().to_le_bytes());
    out.push(3); // sizeofSelect: 24 PCRs, as TPMs report it
    out.extend_from_slice(&select);
    out.push(0); // padding
    out.resize(PCR_SELECTION_SIZE, 0);
    // The digests, 8 per TPML_DIGEST, in ascending PCR order (BTreeMap order).
    let values: Vec<&Vec<u8>> = pcrs.values.values().collect();
    let lists = values.chunks(8).collect::<Vec<_>>();
    out.extend_from_slice(&(lists.len() as u32).to_le_bytes());
    for list in lists {
        let start = out.len();
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for d in list {
            let mut buf = [0u8; 64];
            let n = d.len().min(64);
            buf[..n].copy_from_slice(&d[..n]);
            out.extend_from_slice(&(n as u16).to_le_bytes());
            out.extend_from_slice(&buf);
        }
        out.resize(start + DIGEST_LIST_SIZE, 0);
    }
    out
}

fn u16le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parse a tpm2-tools serialized PCR file (`tpm2_pcrread -F serialized -o`, `tpm2_quote -o`):
/// one [`PcrSet`] per bank with selected PCRs. Banks of hash algorithms this crate does not
/// know (e.g. sm3_256) are skipped. Every length and count is checked; the digests must match
/// the selection exactly.
pub fn parse_pcrs_serialized(b: &[u8]) -> std::result::Result<Vec<PcrSet>, PcrsFileError> {
    if b.len() < PCR_SELECTION_SIZE + 4 {
        return Err(bad(format!(
            "{} bytes: too short for tpm2-tools' serialized PCR format",
            b.len()
        )));
    }
    let banks = u32le(b, 0) as usize;
    if banks > 16 {
        return Err(bad(format!(
            "{banks} PCR banks in the selection (at most 16)"
        )));
    }
    let lists = u32le(b, PCR_SELECTION_SIZE) as usize;
    if lists > 64 || b.len() != PCR_SELECTION_SIZE + 4 + lists * DIGEST_LIST_SIZE {
        return Err(bad(format!(
            "{} bytes do not hold {lists} digest lists of tpm2-tools' serialized PCR format",
            b.len()
        )));
    }
    let mut digests: Vec<&[u8]> = Vec::new();
    for l in 0..lists {
        let at = PCR_SELECTION_SIZE + 4 + l * DIGEST_LIST_SIZE;
        let count = u32le(b, at) as usize;
        if count > 8 {
            return Err(bad(format!(
                "digest list {l} holds {count} digests (at most 8)"
            )));
        }
        for k in 0..count {
            let d = at + 4 + k * 66;
            let size = usize::from(u16le(b, d));
            if size > 64 {
                return Err(bad(format!("a digest of {size} bytes (at most 64)")));
            }
            digests.push(&b[d + 2..d + 2 + size]);
        }
    }
    let mut next = digests.into_iter();
    let mut out = Vec::new();
    for i in 0..banks {
        let at = 4 + i * 8;
        let alg = u16le(b, at);
        let size_of_select = usize::from(b[at + 2]);
        if size_of_select > 4 {
            return Err(bad(format!(
                "sizeofSelect {size_of_select} in bank {alg:#06x} (at most 4)"
            )));
        }
        let bank = HashAlg::from_tpm_alg_id(alg);
        let mut values = std::collections::BTreeMap::new();
        for pcr in 0..size_of_select * 8 {
            if b[at + 3 + pcr / 8] & (1 << (pcr % 8)) == 0 {
                continue;
            }
            let d = next
                .next()
                .ok_or_else(|| bad("fewer digests than selected PCRs"))?;
            if let Some(bank) = bank {
                if d.len() != bank.digest_len() {
                    return Err(bad(format!(
                        "PCR {pcr} of the {bank} bank has a {}-byte digest (expected {})",
                        d.len(),
                        bank.digest_len()
                    )));
                }
                values.insert(pcr as u8, d.to_vec());
            }
        }
        if let Some(bank) = bank {
            if !values.is_empty() {
                out.push(PcrSet { bank, values });
            }
        }
    }
    if next.next().is_some() {
        return Err(bad("more digests than selected PCRs"));
    }
    Ok(out)
}

/// `ak_public` (a marshalled TPMT_PUBLIC) as a TPM2B_PUBLIC (what tpm2-tools' `-u` reads).
pub fn ak_pub_tpm2b(ak_public: &[u8]) -> Result<Vec<u8>> {
    let len =
        u16::try_from(ak_public.len()).map_err(|_| TpmError::Unsupported("AK public too large"))?;
    let mut tpm2b = len.to_be_bytes().to_vec();
    tpm2b.extend_from_slice(ak_public);
    Ok(tpm2b)
}

/// The contents of the files [`FILES`], in that order: `quote.msg` (TPMS_ATTEST),
/// `quote.sig` (TPMT_SIGNATURE), `pcrs.bin` (tpm2-tools' serialized format) and `ak.pub`
/// (TPM2B_PUBLIC).
pub fn tpm2_tools_files(quote: &QuoteOutput, ak_public: &[u8]) -> Result<[Vec<u8>; 4]> {
    Ok([
        quote.attest.clone(),
        quote.signature.clone(),
        pcrs_serialized(&quote.pcrs),
        ak_pub_tpm2b(ak_public)?,
    ])
}

/// Write [`tpm2_tools_files`] into `dir` (created if needed), replacing existing files.
pub fn write_tpm2_tools_files(dir: &Path, quote: &QuoteOutput, ak_public: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in FILES.iter().zip(tpm2_tools_files(quote, ak_public)?) {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(bank: HashAlg, pcrs: &[u8]) -> PcrSet {
        PcrSet {
            bank,
            values: pcrs
                .iter()
                .map(|&i| (i, vec![i; bank.digest_len()]))
                .collect(),
        }
    }

    #[test]
    fn serialized_round_trip_and_layout() {
        for pcrs in [
            &[0u8][..],
            &[0, 1, 2, 3, 4, 5, 6, 7],
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 23],
        ] {
            let s = set(HashAlg::Sha256, pcrs);
            let b = pcrs_serialized(&s);
            let lists = pcrs.len().div_ceil(8);
            assert_eq!(b.len(), PCR_SELECTION_SIZE + 4 + lists * DIGEST_LIST_SIZE);
            assert_eq!(u16le(&b, 4), 0x000b);
            assert_eq!(parse_pcrs_serialized(&b).unwrap(), vec![s]);
        }
    }

    #[test]
    fn serialized_refuses_malformed_input() {
        let b = pcrs_serialized(&set(HashAlg::Sha256, &[0, 1, 2]));
        for bad in [
            &b[..b.len() - 1],
            &b[..10],
            &[&b[..], &[0u8]][..].concat()[..],
        ] {
            assert!(parse_pcrs_serialized(bad).is_err());
        }
        // One digest too few for the selection.
        let mut fewer = b.clone();
        fewer[PCR_SELECTION_SIZE + 4] = 2;
        assert!(parse_pcrs_serialized(&fewer).is_err());
        // A huge list count does not allocate or loop.
        let mut huge = b.clone();
        huge[PCR_SELECTION_SIZE..PCR_SELECTION_SIZE + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_pcrs_serialized(&huge).is_err());
    }
}
