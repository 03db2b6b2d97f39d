//! Booting a guest: swtpm (vTPM) + QEMU (TCG), one command, its output, and cleanup.

use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use swtpm_tests::TestCa;

use crate::error::{Result, VmError};
use crate::initramfs::{self, path_is_plain};
use crate::parts::GuestParts;
use crate::util::{kill_group, tail};

/// How the guest's kernel is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU loads the uncompressed kernel through its PVH entry point (SeaBIOS is present but
    /// boots nothing). Fastest; no ACPI TPM table (the harness adds `tpm_tis.force=1
    /// tpm_tis.interrupts=0`), and nothing is measured into the vTPM's PCRs.
    Pvh,
    /// OVMF (UEFI) boots the bzImage: measured boot (PCRs 0-9, event log in securityfs).
    Ovmf,
}

impl Firmware {
    fn name(self) -> &'static str {
        match self {
            Firmware::Pvh => "PVH",
            Firmware::Ovmf => "OVMF",
        }
    }
}

/// A forward from the guest's `10.0.2.100:guest_port` to the host's `127.0.0.1:host_port`
/// (QEMU user networking with `restrict=on`: the guest reaches nothing else). QEMU starts
/// `relay 127.0.0.1:host_port` for each guest connection, on the connection's stdin/stdout.
#[derive(Debug, Clone)]
pub struct GuestFwd {
    /// The port the guest connects to on 10.0.2.100.
    pub guest_port: u16,
    /// The loopback port on the host.
    pub host_port: u16,
    /// The relay program (this crate's `ovsa-vm-relay` binary).
    pub relay: PathBuf,
}

/// Which vTPM the guest gets.
#[derive(Debug, Clone)]
pub enum VtpmChoice {
    /// No TPM device.
    None,
    /// A fresh copy of a `swtpm-tests` template (see `swtpm_tests::names`).
    Template(&'static str),
    /// An existing swtpm state directory (e.g. [`Vtpm::state_dir`]), used in place.
    State(PathBuf),
}

/// Boot options.
#[derive(Debug, Clone)]
pub struct BootOpts {
    /// Firmware / boot path.
    pub firmware: Firmware,
    /// Guest RAM in MiB (`-m`).
    pub memory_mib: u32,
    /// Virtual CPUs (`-smp`).
    pub smp: u8,
    /// Hard deadline from QEMU's start to its exit; QEMU and swtpm are killed when it passes.
    pub timeout: Duration,
    /// The shell script the guest runs (`/bin/sh` in the chroot of the host root).
    pub command: String,
    /// The writable share (must exist; mounted at the same path in the guest). `None`: a new
    /// temp directory. The harness uses its `.ovsa-vm/` subdirectory.
    pub share: Option<PathBuf>,
    /// The vTPM.
    pub vtpm: VtpmChoice,
    /// Network forward to a host loopback port.
    pub guestfwd: Option<GuestFwd>,
    /// Extra kernel command line parameters.
    pub extra_append: String,
    /// Boot this kernel image instead of the fetched one (`vmlinux` for PVH, the bzImage for
    /// OVMF), e.g. a modified copy for a measured-boot refusal test.
    pub kernel: Option<PathBuf>,
    /// Boot this initrd instead of the harness's (it must still do what `/init` does, e.g. the
    /// harness's initrd with another archive appended: [`crate::initramfs::build_with_extra`]).
    pub initrd: Option<PathBuf>,
}

impl BootOpts {
    /// Defaults for `command`: PVH, 512 MiB, 1 vCPU, 240 s deadline, a fresh vTPM from the
    /// `swtpm-tests` [`swtpm_tests::names::VTPM`] template, no network.
    pub fn new(command: impl Into<String>) -> Self {
        BootOpts {
            firmware: Firmware::Pvh,
            memory_mib: 512,
            smp: 1,
            timeout: Duration::from_secs(240),
            command: command.into(),
            share: None,
            vtpm: VtpmChoice::Template(swtpm_tests::names::VTPM),
            guestfwd: None,
            extra_append: String::new(),
            kernel: None,
            initrd: None,
        }
    }
}

/// A vTPM state copied from a `swtpm-tests` template; its EK certificates chain to `ca`.
#[derive(Debug)]
pub struct Vtpm {
    /// The template's CA.
    pub ca: Arc<TestCa>,
    dir: tempfile::TempDir,
}

impl Vtpm {
    /// A fresh copy of template `name` (provisioned on first use by `swtpm-tests`).
    pub fn from_template(name: &str) -> Result<Vtpm> {
        let (tpl, ca) = swtpm_tests::template(name);
        let dir = tempfile::Builder::new()
            .prefix("ovsa-vm-tpm-")
            .tempdir()
            .map_err(|e| VmError::new(format!("cannot create a temp dir: {e}")))?;
        let rd = std::fs::read_dir(&tpl).map_err(|e| VmError::io("cannot list", &tpl, e))?;
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("tpm2-") {
                std::fs::copy(e.path(), dir.path().join(e.file_name()))
                    .map_err(|err| VmError::io("cannot copy the TPM state", &e.path(), err))?;
            }
        }
        Ok(Vtpm { ca, dir })
    }

    /// The swtpm state directory.
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// What the guest's command produced.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// The command's stdout.
    pub stdout: String,
    /// The command's stderr.
    pub stderr: String,
    /// The command's exit status.
    pub status: i32,
    /// The serial console (kernel messages and `ovsa-init:` lines; tail if long).
    pub console: String,
    /// From QEMU's start to the command's start (`ovsa-init: running`).
    pub boot_time: Option<Duration>,
    /// The command's run time (`ovsa-init: running` to `ovsa-init: done`).
    pub command_time: Option<Duration>,
    /// From QEMU's start to its exit.
    pub total_time: Duration,
    /// The share directory (the command's files are there).
    pub share: PathBuf,
}

impl GuestOutput {
    /// One line of timings, for test output.
    pub fn timings(&self) -> String {
        let f = |d: Option<Duration>| d.map_or("?".into(), |d| format!("{:.2} s", d.as_secs_f64()));
        format!(
            "boot {}, command {}, total {:.2} s",
            f(self.boot_time),
            f(self.command_time),
            self.total_time.as_secs_f64()
        )
    }
}

#[derive(Default)]
struct Console {
    text: String,
    running_at: Option<Instant>,
    done_at: Option<Instant>,
}

const CONSOLE_MAX: usize = 256 * 1024;

/// A running guest. Dropping it kills QEMU (with its relays) and swtpm.
pub struct Guest {
    firmware: Firmware,
    qemu: Option<Child>,
    swtpm: Option<Child>,
    console: Arc<Mutex<Console>>,
    console_thread: Option<std::thread::JoinHandle<()>>,
    started: Instant,
    deadline: Instant,
    timeout: Duration,
    share: PathBuf,
    work: tempfile::TempDir,
    _share_tmp: Option<tempfile::TempDir>,
    _vtpm: Option<Vtpm>,
    _serial: MutexGuard<'static, ()>,
}

/// Guests of one process boot one at a time (two TCG guests on a shared 2-core machine only
/// slow each other down and make the deadlines meaningless).
fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

fn tempdir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| VmError::new(format!("cannot create a temp dir: {e}")))
}

impl Guest {
    /// Fetches the parts (cached), starts swtpm and QEMU; the guest runs `opts.command`.
    /// Wait for it with [`Guest::wait`].
    pub fn boot(opts: &BootOpts) -> Result<Guest> {
        let parts = GuestParts::fetch()?;
        Self::boot_with(&parts, opts)
    }

    /// Boot, run the command, and return its output ([`Guest::boot`] + [`Guest::wait`]).
    pub fn run(opts: &BootOpts) -> Result<GuestOutput> {
        Self::boot(opts)?.wait()
    }

    /// [`Guest::boot`] with explicit parts.
    pub fn boot_with(parts: &GuestParts, opts: &BootOpts) -> Result<Guest> {
        let initrd = match &opts.initrd {
            Some(p) => p.clone(),
            None => initramfs::build(parts)?,
        };
        for p in [&opts.kernel, &opts.initrd].into_iter().flatten() {
            if !p.is_file() {
                return Err(VmError::new(format!(
                    "{} (BootOpts::kernel/initrd) is not a file",
                    p.display()
                )));
            }
        }
        let serial = serial();
        let work = tempdir("ovsa-vm-")?;
        let (share, share_tmp) = match &opts.share {
            Some(p) => (p.clone(), None),
            None => {
                let t = tempdir("ovsa-vm-share-")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        if !path_is_plain(&share) || !share.is_absolute() {
            return Err(VmError::new(format!(
                "share directory {} must be an absolute path without spaces, commas or quotes \
                 (it goes on the kernel command line and into QEMU's -virtfs option)",
                share.display()
            )));
        }
        let ctl = share.join(".ovsa-vm");
        let _ = std::fs::remove_dir_all(&ctl);
        std::fs::create_dir_all(ctl.join("tmp"))
            .map_err(|e| VmError::io("cannot create", &ctl, e))?;
        std::fs::write(ctl.join("cmd.sh"), &opts.command)
            .map_err(|e| VmError::io("cannot write", &ctl, e))?;

        // vTPM.
        let (vtpm_dir, owned_vtpm) = match &opts.vtpm {
            VtpmChoice::None => (None, None),
            VtpmChoice::Template(name) => {
                let v = Vtpm::from_template(name)?;
                (Some(v.state_dir().to_path_buf()), Some(v))
            }
            VtpmChoice::State(p) => (Some(p.clone()), None),
        };
        let mut guest = Guest {
            firmware: opts.firmware,
            qemu: None,
            swtpm: None,
            console: Arc::new(Mutex::new(Console::default())),
            console_thread: None,
            started: Instant::now(),
            deadline: Instant::now() + opts.timeout,
            timeout: opts.timeout,
            share: share.clone(),
            work,
            _share_tmp: share_tmp,
            _vtpm: owned_vtpm,
            _serial: serial,
        };
        let sock = guest.work.path().join("swtpm.sock");
        if let Some(dir) = &vtpm_dir {
            guest.start_swtpm(dir, &sock)?;
        }

        // QEMU.
        let mut c = parts.qemu_command();
        c.args(["-accel", "tcg,tb-size=64", "-machine", "q35", "-cpu", "max"])
            .arg("-m")
            .arg(opts.memory_mib.to_string())
            .arg("-smp")
            .arg(opts.smp.to_string())
            .args(["-nodefaults", "-display", "none", "-vga", "none"])
            .args(["-monitor", "none", "-serial", "stdio", "-no-reboot"])
            .arg("-virtfs")
            .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
            .arg("-virtfs")
            .arg(format!(
                "local,path={},mount_tag=vmshare,security_model=none,multidevs=remap",
                share.display()
            ))
            .arg("-initrd")
            .arg(&initrd);
        let mut append = format!(
            "console=ttyS0 panic=-1 quiet ovsa.share={}",
            share.display()
        );
        match opts.firmware {
            Firmware::Pvh => {
                c.arg("-kernel")
                    .arg(opts.kernel.as_ref().unwrap_or(&parts.vmlinux));
                append.push_str(" tpm_tis.force=1 tpm_tis.interrupts=0");
            }
            Firmware::Ovmf => {
                let vars = guest.work.path().join("OVMF_VARS.fd");
                std::fs::copy(&parts.ovmf_vars, &vars)
                    .map_err(|e| VmError::io("cannot copy", &parts.ovmf_vars, e))?;
                c.arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={}",
                        parts.ovmf_code.display()
                    ))
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=1,file={}",
                        vars.display()
                    ))
                    .arg("-kernel")
                    .arg(opts.kernel.as_ref().unwrap_or(&parts.bzimage));
            }
        }
        if vtpm_dir.is_some() {
            c.arg("-chardev")
                .arg(format!("socket,id=chrtpm,path={}", sock.display()))
                .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
                .args(["-device", "tpm-tis,tpmdev=tpm0"]);
        }
        if let Some(f) = &opts.guestfwd {
            if !path_is_plain(&f.relay) {
                return Err(VmError::new(format!(
                    "relay program {} must be a path without spaces, commas or quotes (it goes \
                     into QEMU's -netdev option)",
                    f.relay.display()
                )));
            }
            c.arg("-netdev")
                .arg(format!(
                    "user,id=n0,restrict=on,ipv6=off,guestfwd=tcp:10.0.2.100:{}-cmd:{} 127.0.0.1:{}",
                    f.guest_port,
                    f.relay.display(),
                    f.host_port
                ))
                .args(["-device", "virtio-net-pci,netdev=n0,romfile="]);
            append.push_str(" ovsa.net=1");
        }
        if !opts.extra_append.is_empty() {
            append.push(' ');
            append.push_str(&opts.extra_append);
        }
        c.arg("-append").arg(&append);
        let stderr_path = guest.work.path().join("qemu.stderr");
        let stderr = File::create(&stderr_path)
            .map_err(|e| VmError::io("cannot create", &stderr_path, e))?;
        std::fs::write(guest.work.path().join("qemu.cmdline"), format!("{c:?}"))
            .map_err(|e| VmError::io("cannot write", guest.work.path(), e))?;
        guest.started = Instant::now();
        guest.deadline = guest.started + opts.timeout;
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|e| VmError::new(format!("cannot start {}: {e}", parts.qemu.display())))?;
        let stdout = child.stdout.take();
        guest.qemu = Some(child);
        let console = guest.console.clone();
        guest.console_thread = Some(std::thread::spawn(move || {
            if let Some(s) = stdout {
                read_console(s, &console);
            }
        }));
        Ok(guest)
    }

    fn start_swtpm(&mut self, state: &Path, sock: &Path) -> Result<()> {
        if sock.as_os_str().len() > 100 {
            return Err(VmError::new(format!(
                "swtpm socket path {} is longer than a unix socket allows (108 bytes); use a \
                 shorter TMPDIR",
                sock.display()
            )));
        }
        let log = self.work.path().join("swtpm.log");
        // No inherited descriptors: a TPM socket of another thread would stall that TPM for as
        // long as this swtpm lives (swtpm_tests::command_without_inherited_fds).
        let child = swtpm_tests::command_without_inherited_fds("swtpm")
            .args(["socket", "--tpm2"])
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", sock.display()))
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--log")
            .arg(format!("file={},level=1", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                VmError::new(format!(
                    "cannot run swtpm ({e}); install it with scripts/setup.sh (Debian package swtpm)"
                ))
            })?;
        self.swtpm = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if let Some(Ok(Some(st))) = self.swtpm.as_mut().map(|c| c.try_wait()) {
                return Err(VmError::new(format!(
                    "swtpm exited ({st}) before creating its socket {}; its log: {}",
                    sock.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                )));
            }
            if Instant::now() > until {
                return Err(VmError::new(format!(
                    "swtpm did not create its socket {} within 10 s",
                    sock.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The share directory (its path is the same in the guest).
    pub fn share(&self) -> &Path {
        &self.share
    }

    /// Waits for the guest to power off (at most until the deadline), then returns the
    /// command's output. Errors if the guest did not finish in time (QEMU and swtpm are
    /// killed), QEMU failed, or the guest's init did not record an exit status.
    pub fn wait(mut self) -> Result<GuestOutput> {
        let mut qemu = self.qemu.take().expect("a booted guest has a QEMU process");
        let exit = loop {
            match qemu.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() >= self.deadline => break None,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    kill_group(&mut qemu);
                    return Err(VmError::new(format!("waiting for QEMU: {e}")));
                }
            }
        };
        let total = self.started.elapsed();
        // Whatever QEMU left in its process group (guestfwd relays) goes too.
        kill_group(&mut qemu);
        self.stop_swtpm();
        if let Some(t) = self.console_thread.take() {
            let _ = t.join();
        }
        let (console, running_at, done_at) = {
            let c = self.console.lock().unwrap_or_else(|e| e.into_inner());
            (c.text.clone(), c.running_at, c.done_at)
        };
        let qemu_err =
            std::fs::read_to_string(self.work.path().join("qemu.stderr")).unwrap_or_default();
        let Some(exit) = exit else {
            return Err(VmError::new(format!(
                "the {} guest did not finish within {} s; QEMU and swtpm were killed.\nconsole \
                 tail:\n{}\nQEMU stderr:\n{}",
                self.firmware.name(),
                self.timeout.as_secs(),
                tail(&console, 4000),
                tail(&qemu_err, 2000)
            )));
        };
        let ctl = self.share.join(".ovsa-vm");
        let status = std::fs::read_to_string(ctl.join("status"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let Some(status) = status else {
            return Err(VmError::new(format!(
                "the {} guest ended (QEMU {exit}) without recording the command's exit status \
                 in {}.\nconsole tail:\n{}\nQEMU stderr:\n{}",
                self.firmware.name(),
                ctl.display(),
                tail(&console, 4000),
                tail(&qemu_err, 2000)
            )));
        };
        let read = |n: &str| std::fs::read_to_string(ctl.join(n)).unwrap_or_default();
        Ok(GuestOutput {
            stdout: read("stdout"),
            stderr: read("stderr"),
            status,
            boot_time: running_at.map(|t| t.duration_since(self.started)),
            command_time: match (running_at, done_at) {
                (Some(a), Some(b)) => Some(b.duration_since(a)),
                _ => None,
            },
            total_time: total,
            console,
            share: self.share.clone(),
        })
    }

    fn stop_swtpm(&mut self) {
        if let Some(mut s) = self.swtpm.take() {
            // swtpm ends by itself when QEMU closes the control channel; give it a moment to
            // write its state, then make sure.
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                if let Ok(Some(_)) = s.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            kill_group(&mut s);
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(mut q) = self.qemu.take() {
            kill_group(&mut q);
        }
        if let Some(mut s) = self.swtpm.take() {
            kill_group(&mut s);
        }
        if let Some(t) = self.console_thread.take() {
            let _ = t.join();
        }
    }
}

fn read_console(mut s: impl Read, console: &Mutex<Console>) {
    let mut buf = [0u8; 4096];
    let mut line = Vec::new();
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = Instant::now();
        for &b in &buf[..n] {
            line.push(b);
            if b == b'\n' {
                let l = String::from_utf8_lossy(&line).into_owned();
                let mut c = console.lock().unwrap_or_else(|e| e.into_inner());
                if l.contains("ovsa-init: running") {
                    c.running_at = Some(now);
                }
                if l.contains("ovsa-init: done") {
                    c.done_at = Some(now);
                }
                c.text.push_str(&l);
                if c.text.len() > 2 * CONSOLE_MAX {
                    let keep = tail(&c.text, CONSOLE_MAX).to_string();
                    c.text = keep;
                }
                line.clear();
            }
        }
    }
    if !line.is_empty() {
        let mut c = console.lock().unwrap_or_else(|e| e.into_inner());
        c.text.push_str(&String::from_utf8_lossy(&line));
    }
}
