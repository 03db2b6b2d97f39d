//! Signed envelopes of every artifact type, their bodies' validators, and canonical JSON.
//!
//! Each input is tried as every artifact type (so raw `.dat` headers, `.masterlic`, `.config`,
//! `.tcb`, `.lic` and `.reg` files are seeds as they are), its `body` is also deserialised and
//! validated directly (a mutated body never verifies, so without this the body validators would
//! be unreachable), and the whole input is run through `canonical_json`.
//!
//! Oracles besides "no panic": a verified artifact re-serialises to bytes that verify to the same
//! digest; canonical JSON is idempotent and round-trips to an equal value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovsa_core::encoding::canonical_json;
use ovsa_core::envelope::{peek_type, Artifact, Signed};
use ovsa_core::license::{
    CustomerLicense, LicenseConfig, MasterLicense, Registration, TcbReference,
};
use ovsa_core::package::PackageHeader;
use serde_json::Value;

fn artifact<T: Artifact>(data: &[u8], body: Option<&Value>) {
    if let Ok(signed) = Signed::<T>::from_bytes_ignoring_time(data) {
        let again = signed
            .to_bytes()
            .expect("a verified artifact re-serialises");
        let back = Signed::<T>::from_bytes_ignoring_time(&again)
            .expect("a re-serialised verified artifact verifies");
        assert_eq!(back.digest(), signed.digest());
        let _ = signed.body().validate();
    }
    if let Some(body) = body {
        if let Ok(b) = serde_json::from_value::<T>(body.clone()) {
            let _ = b.validate();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = peek_type(data);
    let value: Option<Value> = serde_json::from_slice(data).ok();
    let body = value.as_ref().and_then(|v| v.get("body"));
    artifact::<MasterLicense>(data, body);
    artifact::<LicenseConfig>(data, body);
    artifact::<TcbReference>(data, body);
    artifact::<CustomerLicense>(data, body);
    artifact::<Registration>(data, body);
    artifact::<PackageHeader>(data, body);
    if let Some(v) = value {
        if let Ok(c) = canonical_json(&v) {
            let parsed: Value = serde_json::from_slice(&c).expect("canonical JSON parses");
            assert_eq!(parsed, v, "canonical JSON changes the value");
            assert_eq!(
                canonical_json(&parsed).expect("canonical twice"),
                c,
                "not idempotent"
            );
        }
    }
});
