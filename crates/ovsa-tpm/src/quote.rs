//! TPM2_Quote: [`QuoteOutput`], PCR read + quote retried while the PCRs move.

use std::convert::TryFrom;

use ovsa_core::attest::{self, HashAlg, PcrSet};
use tss_esapi::{
    handles::KeyHandle,
    interface_types::{algorithm::HashingAlgorithm, session_handles::AuthSession},
    structures::{Data, PcrSelectionListBuilder, PcrSlot, SignatureScheme},
    traits::Marshall,
};

use crate::pcr::{hashing, pcr_slots};
use crate::{AkBlob, Result, Tpm, TpmError};

/// PCR read + quote attempts while the PCRs move in between (then [`TpmError::PcrsUnstable`]).
pub const QUOTE_ATTEMPTS: u32 = 5;

/// A quote with everything a Verifier needs besides the EK certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteOutput {
    /// Marshalled TPMS_ATTEST (`quote.msg`).
    pub attest: Vec<u8>,
    /// Marshalled TPMT_SIGNATURE (`quote.sig`).
    pub signature: Vec<u8>,
    /// The PCR values the quote covers (read right before it; digest-checked).
    pub pcrs: PcrSet,
    /// Number of attempts needed (1 unless PCRs moved).
    pub attempts: u32,
}

/// The quote part of [`Tpm::run_with_ak`].
pub(crate) struct QuoteRequest<'a> {
    qualifying_data: Data,
    bank: HashAlg,
    alg: HashingAlgorithm,
    slots: Vec<PcrSlot>,
    pcrs: &'a [u8],
}

impl Tpm {
    /// PCR_Read + TPM2_Quote (the AK's empty auth as a password) with the loaded AK, retried
    /// while the PCRs move in between.
    pub(crate) fn quote_loaded(
        &mut self,
        akh: KeyHandle,
        q: QuoteRequest<'_>,
    ) -> Result<QuoteOutput> {
        for attempt in 1..=QUOTE_ATTEMPTS {
            let values = self.read_pcrs(q.bank, q.pcrs)?;
            let sel = PcrSelectionListBuilder::new()
                .with_selection(q.alg, &q.slots)
                .build()
                .map_err(TpmError::cmd("PCR selection"))?;
            let qd = q.qualifying_data.clone();
            let r = self
                .ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.quote(akh, qd, SignatureScheme::Null, sel)
                });
            self.commands += 1;
            let (attest, sig) = r.map_err(TpmError::cmd("quote"))?;
            let attest = attest.marshall().map_err(TpmError::cmd("marshal quote"))?;
            let signature = sig.marshall().map_err(TpmError::cmd("marshal signature"))?;
            let info = attest::wire::parse_quote(&attest)
                .map_err(|_| TpmError::Unsupported("TPM returned an unparsable quote"))?;
            // Both AK algorithms sign with SHA-256, which is also the PCR digest hash.
            let digest = HashAlg::Sha256.digest_parts(values.values.values().map(|v| v.as_slice()));
            if digest == info.pcr_digest {
                return Ok(QuoteOutput {
                    attest,
                    signature,
                    pcrs: values,
                    attempts: attempt,
                });
            }
        }
        Err(TpmError::PcrsUnstable(QUOTE_ATTEMPTS))
    }

    pub(crate) fn quote_request<'a>(
        qualifying_data: &[u8],
        bank: HashAlg,
        pcrs: &'a [u8],
    ) -> Result<QuoteRequest<'a>> {
        Ok(QuoteRequest {
            qualifying_data: Data::try_from(qualifying_data.to_vec())
                .map_err(|_| TpmError::Unsupported("qualifying data longer than 64 bytes"))?,
            bank,
            alg: hashing(bank)?,
            slots: pcr_slots(pcrs)?,
            pcrs,
        })
    }

    /// Quote `pcrs` of `bank` with `qualifying_data` (at most 64 bytes) under the AK.
    ///
    /// Checks that the TPM has `bank` and `pcrs` ([`Tpm::check_pcr_bank`]: a typed
    /// [`TpmError::PcrBankNotAllocated`] before any object is loaded), reads the PCRs, quotes,
    /// and checks that the quote's PCR digest equals the hash of the values read; if a PCR moved
    /// in between, retries (at most [`QUOTE_ATTEMPTS`], then [`TpmError::PcrsUnstable`]).
    pub fn quote(
        &mut self,
        ak_blob: &AkBlob,
        qualifying_data: &[u8],
        bank: HashAlg,
        pcrs: &[u8],
    ) -> Result<QuoteOutput> {
        let q = Self::quote_request(qualifying_data, bank, pcrs)?;
        // Before anything is loaded: a missing bank is a clear error, not a TPM round trip.
        self.check_pcr_bank(bank, pcrs)?;
        let (_, quote) = self.run_with_ak(ak_blob, None, Some(q))?;
        quote.ok_or(TpmError::Unsupported("no quote result"))
    }
}
