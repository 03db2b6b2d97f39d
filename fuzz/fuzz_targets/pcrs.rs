//! `license::tcb::parse_tpm2_pcrread` and `parse_pcr_arg` on UTF-8 text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovsa_core::license::tcb::{parse_pcr_arg, parse_tpm2_pcrread, MAX_PCR_INDEX};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sets) = parse_tpm2_pcrread(text) {
        for s in &sets {
            // Whatever parses is a valid set (sorted unique indices, right digest lengths).
            s.validate("fuzz").expect("parsed PCR set validates");
        }
    }
    for arg in std::iter::once(text).chain(text.lines()) {
        if let Ok(v) = parse_pcr_arg(arg) {
            assert!(v.index <= MAX_PCR_INDEX);
        }
    }
});
