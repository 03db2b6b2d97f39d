//! PCR banks (TPM2_GetCapability), PCR reads and extends.

use std::collections::BTreeMap;
use std::convert::TryFrom;

use ovsa_core::attest::{HashAlg, PcrSet};
use tss_esapi::{
    handles::PcrHandle,
    interface_types::{algorithm::HashingAlgorithm, session_handles::AuthSession},
    structures::{Digest, DigestValues, PcrSelectionListBuilder, PcrSlot},
};

use crate::{Result, Tpm, TpmError};

pub(crate) fn hashing(alg: HashAlg) -> Result<HashingAlgorithm> {
    Ok(match alg {
        HashAlg::Sha1 => HashingAlgorithm::Sha1,
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
        #[allow(unreachable_patterns)]
        _ => return Err(TpmError::Unsupported("PCR bank")),
    })
}

pub(crate) fn pcr_slots(pcrs: &[u8]) -> Result<Vec<PcrSlot>> {
    pcrs.iter()
        .map(|&i| {
            if i > 23 {
                return Err(TpmError::Unsupported("PCR index above 23"));
            }
            PcrSlot::try_from(1u32 << i).map_err(|_| TpmError::Unsupported("PCR index"))
        })
        .collect()
}

impl Tpm {
    /// The TPM's allocated PCR banks (hash algorithms this crate knows) and the PCR indices
    /// each has, from TPM2_GetCapability(TPM_CAP_PCRS); a bank listed with an empty selection
    /// is not allocated and left out. Read once per connection (1 command), then cached.
    pub fn pcr_banks(&mut self) -> Result<Vec<(HashAlg, Vec<u8>)>> {
        if let Some(b) = &self.pcr_banks {
            return Ok(b.clone());
        }
        use tss_esapi::constants::CapabilityType;
        use tss_esapi::structures::CapabilityData;
        self.ctx.clear_sessions();
        let r = self
            .ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::AssignedPcr, 0, 1));
        self.commands += 1;
        let (data, _) = r.map_err(TpmError::cmd("get PCR banks"))?;
        let CapabilityData::AssignedPcr(list) = data else {
            return Err(TpmError::Unsupported(
                "TPM answered GetCapability(PCRS) with other data",
            ));
        };
        let mut banks = Vec::new();
        for sel in list.get_selections() {
            let bank = match sel.hashing_algorithm() {
                HashingAlgorithm::Sha1 => HashAlg::Sha1,
                HashingAlgorithm::Sha256 => HashAlg::Sha256,
                HashingAlgorithm::Sha384 => HashAlg::Sha384,
                HashingAlgorithm::Sha512 => HashAlg::Sha512,
                _ => continue,
            };
            let pcrs: Vec<u8> = sel
                .selected()
                .into_iter()
                .map(|slot| u32::from(slot).trailing_zeros() as u8)
                .collect();
            if !pcrs.is_empty() {
                banks.push((bank, pcrs));
            }
        }
        self.pcr_banks = Some(banks.clone());
        Ok(banks)
    }

    /// Checks that `bank` is allocated and has every PCR of `pcrs` (see [`Tpm::pcr_banks`]):
    /// [`TpmError::PcrBankNotAllocated`] or [`TpmError::PcrNotPresent`] otherwise.
    pub fn check_pcr_bank(&mut self, bank: HashAlg, pcrs: &[u8]) -> Result<()> {
        let banks = self.pcr_banks()?;
        let Some((_, present)) = banks.iter().find(|(b, _)| *b == bank) else {
            return Err(TpmError::PcrBankNotAllocated {
                bank,
                available: banks.iter().map(|(b, _)| *b).collect(),
            });
        };
        if let Some(&pcr) = pcrs.iter().find(|p| !present.contains(p)) {
            return Err(TpmError::PcrNotPresent {
                bank,
                pcr,
                present: present.clone(),
            });
        }
        Ok(())
    }

    /// Read PCR values of one bank (no session). The bank and indices are checked first
    /// ([`Tpm::check_pcr_bank`]); then TPM2_PCR_Read (at most 8 digests per call) is repeated
    /// only while each call returns at least one missing PCR, and at most once per PCR, so a TPM
    /// that answers without the PCRs asked for gives [`TpmError::PcrReadIncomplete`], never a
    /// loop.
    pub fn read_pcrs(&mut self, bank: HashAlg, pcrs: &[u8]) -> Result<PcrSet> {
        let alg = hashing(bank)?;
        pcr_slots(pcrs)?;
        self.check_pcr_bank(bank, pcrs)?;
        let mut missing: Vec<u8> = pcrs.to_vec();
        missing.sort_unstable();
        missing.dedup();
        let max_calls = u32::try_from(missing.len().max(1)).unwrap_or(u32::MAX);
        let mut values = BTreeMap::new();
        let mut calls = 0u32;
        self.ctx.clear_sessions();
        while !missing.is_empty() {
            if calls >= max_calls {
                return Err(TpmError::PcrReadIncomplete {
                    bank,
                    missing,
                    calls,
                });
            }
            let sel = PcrSelectionListBuilder::new()
                .with_selection(alg, &pcr_slots(&missing)?)
                .build()
                .map_err(TpmError::cmd("PCR selection"))?;
            let r = self.ctx.execute_without_session(|c| c.pcr_read(sel));
            self.commands += 1;
            calls += 1;
            let (_, read, digests) = r.map_err(TpmError::cmd("PCR read"))?;
            let slots: Vec<u8> = read
                .get_selections()
                .iter()
                .filter(|s| s.hashing_algorithm() == alg)
                .flat_map(|s| s.selected())
                .map(|slot| u32::from(slot).trailing_zeros() as u8)
                .collect();
            // Digests come in selection order (ascending PCR index within the bank). Only one
            // bank was asked for; a response naming others is not trusted.
            if read.get_selections().len() > 1 || slots.len() != digests.len() {
                return Err(TpmError::Unsupported(
                    "TPM2_PCR_Read returned a selection that does not match its digests",
                ));
            }
            let before = missing.len();
            for (i, d) in slots.into_iter().zip(digests.value()) {
                if let Some(pos) = missing.iter().position(|&m| m == i) {
                    missing.remove(pos);
                    values.insert(i, d.value().to_vec());
                }
            }
            if missing.len() == before {
                return Err(TpmError::PcrReadIncomplete {
                    bank,
                    missing,
                    calls,
                });
            }
        }
        Ok(PcrSet { bank, values })
    }

    /// Extend a PCR of one bank with `digest` (tests and demos: simulate a measurement). The
    /// PCR's empty auth is given as a password.
    pub fn pcr_extend(&mut self, pcr: u8, bank: HashAlg, digest: &[u8]) -> Result<()> {
        let handle =
            PcrHandle::try_from(u32::from(pcr)).map_err(|_| TpmError::Unsupported("PCR index"))?;
        let mut vals = DigestValues::new();
        vals.set(
            hashing(bank)?,
            Digest::try_from(digest.to_vec()).map_err(|_| TpmError::Unsupported("digest"))?,
        );
        let r = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| c.pcr_extend(handle, vals));
        self.commands += 1;
        r.map_err(TpmError::cmd("PCR extend"))
    }
}
