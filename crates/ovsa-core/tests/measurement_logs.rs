//! The measured-boot event log and IMA list parsers on mutated inputs: a cheap, deterministic
//! stand-in for the `measurement_logs` fuzz target that runs in every `cargo test`. Every byte
//! of each sample is flipped, every length field is made huge, and 20,000 pseudo-random
//! mutations (xorshift, fixed seed) are parsed and replayed: errors are fine, panics are not.

use ovsa_core::attest::eventlog::{EventLog, EventLogBuilder, EV_EVENT_TAG, EV_SEPARATOR};
use ovsa_core::attest::ima::{ImaLog, ImaLogBuilder, IMA_PCR};
use ovsa_core::attest::HashAlg;

fn samples() -> Vec<Vec<u8>> {
    vec![
        EventLogBuilder::new(&[HashAlg::Sha1, HashAlg::Sha256])
            .startup_locality(3)
            .measure(0, 0x8, b"crtm", b"crtm")
            .measure(4, 0x8000_0003, b"kernel", b"")
            .measure(9, EV_EVENT_TAG, b"initrd", b"Linux initrd")
            .measure(7, EV_SEPARATOR, &[0; 4], &[0; 4])
            .build(),
        ImaLogBuilder::new()
            .entry("boot_aggregate", "sha256", &[1; 32], false)
            .file("/usr/lib/libovsaruntime.so", b"plugin")
            .entry("/tmp/violation", "sha256", &[0; 32], true)
            .build(),
    ]
}

fn exercise(data: &[u8]) {
    if let Ok(log) = EventLog::parse(data) {
        for bank in [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384] {
            if let Ok(pcrs) = log.replay(bank) {
                assert!(pcrs.values().all(|v| v.len() == bank.digest_len()));
                // The Verifier's measured-boot check: a log is always accepted against its own
                // replay and pins built from itself.
                let mut quoted = ovsa_core::attest::PcrSet::new(bank);
                for (i, v) in pcrs.iter().filter(|(i, _)| **i <= 23) {
                    quoted.values.insert(*i as u8, v.clone());
                }
                let mut pins = ovsa_core::attest::EventPins::new(bank);
                pins.allow_log(&log, &quoted.indices()).unwrap();
                if data.len() <= ovsa_core::attest::measured_boot::MAX_EVENT_LOG_BYTES {
                    ovsa_core::attest::measured_boot::check(&quoted, Some(data), None, Some(&pins))
                        .unwrap();
                }
            }
        }
    }
    if let Ok(log) = ImaLog::parse(data) {
        let _ = log.replay(HashAlg::Sha256, IMA_PCR);
    }
}

#[test]
fn every_byte_flip_and_huge_length_is_an_error_or_a_valid_log() {
    for s in samples() {
        exercise(&s);
        for i in 0..s.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut m = s.clone();
                m[i] ^= mask;
                exercise(&m);
            }
            if i + 4 <= s.len() {
                let mut m = s.clone();
                m[i..i + 4].copy_from_slice(&u32::MAX.to_le_bytes());
                exercise(&m);
            }
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base = samples();
    for _ in 0..20_000 {
        let mut m = base[(next() % 2) as usize].clone();
        for _ in 0..(1 + next() % 4) {
            match next() % 4 {
                0 if !m.is_empty() => {
                    let i = (next() as usize) % m.len();
                    m[i] = next() as u8;
                }
                1 if !m.is_empty() => {
                    let n = (next() as usize) % m.len();
                    m.truncate(n);
                }
                2 => {
                    let i = (next() as usize) % (m.len() + 1);
                    m.insert(i, next() as u8);
                }
                _ => {
                    let extra = m.clone();
                    m.extend_from_slice(&extra[..extra.len().min(64)]);
                }
            }
        }
        exercise(&m);
    }
}
