//! Runtime integrity (IMA) end to end in a guest booted with `ima_policy=tcb
//! ima_template=ima-ng`: an ISV runtime policy built by `ovsatool runtime-policy` from the stock
//! `libovsaruntime.so` and `ovsatool` (standing for the serving process); the guest maps the
//! plugin executable (the dynamic loader's `--list` maps it as `dlopen` does: IMA's tcb policy
//! measures every `mmap(PROT_EXEC)` of a file by root) and runs `ovsatool attest` quoting PCR
//! 10, whose evidence carries the IMA list. The Verifier (`attest::verify` with the policy in
//! the reference, as the license service builds it from a license sold with `sale
//! --runtime-policy`) accepts the stock guest and refuses a guest that mapped a copy of the
//! plugin with one byte changed (`runtime_not_allowed`, naming the file and its digest).
//!
//! Needs the workspace's `ovsatool` and `libovsaruntime.so` next to this test binary
//! (`cargo build -p ovsatool -p ovsa-runtime`); skipped with a note otherwise.

mod common;

use common::run_tool;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ovsa_core::attest::{
    self, AkBinding, AttestError, EkTrust, Evidence, Expected, HostPolicy, MeasuredBootError,
    ReferenceValues, VerifierConfig,
};
use ovsa_core::envelope::Signed;
use ovsa_core::license::RuntimePolicy;
use swtpm_tests::names;
use vm_tests::{BootOpts, Guest, GuestParts};

fn built(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent()?.parent()?.join(name);
    p.is_file().then_some(p)
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn nonce(tag: u8) -> Vec<u8> {
    let mut n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_be_bytes()
        .to_vec();
    n.push(tag);
    n
}

/// Boots a PVH guest with IMA measuring (tcb policy, ima-ng), maps `plugin` executable, runs
/// `ovsatool attest` quoting PCRs 0 and 10 into `dir` and copies the text IMA list beside it.
fn boot(
    parts: &GuestParts,
    tool: &Path,
    share: &Path,
    dir: &Path,
    plugin: &Path,
    n: &[u8],
) -> Evidence {
    std::fs::create_dir_all(dir).unwrap();
    let mut opts = BootOpts::new(format!(
        "set -e\n\
         ld=$(ls /lib64/ld-linux-x86-64.so.2 /lib/ld-linux-aarch64.so.1 2>/dev/null | head -n1)\n\
         \"$ld\" --list {plugin} >/dev/null\n\
         {tool} attest --tcti device:/dev/tpmrm0 --nonce {n} --out-dir {d} --pcrs 0,10\n\
         cp /sys/kernel/security/ima/ascii_runtime_measurements {d}/ima.txt\n",
        plugin = sh_quote(plugin),
        tool = sh_quote(tool),
        n = hex::encode(n),
        d = sh_quote(dir),
    ));
    opts.share = Some(share.to_path_buf());
    opts.extra_append = "ima_policy=tcb ima_template=ima-ng ima_hash=sha256".into();
    opts.timeout = Duration::from_secs(400);
    let t0 = Instant::now();
    let out = Guest::boot_with(parts, &opts)
        .and_then(|g| g.wait())
        .unwrap_or_else(|e| panic!("IMA guest: {e}"));
    println!(
        "IMA guest ({}): {}; wall {:.2} s",
        plugin.display(),
        out.timings(),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        out.status, 0,
        "guest command failed\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    serde_json::from_slice(&std::fs::read(dir.join("evidence.json")).unwrap()).unwrap()
}

/// The full Verifier with the runtime policy in the reference (PCR 0 by value, as quoted: this
/// test is about PCR 10), the AK taken as enrolled.
fn verify(ev: &Evidence, n: &[u8], policy: &RuntimePolicy) -> Result<(), AttestError> {
    let mut vtpm = attest::PcrSet::new(ev.pcrs.bank);
    vtpm.values.insert(0, ev.pcrs.values[&0].clone());
    let reference = ReferenceValues {
        vtpm,
        host: None,
        events: None,
        runtime: Some(policy.clone()),
    };
    let config = VerifierConfig {
        vtpm_ek_trust: EkTrust::from_pem(&swtpm_tests::ca(names::VTPM_CA).chain_pem()).unwrap(),
        ..VerifierConfig::default()
    };
    let ak_name = attest::wire::parse_public(&ev.ak_public)
        .unwrap()
        .name()
        .unwrap();
    let ek_hash: [u8; 32] = attest::HashAlg::Sha256
        .digest(&ev.ek_cert)
        .try_into()
        .unwrap();
    attest::verify(
        &config,
        ev,
        &Expected {
            qualifying_data: n,
            reference: &reference,
            binding: AkBinding::Enrolled {
                ak_name: &ak_name,
                ek_cert_sha256: &ek_hash,
            },
            host: HostPolicy::default(),
            previous_clock: None,
            now: now(),
        },
    )
    .map(|_| ())
}

#[test]
fn runtime_policy_accepts_the_stock_plugin_and_refuses_a_patched_one_in_the_guest() {
    let t0 = Instant::now();
    let (Some(tool), Some(plugin)) = (built("ovsatool"), built("libovsaruntime.so")) else {
        println!(
            "ovsatool or libovsaruntime.so is not built next to this test; skipped \
             (cargo build -p ovsatool -p ovsa-runtime)"
        );
        return;
    };
    let parts = GuestParts::fetch().unwrap_or_else(|e| panic!("{e}"));
    let share = tempfile::Builder::new()
        .prefix("ovsa-vm-ima-")
        .tempdir()
        .unwrap();
    let s = share.path();

    // The stock plugin as deployed and a copy with one byte changed (in its data: it still
    // maps), both under the plugin pattern. Written on the host before the boot: the guest sees
    // them over 9p, which IMA measures (it does not measure tmpfs).
    let stock = s.join("opt/lib/libovsaruntime.so");
    let patched = s.join("patched/lib/libovsaruntime.so");
    for p in [&stock, &patched] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    }
    let mut bytes = std::fs::read(&plugin).unwrap();
    std::fs::write(&stock, &bytes).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x01;
    std::fs::write(&patched, &bytes).unwrap();

    // The ISV's policy from the stock files.
    run_tool(
        &tool,
        s,
        &["keygen", "--keystore", "isv.ks", "--subject", "CN=ISV"],
    );
    let plugin_rule = format!("**/libovsaruntime.so={}", stock.display());
    let tool_rule = format!("**/ovsatool={}", tool.display());
    let said = run_tool(
        &tool,
        s,
        &[
            "runtime-policy",
            "--keystore",
            "isv.ks",
            "--out",
            "runtime.rtp",
            "--name",
            "guest-runtime",
            "--file",
            &plugin_rule,
            "--file",
            &tool_rule,
        ],
    );
    assert!(said.contains("2 patterns, 2 digests"), "{said}");
    let policy = Signed::<RuntimePolicy>::load(&s.join("runtime.rtp"))
        .unwrap()
        .body()
        .clone();

    // A fresh boot with the stock plugin: accepted.
    let n1 = nonce(1);
    let ev1 = boot(&parts, &tool, s, &s.join("stock-boot"), &stock, &n1);
    let ascii = std::fs::read_to_string(s.join("stock-boot/ima.txt")).unwrap();
    let plugin_line = ascii
        .lines()
        .find(|l| l.ends_with("/libovsaruntime.so"))
        .unwrap_or_else(|| panic!("IMA did not measure the mapped plugin:\n{ascii}"));
    println!("IMA: {plugin_line}");
    assert!(ev1.ima_log.is_some(), "ovsatool attest sent no IMA list");
    assert!(ev1.pcrs.values.contains_key(&10));
    verify(&ev1, &n1, &policy).unwrap_or_else(|e| panic!("stock guest refused: {e}"));

    // The same policy from the reference boot's text list (`--ima-log --pattern`) allows it too.
    run_tool(
        &tool,
        s,
        &[
            "runtime-policy",
            "--keystore",
            "isv.ks",
            "--out",
            "from-log.rtp",
            "--ima-log",
            "stock-boot/ima.txt",
            "--pattern",
            "**/libovsaruntime.so",
            "--pattern",
            "**/ovsatool",
        ],
    );
    let from_log = Signed::<RuntimePolicy>::load(&s.join("from-log.rtp"))
        .unwrap()
        .body()
        .clone();
    assert_eq!(from_log.files.len(), 2);
    verify(&ev1, &n1, &from_log).unwrap_or_else(|e| panic!("stock guest refused: {e}"));

    // A fresh boot that maps the patched copy before the check: refused, naming it.
    let n2 = nonce(2);
    let ev2 = boot(&parts, &tool, s, &s.join("patched-boot"), &patched, &n2);
    let want = hex::encode(ovsa_core::crypto::hash::sha256(&bytes));
    match verify(&ev2, &n2, &policy) {
        Err(AttestError::MeasuredBoot(MeasuredBootError::RuntimeNotAllowed {
            ref path,
            ref digest,
            ..
        })) => {
            assert!(path.ends_with("patched/lib/libovsaruntime.so"), "{path}");
            assert_eq!(*digest, want);
            println!("refused: {}", verify(&ev2, &n2, &policy).unwrap_err());
        }
        other => panic!("a patched plugin must be refused with runtime_not_allowed: {other:?}"),
    }
    // Its list is genuine (it replays to the quote): the refusal is the policy's.
    ovsa_core::attest::measured_boot::check(&ev2.pcrs, None, ev2.ima_log.as_deref(), None).unwrap();
    // Dropping the list does not help: the policy requires it.
    let mut bare = ev2.clone();
    bare.ima_log = None;
    assert!(matches!(
        verify(&bare, &n2, &policy),
        Err(AttestError::MeasuredBoot(MeasuredBootError::ImaLogMissing))
    ));
    // The guest's own text list names the copy it mapped.
    let text = std::fs::read_to_string(s.join("patched-boot/ima.txt")).unwrap();
    assert!(text.contains("patched/lib/libovsaruntime.so"), "{text}");
    println!(
        "ima_guest test wall time: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
}
