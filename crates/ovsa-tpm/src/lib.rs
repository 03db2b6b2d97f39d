//! TPM attester (filled by the attestation issue).
