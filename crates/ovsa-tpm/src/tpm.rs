//! The connection to one TPM ([`Tpm`]) and what it keeps between calls.

use ovsa_core::attest::HashAlg;
use tss_esapi::Context;

use crate::ak::SavedAk;
use crate::ek::EkInfo;
use crate::{parse_tcti, EkKind, Result, TpmError};

/// A connection to one TPM.
pub struct Tpm {
    pub(crate) ctx: Context,
    pub(crate) tcti: String,
    pub(crate) commands: u64,
    /// What this connection learned about each EK it used (see [`EkInfo`]).
    pub(crate) eks: Vec<(EkKind, EkInfo)>,
    /// TPM_PT_NV_BUFFER_MAX, read once per connection.
    pub(crate) nv_buffer_max: Option<usize>,
    /// The saved context of the AK last loaded by this connection (see [`SavedAk`]).
    pub(crate) saved_ak: Option<SavedAk>,
    /// The allocated PCR banks and their PCR indices (TPM2_GetCapability(TPM_CAP_PCRS)), read
    /// once per connection before the first PCR read.
    pub(crate) pcr_banks: Option<Vec<(HashAlg, Vec<u8>)>>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm")
            .field("tcti", &self.tcti)
            .field("commands", &self.commands)
            .finish()
    }
}

impl Tpm {
    /// Connect. `tcti`: see [`parse_tcti`]. Silence tpm2-tss's own logging with
    /// `TSS2_LOG=all+none`.
    pub fn open(tcti: Option<&str>) -> Result<Self> {
        let (s, conf) = parse_tcti(tcti)?;
        let mut ctx = Context::new(conf).map_err(|cause| TpmError::Unreachable {
            tcti: s.clone(),
            cause,
        })?;
        // Probe: a cheap command so an absent TPM fails here, not at first use.
        ctx.get_tpm_property(tss_esapi::constants::PropertyTag::Manufacturer)
            .map_err(|cause| TpmError::Unreachable {
                tcti: s.clone(),
                cause,
            })?;
        Ok(Self {
            ctx,
            tcti: s,
            commands: 1,
            eks: Vec::new(),
            nv_buffer_max: None,
            saved_ak: None,
            pcr_banks: None,
        })
    }

    /// The TCTI string this connection uses.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// TPM commands sent so far by this connection, counting every command this crate's
    /// operations send, including session start and flush (exact on the paths tested against a
    /// counting proxy in `swtpm-tests`). Not counted: commands sent through the raw ESYS
    /// context (`Tpm::context`, feature `test-support`), and resubmissions tpm2-tss makes by
    /// itself when the TPM answers `TPM_RC_RETRY`.
    pub fn command_count(&self) -> u64 {
        self.commands
    }

    /// Direct access to the raw `tss-esapi` ESYS context, for tests that must send a command
    /// this crate does not offer (e.g. TPM2_Startup after a simulated reset). Only with the
    /// `test-support` feature: production code goes through this crate's operations, which
    /// flush what they load and keep [`Tpm::command_count`] exact.
    #[cfg(feature = "test-support")]
    pub fn context(&mut self) -> &mut Context {
        &mut self.ctx
    }
}
