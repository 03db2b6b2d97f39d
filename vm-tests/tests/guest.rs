//! Guests under TCG with a vTPM: the TPM device, quotes verified on the host, OVMF measured boot,
//! the loopback-only network forward, and the hard deadline.
//!
//! Each test fetches the guest parts itself (cached in `vm_tests::cache_root()`), so they run on
//! a fresh machine that has `apt-get` access to the Debian mirror. Run with `--nocapture` to see
//! the timings.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ovsa_core::attest::{self, EkTrust, EventLog, Evidence};
use swtpm_tests::names;
use vm_tests::{BootOpts, Firmware, Guest, GuestFwd, GuestOutput, GuestParts, Vtpm, VtpmChoice};

const ATTEST: &str = env!("CARGO_BIN_EXE_ovsa-vm-attest");
const RELAY: &str = env!("CARGO_BIN_EXE_ovsa-vm-relay");

fn parts() -> GuestParts {
    static PRINTED: std::sync::Once = std::sync::Once::new();
    let p = GuestParts::fetch().unwrap_or_else(|e| panic!("{e}"));
    PRINTED.call_once(|| {
        println!(
            "fetch: {:.2} s ({}; kernel {}, QEMU {}, {} packages, {:.1} MB of .deb)",
            p.fetch_time.as_secs_f64(),
            if p.fetched_now {
                "downloaded"
            } else {
                "cached"
            },
            p.kernel_release,
            p.version_of("qemu-system-x86").unwrap_or("?"),
            p.packages.len(),
            p.download_bytes() as f64 / 1e6
        )
    });
    p
}

fn run(what: &str, opts: &BootOpts) -> GuestOutput {
    let p = parts();
    let t0 = Instant::now();
    let out = Guest::boot_with(&p, opts)
        .and_then(|g| g.wait())
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    println!(
        "{what} ({:?}, -m {}): {}; wall {:.2} s",
        opts.firmware,
        opts.memory_mib,
        out.timings(),
        t0.elapsed().as_secs_f64()
    );
    out
}

fn assert_ok(out: &GuestOutput) {
    assert_eq!(
        out.status, 0,
        "guest command failed\nstdout:\n{}\nstderr:\n{}\nconsole:\n{}",
        out.stdout, out.stderr, out.console
    );
}

fn nonce() -> Vec<u8> {
    use std::hash::{BuildHasher, Hasher};
    let mut v = Vec::new();
    for i in 0..4u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        v.extend_from_slice(&h.finish().to_le_bytes());
    }
    v
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Verifies `evidence.json` written by `ovsa-vm-attest` in the guest: quote signature and nonce,
/// and the EK certificate chains to the vTPM test CA. Returns the evidence.
fn verify_on_host(path: &Path, nonce: &[u8]) -> Evidence {
    let ev: Evidence = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let info = attest::verify_quote_only(&ev.ak_public, &ev.quote, &ev.signature, &ev.pcrs, nonce)
        .unwrap_or_else(|e| panic!("the guest's quote does not verify on the host: {e}"));
    assert_eq!(info.extra_data, nonce);
    // Another nonce is refused: the quote is bound to ours.
    assert!(
        attest::verify_quote_only(&ev.ak_public, &ev.quote, &ev.signature, &ev.pcrs, &[7; 32])
            .is_err()
    );
    let ca = swtpm_tests::ca(names::VTPM_CA);
    let trust = EkTrust::from_pem(&ca.chain_pem()).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    attest::verify_ek_chain(&trust, &ev.ek_cert, now).unwrap_or_else(|e| {
        panic!("the guest's EK certificate does not chain to the vTPM CA: {e}")
    });
    // ... and not to the host TPMs' CA.
    let host_ca = swtpm_tests::ca(names::HOST_CA);
    let other = EkTrust::from_pem(&host_ca.chain_pem()).unwrap();
    assert!(attest::verify_ek_chain(&other, &ev.ek_cert, now).is_err());
    ev
}

/// Command lines of the processes whose arguments name any of `paths`.
fn processes_naming(paths: &[&Path]) -> Vec<String> {
    let needles: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| needles.iter().any(|n| c.contains(n.as_str())))
        .collect()
}

#[test]
fn fetch_is_cached_and_records_what_it_fetched() {
    let p = parts();
    assert!(p.qemu.is_file() && p.vmlinux.is_file() && p.bzimage.is_file());
    assert!(p.ovmf_code.is_file() && p.ovmf_vars.is_file() && p.busybox.is_file());
    assert!(p.kernel_release.ends_with("-amd64"), "{}", p.kernel_release);
    assert!(
        p.version_of(&format!("linux-image-{}", p.kernel_release))
            .is_some(),
        "{:?}",
        p.packages
    );
    assert!(p
        .version_of("qemu-system-x86")
        .is_some_and(|v| v.contains("7.2")));
    assert!(p.modules.iter().any(|m| m.ends_with("9p.ko")));
    // A second fetch of the same (complete) cache downloads nothing.
    let t0 = Instant::now();
    let again = GuestParts::fetch_into(&p.dir).unwrap();
    assert!(!again.fetched_now);
    println!("warm fetch: {:.3} s", t0.elapsed().as_secs_f64());
    let out = p
        .qemu_command()
        .arg("--version")
        .output()
        .expect("run qemu");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("QEMU emulator version 7.2"));
}

/// (a) PVH: the vTPM appears as /dev/tpmrm0 and the host root's tpm2-tools use it.
#[test]
fn pvh_guest_has_tpmrm0_and_tpm2_tools_work() {
    let out = run(
        "tpm2_getcap",
        &BootOpts::new(
            "set -e\ntest -c /dev/tpmrm0\nuname -r\ntpm2_getcap -T device:/dev/tpmrm0 properties-fixed\n",
        ),
    );
    assert_ok(&out);
    assert!(
        out.stdout.contains("TPM2_PT_FAMILY_INDICATOR"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("\"2.0\""), "{}", out.stdout);
    // swtpm's vendor string: this is the vTPM, not some other TPM.
    assert!(
        out.stdout.contains("TPM2_PT_VENDOR_STRING_1"),
        "{}",
        out.stdout
    );
    let p = parts();
    assert!(out.stdout.contains(&p.kernel_release));
}

/// The guest's exit status and stderr come back; the share is writable at its host path.
#[test]
fn pvh_guest_status_stderr_and_share() {
    let share = tempfile::Builder::new()
        .prefix("ovsa-vm-t-")
        .tempdir()
        .unwrap();
    std::fs::write(share.path().join("in.txt"), b"from the host").unwrap();
    let dir = share.path().display().to_string();
    let mut opts = BootOpts::new(format!(
        "cat {d}/in.txt > {d}/out.txt\necho to-stderr >&2\ntouch /etc/ovsa-vm-must-fail 2>/dev/null && echo WRITABLE-ROOT\nexit 3\n",
        d = sh_quote(&dir)
    ));
    opts.share = Some(share.path().to_path_buf());
    opts.vtpm = VtpmChoice::None;
    let out = run("status", &opts);
    assert_eq!(out.status, 3, "{}", out.console);
    assert_eq!(out.stderr.trim(), "to-stderr");
    assert!(
        !out.stdout.contains("WRITABLE-ROOT"),
        "the host root must be read-only"
    );
    assert_eq!(
        std::fs::read(share.path().join("out.txt")).unwrap(),
        b"from the host"
    );
}

/// (b) PVH: a quote made in the guest through ovsa-tpm (`device:/dev/tpmrm0`) verifies on the
/// host, and its EK certificate chains to the vTPM test CA.
///
/// What PVH measures: QEMU starts the PVH kernel from an option ROM run by SeaBIOS, so SeaBIOS's
/// measurements are there (PCRs 1, 2, 4; PCRs 0, 3, 5, 7 hold only its separator event), but
/// nothing measures the kernel, initrd or command line: PCR 9 stays zero.
#[test]
fn pvh_guest_quote_verifies_on_host() {
    let share = tempfile::Builder::new()
        .prefix("ovsa-vm-t-")
        .tempdir()
        .unwrap();
    let n = nonce();
    let ev_path = share.path().join("evidence.json");
    let mut opts = BootOpts::new(format!(
        "exec {} device:/dev/tpmrm0 {} 0,1,2,3,4,5,7,9 {}\n",
        sh_quote(ATTEST),
        hex::encode(&n),
        sh_quote(&ev_path.display().to_string())
    ));
    opts.share = Some(share.path().to_path_buf());
    let out = run("attest", &opts);
    assert_ok(&out);
    let ev = verify_on_host(&ev_path, &n);
    assert_eq!(ev.pcrs.values.len(), 8);
    // SHA-256(zeros || SHA-256(0xFFFFFFFF)): one separator event extended into a reset PCR.
    let separator_only =
        hex::decode("e21b703ee69c77476bccb43ec0336a9a1b2914b378944f7b00a10214ca8fea93").unwrap();
    for pcr in [0u8, 3, 5, 7] {
        assert_eq!(ev.pcrs.values[&pcr], separator_only, "PCR {pcr} under PVH");
    }
    assert_eq!(
        ev.pcrs.values[&9],
        vec![0u8; 32],
        "PVH must not measure the kernel (PCR 9)"
    );
}

/// (b') The project's own `ovsatool attest` (the workspace's build next to this test binary) in a
/// PVH guest on `device:/dev/tpmrm0`: its evidence verifies on the host, and the host's
/// `tpm2_checkquote` accepts the tpm2-tools files it wrote. Under `cargo test --workspace` the
/// binary is always built; a lone `cargo test -p vm-tests` on a fresh target dir skips this test
/// with a note (build it with `cargo build -p ovsatool`).
#[test]
fn pvh_guest_ovsatool_attest_verifies_on_host() {
    let exe = std::env::current_exe().unwrap();
    let Some(ovsatool) = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("ovsatool"))
        .filter(|p| p.is_file())
    else {
        println!(
            "ovsatool is not built next to {}; skipped (cargo build -p ovsatool)",
            exe.display()
        );
        return;
    };
    let share = tempfile::Builder::new()
        .prefix("ovsa-vm-t-")
        .tempdir()
        .unwrap();
    let n = nonce();
    let dir = share.path().join("att");
    std::fs::create_dir(&dir).unwrap();
    let mut opts = BootOpts::new(format!(
        "exec {} attest --tcti device:/dev/tpmrm0 --nonce {} --out-dir {} --pcrs 0,1,2,3,4,5,7\n",
        sh_quote(&ovsatool.display().to_string()),
        hex::encode(&n),
        sh_quote(&dir.display().to_string())
    ));
    opts.share = Some(share.path().to_path_buf());
    let out = run("ovsatool attest", &opts);
    assert_ok(&out);
    verify_on_host(&dir.join("evidence.json"), &n);
    let check = std::process::Command::new("tpm2_checkquote")
        .current_dir(&dir)
        .args([
            "-u",
            "ak.pub",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-f",
            "pcrs.bin",
        ])
        // pcrs.bin is in tpm2-tools' own serialized format (it carries its PCR selection),
        // so the plain command verifies, as `ovsatool attest` prints it.
        .args(["-g", "sha256", "-q", &hex::encode(&n)])
        .output()
        .expect("run tpm2_checkquote (tpm2-tools)");
    assert!(
        check.status.success(),
        "tpm2_checkquote on the host refused the guest's quote: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// (c) OVMF: measured boot. The event log exists, PCRs 0, 4 and 9 are non-zero, the guest's
/// quote verifies on the host and the event log replays to the quoted PCRs.
#[test]
fn ovmf_guest_measured_boot() {
    let share = tempfile::Builder::new()
        .prefix("ovsa-vm-t-")
        .tempdir()
        .unwrap();
    let n = nonce();
    let d = share.path().display().to_string();
    let mut opts = BootOpts::new(format!(
        "set -ex\nL=/sys/kernel/security/tpm0/binary_bios_measurements\ntest -e $L\ncp $L {d}/eventlog.bin\n{a} device:/dev/tpmrm0 {n} 0,1,2,3,4,5,7,9 {d}/evidence.json\n",
        d = sh_quote(&d),
        a = sh_quote(ATTEST),
        n = hex::encode(&n)
    ));
    opts.firmware = Firmware::Ovmf;
    opts.share = Some(share.path().to_path_buf());
    opts.timeout = Duration::from_secs(400);
    let out = run("ovmf attest", &opts);
    assert_ok(&out);
    let ev = verify_on_host(&share.path().join("evidence.json"), &n);
    for pcr in [0u8, 4, 9] {
        let v = &ev.pcrs.values[&pcr];
        assert!(v.iter().any(|&b| b != 0), "PCR {pcr} is zero under OVMF");
    }
    let log = EventLog::parse(&std::fs::read(share.path().join("eventlog.bin")).unwrap())
        .unwrap_or_else(|e| panic!("the firmware event log does not parse: {e}"));
    let checked = log
        .check_quoted(&ev.pcrs)
        .unwrap_or_else(|e| panic!("the event log does not replay to the quoted PCRs: {e}"));
    for pcr in [0u8, 4, 9] {
        assert!(
            checked.contains(&pcr),
            "event log does not cover PCR {pcr}: {checked:?}"
        );
    }
}

/// guestfwd: the guest reaches a host loopback port through 10.0.2.100 (relay started by QEMU),
/// and nothing else (restrict=on).
#[test]
fn guestfwd_reaches_the_host_loopback_port_only() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        (&s).write_all(format!("echo:{line}").as_bytes()).unwrap();
        line
    });
    // A second host loopback port the guest must NOT reach (without restrict=on, QEMU's user
    // network would connect 10.0.2.2:PORT to the host's 127.0.0.1:PORT).
    let forbidden = TcpListener::bind("127.0.0.1:0").unwrap();
    let fport = forbidden.local_addr().unwrap().port();
    let mut opts = BootOpts::new(format!(
        "set -e\nexec 3<>/dev/tcp/10.0.2.100/8443\necho ping-from-guest >&3\nhead -n1 <&3\n\
         if timeout 5 bash -c 'exec 4<>/dev/tcp/10.0.2.2/{fport}' 2>/dev/null; then echo REACHED-HOST; fi\n"
    ));
    opts.vtpm = VtpmChoice::None;
    opts.guestfwd = Some(GuestFwd {
        guest_port: 8443,
        host_port: port,
        relay: RELAY.into(),
    });
    opts.command = format!("exec /bin/bash -c {}\n", sh_quote(&opts.command));
    let out = run("guestfwd", &opts);
    assert_ok(&out);
    assert_eq!(server.join().unwrap().trim(), "ping-from-guest");
    assert!(
        out.stdout.contains("echo:ping-from-guest"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("REACHED-HOST"), "{}", out.stdout);
    forbidden.set_nonblocking(true).unwrap();
    assert!(
        forbidden.accept().is_err(),
        "the guest reached a host port it was not given"
    );
}

/// The hard deadline: a guest that never finishes is killed with QEMU and swtpm, and the error
/// says so; no process of it survives.
#[test]
fn hung_guest_is_killed_at_the_deadline() {
    let share = tempfile::Builder::new()
        .prefix("ovsa-vm-t-")
        .tempdir()
        .unwrap();
    let vtpm = Vtpm::from_template(names::VTPM).unwrap();
    let mut opts = BootOpts::new("sleep 100000\n");
    opts.share = Some(share.path().to_path_buf());
    opts.vtpm = VtpmChoice::State(vtpm.state_dir().to_path_buf());
    opts.timeout = Duration::from_secs(15);
    let p = parts();
    let guest = Guest::boot_with(&p, &opts).unwrap_or_else(|e| panic!("{e}"));
    // The deadline counts from QEMU's start (boot_with returns right after it).
    let t0 = Instant::now();
    let e = guest.wait().expect_err("the guest sleeps forever");
    println!("deadline: error after {:.2} s", t0.elapsed().as_secs_f64());
    assert!(e.to_string().contains("did not finish within 15 s"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(25), "{:?}", t0.elapsed());
    let survivors = processes_naming(&[share.path(), vtpm.state_dir()]);
    assert!(survivors.is_empty(), "processes left behind: {survivors:?}");
}

/// Dropping a booted guest without waiting kills its QEMU and swtpm.
#[test]
fn dropped_guest_leaves_no_process() {
    let share = tempfile::Builder::new()
        .prefix("ovsa-vm-t-")
        .tempdir()
        .unwrap();
    let vtpm = Vtpm::from_template(names::VTPM).unwrap();
    let mut opts = BootOpts::new("sleep 100000\n");
    opts.share = Some(share.path().to_path_buf());
    opts.vtpm = VtpmChoice::State(vtpm.state_dir().to_path_buf());
    let g = Guest::boot_with(&parts(), &opts).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let running = processes_naming(&[share.path(), vtpm.state_dir()]);
    assert_eq!(running.len(), 2, "QEMU and swtpm run: {running:?}");
    drop(g);
    let left = processes_naming(&[share.path(), vtpm.state_dir()]);
    assert!(left.is_empty(), "processes survived the drop: {left:?}");
}
