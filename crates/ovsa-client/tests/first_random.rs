//! The first random number of a process is cheap: AWS-LC is built (`.cargo/config.toml`,
//! `AWS_LC_SYS_NO_JITTER_ENTROPY=1`) to seed its generator from the OS instead of CPU jitter
//! entropy, which cost 30-100 ms of CPU at the first TLS key share of every process (the
//! plugin's first-load "TLS connect"; docs/RUNTIME.md, "First-load latency").
//!
//! Each measurement runs in a fresh process (this test binary re-run as a child), since the
//! seeding happens once per process; the fastest of three must be well under the jitter
//! source's cost (which is above 25 ms even on an idle core).

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn first_tls_key_share_of_a_process_takes_no_entropy_collection() {
    if std::env::var_os("OVSA_FIRST_RANDOM_CHILD").is_some() {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let t = Instant::now();
        for group in &provider.kx_groups {
            group.start().unwrap();
        }
        println!("first key shares us {}", t.elapsed().as_micros());
        return;
    }
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "first_tls_key_share_of_a_process_takes_no_entropy_collection",
                "--nocapture",
            ])
            .env("OVSA_FIRST_RANDOM_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        let us: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("first key shares us "))
            .unwrap_or_else(|| panic!("{stdout}"))
            .trim()
            .parse()
            .unwrap();
        best = best.min(Duration::from_micros(us));
    }
    assert!(
        best < Duration::from_millis(10),
        "the first key shares of a process took {best:?}: AWS-LC is seeding from CPU jitter \
         entropy again (build with AWS_LC_SYS_NO_JITTER_ENTROPY=1, see .cargo/config.toml)"
    );
}
