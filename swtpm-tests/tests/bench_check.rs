//! Client-side cost of the TPM part of one license check on swtpm (ignored by default; run with
//! `TSS2_LOG=all+none cargo test --release -p swtpm-tests --test bench_check -- --ignored --nocapture`).
//! Compares `activate_credential` + `quote` (two calls, what the client flow makes) with
//! `activate_and_quote` (one AK load), on one long-lived connection as in the client: wall time,
//! CPU time of the calling thread (tpm2-tss/ESYS/OpenSSL run in it; swtpm is another process)
//! and TPM commands per check. `OVSA_BENCH_N` sets the iteration count (default 300).

use std::time::{Duration, Instant};

use ovsa_core::attest::{self, HashAlg};
use ovsa_tpm::{AkAlg, EkKind};
use swtpm_tests::{names, Swtpm};

const PCRS: [u8; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

/// CPU time of this thread (ns), from /proc/thread-self/schedstat.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn p50(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

#[test]
#[ignore]
fn bench_license_check_tpm_part() {
    let n: usize = std::env::var("OVSA_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let s = Swtpm::start(names::VTPM);
    let mut tpm = s.open();
    let ek = tpm.ek_certificate(EkKind::Rsa2048).unwrap();
    let spki = attest::ek_spki(&ek).unwrap();
    for alg in [AkAlg::EcdsaP256, AkAlg::Rsa2048] {
        let ak = tpm.create_ak(EkKind::Rsa2048, alg).unwrap();
        let name = ak.name().unwrap();
        for combined in [false, true] {
            let (mut wall, mut cpu, mut cmds) = (Vec::new(), Duration::ZERO, 0);
            for i in 0..n + 5 {
                let secret = [(i % 251) as u8; 32];
                let ch = attest::make_credential_rsa(&spki, &name, &secret).unwrap();
                let qd = [(i % 241) as u8; 32];
                let (t, c, k) = (Instant::now(), thread_cpu(), tpm.command_count());
                let got = if combined {
                    let (got, _q) = tpm
                        .activate_and_quote(
                            &ak,
                            &ch.id_object,
                            &ch.encrypted_secret,
                            &qd,
                            HashAlg::Sha256,
                            &PCRS,
                        )
                        .unwrap();
                    got
                } else {
                    let got = tpm
                        .activate_credential(&ak, &ch.id_object, &ch.encrypted_secret)
                        .unwrap();
                    let _q = tpm.quote(&ak, &qd, HashAlg::Sha256, &PCRS).unwrap();
                    got
                };
                assert_eq!(&got[..], &secret[..]);
                // The first iterations load the AK from its blob and save its context.
                if i >= 5 {
                    wall.push(t.elapsed());
                    cpu += thread_cpu() - c;
                    cmds = tpm.command_count() - k;
                }
            }
            println!(
                "AK {alg:?} {:<36} n={n} p50 {:>6.3} ms wall, {:>6.3} ms client CPU/check, {cmds} TPM commands/check",
                if combined {
                    "activate_and_quote"
                } else {
                    "activate_credential + quote"
                },
                p50(&mut wall),
                cpu.as_secs_f64() * 1e3 / n as f64,
            );
        }
    }
}
