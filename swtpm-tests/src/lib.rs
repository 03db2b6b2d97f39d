//! A reusable swtpm harness for tests.
//!
//! - [`TestCa`]: a private swtpm-localca CA (root + intermediate) in the harness cache directory
//!   ([`cache_root`]); the global `/var/lib/swtpm-localca` and `/etc/swtpm*` are never used.
//! - Templates: a TPM state provisioned once per name (cached across test processes in
//!   [`cache_root`], guarded by a lock file) with
//!   `swtpm_setup --tpm2 --create-ek-cert --create-platform-cert` (RSA-2048 and P-384 EK
//!   certificates signed by the template's CA); each [`Swtpm`] copies the state, so starting a
//!   TPM costs only the swtpm process start.
//! - [`Swtpm`]: `swtpm socket` on a free loopback port pair (server P, control P+1), stopped on
//!   drop (`swtpm_ioctl -s`, then SIGKILL by pid). Safe for parallel tests.
//! - [`TpmPair`]: the usual "host TPM + vTPM" pair.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The shell prologue of [`command_without_inherited_fds`]: close every descriptor above 2 that
/// the child inherited, then `exec` the real program.
const CLOSE_INHERITED_FDS: &str = r#"for fd in /proc/$$/fd/*; do fd=${fd##*/}; if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi; done 2>/dev/null; exec "$@""#;

/// A [`Command`] for `program` whose process starts with no inherited file descriptors above 2.
///
/// Use it for every child that outlives a TPM command of another thread: a daemon (swtpm,
/// PostgreSQL), a watchdog, a long-running server. tpm2-tss's swtpm TCTI opens one TCP
/// connection per TPM command without close-on-exec, and swtpm serves one connection at a
/// time: a child that inherits such a socket keeps swtpm serving a connection nobody uses, and
/// every later command of that TPM waits for the child to exit (seen on a cold CI run: a
/// PostgreSQL watchdog that lives as long as the test binary held a vTPM connection and
/// `policy_limits_are_enforced` blocked forever in `Esys_FlushContext`). Rust's own descriptors
/// are close-on-exec already; this closes the C libraries' as well, without `unsafe`.
pub fn command_without_inherited_fds(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("bash");
    c.args(["-c", CLOSE_INHERITED_FDS, "ovsa-test-spawn"])
        .arg(program);
    c
}

/// Names of the built-in templates and their CAs.
pub mod names {
    /// The "host" hardware TPM stand-in, certified by [`HOST_CA`].
    pub const HOST: &str = "host";
    /// The vTPM, certified by [`VTPM_CA`].
    pub const VTPM: &str = "vtpm";
    /// A second vTPM (another VM), same CA as [`VTPM`].
    pub const VTPM_B: &str = "vtpm-b";
    /// A TPM certified by an untrusted CA.
    pub const ROGUE: &str = "rogue";
    /// CA of the host TPMs ("TPM vendor").
    pub const HOST_CA: &str = "host-ca";
    /// CA of the vTPMs.
    pub const VTPM_CA: &str = "vtpm-ca";
    /// A CA nobody trusts.
    pub const ROGUE_CA: &str = "rogue-ca";
}

/// A private swtpm-localca certificate authority.
#[derive(Debug)]
pub struct TestCa {
    /// Name.
    pub name: String,
    dir: PathBuf,
}

impl TestCa {
    /// Directory holding the CA state and config.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Root CA certificate (PEM).
    ///
    /// A `TestCa` is only handed out once a template of it has been provisioned (see [`ca`]), so
    /// the file exists; a missing file is a harness bug and panics naming the file.
    pub fn root_pem(&self) -> Vec<u8> {
        self.read_cert("swtpm-localca-rootca-cert.pem")
    }

    /// Intermediate (issuer) CA certificate (PEM).
    pub fn issuer_pem(&self) -> Vec<u8> {
        self.read_cert("issuercert.pem")
    }

    fn read_cert(&self, file: &str) -> Vec<u8> {
        let path = self.dir.join(file);
        match std::fs::read(&path) {
            Ok(pem) if !pem.is_empty() => pem,
            Ok(_) => panic!("CA {}: {} is empty", self.name, path.display()),
            Err(e) => panic!(
                "CA {}: cannot read {} ({e}); CAs are provisioned by swtpm_setup together with \
                 their first template",
                self.name,
                path.display()
            ),
        }
    }

    /// Root and intermediate as PEM (what a verifier's trust configuration needs).
    pub fn chain_pem(&self) -> Vec<u8> {
        let mut v = self.root_pem();
        v.extend(self.issuer_pem());
        v
    }

    /// Root CA certificate (DER).
    pub fn root_der(&self) -> Vec<u8> {
        pem_der(&self.root_pem())
    }

    /// Intermediate CA certificate (DER).
    pub fn issuer_der(&self) -> Vec<u8> {
        pem_der(&self.issuer_pem())
    }

    fn write_config(name: &str, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("swtpm-localca.conf"),
            format!(
                "statedir = {d}\nsigningkey = {d}/signkey.pem\nissuercert = {d}/issuercert.pem\ncertserial = {d}/certserial\n",
                d = dir.display()
            ),
        )?;
        std::fs::write(
            dir.join("swtpm-localca.options"),
            format!("--platform-manufacturer OVSA-Test-{name}\n--platform-version 2.1\n--platform-model swtpm\n"),
        )?;
        std::fs::write(
            dir.join("swtpm_setup.conf"),
            format!(
                "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {d}/swtpm-localca.conf\ncreate_certs_tool_options = {d}/swtpm-localca.options\nactive_pcr_banks = sha256\n",
                d = dir.display()
            ),
        )?;
        Ok(())
    }
}

fn pem_der(p: &[u8]) -> Vec<u8> {
    pem::parse(p)
        .map(|p| p.into_contents())
        .expect("a CA certificate written by swtpm_localca is PEM")
}

struct Registry {
    cas: HashMap<String, Arc<TestCa>>,
    templates: HashMap<String, (PathBuf, Arc<TestCa>)>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| {
        Mutex::new(Registry {
            cas: HashMap::new(),
            templates: HashMap::new(),
        })
    })
}

/// Where provisioned CAs and template states are cached across test processes:
/// `$OVSA_SWTPM_CACHE_DIR`, else `<temp dir>/ovsa-swtpm-cache-v1`. Delete it to re-provision.
pub fn cache_root() -> PathBuf {
    std::env::var_os("OVSA_SWTPM_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ovsa-swtpm-cache-v1"))
}

/// A cross-process lock: a file created with `O_EXCL`, removed on drop (stale after 2 min).
struct FileLock(PathBuf);

impl FileLock {
    fn acquire(path: PathBuf) -> Self {
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return FileLock(path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(120));
                    if stale {
                        let _ = std::fs::remove_file(&path);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot create lock file {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The CA used for the built-in template `template`.
fn ca_for(template: &str) -> &'static str {
    match template {
        names::HOST => names::HOST_CA,
        names::ROGUE => names::ROGUE_CA,
        _ => names::VTPM_CA,
    }
}

/// The template whose provisioning creates the CA `ca` (swtpm_localca makes a CA's root and
/// intermediate the first time it certifies an EK).
fn first_template_of(ca: &str) -> &'static str {
    match ca {
        names::HOST_CA => names::HOST,
        names::ROGUE_CA => names::ROGUE,
        names::VTPM_CA => names::VTPM,
        other => panic!(
            "unknown test CA {other:?}: the harness knows {}, {} and {}",
            names::HOST_CA,
            names::VTPM_CA,
            names::ROGUE_CA
        ),
    }
}

/// The CA called `name`, with its certificates on disk.
///
/// A CA's certificates only exist once a TPM template of that CA has been provisioned, so this
/// provisions the CA's first template when no test has done so yet (in this process or, through
/// the cache, in another). Callers never see a CA whose files may or may not exist depending on
/// which test ran first.
pub fn ca(name: &str) -> Arc<TestCa> {
    template(first_template_of(name)).1
}

fn ca_locked(r: &mut Registry, name: &str) -> Arc<TestCa> {
    if let Some(c) = r.cas.get(name) {
        return c.clone();
    }
    let c = Arc::new(TestCa {
        name: name.to_string(),
        dir: cache_root().join(name),
    });
    r.cas.insert(name.to_string(), c.clone());
    c
}

/// Provision (once; cached across processes in [`cache_root`]) the template state `name` and
/// return its directory and CA.
pub fn template(name: &str) -> (PathBuf, Arc<TestCa>) {
    let ca = {
        let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = r.templates.get(name) {
            return t.clone();
        }
        ca_locked(&mut r, ca_for(name))
    };
    // Provision without holding the in-process registry lock, so templates of different CAs
    // are provisioned in parallel; the per-CA lock file serializes the rest (also across
    // processes).
    let dir = ca.dir().join(format!("tpl-{name}"));
    let done = dir.join(".complete");
    if !done.exists() {
        std::fs::create_dir_all(cache_root()).expect("swtpm cache dir");
        let _lock = FileLock::acquire(cache_root().join(format!("{}.lock", ca.name)));
        if !done.exists() {
            TestCa::write_config(&ca.name, ca.dir()).expect("cannot write CA config");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("template dir");
            provision(name, &dir, &ca);
            std::fs::write(&done, b"").expect("template marker");
        }
    }
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .templates
        .insert(name.to_string(), (dir.clone(), ca.clone()));
    (dir, ca)
}

fn provision(name: &str, dir: &Path, ca: &TestCa) {
    let t0 = Instant::now();
    let out = Command::new("swtpm_setup")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(dir)
        .args(["--create-ek-cert", "--create-platform-cert", "--overwrite"])
        .arg("--config")
        .arg(ca.dir().join("swtpm_setup.conf"))
        .stdin(Stdio::null())
        .output()
        .expect("cannot run swtpm_setup (install swtpm-tools; see scripts/setup.sh)");
    assert!(
        out.status.success(),
        "swtpm_setup failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if std::env::var_os("OVSA_SWTPM_VERBOSE").is_some() {
        eprintln!("swtpm template {name}: provisioned in {:?}", t0.elapsed());
    }
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// Ports used for swtpm: below Linux's ephemeral range (32768-60999), so the TIME_WAIT sockets
/// that tcti-swtpm leaves behind (one TCP connection per TPM command) never collide with them.
const PORT_LOW: u16 = 12000;
const PORT_HIGH: u16 = 32000;

fn port_pair_candidate() -> u16 {
    // Spread processes over the range by pid, then walk in steps of 2.
    let span = u32::from(PORT_HIGH - PORT_LOW) / 2;
    let _ = NEXT_PORT.compare_exchange(
        0,
        PORT_LOW + ((std::process::id() % span) as u16) * 2,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let p = NEXT_PORT.fetch_add(2, Ordering::SeqCst);
    if p >= PORT_HIGH {
        NEXT_PORT.store(PORT_LOW + 2, Ordering::SeqCst);
        return PORT_LOW;
    }
    p
}

/// Two listening sockets on consecutive loopback ports (P, P+1), the layout the swtpm TCTI
/// needs (server port P, control port P+1).
#[derive(Debug)]
pub struct PortPair {
    /// Listener on P.
    pub data: TcpListener,
    /// Listener on P+1.
    pub ctrl: TcpListener,
}

impl PortPair {
    /// Reserve a free pair below the ephemeral range. Walks the whole range (10,000 pairs) before
    /// giving up, so a machine holding thousands of TIME_WAIT or outgoing sockets cannot make a
    /// test fail: those live in the ephemeral range, which this range avoids.
    pub fn reserve() -> PortPair {
        let pairs = u32::from(PORT_HIGH - PORT_LOW) / 2;
        for _ in 0..pairs {
            let p = port_pair_candidate();
            let Ok(data) = TcpListener::bind(("127.0.0.1", p)) else {
                continue;
            };
            let Ok(ctrl) = TcpListener::bind(("127.0.0.1", p + 1)) else {
                continue;
            };
            return PortPair { data, ctrl };
        }
        panic!(
            "no free loopback port pair in {PORT_LOW}-{PORT_HIGH}: every pair is bound by another \
             process"
        );
    }

    /// The first port (P).
    pub fn port(&self) -> u16 {
        self.data.local_addr().map(|a| a.port()).unwrap_or(0)
    }
}

/// A running swtpm (TCP server on 127.0.0.1), stopped on drop.
#[derive(Debug)]
pub struct Swtpm {
    /// Template name it was started from.
    pub name: String,
    /// The CA that certified its EKs.
    pub ca: Arc<TestCa>,
    port: u16,
    pid: Option<i32>,
    dir: tempfile::TempDir,
}

impl Swtpm {
    /// Start a fresh TPM from the template `name` (see [`names`]; other names get the vTPM CA).
    pub fn start(name: &str) -> Self {
        let (tpl, ca) = template(name);
        let dir = tempfile::Builder::new()
            .prefix("ovsa-swtpm-")
            .tempdir()
            .expect("tempdir");
        copy_state(&tpl, dir.path());
        Self::serve(name, ca, dir)
    }

    /// A second swtpm serving a copy of this one's state directory, as host root clones a vTPM:
    /// same EK (same seeds and EK certificate), started with `TPM2_Startup(CLEAR)`, so its reset
    /// count is one above what the original's state held when copied.
    pub fn clone_state(&self) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ovsa-swtpm-clone-")
            .tempdir()
            .expect("tempdir");
        copy_state(self.dir.path(), dir.path());
        Self::serve(&self.name, self.ca.clone(), dir)
    }

    /// Stops this swtpm (no orderly TPM shutdown, as a VM power-off) and starts a new one on the
    /// same state directory with `TPM2_Startup(CLEAR)`: the reset count goes up, as at a reboot.
    /// The port changes.
    pub fn reboot(&mut self) {
        self.stop();
        if let Some(pid) = self.pid.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_file(self.dir.path().join("pid"));
        let dir = std::mem::replace(
            &mut self.dir,
            tempfile::Builder::new()
                .prefix("ovsa-swtpm-moved-")
                .tempdir()
                .expect("tempdir"),
        );
        let mut fresh = Self::serve(&self.name, self.ca.clone(), dir);
        std::mem::swap(self, &mut fresh);
        // `fresh` now holds the placeholder directory and the stopped process's port.
        fresh.pid = None;
        fresh.port = 0;
    }

    /// Starts swtpm on `dir` (holding `tpm2-*` state files).
    fn serve(name: &str, ca: Arc<TestCa>, dir: tempfile::TempDir) -> Self {
        // A free pair is released just before swtpm binds it, so another process may take it
        // in between, or a TIME_WAIT socket may stop swtpm (which binds without SO_REUSEADDR):
        // swtpm then exits at once and the next pair is tried.
        for _ in 0..100 {
            let port = PortPair::reserve().port();
            // swtpm daemonizes and lives for the test: it must not hold other TPMs' sockets.
            let st = command_without_inherited_fds("swtpm")
                .args(["socket", "--tpm2"])
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--tpmstate")
                .arg(format!("dir={}", dir.path().display()))
                .args(["--flags", "not-need-init,startup-clear"])
                .arg("--pid")
                .arg(format!("file={}/pid", dir.path().display()))
                .arg("-d")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("cannot run swtpm (install swtpm; see scripts/setup.sh)");
            if !st.success() {
                continue;
            }
            let mut s = Swtpm {
                name: name.to_string(),
                ca: ca.clone(),
                port,
                pid: None,
                dir,
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(p) = std::fs::read_to_string(s.dir.path().join("pid")) {
                    if let Ok(p) = p.trim().parse() {
                        s.pid = Some(p);
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            return s;
        }
        panic!("could not start swtpm on any of 100 free port pairs");
    }

    /// TCTI string for this TPM.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Server port (the control port is one above).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Open an attester connection.
    pub fn open(&self) -> ovsa_tpm::Tpm {
        ovsa_tpm::Tpm::open(Some(&self.tcti())).expect("cannot connect to swtpm")
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Copies the `tpm2-*` state files of `from` into `to`.
fn copy_state(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("state dir") {
        let e = e.expect("state entry");
        if e.file_type().map(|t| t.is_file()).unwrap_or(false)
            && e.file_name().to_string_lossy().starts_with("tpm2-")
        {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy state");
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Swtpm {
    /// Stops the process (control channel, else SIGKILL).
    fn stop(&self) {
        if self.port == 0 {
            // The placeholder left by `reboot`: no process.
            return;
        }
        let stopped = Command::new("swtpm_ioctl")
            .arg("--tcp")
            .arg(format!("127.0.0.1:{}", self.port + 1))
            .arg("-s")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if let Some(pid) = self.pid {
            if !stopped {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// A host TPM and a vTPM.
#[derive(Debug)]
pub struct TpmPair {
    /// The "hardware" TPM of the host.
    pub host: Swtpm,
    /// The VM's vTPM.
    pub vtpm: Swtpm,
}

impl TpmPair {
    /// Start both (from the [`names::HOST`] and [`names::VTPM`] templates).
    pub fn start() -> Self {
        Self {
            host: Swtpm::start(names::HOST),
            vtpm: Swtpm::start(names::VTPM),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `inner` under a bash that first opens descriptors 9 and 12 without close-on-exec
    /// (as tpm2-tss's sockets are); returns the descriptors `ls /proc/self/fd` sees.
    fn fds_seen(inner: &Command) -> Vec<String> {
        let out = Command::new("bash")
            .args(["-c", "exec 9</dev/null 12</dev/null; exec \"$@\"", "outer"])
            .arg(inner.get_program())
            .args(inner.get_args())
            .output()
            .expect("bash");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn children_inherit_no_descriptors_above_2() {
        let mut plain = Command::new("ls");
        plain.arg("/proc/self/fd");
        let seen = fds_seen(&plain);
        assert!(seen.contains(&"9".to_string()) && seen.contains(&"12".to_string()));
        let mut clean = command_without_inherited_fds("ls");
        clean.arg("/proc/self/fd");
        let seen = fds_seen(&clean);
        assert!(
            !seen.contains(&"9".to_string()) && !seen.contains(&"12".to_string()),
            "{seen:?}"
        );
        assert!(seen.contains(&"2".to_string()), "stdio stays: {seen:?}");
    }
}
