//! A private PostgreSQL server for tests, started from the Debian `postgresql` package's binaries
//! (`/usr/lib/postgresql/*/bin`, or `OVSA_PG_BINDIR`).
//!
//! The cluster lives in a temporary directory (data, log and unix socket), listens on a free
//! 127.0.0.1 port only, trusts loopback connections as `postgres`, and runs with `fsync=off`
//! (tests check locking and atomicity, not crash durability; [`PgServer::start_with`] can turn
//! it back on). As root the server runs as the `postgres` OS user via `runuser` (PostgreSQL
//! refuses to run as root). It stops on drop (`pg_ctl stop -m fast`); a detached watchdog also
//! stops it and deletes the directory once the test process is gone, which covers [`shared`]
//! (a `static`, never dropped) and aborted runs.
//!
//! ```ignore
//! let url = pg::shared().create_database();   // postgres://postgres@127.0.0.1:PORT/tN
//! ```

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running private PostgreSQL server.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run server commands through `runuser -u postgres --` (we are root).
    as_postgres: bool,
}

/// The server shared by all tests of this test binary, started on first use. Panics with a
/// clear message if PostgreSQL cannot be started.
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| PgServer::start().unwrap_or_else(|e| panic!("{e}")))
}

fn server_bindir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("OVSA_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            Err(format!("OVSA_PG_BINDIR={} has no initdb", dir.display()))
        };
    }
    // Debian: /usr/lib/postgresql/<major>/bin; take the newest major.
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    // Elsewhere: initdb on PATH.
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .ok_or_else(|| {
            "PostgreSQL server binaries not found (looked for /usr/lib/postgresql/*/bin/initdb and \
             initdb on PATH): install the Debian package `postgresql` (scripts/setup.sh does) or \
             set OVSA_PG_BINDIR"
                .to_string()
        })
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn id_of(user: &str, flag: &str) -> Result<u32, String> {
    let out = Command::new("id")
        .args([flag, user])
        .output()
        .map_err(|e| format!("running id: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "running PostgreSQL as root needs the `{user}` OS user (the Debian package creates it): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("id {flag} {user}: {e}"))
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl PgServer {
    /// Starts a server with the test settings (`fsync=off`).
    pub fn start() -> Result<PgServer, String> {
        Self::start_with(&[])
    }

    /// Starts a server with extra `-c NAME=VALUE` settings (later ones win, e.g.
    /// `[("fsync", "on"), ("synchronous_commit", "on")]` for durable-commit measurements).
    pub fn start_with(settings: &[(&str, &str)]) -> Result<PgServer, String> {
        let bin = server_bindir()?;
        let as_postgres = effective_uid() == Some(0);
        let dir = tempfile::Builder::new()
            .prefix("ovsa-pg-")
            .tempdir()
            .map_err(|e| format!("creating a temporary directory: {e}"))?;
        if as_postgres {
            let (uid, gid) = (id_of("postgres", "-u")?, id_of("postgres", "-g")?);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("chown {} to postgres: {e}", dir.path().display()))?;
            // initdb runs as `postgres`: every directory above the data directory must let
            // others through (x), as /tmp does. A private TMPDIR (mktemp -d: 0700) does not.
            use std::os::unix::fs::PermissionsExt;
            for ancestor in dir.path().ancestors().skip(1) {
                let mode = std::fs::metadata(ancestor)
                    .ok()
                    .map(|m| m.permissions().mode());
                if let Some(mode) = mode.filter(|m| m & 0o001 == 0) {
                    return Err(format!(
                        "the PostgreSQL tests run initdb as the `postgres` user, which cannot \
                         enter {} (mode {:o}): point TMPDIR at a directory others can traverse \
                         (chmod o+x), e.g. /tmp",
                        ancestor.display(),
                        mode & 0o7777
                    ));
                }
            }
        }
        let mut server = PgServer {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        let data = server.data_dir();
        let out = server
            .server_cmd("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .map_err(|e| format!("running initdb: {e}"))?;
        if !out.status.success() {
            return Err(describe("initdb", &out));
        }
        let mut options = vec![
            ("listen_addresses", "127.0.0.1".to_string()),
            (
                "unix_socket_directories",
                server.dir.path().display().to_string(),
            ),
            ("fsync", "off".into()),
            ("synchronous_commit", "off".into()),
            ("full_page_writes", "off".into()),
            ("max_connections", "200".into()),
        ];
        options.extend(settings.iter().map(|(k, v)| (*k, v.to_string())));
        // A port found free can be taken before the server binds it: retry with another.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port()?;
            let mut opts = format!("-p {}", server.port);
            for (k, v) in &options {
                opts.push_str(&format!(" -c {k}={v}"));
            }
            let out = server
                .server_cmd("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(server.dir.path().join("server.log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running pg_ctl: {e}"))?;
            if out.status.success() {
                server.spawn_watchdog();
                server.wait_ready()?;
                return Ok(server);
            }
            let log =
                std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
            last = format!("{}\nserver log:\n{log}", describe("pg_ctl start", &out));
            if !log.contains("could not bind") && !log.contains("Address already in use") {
                break;
            }
        }
        Err(last)
    }

    /// The TCP port (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the cluster (data, log, socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh, uniquely named database; returns its URL.
    pub fn create_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("{e}"));
        self.url(&name)
    }

    /// Runs SQL through `psql` on database `db`; returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-U", "postgres", "-X", "-q", "-A", "-t"])
            .args(["-v", "ON_ERROR_STOP=1", "-p"])
            .arg(self.port.to_string())
            .args(["-d", db, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if !out.status.success() {
            return Err(describe(&format!("psql -c {sql:?}"), &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A server binary, run as `postgres` if we are root. It inherits no descriptors of the
    /// test process (the server daemon outlives every TPM command of the other tests:
    /// [`swtpm_tests::command_without_inherited_fds`]).
    fn server_cmd(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = swtpm_tests::command_without_inherited_fds("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            swtpm_tests::command_without_inherited_fds(path)
        }
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p"])
                .arg(self.port.to_string())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                return Err(format!(
                    "PostgreSQL on port {} is not ready after 30 s; server log:\n{log}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server and removes its directory once this process has exited.
    fn spawn_watchdog(&self) {
        let runner = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             if [ -d '{data}' ]; then {runner}'{pg_ctl}' -D '{data}' stop -m immediate; \
             rm -rf '{dir}'; fi",
            pid = std::process::id(),
            data = self.data_dir().display(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            dir = self.dir.path().display(),
        );
        // Detached (own session) so a Ctrl-C on the test run does not kill it first.
        // It lives as long as the test binary: it must hold no descriptor of it.
        let _ = swtpm_tests::command_without_inherited_fds("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self
                .server_cmd("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "stop"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
