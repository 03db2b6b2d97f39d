//! PCR values: the small, serde-friendly type that TCB references and evidence carry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::AttestError;
use super::wire::{HashAlg, QuoteInfo};

/// A set of PCR values of one bank: `{"bank": "sha256", "values": {"0": "<hex>", ...}}`.
///
/// Used both for the values a quote reports and for the reference values a TCB reference
/// expects. Iteration order (ascending PCR index) is the order TPM2_Quote hashes them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcrSet {
    /// The PCR bank (hash algorithm).
    pub bank: HashAlg,
    /// PCR index -> value.
    #[serde(with = "hex_map")]
    pub values: BTreeMap<u8, Vec<u8>>,
}

impl PcrSet {
    /// An empty set for `bank`.
    pub fn new(bank: HashAlg) -> Self {
        Self {
            bank,
            values: BTreeMap::new(),
        }
    }

    /// The PCR indices, ascending.
    pub fn indices(&self) -> Vec<u8> {
        self.values.keys().copied().collect()
    }

    /// Concatenation of the values in ascending PCR order (tpm2-tools' `values` pcrs format).
    pub fn concatenated(&self) -> Vec<u8> {
        self.values.values().flatten().copied().collect()
    }
}

mod hex_map {
    use std::collections::BTreeMap;

    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(m: &BTreeMap<u8, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        let h: BTreeMap<u8, String> = m.iter().map(|(k, v)| (*k, hex::encode(v))).collect();
        h.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u8, Vec<u8>>, D::Error> {
        let h = BTreeMap::<u8, String>::deserialize(d)?;
        h.into_iter()
            .map(|(k, v)| Ok((k, hex::decode(v).map_err(D::Error::custom)?)))
            .collect()
    }
}

/// Check that `reported` are exactly the PCRs `quote` covers and that the quote's PCR digest is
/// `hash_alg(values in selection order)`.
pub(crate) fn check_quote_pcrs(
    quote: &QuoteInfo,
    reported: &PcrSet,
    digest_alg: HashAlg,
) -> Result<(), AttestError> {
    let mut quoted_pcrs: Vec<u8> = Vec::new();
    for sel in &quote.pcr_select {
        if sel.pcrs.is_empty() {
            continue;
        }
        if sel.bank != reported.bank.tpm_alg_id() {
            return Err(AttestError::PcrSelectionMismatch);
        }
        quoted_pcrs.extend(&sel.pcrs);
    }
    // One bank, each PCR once: the selection must equal the reported index set exactly.
    if quoted_pcrs != reported.indices() {
        return Err(AttestError::PcrSelectionMismatch);
    }
    if reported
        .values
        .values()
        .any(|v| v.len() != reported.bank.digest_len())
    {
        return Err(AttestError::PcrSelectionMismatch);
    }
    let digest = digest_alg.digest_parts(reported.values.values().map(|v| v.as_slice()));
    if digest != quote.pcr_digest {
        return Err(AttestError::PcrDigestMismatch);
    }
    Ok(())
}

/// Check reported PCR values against reference values. The bank must match; every reference PCR
/// must be reported with an equal value (reported PCRs the reference does not name are ignored).
pub fn check_reference(reported: &PcrSet, reference: &PcrSet) -> Result<(), AttestError> {
    if reported.bank != reference.bank {
        return Err(AttestError::PcrBankMismatch {
            expected: reference.bank.to_string(),
            found: reported.bank.to_string(),
        });
    }
    for (idx, want) in &reference.values {
        match reported.values.get(idx) {
            None => return Err(AttestError::PcrNotQuoted(*idx)),
            Some(got) if got != want => return Err(AttestError::PcrValueMismatch(*idx)),
            Some(_) => {}
        }
    }
    Ok(())
}
