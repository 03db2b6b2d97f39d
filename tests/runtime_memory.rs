//! Peak memory of a load through the C API: the plugin decrypts straight into the host's
//! buffers, so the process's peak RSS grows by about the model size (the host's own buffers)
//! and little more. Its own test binary, so no other test shares the process.
//! `OVSA_MEMORY_TEST_MIB` sets the model size (default 64 MiB).

mod common_lib;
mod plugin;

use ovsa_test_support::runtime_fixture::{Fixture, OPTIONS};
use plugin::{Plugin, MODEL_TYPE_IR};

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn load_peak_rss_is_about_the_model_size() {
    let mib: usize = std::env::var("OVSA_MEMORY_TEST_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let f = Fixture::new();
    // A large IR model: small XML, `mib` MiB of weights.
    let src = f.path("big");
    std::fs::create_dir_all(&src).unwrap();
    let xml = src.join("model.xml");
    let bin = src.join("model.bin");
    std::fs::write(&xml, b"<net name='big'/>").unwrap();
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&bin).unwrap());
        let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 31 % 251) as u8).collect();
        for _ in 0..mib {
            std::io::Write::write_all(&mut w, &block).unwrap();
        }
    }
    let big = f.other_model_from(&[xml, bin], "big");
    let lic = f.sell_for(&big.master);
    let base = f.version_dir(
        "models/big",
        1,
        Some(&big.package),
        Some(&lic),
        Some(&f.w.customer),
    );
    let plugin = Plugin::new(Some(&f.config("loader.json", r#""log_level":"info""#))).unwrap();
    // Warm up (TPM, TLS, thread pools) on the small model, then reset the peak.
    let (small, _) = f.good_model("models/small", 1);
    assert_eq!(
        plugin.load("small", &small, 1, OPTIONS).status,
        MODEL_TYPE_IR
    );
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_kib("VmRSS:");
    let t = std::time::Instant::now();
    let l = plugin.load("big", &base, 1, OPTIONS);
    let elapsed = t.elapsed();
    assert_eq!(l.status, MODEL_TYPE_IR, "{}", l.error);
    let peak = status_kib("VmHWM:");
    let model_kib = ((l.model.len() + l.weights.len()) / 1024) as u64;
    let growth = peak.saturating_sub(before);
    eprintln!(
        "model {} MiB: load {:?}; RSS before {} MiB, peak {} MiB, growth {} MiB = {:.3}x the model",
        model_kib / 1024,
        elapsed,
        before / 1024,
        peak / 1024,
        growth / 1024,
        growth as f64 / model_kib as f64
    );
    // Byte identity of a sample (the whole file is large).
    assert_eq!(l.weights.len(), mib << 20);
    assert_eq!(
        &l.weights[..4096],
        &std::fs::read(&big.files[1]).unwrap()[..4096]
    );
    assert!(
        growth <= model_kib * 11 / 10 + 32 * 1024,
        "peak growth {growth} KiB exceeds 1.1x the model ({model_kib} KiB) + 32 MiB"
    );
}
