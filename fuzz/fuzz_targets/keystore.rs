//! `Keystore::from_bytes` with a passphrase.
//!
//! A passphrase-protected keystore runs PBKDF2 with the iteration count written in the file
//! (new keystores: 600 000; the parser rejects < 100 000 and has NO upper bound, see
//! fuzz/README.md "Findings"). So that the fuzzer is not stuck in PBKDF2, inputs whose
//! `private_key.iterations` is above 100 000 are skipped here: the PBKDF2 branch is still reached
//! with exactly 100 000 (the seed generator writes such a seed), everything else is fuzzed as is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovsa_core::identity::{Keystore, KeystoreProtection};

const FUZZ_MAX_ITERATIONS: u64 = 100_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let it = v.get("private_key").and_then(|p| p.get("iterations"));
        if it
            .and_then(|i| i.as_u64())
            .is_some_and(|i| i > FUZZ_MAX_ITERATIONS)
        {
            return;
        }
    }
    if let Ok(ks) = Keystore::from_bytes(data, Some("pw")) {
        // A keystore that opens must re-serialise (in the clear: no PBKDF2 here) and reopen.
        let clear = ks
            .to_bytes(&KeystoreProtection::None)
            .expect("re-serialise");
        let back = Keystore::from_bytes(&clear, None).expect("a re-serialised keystore opens");
        assert_eq!(back.certificate(), ks.certificate());
        assert_eq!(back.key().public_key(), ks.key().public_key());
    }
});
