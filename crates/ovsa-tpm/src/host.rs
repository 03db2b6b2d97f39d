//! Host evidence in the vTPM's NV memory.
//!
//! On the physical host, before the VM starts ([`write_host_evidence`]): quote the host TPM
//! with qualifying data = SHA-256(vTPM EK certificate DER), encode a
//! [`HostEvidence`] blob and store it in the vTPM's NV at
//! `0x01000000 + i`, split over indices of at most 2048 bytes, written in pieces of at most
//! 1024 bytes. The indices are defined with *platform* authorization (`TPMA_NV_PLATFORMCREATE`,
//! `TPMA_NV_PPWRITE` only), so the guest OS, which has no platform authorization once firmware
//! has disabled the platform hierarchy, can neither rewrite nor undefine them. The Verifier
//! still relies only on the signatures inside.
//!
//! In the VM ([`read_host_evidence`]): read index 0, learn the total length from the header,
//! read the rest, validate magic, version, length and checksum.

use std::io::Write;

use tss_esapi::{
    abstraction::nv::NvOpenOptions,
    attributes::NvIndexAttributesBuilder,
    handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle},
    interface_types::{
        algorithm::HashingAlgorithm,
        resource_handles::{NvAuth, Provision},
    },
    structures::NvPublicBuilder,
};

use crate::error::is_handle_error;
use crate::{AkAlg, AkBlob, EkKind, Result, Tpm, TpmError};
use ovsa_core::attest::host_blob::{
    blob_total_len, nv_index_count, HOST_BLOB_HEADER_LEN, HOST_BLOB_MAX_SIZE, NV_INDEX_MAX_SIZE,
};
use ovsa_core::attest::{
    host_qualifying_data, HashAlg, HostBlobError, HostEvidence, HOST_EVIDENCE_NV_BASE,
};

/// Options of the host quote.
#[derive(Debug, Clone)]
pub struct HostQuoteOptions {
    /// Host EK whose certificate goes into the evidence (and under which the AK lives).
    pub host_ek: EkKind,
    /// A cached host AK; if `None`, a fresh AK of `ak_alg` is created.
    pub host_ak: Option<AkBlob>,
    /// Algorithm of a freshly created host AK.
    pub ak_alg: AkAlg,
    /// Host PCR bank.
    pub bank: HashAlg,
    /// Host PCRs to quote.
    pub pcrs: Vec<u8>,
    /// Which vTPM EK certificate the host quote is bound to.
    pub vtpm_ek: EkKind,
}

impl Default for HostQuoteOptions {
    fn default() -> Self {
        Self {
            host_ek: EkKind::Rsa2048,
            host_ak: None,
            ak_alg: AkAlg::EcdsaP256,
            bank: HashAlg::Sha256,
            pcrs: (0..8).collect(),
            vtpm_ek: EkKind::Rsa2048,
        }
    }
}

/// Quote the host TPM bound to `vtpm_ek_cert` and return the evidence (nothing is written).
pub fn host_quote(
    host: &mut Tpm,
    vtpm_ek_cert: &[u8],
    opts: &HostQuoteOptions,
) -> Result<HostEvidence> {
    let ek_cert = host.ek_certificate(opts.host_ek)?;
    let ak = match &opts.host_ak {
        Some(a) => a.clone(),
        None => host.create_ak(opts.host_ek, opts.ak_alg)?,
    };
    let qd = host_qualifying_data(vtpm_ek_cert);
    let q = host.quote(&ak, &qd, opts.bank, &opts.pcrs)?;
    Ok(HostEvidence {
        ek_cert,
        ak_public: ak.public.clone(),
        quote: q.attest,
        signature: q.signature,
        pcrs: q.pcrs,
    })
}

/// `ovsatool host-quote`: quote `host` bound to `vtpm`'s EK certificate and store the evidence
/// in `vtpm`'s NV (replacing any earlier evidence). Returns the evidence written.
pub fn write_host_evidence(
    host: &mut Tpm,
    vtpm: &mut Tpm,
    opts: &HostQuoteOptions,
) -> Result<HostEvidence> {
    let vtpm_ek_cert = vtpm.ek_certificate(opts.vtpm_ek)?;
    let ev = host_quote(host, &vtpm_ek_cert, opts)?;
    let blob = ev.encode()?;
    write_host_evidence_blob(vtpm, &blob)?;
    Ok(ev)
}

fn nv_handle(i: usize) -> Result<NvIndexTpmHandle> {
    NvIndexTpmHandle::new(HOST_EVIDENCE_NV_BASE + i as u32)
        .map_err(|_| TpmError::Unsupported("NV index"))
}

/// Undefine the host-evidence NV indices (platform authorization). Returns how many were removed.
pub fn clear_host_evidence(vtpm: &mut Tpm) -> Result<usize> {
    let mut removed = 0;
    for i in 0..HOST_BLOB_MAX_SIZE / NV_INDEX_MAX_SIZE {
        let nv = nv_handle(i)?;
        vtpm.ctx.clear_sessions();
        let obj = match vtpm
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(nv)))
        {
            Ok(o) => o,
            Err(e) if is_handle_error(&e) => break,
            Err(e) => return Err(TpmError::cmd("NV read public")(e)),
        };
        vtpm.ctx
            .execute_with_nullauth_session(|c| {
                c.nv_undefine_space(Provision::Platform, NvIndexHandle::from(obj))
            })
            .map_err(TpmError::cmd("NV undefine"))?;
        vtpm.commands += 4;
        removed += 1;
    }
    Ok(removed)
}

/// Store an encoded blob in NV (replacing earlier evidence): indices `0x01000000 + i` of at
/// most 2048 bytes each, defined with platform authorization, written in <= 1024-byte pieces.
/// Returns the number of indices used.
pub fn write_host_evidence_blob(vtpm: &mut Tpm, blob: &[u8]) -> Result<usize> {
    if blob.len() > HOST_BLOB_MAX_SIZE {
        return Err(HostBlobError::TooLarge.into());
    }
    clear_host_evidence(vtpm)?;
    let attrs = NvIndexAttributesBuilder::new()
        .with_pp_write(true)
        .with_pp_read(true)
        .with_owner_read(true)
        .with_auth_read(true)
        .with_platform_create(true)
        .with_no_da(true)
        .build()
        .map_err(TpmError::cmd("NV attributes"))?;
    let chunks: Vec<&[u8]> = blob.chunks(NV_INDEX_MAX_SIZE).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let public = NvPublicBuilder::new()
            .with_nv_index(nv_handle(i)?)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(attrs)
            .with_data_area_size(chunk.len())
            .build()
            .map_err(TpmError::cmd("NV public"))?;
        vtpm.ctx.clear_sessions();
        vtpm.ctx
            .execute_with_nullauth_session(|c| -> tss_esapi::Result<()> {
                let mut w = NvOpenOptions::NewIndex {
                    nv_public: public,
                    auth_handle: NvAuth::Platform,
                }
                .open(c)?;
                w.write_all(chunk).map_err(|e| {
                    e.into_inner()
                        .and_then(|e| e.downcast::<tss_esapi::Error>().ok())
                        .map(|e| *e)
                        .unwrap_or(tss_esapi::Error::WrapperError(
                            tss_esapi::WrapperErrorKind::InvalidParam,
                        ))
                })
            })
            .map_err(TpmError::cmd("NV define/write"))?;
        vtpm.commands += 4 + chunk.len().div_ceil(1024) as u64;
    }
    Ok(chunks.len())
}

/// Read the raw host-evidence blob from NV (validated: magic, version, length, checksum).
/// [`HostBlobError::Missing`] if no evidence was stored; [`HostBlobError::Truncated`] if an
/// index is missing or short.
pub fn read_host_evidence_blob(vtpm: &mut Tpm) -> Result<Vec<u8>> {
    let first = match vtpm.nv_read(HOST_EVIDENCE_NV_BASE) {
        Err(TpmError::NvIndexMissing(_)) => return Err(HostBlobError::Missing.into()),
        other => other?,
    };
    let total = blob_total_len(&first[..first.len().min(HOST_BLOB_HEADER_LEN)])?;
    let mut blob = first;
    for i in 1..nv_index_count(total) {
        if blob.len() >= total {
            break;
        }
        match vtpm.nv_read(HOST_EVIDENCE_NV_BASE + i as u32) {
            Ok(part) => blob.extend_from_slice(&part),
            Err(TpmError::NvIndexMissing(_)) => break,
            Err(e) => return Err(e),
        }
    }
    HostEvidence::decode(&blob)?;
    blob.truncate(total);
    Ok(blob)
}

/// Like [`read_host_evidence_blob`], but a vTPM without host evidence gives `Ok(None)` (the
/// license may not need it); a partial or corrupt blob is still an error.
pub fn read_host_evidence_blob_if_present(vtpm: &mut Tpm) -> Result<Option<Vec<u8>>> {
    match read_host_evidence_blob(vtpm) {
        Ok(blob) => Ok(Some(blob)),
        Err(TpmError::HostBlob(HostBlobError::Missing)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Read and decode the host evidence from NV (inside the VM).
pub fn read_host_evidence(vtpm: &mut Tpm) -> Result<HostEvidence> {
    let blob = read_host_evidence_blob(vtpm)?;
    Ok(HostEvidence::decode(&blob)?)
}
