//! Load test of the license service: N concurrent clients, each with its own swtpm vTPM, run
//! complete attested license checks (new TLS connection, challenge, credential activation, quote,
//! attest, share unsealed) against the real `ovsa-license-server` binary running as a separate
//! process, for a fixed time. Prints checks/s, p50/p99 latency, the server's CPU time per check
//! (from /proc), errors, and verifies the license's use counter equals the successful checks.
//!
//! ```sh
//! cargo build --release -p ovsa-license-server
//! cargo run --release -p ovsa-license-server --example loadtest -- --clients 8 --seconds 20
//! cargo run --release -p ovsa-license-server --example loadtest -- --db postgres://...   # fleet storage
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovsa_client::{check_license, ClientOptions, TpmAttester};
use ovsa_core::attest::HashAlg;
use ovsa_core::crypto::KeyAlgorithm;
use ovsa_core::encoding::now_rfc3339;
use ovsa_core::envelope::Signed;
use ovsa_core::identity::{Keystore, KeystoreProtection};
use ovsa_core::license::customer::SaleRequest;
use ovsa_core::license::policy::Pin;
use ovsa_core::license::{
    sell, LicenseConfig, MasterLicense, PcrSet, Policy, ServiceEndpoint, TcbReference, Validity,
};
use ovsa_core::package::{classify_inputs, protect, ProtectOptions};
use ovsa_core::protocol::Purpose;
use swtpm_tests::{names, Swtpm};

struct Args {
    clients: usize,
    seconds: u64,
    db: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        clients: 8,
        seconds: 20,
        db: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--clients" => a.clients = v.parse().unwrap_or(8),
            "--seconds" => a.seconds = v.parse().unwrap_or(20),
            "--db" => a.db = Some(v),
            _ => {
                eprintln!("usage: loadtest [--clients N] [--seconds S] [--db URL]");
                std::process::exit(2);
            }
        }
    }
    a
}

fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/examples/loadtest -> target/<profile>/ovsa-license-server
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("ovsa-license-server"))
        .expect("target dir");
    if !bin.exists() {
        eprintln!(
            "{} not found: run `cargo build --release -p ovsa-license-server` first",
            bin.display()
        );
        std::process::exit(2);
    }
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command name: state is index 0, utime is 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// Total CPU seconds of every running `swtpm` process (the clients' TPMs).
fn swtpm_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == "swtpm")
                .unwrap_or(false)
        })
        .map(cpu_seconds)
        .sum()
}

fn self_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    let a = args();
    let bin = server_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ks = |s: &str| {
        Keystore::generate(KeyAlgorithm::EcdsaP256, s, 30)
            .unwrap()
            .0
    };
    let (isv, customer, server_ks) = (ks("CN=isv"), ks("CN=customer"), ks("CN=license.local"));
    std::fs::write(d.join("server.crt"), server_ks.certificate().to_pem()).unwrap();
    server_ks
        .save(&d.join("server.ks"), &KeystoreProtection::None, true)
        .unwrap();
    std::fs::write(d.join("isv.crt"), isv.certificate().to_pem()).unwrap();
    let vtpm_ca = swtpm_tests::ca(names::VTPM_CA);
    std::fs::write(d.join("vtpm-ca.pem"), vtpm_ca.chain_pem()).unwrap();

    // A model, its master license, a TCB reference from a live vTPM, and one license.
    std::fs::write(d.join("m.onnx"), vec![7u8; 4096]).unwrap();
    let protected = protect(
        &classify_inputs(&[d.join("m.onnx")]).unwrap(),
        &ProtectOptions {
            model_name: "loadtest".into(),
            model_version: "1".into(),
            description: String::new(),
            chunk_size: 65536,
            overwrite: true,
        },
        &isv,
        &d.join("m.dat"),
        &mut |_| {},
    )
    .unwrap();
    let master = MasterLicense::create(&protected, &isv).unwrap();
    let tpms: Vec<Swtpm> = (0..a.clients).map(|_| Swtpm::start(names::VTPM)).collect();
    let pcrs = tpms[0]
        .open()
        .read_pcrs(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7])
        .unwrap();
    let tcb = Signed::sign(
        TcbReference {
            name: "loadtest".into(),
            vtpm: PcrSet::from_attest(&pcrs).unwrap(),
            host: None,
            host_max_age_seconds: None,
            vtpm_ek: None,
            events: None,
            runtime: None,
            created: now_rfc3339(),
        },
        &isv,
    )
    .unwrap();
    let port = free_port();
    let config = Signed::sign(
        LicenseConfig {
            name: "loadtest".into(),
            policy: Policy {
                validity: Validity::Perpetual,
                usage_limit: Some(10_000_000),
                instance_limit: None,
            },
            lease_seconds: 600,
            grace_seconds: ovsa_core::license::policy::DEFAULT_GRACE_SECONDS,
            services: vec![ServiceEndpoint {
                url: format!("https://127.0.0.1:{port}"),
                pins: vec![Pin(server_ks.certificate().spki_pin())],
            }],
            created: now_rfc3339(),
        },
        &isv,
    )
    .unwrap();
    let registration_ks = ks("CN=registration");
    registration_ks
        .save(&d.join("registration.ks"), &KeystoreProtection::None, true)
        .unwrap();
    let sale = sell(&SaleRequest {
        isv: &isv,
        master: &master,
        config: &config,
        tcb: &tcb,
        customer: customer.certificate(),
        service: registration_ks.certificate(),
    })
    .unwrap();
    sale.registration
        .save(&d.join("l.reg"), 0o600, true)
        .unwrap();
    let db =
        a.db.clone()
            .unwrap_or_else(|| format!("sqlite:{}", d.join("licenses.db").display()));
    let admin = Command::new(&bin)
        .args(["--db", &db, "license", "add"])
        .arg(d.join("l.reg"))
        .arg("--trust-isv")
        .arg(d.join("isv.crt"))
        .arg("--registration-key")
        .arg(d.join("registration.ks"))
        .status()
        .unwrap();
    assert!(admin.success(), "license add failed");

    let mut server: Child = Command::new(&bin)
        .args([
            "--db",
            &db,
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--tls-cert")
        .arg(d.join("server.crt"))
        .arg("--tls-key")
        .arg(d.join("server.ks"))
        .arg("--trust-ek-ca")
        .arg(d.join("vtpm-ca.pem"))
        .env("OVSA_LS_LOG", "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Warm up each client (AK creation) before measuring.
    let license = Arc::new(sale.license.body().clone());
    let customer = Arc::new(customer);
    let mut attesters: Vec<TpmAttester> = tpms
        .iter()
        .map(|t| TpmAttester::open(Some(&t.tcti()), None).unwrap())
        .collect();
    for att in attesters.iter_mut() {
        check_license(
            &license,
            &customer,
            att,
            Purpose::Load,
            &ClientOptions::default(),
            &mut |_| {},
        )
        .expect("warm-up check");
    }
    let warmup = a.clients as u64;

    println!(
        "license service load test: {} clients x {} s, storage {}, server pid {}",
        a.clients,
        a.seconds,
        db.split(':').next().unwrap_or(""),
        server.id()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = cpu_seconds(server.id());
    let (tpm0, me0) = (swtpm_cpu_seconds(), self_cpu_seconds());
    let t0 = Instant::now();
    let handles: Vec<_> = attesters
        .into_iter()
        .map(|mut att| {
            let (license, customer, stop) = (license.clone(), customer.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let s = Instant::now();
                    match check_license(
                        &license,
                        &customer,
                        &mut att,
                        Purpose::Load,
                        &ClientOptions::default(),
                        &mut |_| {},
                    ) {
                        Ok(r) if r.share.is_some() => lat.push(s.elapsed()),
                        Ok(_) => errors.push("no share".to_string()),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(a.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    for h in handles {
        let (l, e) = h.join().unwrap();
        lat.extend(l);
        errors.extend(e);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server.id()) - cpu0;
    let tpm_cpu = swtpm_cpu_seconds() - tpm0;
    let client_cpu = self_cpu_seconds() - me0;
    lat.sort();
    let ok = lat.len() as u64;

    let _ = server.kill();
    let _ = server.wait();
    let show = Command::new(&bin)
        .args([
            "--db",
            &db,
            "license",
            "show",
            &license.license_guid.to_string(),
            "--json",
        ])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap_or_default();
    let uses = shown["uses"].as_u64().unwrap_or(0);

    println!(
        "successful checks: {ok} in {elapsed:.1} s = {:.1} checks/s",
        ok as f64 / elapsed
    );
    println!(
        "latency per check (client view, incl. TPM work): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    println!(
        "server CPU: {:.2} s total = {:.2} ms per check",
        cpu,
        cpu * 1e3 / ok.max(1) as f64
    );
    println!(
        "client side CPU per check: swtpm TPM simulators {:.2} ms, client processes {:.2} ms \
         (all on the same {} cores as the service)",
        tpm_cpu * 1e3 / ok.max(1) as f64,
        client_cpu * 1e3 / ok.max(1) as f64,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "service capacity implied by its CPU per check: {:.0} checks/s per core",
        ok as f64 / cpu.max(1e-9)
    );
    println!("errors: {}", errors.len());
    for e in errors.iter().take(5) {
        println!("  {e}");
    }
    println!(
        "use counter: {uses} = {ok} measured + {warmup} warm-up: {}",
        if uses == ok + warmup {
            "exact"
        } else {
            "MISMATCH"
        }
    );
    if !errors.is_empty() || uses != ok + warmup {
        std::process::exit(1);
    }
}
