//! TCTI strings: the explicit one, else the `TCTI` / `TPM2TOOLS_TCTI` environment variables.

use std::str::FromStr;

use tss_esapi::tcti_ldr::TctiNameConf;

use crate::{Result, TpmError};

/// Default TCTI when neither an explicit string nor `TCTI`/`TPM2TOOLS_TCTI` is given.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// The TCTI used when none is given: the `TCTI` environment variable, else `TPM2TOOLS_TCTI`
/// (what tpm2-tools users already have set), else [`DEFAULT_TCTI`]. Empty values count as unset.
pub fn default_tcti() -> String {
    ["TCTI", "TPM2TOOLS_TCTI"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_TCTI.to_string())
}

/// Parse a TCTI string; `None` means [`default_tcti`] (env `TCTI`, else `TPM2TOOLS_TCTI`, else
/// [`DEFAULT_TCTI`]).
pub fn parse_tcti(tcti: Option<&str>) -> Result<(String, TctiNameConf)> {
    let s = match tcti {
        Some(s) => s.to_string(),
        None => default_tcti(),
    };
    let conf = TctiNameConf::from_str(&s).map_err(|e| TpmError::BadTcti {
        tcti: s.clone(),
        reason: e.to_string(),
    })?;
    Ok((s, conf))
}
