//! swtpm test harness (filled by the attestation issue).
