//! `Certificate::chain_from_pem_or_der`, plus what callers do with a parsed certificate
//! (public key, validity, PEM round trip, chain validation with rustls-webpki).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovsa_core::identity::{Certificate, CertificateUsage};

fuzz_target!(|data: &[u8]| {
    let Ok(chain) = Certificate::chain_from_pem_or_der(data) else {
        return;
    };
    for c in &chain {
        let _ = c.public_key();
        let _ = c.check_validity_now();
        let _ = (c.subject(), c.issuer(), c.fingerprint(), c.spki_pin());
        let back = Certificate::from_pem_or_der(c.to_pem().as_bytes()).expect("PEM round trip");
        assert_eq!(&back, c);
        let back = Certificate::from_pem_or_der(c.der()).expect("DER round trip");
        assert_eq!(&back, c);
    }
    if let [ee, rest @ ..] = chain.as_slice() {
        let at = ee.not_before();
        let (inter, anchors) = match rest {
            [] => (&[][..], std::slice::from_ref(ee)),
            [i @ .., a] => (i, std::slice::from_ref(a)),
        };
        for usage in [
            CertificateUsage::Customer,
            CertificateUsage::Isv,
            CertificateUsage::Server,
        ] {
            let _ = ee.verify_chain(inter, anchors, usage, at);
        }
    }
});
