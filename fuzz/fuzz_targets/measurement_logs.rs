//! `attest::eventlog::EventLog::parse` (TCG crypto-agile firmware event log) and
//! `attest::ima::ImaLog::parse` (binary IMA measurement list), then replay.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovsa_core::attest::eventlog::EventLog;
use ovsa_core::attest::ima::{ImaLog, IMA_PCR};
use ovsa_core::attest::HashAlg;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = EventLog::parse(data) {
        for bank in [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512] {
            if let Ok(pcrs) = log.replay(bank) {
                // Every replayed PCR has the bank's digest length.
                assert!(pcrs.values().all(|v| v.len() == bank.digest_len()));
            }
        }
    }
    if let Ok(log) = ImaLog::parse(data) {
        // Whatever parses is a non-empty list of ima-ng / ima-sig entries, and replays.
        for e in &log.entries {
            assert!(e.template_name == "ima-ng" || e.template_name == "ima-sig");
        }
        if log.entries.iter().all(|e| e.pcr == IMA_PCR) {
            assert_eq!(
                log.replay(HashAlg::Sha256, IMA_PCR).map(|v| v.len()),
                Ok(32)
            );
        }
    }
});
