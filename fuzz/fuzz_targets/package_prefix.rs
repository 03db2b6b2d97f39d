//! `package::format::parse_prefix`: the 16-byte container prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovsa_core::package::format::{encode_prefix, parse_prefix, MAX_HEADER_LEN, PREFIX_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(len) = parse_prefix(data) {
        assert!(data.len() >= PREFIX_LEN);
        assert!((1..=MAX_HEADER_LEN).contains(&len));
        assert_eq!(encode_prefix(len), data[..PREFIX_LEN]);
    }
});
