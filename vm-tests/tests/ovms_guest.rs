//! The deployment, in an OVMF guest under TCG: the OVMS-faithful C++ driver
//! (`tests/ovms_driver.cpp`, with its OpenVINO commands) loads a protected real model (the PP-OCR
//! direction classifier, ONNX) through `libovsaruntime.so`, which reaches the vTPM through the
//! guest kernel (`device:/dev/tpmrm0`) and the license service on the host through the
//! loopback-only guestfwd relay; OpenVINO's outputs equal the plaintext model's; the license is
//! revoked on the host and the guest's next renewal blacklists it. The TCB reference is the
//! PCRs 0-9 of a reference boot of the same guest (same firmware, RAM, devices, kernel, initrd and
//! command line); a changed command line, initrd or kernel is refused with `pcr_mismatch` naming
//! the PCR. Host evidence (`ovsatool host-quote`) is written into the vTPM's NV before any boot,
//! and the service requires it.
//!
//! The host side uses the workspace's binaries (`ovsatool`, `ovsa-license-server`,
//! `libovsaruntime.so`, built by `cargo test --workspace`) and the OpenVINO wheel of
//! `scripts/setup.sh --openvino`. One fixture (identities, host evidence, reference boot, TCB,
//! licenses, service) is shared by the tests of this file; guests boot one at a time.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use swtpm_tests::names;
use vm_tests::{BootOpts, Firmware, Guest, GuestFwd, GuestOutput, GuestParts, Vtpm, VtpmChoice};

const RELAY: &str = env!("CARGO_BIN_EXE_ovsa-vm-relay");
/// Guest RAM: OpenVINO's CPU plugin compiling the classifier under TCG needs more than the
/// harness's 512 MiB default; every boot of this file uses the same size (PCR 0 depends on it).
const MEMORY_MIB: u32 = 1024;
/// The PCRs the TCB reference pins (OVMF: firmware, boot variables, the kernel in 4, Secure Boot
/// state in 7, the command line and the initrd in 9).
const TCB_PCRS: &str = "0,1,2,3,4,5,6,7,8,9";
/// The signed lease of the license the guest loads: how soon a revocation takes effect.
const LEASE_SECONDS: u32 = 10;
const SHAPE: &str = "1,3,48,192";
const ONNX: i32 = 2;
const LOAD_ERROR: i32 = 4;
const BLACKLISTED: i32 = 5;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn sh_quote(s: impl AsRef<str>) -> String {
    format!("'{}'", s.as_ref().replace('\'', r"'\''"))
}

fn q(p: &Path) -> String {
    sh_quote(p.display().to_string())
}

/// Runs a host command; panics with its output if it fails. Returns stdout.
fn run_ok(c: &mut Command) -> String {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// FNV-1a, a cache key for the compiled driver.
fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The OpenVINO wheel's package directory in the project's venv.
fn openvino_dir() -> PathBuf {
    let lib = root().join(".venv/lib");
    std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|py| py.path().join("site-packages/openvino"))
        .find(|d| d.join("include/openvino/openvino.hpp").is_file())
        .unwrap_or_else(|| {
            panic!(
                "the OpenVINO wheel is missing in {}: run `bash scripts/setup.sh --openvino`",
                lib.display()
            )
        })
}

/// `tests/ovms_driver.cpp` with its OpenVINO commands, compiled as `tests/ovms_driver.rs` does
/// (same flags), once per source: cached in the test's target tmp dir by the sources' hash.
fn driver() -> PathBuf {
    let cpp = root().join("tests/ovms_driver.cpp");
    let hpp = root().join("include/ovms_custom_loader_interface.hpp");
    let ov = openvino_dir();
    let libs = ov.join("libs");
    let core = std::fs::read_dir(&libs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libopenvino.so.")
        })
        .expect("libopenvino.so.N in the wheel");
    let mut key = std::fs::read(&cpp).unwrap();
    key.extend(std::fs::read(&hpp).unwrap());
    key.extend(core.display().to_string().bytes());
    let exe =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ovms_driver_ov-{:016x}", fnv(&key)));
    if exe.is_file() {
        return exe;
    }
    let t0 = Instant::now();
    let tmp = exe.with_extension(format!("{}.tmp", std::process::id()));
    run_ok(
        Command::new("g++")
            .args(["-DOVSA_WITH_OPENVINO", "-isystem"])
            .arg(ov.join("include"))
            .args([
                "-std=c++17",
                "-D_GLIBCXX_USE_CXX11_ABI=1",
                "-Wall",
                "-Werror",
                "-Wno-unused-parameter",
                "-O1",
                "-pthread",
                "-I",
            ])
            .arg(root().join("include"))
            .arg(&cpp)
            .arg("-o")
            .arg(&tmp)
            .arg(&core)
            .arg(format!("-Wl,-rpath,{}", libs.display()))
            .arg("-ldl"),
    );
    std::fs::rename(&tmp, &exe).unwrap();
    println!("driver: compiled in {:.1} s", t0.elapsed().as_secs_f64());
    exe
}

/// The workspace's build directory (`target/<profile>`), next to this test binary.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn built(name: &str) -> PathBuf {
    let dir = bin_dir();
    for p in [dir.join(name), dir.join("deps").join(name)] {
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} is not built in {}: `cargo test --workspace` builds it; alone, run \
         `cargo build -p ovsatool -p ovsa-license-server -p ovsaruntime` first",
        dir.display()
    );
}

/// A swtpm serving a state directory over TCP (for `host-quote` before the guest's first boot),
/// stopped with `swtpm_ioctl -s` so its state is saved.
struct TcpSwtpm {
    child: Child,
    port: u16,
}

impl TcpSwtpm {
    fn serve(state: &Path) -> TcpSwtpm {
        for _ in 0..50 {
            let port = swtpm_tests::PortPair::reserve().port();
            let mut child = swtpm_tests::command_without_inherited_fds("swtpm")
                .args(["socket", "--tpm2", "--server"])
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--tpmstate")
                .arg(format!("dir={}", state.display()))
                .args(["--flags", "not-need-init,startup-clear"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("swtpm (scripts/setup.sh installs it)");
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return TcpSwtpm { child, port };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not serve the vTPM state over TCP");
    }

    fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    fn stop(mut self) {
        let _ = Command::new("swtpm_ioctl")
            .args(["--tcp", &format!("127.0.0.1:{}", self.port + 1), "-s"])
            .output();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A model repository for one license: `<base>/1/{cls.dat,cls.lic}` and the customer keystore.
struct Repo {
    base: PathBuf,
    guid: String,
}

struct Fixture {
    dir: PathBuf,
    share: PathBuf,
    vtpm: PathBuf,
    driver: PathBuf,
    plugin: PathBuf,
    server: PathBuf,
    db: String,
    port: u16,
    cls: PathBuf,
    keystore: PathBuf,
    /// The license with the short lease (revoked by the load test).
    load: Repo,
    /// A license of its own for the refusal boots.
    refuse: Repo,
    /// The service: a `sh` that kills it when this process's end closes its stdin.
    _service: Mutex<Option<Child>>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(Fixture::new)
}

fn parts() -> GuestParts {
    GuestParts::fetch().unwrap_or_else(|e| panic!("{e}"))
}

impl Fixture {
    /// Boot options shared by every guest of this file: only the tests' deliberate changes
    /// differ from the reference boot.
    fn opts(&self, command: String) -> BootOpts {
        let mut o = BootOpts::new(command);
        o.firmware = Firmware::Ovmf;
        o.memory_mib = MEMORY_MIB;
        o.timeout = Duration::from_secs(600);
        o.share = Some(self.share.clone());
        o.vtpm = VtpmChoice::State(self.vtpm.clone());
        o.guestfwd = Some(GuestFwd {
            guest_port: 8443,
            host_port: self.port,
            relay: RELAY.into(),
        });
        o
    }

    fn new() -> Fixture {
        let t0 = Instant::now();
        let tool = built("ovsatool");
        let server = built("ovsa-license-server");
        let plugin = built("libovsaruntime.so");
        let cls = root().join(".venv/ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx");
        assert!(
            cls.is_file(),
            "{} missing: run `bash scripts/setup.sh --openvino`",
            cls.display()
        );
        let driver = driver();
        // A fixed directory (the share's path is on the guest's kernel command line, which the
        // TCB pins), wiped at the start.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ovms-guest");
        let _ = std::fs::remove_dir_all(&dir);
        let share = dir.join("share");
        std::fs::create_dir_all(&share).unwrap();
        let t = |args: &[&str]| run_ok(Command::new(&tool).current_dir(&dir).args(args));

        // Identities, the model, the license offer (short signed lease, the guest's URL).
        t(&[
            "keygen",
            "--keystore",
            "isv.ks",
            "--subject",
            "CN=Acme Models",
        ]);
        t(&[
            "keygen",
            "--keystore",
            "customer.ks",
            "--subject",
            "CN=Customer One",
        ]);
        t(&[
            "keygen",
            "--keystore",
            "tls.ks",
            "--subject",
            "CN=license.local",
        ]);
        t(&[
            "keygen",
            "--keystore",
            "reg.ks",
            "--subject",
            "CN=license.local registration",
        ]);
        let cls_s = cls.display().to_string();
        t(&[
            "protect",
            "--keystore",
            "isv.ks",
            "--name",
            "cls",
            "--version",
            "1",
            "--out",
            "cls.dat",
            "--master-license",
            "cls.masterlic",
            &cls_s,
        ]);
        let lease = LEASE_SECONDS.to_string();
        // The service's host loopback port. The guest's licenses name the guest's end of the
        // relay; the host admin's `host-enroll` runs on the host, so it uses a license of its
        // own naming the loopback address (the host never connects outside 127.0.0.0/8).
        let port = swtpm_tests::PortPair::reserve().port();
        t(&[
            "licgen",
            "--keystore",
            "isv.ks",
            "--out",
            "host.config",
            "--name",
            "host-admin",
            "--perpetual",
            "--server",
            &format!("https://127.0.0.1:{port}"),
            "--server-cert",
            "tls.ks.crt",
        ]);
        t(&[
            "licgen",
            "--keystore",
            "isv.ks",
            "--out",
            "lease.config",
            "--name",
            "guest",
            "--perpetual",
            "--lease",
            &lease,
            "--server",
            "https://10.0.2.100:8443",
            "--server-cert",
            "tls.ks.crt",
        ]);

        // The machine: a host TPM and the VM's vTPM state. Host admin, before the VM starts:
        // the host quote into the vTPM's NV.
        let host = swtpm_tests::Swtpm::start(names::HOST);
        let vtpm = Vtpm::from_template(names::VTPM).unwrap();
        let vtpm_dir = dir.join("vtpm");
        std::fs::create_dir_all(&vtpm_dir).unwrap();
        for e in std::fs::read_dir(vtpm.state_dir()).unwrap().flatten() {
            std::fs::copy(e.path(), vtpm_dir.join(e.file_name())).unwrap();
        }
        drop(vtpm);
        let tcp = TcpSwtpm::serve(&vtpm_dir);
        t(&[
            "host-quote",
            "--host-tcti",
            &host.tcti(),
            "--vtpm-tcti",
            &tcp.tcti(),
            "--ak-cache-dir",
            "host-ak",
        ]);
        tcp.stop();

        // The license service on the host loopback port (the guest reaches it through the relay).
        std::fs::write(
            dir.join("vtpm-ca.pem"),
            swtpm_tests::ca(names::VTPM_CA).chain_pem(),
        )
        .unwrap();
        std::fs::write(
            dir.join("host-ca.pem"),
            swtpm_tests::ca(names::HOST_CA).chain_pem(),
        )
        .unwrap();
        let db = format!("sqlite:{}", dir.join("licenses.db").display());

        let mut fx = Fixture {
            share: share.clone(),
            vtpm: vtpm_dir,
            driver,
            plugin,
            server: server.clone(),
            db: db.clone(),
            port,
            cls,
            keystore: dir.join("customer.ks"),
            load: Repo {
                base: PathBuf::new(),
                guid: String::new(),
            },
            refuse: Repo {
                base: PathBuf::new(),
                guid: String::new(),
            },
            _service: Mutex::new(None),
            dir: dir.clone(),
        };

        // The reference boot: the same guest (firmware, RAM, devices, kernel, initrd, command
        // line) reads its PCRs.
        let out = fx.boot(
            "reference boot",
            fx.opts(format!(
                "set -e\ntpm2_pcrread -T device:/dev/tpmrm0 sha256:{TCB_PCRS} > {}\n",
                q(&share.join("ref-pcrs.txt"))
            )),
        );
        assert_ok(&out);
        std::fs::copy(share.join("ref-pcrs.txt"), dir.join("ref-pcrs.txt")).unwrap();
        let pcrs = std::fs::read_to_string(dir.join("ref-pcrs.txt")).unwrap();
        println!("reference PCRs (sha256):\n{pcrs}");
        t(&[
            "tcb",
            "--keystore",
            "isv.ks",
            "--out",
            "vm.tcb",
            "--name",
            "ovmf-guest",
            "--vtpm-pcrs-file",
            "ref-pcrs.txt",
            "--host-from-tpm",
            &host.tcti(),
        ]);

        // Two licenses, each in its own OVMS repository.
        let sell = |name: &str, config: &str| -> Repo {
            let out = t(&[
                "sale",
                "--keystore",
                "isv.ks",
                "--master-license",
                "cls.masterlic",
                "--config",
                config,
                "--tcb",
                "vm.tcb",
                "--customer-cert",
                "customer.ks.crt",
                "--registration-cert",
                "reg.ks.crt",
                "--out",
                &format!("{name}.lic"),
                "--registration",
                &format!("{name}.reg"),
            ]);
            let guid = out
                .split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
                .find(|w| w.len() == 36 && w.matches('-').count() == 4)
                .unwrap_or_else(|| panic!("no license GUID in the sale output: {out}"))
                .to_string();
            let base = dir.join("models").join(name);
            std::fs::create_dir_all(base.join("1")).unwrap();
            std::fs::copy(dir.join("cls.dat"), base.join("1/cls.dat")).unwrap();
            std::fs::copy(dir.join(format!("{name}.lic")), base.join("1/cls.lic")).unwrap();
            Repo { base, guid }
        };
        fx.load = sell("load", "lease.config");
        fx.refuse = sell("refuse", "lease.config");
        sell("enroll", "host.config");
        run_ok(
            Command::new(&server)
                .current_dir(&dir)
                .args(["--db", &db, "license", "add", "--trust-isv", "isv.ks.crt"])
                .args([
                    "--registration-key",
                    "reg.ks",
                    "load.reg",
                    "refuse.reg",
                    "enroll.reg",
                ]),
        );
        // `sh` runs the service and kills it when its stdin (held by this process) closes.
        let serve = format!(
            "{} --db {} serve --listen 127.0.0.1:{port} --tls-cert tls.ks.crt --tls-key tls.ks \
             --trust-ek-ca vtpm-ca.pem --trust-host-ek-ca host-ca.pem --require-host-evidence \
             > service.log 2>&1 & pid=$!; cat >/dev/null; kill $pid",
            q(&server),
            sh_quote(&db)
        );
        let service = swtpm_tests::command_without_inherited_fds("sh")
            .current_dir(&dir)
            .args(["-c", &serve])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        fx._service = Mutex::new(Some(service));
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < until,
                "the license service did not start: {}",
                std::fs::read_to_string(dir.join("service.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Host admin: enrol the host AK that signed the evidence.
        t(&[
            "host-enroll",
            "--keystore",
            "customer.ks",
            "--license",
            "enroll.lic",
            "--host-tcti",
            &host.tcti(),
            "--ak-cache-dir",
            "host-ak",
        ]);
        drop(host);
        println!(
            "fixture (keys, model, host quote, reference boot, TCB, sales, service): {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        fx
    }

    fn boot(&self, what: &str, opts: BootOpts) -> GuestOutput {
        let p = parts();
        let t0 = Instant::now();
        let out = Guest::boot_with(&p, &opts)
            .and_then(|g| g.wait())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        println!(
            "{what} (OVMF, -m {}): {}; wall {:.2} s",
            opts.memory_mib,
            out.timings(),
            t0.elapsed().as_secs_f64()
        );
        out
    }

    /// A guest script running the driver on `commands` (one per line), writing its stdout and
    /// the plugin's log into `<share>/<tag>/`. With `until`, the commands after the first run
    /// repeat until a driver output line contains it (at most `rounds` times).
    fn driver_script(
        &self,
        tag: &str,
        commands: &[String],
        repeat: Option<(&str, &str, u32)>,
    ) -> String {
        let out = self.share.join(tag);
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let config = out.join("loader.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"tcti":"device:/dev/tpmrm0","ak_cache_dir":"{}","log_level":"info"}}"#,
                self.share.join("ak-cache").display()
            ),
        )
        .unwrap();
        let mut s = format!(
            "O={o}\nexport OVSA_DRIVER_STATUS_LIMIT_US=5000000\n\
             coproc DRV {{ exec {d} {p} 2>\"$O/plugin.log\"; }}\n\
             send() {{ echo \"$1\" >&${{DRV[1]}}; while IFS= read -r l <&${{DRV[0]}}; do \
             [ \"$l\" = done ] && return 0; echo \"$l\" >> \"$O/driver.out\"; echo \"$l\"; done; return 1; }}\n\
             send {init} >/dev/null || exit 3\n",
            o = q(&out),
            d = q(&self.driver),
            p = q(&self.plugin),
            init = sh_quote(format!("init A {}", config.display()))
        );
        for c in commands {
            s.push_str(&format!("send {} >/dev/null || exit 3\n", sh_quote(c)));
        }
        if let Some((cmd, until, rounds)) = repeat {
            s.push_str(&format!(
                "for i in $(seq {rounds}); do r=$(send {}) || exit 3; case \"$r\" in *{}*) break;; esac; done\n",
                sh_quote(cmd),
                sh_quote(until)
            ));
        }
        s.push_str("send shutdown >/dev/null\necho quit >&${DRV[1]}\nwait $DRV_PID\n");
        format!("exec /bin/bash -c {}\n", sh_quote(s))
    }

    fn options(&self) -> String {
        format!(
            r#"{{"loader_name":"ovsa","keystore":"{}","controlled_access_file":"cls"}}"#,
            self.keystore.display()
        )
    }

    fn read(&self, tag: &str, file: &str) -> String {
        std::fs::read_to_string(self.share.join(tag).join(file)).unwrap_or_default()
    }
}

fn assert_ok(out: &GuestOutput) {
    assert_eq!(
        out.status, 0,
        "guest command failed\nstdout:\n{}\nstderr:\n{}\nconsole:\n{}",
        out.stdout, out.stderr, out.console
    );
}

/// The plugin's log line of a completed load: where the time went.
fn breakdown(log: &str) -> Option<&str> {
    log.lines()
        .find(|l| l.contains("loaded (") && l.contains(" ms ("))
}

/// Item 1: load in the guest, OpenVINO outputs equal the plaintext's; revoke on the host, the
/// guest's next renewal blacklists the loaded version.
#[test]
fn guest_loads_infers_like_plaintext_and_a_revocation_blacklists_it() {
    let fx = fixture();
    let t0 = Instant::now();
    let tag = "load";
    let cmds = vec![
        format!("load A cls {} {}", fx.load.base.display(), fx.options()),
        format!("infer cls 1 {SHAPE}"),
        format!("infer-file {} {SHAPE}", fx.cls.display()),
    ];
    let script = fx.driver_script(tag, &cmds, Some(("watch 2 500", "blacklisted", 45)));
    let opts = fx.opts(script);
    // The host revokes the license as soon as the guest has compared the outputs.
    let share = fx.share.clone();
    let (server, db, guid) = (fx.server.clone(), fx.db.clone(), fx.load.guid.clone());
    let revoker = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(900);
        while Instant::now() < until {
            let out = std::fs::read_to_string(share.join("load/driver.out")).unwrap_or_default();
            if out.contains("infer-file ") {
                run_ok(Command::new(&server).args(["--db", &db, "license", "revoke", &guid]));
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    });
    let out = fx.boot("load + infer + revoke", opts);
    let revoked_at = revoker.join().unwrap();
    let lines = fx.read(tag, "driver.out");
    let log = fx.read(tag, "plugin.log");
    assert_ok(&out);
    let load = lines
        .lines()
        .find(|l| l.starts_with("load cls 1 "))
        .unwrap_or_else(|| panic!("no load line: {lines}\nplugin log:\n{log}"));
    assert_eq!(
        load.split(' ').nth(3),
        Some(ONNX.to_string().as_str()),
        "{load}\nplugin log:\n{log}"
    );
    let digest = |prefix: &str| {
        lines
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' line: {lines}"))
            .to_string()
    };
    let from_plugin = digest("infer cls 1 ");
    let from_file = digest("infer-file ");
    assert_eq!(from_plugin.len(), 16, "{lines}");
    assert_eq!(
        from_plugin, from_file,
        "OpenVINO's outputs of the decrypted model differ from the plaintext's in the guest"
    );
    assert!(revoked_at.is_some(), "the host never saw the inference");
    assert!(
        lines.contains(&format!("blacklisted cls 1 {BLACKLISTED}")),
        "the revoked license was not blacklisted within 90 s of watching:\n{lines}\nplugin log:\n{log}"
    );
    assert!(
        log.contains("license_revoked") || log.contains("revoked"),
        "{log}"
    );
    println!(
        "guest load breakdown: {}",
        breakdown(&log).unwrap_or("(no breakdown line)")
    );
    for l in log
        .lines()
        .filter(|l| l.contains("revoked") || l.contains("blacklist"))
    {
        println!("plugin: {l}");
    }
    println!(
        "test wall time: {:.1} s (fixture included if first)",
        t0.elapsed().as_secs_f64()
    );
}

/// `tpm2_pcrread` text output: index -> value.
fn parse_pcrs(text: &str) -> std::collections::BTreeMap<u8, String> {
    text.lines()
        .filter_map(|l| {
            let (i, v) = l.split_once(':')?;
            Some((i.trim().parse().ok()?, v.trim().to_ascii_lowercase()))
        })
        .collect()
}

/// Boots a changed guest, loads the refusal license and reads the PCRs: the load is refused with
/// `pcr_mismatch`, `must_differ` is among the PCRs that differ from the reference boot's, and the
/// refusal names the lowest of them (the Verifier checks the reference PCRs in order).
fn refused(what: &str, tag: &str, must_differ: u8, change: impl FnOnce(&mut BootOpts)) {
    let fx = fixture();
    let t0 = Instant::now();
    let cmds = vec![format!(
        "load A cls {} {}",
        fx.refuse.base.display(),
        fx.options()
    )];
    let mut script = fx.driver_script(tag, &cmds, None);
    script.push_str(&format!(
        "tpm2_pcrread -T device:/dev/tpmrm0 sha256:{TCB_PCRS} > {}\n",
        q(&fx.share.join(tag).join("pcrs.txt"))
    ));
    let mut opts = fx.opts(script.replacen("exec /bin/bash", "/bin/bash", 1));
    change(&mut opts);
    let out = fx.boot(what, opts);
    assert_ok(&out);
    let lines = fx.read(tag, "driver.out");
    let log = fx.read(tag, "plugin.log");
    let reference = parse_pcrs(&std::fs::read_to_string(fx.dir.join("ref-pcrs.txt")).unwrap());
    let now = parse_pcrs(&fx.read(tag, "pcrs.txt"));
    assert_eq!(reference.len(), 10, "{reference:?}");
    assert_eq!(now.len(), 10, "{what}: PCRs not read in the guest: {now:?}");
    let differ: Vec<u8> = reference
        .iter()
        .filter(|(i, v)| now.get(i) != Some(v))
        .map(|(i, _)| *i)
        .collect();
    println!("{what}: PCRs that differ from the reference boot: {differ:?}");
    assert!(differ.contains(&must_differ), "{what}: {differ:?}");
    assert!(
        lines.contains(&format!("load cls 1 {LOAD_ERROR} 0 0 ")),
        "{what}: the load was not refused:\n{lines}\nplugin log:\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("pcr_mismatch"))
        .unwrap_or_else(|| panic!("{what}: no pcr_mismatch in the plugin log:\n{log}"));
    assert!(
        line.contains(&format!(
            "PCR {} differs from the reference value",
            differ[0]
        )),
        "{what}: the refusal does not name PCR {}: {line}",
        differ[0]
    );
    println!("{what}: {line}");
    println!("test wall time: {:.1} s", t0.elapsed().as_secs_f64());
}

/// Item 2: a changed kernel command line (one more parameter) is refused: PCR 9.
#[test]
fn changed_kernel_command_line_is_refused_naming_pcr_9() {
    refused("changed command line", "cmdline", 9, |o| {
        o.extra_append = "ovsa.changed=1".into();
    });
}

/// Item 2: a changed initrd (the same initramfs with one more file appended) is refused. Measured
/// here: PCRs 4 and 9 both differ from the reference boot's (OVMF's direct kernel boot covers
/// the initrd in both); the refusal names PCR 4, the first the Verifier checks.
#[test]
fn changed_initrd_is_refused_naming_pcr_4_with_pcr_9_changed() {
    let p = parts();
    let initrd = vm_tests::initramfs::build_with_extra(
        &p,
        &[("etc-extra.txt", b"not in the reference boot\n".as_slice())],
    )
    .unwrap();
    refused("changed initrd", "initrd", 9, |o| o.initrd = Some(initrd));
}

/// Item 2: a changed kernel (the same bzImage with 4 KiB appended: another PE image digest) is
/// refused: PCR 4.
#[test]
fn changed_kernel_is_refused_naming_pcr_4() {
    let p = parts();
    let fx = fixture();
    let kernel = fx.dir.join("vmlinuz-changed");
    let mut bz = std::fs::read(&p.bzimage).unwrap();
    bz.extend(std::iter::repeat_n(0x5a, 4096));
    std::fs::File::create(&kernel)
        .unwrap()
        .write_all(&bz)
        .unwrap();
    refused("changed kernel", "kernel", 4, |o| o.kernel = Some(kernel));
}
