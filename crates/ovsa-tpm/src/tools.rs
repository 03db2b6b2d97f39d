//! tpm2-tools compatible output, so users can debug with standard tools:
//!
//! ```sh
//! tpm2_checkquote -u ak.pub -m quote.msg -s quote.sig -f pcrs.bin -g sha256 -q <qualifying hex>
//! ```

use std::path::Path;

use crate::{QuoteOutput, Result};

/// Names of the files written by [`write_tpm2_tools_files`].
pub const FILES: [&str; 4] = ["quote.msg", "quote.sig", "pcrs.bin", "ak.pub"];

/// Write `quote.msg` (TPMS_ATTEST), `quote.sig` (TPMT_SIGNATURE), `pcrs.bin` (the PCR values
/// concatenated in selection order: tpm2-tools' `values` format) and `ak.pub` (TPM2B_PUBLIC)
/// into `dir` (created if needed).
pub fn write_tpm2_tools_files(dir: &Path, quote: &QuoteOutput, ak_public: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("quote.msg"), &quote.attest)?;
    std::fs::write(dir.join("quote.sig"), &quote.signature)?;
    std::fs::write(dir.join("pcrs.bin"), quote.pcrs.concatenated())?;
    let len = u16::try_from(ak_public.len())
        .map_err(|_| crate::TpmError::Unsupported("AK public too large"))?;
    let mut tpm2b = len.to_be_bytes().to_vec();
    tpm2b.extend_from_slice(ak_public);
    std::fs::write(dir.join("ak.pub"), tpm2b)?;
    Ok(())
}
