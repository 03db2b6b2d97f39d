//! Bonus target (not in the original list): the binary TPM parsers of `ovsa_core::attest`, which
//! read attacker-supplied evidence on the license service. The first byte picks the parser:
//! 0 `wire::parse_quote` (TPMS_ATTEST), 1 `wire::parse_signature` (TPMT_SIGNATURE),
//! 2 `wire::parse_public` (TPMT_PUBLIC / TPM2B_PUBLIC) + Name + AK attribute check,
//! 3 `HostEvidence::decode` (the SHA-256 checksum is patched in first, so the fuzzer reaches the
//! structure parser; a decoded blob must re-encode and decode to the same value),
//! 4 `ek_spki` + `EkTrust::from_pem`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovsa_core::attest::host_blob::{blob_total_len, HostEvidence};
use ovsa_core::attest::wire::{check_ak_attributes, parse_public, parse_quote, parse_signature};
use ovsa_core::attest::{ek_spki, EkTrust, HashAlg};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 5 {
        0 => {
            let _ = parse_quote(rest);
        }
        1 => {
            if let Ok(s) = parse_signature(rest) {
                let _ = s.scheme();
            }
        }
        2 => {
            if let Ok(p) = parse_public(rest) {
                let _ = p.name();
                let _ = check_ak_attributes(&p);
            }
        }
        3 => {
            let mut blob = rest.to_vec();
            if let Ok(total) = blob_total_len(&blob) {
                if total <= blob.len() {
                    let sum = HashAlg::Sha256.digest(&blob[..total - 32]);
                    blob[total - 32..total].copy_from_slice(&sum);
                }
            }
            if let Ok(ev) = HostEvidence::decode(&blob) {
                let again = ev.encode().expect("a decoded blob re-encodes");
                assert_eq!(HostEvidence::decode(&again).expect("re-decodes"), ev);
            }
        }
        _ => {
            let _ = ek_spki(rest);
            let _ = EkTrust::from_pem(rest);
        }
    }
});
