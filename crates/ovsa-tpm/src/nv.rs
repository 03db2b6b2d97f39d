//! NV index reads (EK certificates, host evidence).

use std::convert::TryFrom;

use tss_esapi::{handles::TpmHandle, interface_types::session_handles::AuthSession};

use crate::error::is_handle_error;
use crate::{Result, Tpm, TpmError};

impl Tpm {
    /// Read an NV index in full with its own (empty) authorization, as a password
    /// authorization (see the note on authorization in `session.rs`). Errors with
    /// [`TpmError::NvIndexMissing`] if the index is not defined.
    ///
    /// Commands: NV_ReadPublic x2 (ESYS handle, then the size), NV_Read per
    /// TPM_PT_NV_BUFFER_MAX bytes, and GetCapability once per connection.
    pub fn nv_read(&mut self, index: u32) -> Result<Vec<u8>> {
        use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle};
        let nv = NvIndexTpmHandle::new(index).map_err(|_| TpmError::Unsupported("NV index"))?;
        self.ctx.clear_sessions();
        let obj = self
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(nv)));
        self.commands += 1;
        let mut obj = match obj {
            Ok(o) => o,
            Err(e) if is_handle_error(&e) => return Err(TpmError::NvIndexMissing(index)),
            Err(e) => return Err(TpmError::cmd("NV read public")(e)),
        };
        let data = self.nv_read_handle(NvIndexHandle::from(obj));
        // ESYS metadata only (no TPM command).
        let _ = self.ctx.tr_close(&mut obj);
        data
    }

    fn nv_read_handle(&mut self, h: tss_esapi::handles::NvIndexHandle) -> Result<Vec<u8>> {
        use tss_esapi::interface_types::resource_handles::NvAuth;
        let public = self.ctx.nv_read_public(h);
        self.commands += 1;
        let size = public
            .map_err(TpmError::cmd("NV read public"))?
            .0
            .data_size();
        let max = match self.nv_buffer_max {
            Some(m) => m,
            None => {
                let m = tss_esapi::abstraction::nv::max_nv_buffer_size(&mut self.ctx);
                self.commands += 1;
                let m = m.map_err(TpmError::cmd("NV buffer size"))?.clamp(64, 2048);
                self.nv_buffer_max = Some(m);
                m
            }
        };
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            let len = (size - data.len()).min(max);
            let off = data.len();
            let (len16, off16) = match (u16::try_from(len), u16::try_from(off)) {
                (Ok(l), Ok(o)) => (l, o),
                _ => return Err(TpmError::Unsupported("NV index larger than 64 KiB")),
            };
            let chunk = self
                .ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.nv_read(NvAuth::NvIndex(h), h, len16, off16)
                });
            self.commands += 1;
            let chunk = chunk.map_err(TpmError::cmd("NV read"))?;
            // TPM2_NV_Read returns exactly the size asked for; anything else (a short or empty
            // answer) would make this loop ask again and again: stop instead. The loop
            // therefore runs at most ceil(size / TPM_PT_NV_BUFFER_MAX) times.
            if chunk.len() != len {
                return Err(TpmError::Unsupported(
                    "TPM answered TPM2_NV_Read with a different size than asked for",
                ));
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }
}
