//! Attestation benchmark on swtpm (ignored by default; run with
//! `cargo test --release -p swtpm-tests --test bench -- --ignored --nocapture`).
//! `OVSA_BENCH_N` sets the iteration count (default 200).

use std::time::{Duration, Instant};

use ovsa_core::attest::{
    self, AkBinding, EkTrust, Evidence, Expected, HashAlg, HostPolicy, ReferenceValues,
    VerifierConfig,
};
use ovsa_tpm::host::{self, HostQuoteOptions};
use ovsa_tpm::{AkAlg, EkKind, Tpm};
use swtpm_tests::TpmPair;

const PCRS: [u8; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn report(name: &str, v: &mut [Duration]) {
    let p50 = pct(v, 0.50);
    let p99 = pct(v, 0.99);
    println!(
        "{name:<52} n={:<5} p50={:>9.3} ms  p99={:>9.3} ms",
        v.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[test]
#[ignore]
fn bench_attestation() {
    let n: usize = std::env::var("OVSA_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let pair = TpmPair::start();
    let mut host_tpm = pair.host.open();
    let mut vtpm = pair.vtpm.open();
    let t = Instant::now();
    host::write_host_evidence(&mut host_tpm, &mut vtpm, &HostQuoteOptions::default()).unwrap();
    println!(
        "host-quote (create host AK + quote + NV write): {:.1} ms, {} host + {} vTPM commands",
        t.elapsed().as_secs_f64() * 1e3,
        host_tpm.command_count(),
        vtpm.command_count()
    );
    let config = VerifierConfig {
        vtpm_ek_trust: EkTrust::from_pem(&pair.vtpm.ca.chain_pem()).unwrap(),
        host_ek_trust: EkTrust::from_pem(&pair.host.ca.chain_pem()).unwrap(),
        require_safe_clock: true,
    };
    for alg in [AkAlg::EcdsaP256, AkAlg::Rsa2048] {
        let t = Instant::now();
        let ak = vtpm.create_ak(EkKind::Rsa2048, alg).unwrap();
        println!(
            "\n== AK {alg:?} (created once and cached: {:.1} ms)",
            t.elapsed().as_secs_f64() * 1e3
        );
        let qd = attest::quote_qualifying_data(b"nonce", b"epk", None);
        // (a) attestation per load: quote (load EK/AK, PCR read, quote, flush) + NV read.
        let mut a = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let _q = vtpm.quote(&ak, &qd, HashAlg::Sha256, &PCRS).unwrap();
            let _b = host::read_host_evidence_blob(&mut vtpm).unwrap();
            a.push(t.elapsed());
        }
        report("attest: quote + host-evidence NV read", &mut a);

        // (b) a whole model load on a fresh connection: EK cert, credential activation, quote, NV.
        let m = (n / 4).max(10);
        let mut full = Vec::with_capacity(m);
        let mut issue = Vec::with_capacity(m);
        let mut verify = Vec::with_capacity(m);
        let mut commands = 0;
        let mut reference = None;
        for i in 0..m {
            let t = Instant::now();
            let mut tpm = Tpm::open(Some(&pair.vtpm.tcti())).unwrap();
            let ek_cert = tpm.ek_certificate(EkKind::Rsa2048).unwrap();
            let ti = Instant::now();
            let (pending, ch) =
                attest::issue_credential(&config, &ek_cert, &ak.public, now()).unwrap();
            let issue_t = ti.elapsed();
            let resp = tpm
                .activate_credential(&ak, &ch.id_object, &ch.encrypted_secret)
                .unwrap();
            let nonce = (i as u64).to_be_bytes();
            let qd = attest::quote_qualifying_data(&nonce, b"epk", None);
            let q = tpm.quote(&ak, &qd, HashAlg::Sha256, &PCRS).unwrap();
            let blob = host::read_host_evidence_blob(&mut tpm).unwrap();
            full.push(t.elapsed() - issue_t);
            issue.push(issue_t);
            commands = tpm.command_count();
            let ev = Evidence {
                ek_cert,
                ak_public: ak.public.clone(),
                quote: q.attest,
                signature: q.signature,
                pcrs: q.pcrs.clone(),
                host_evidence: Some(blob.clone()),
                event_log: None,
                ima_log: None,
            };
            let r = reference.get_or_insert_with(|| ReferenceValues {
                vtpm: q.pcrs.clone(),
                host: Some(attest::HostEvidence::decode(&blob).unwrap().pcrs),
                events: None,
                runtime: None,
            });
            let tv = Instant::now();
            attest::verify(
                &config,
                &ev,
                &Expected {
                    qualifying_data: &qd,
                    reference: r,
                    binding: AkBinding::Activated {
                        pending: &pending,
                        response: &resp,
                    },
                    host: HostPolicy {
                        required: true,
                        enrolled_aks: None,
                    },
                    previous_clock: None,
                    now: now(),
                },
            )
            .unwrap();
            verify.push(tv.elapsed());
        }
        report(
            "model load: open + EK cert + activate + quote + NV",
            &mut full,
        );
        report(
            "verifier: issue_credential (EK chain + MakeCredential)",
            &mut issue,
        );
        report("verifier: verify (vTPM + host evidence)", &mut verify);
        // TPM private-key operations per model load: ActivateCredential (EK decrypt), Load of the
        // AK, Quote (AK sign). At ~200 ms each on a slow hardware TPM that is ~0.6 s per load.
        println!("TPM commands per model load: {commands} (private-key operations: 3 = AK load, ActivateCredential, Quote; ~0.6 s at 200 ms each on a slow TPM)");
    }
}
