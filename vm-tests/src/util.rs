//! Process and lock helpers: every external command runs under a hard deadline.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Result, VmError};

/// Runs `cmd` (stdin null, stdout/stderr captured) in its own process group and kills the whole
/// group if it has not finished by `limit`. `what` names the step in errors.
pub(crate) fn run_with_deadline(cmd: &mut Command, limit: Duration, what: &str) -> Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| VmError::new(format!("{what}: cannot run {program}: {e}")))?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                kill_group(&mut child);
                return Err(VmError::new(format!(
                    "{what}: {program} did not finish within {} s and was killed",
                    limit.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(VmError::new(format!("{what}: waiting for {program}: {e}"))),
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn reader<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut v);
        }
        v
    })
}

/// SIGKILLs the process group led by `child` (started with `process_group(0)`), then reaps it.
pub(crate) fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// A cross-process lock: a file created with `O_EXCL` holding the owner's pid, removed on drop.
/// A lock whose owner is gone (no `/proc/<pid>`) or older than `stale_after` is taken over.
pub(crate) struct FileLock(PathBuf);

impl FileLock {
    pub(crate) fn acquire(path: PathBuf, stale_after: Duration, limit: Duration) -> Result<Self> {
        let deadline = Instant::now() + limit;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(FileLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if Self::is_stale(&path, stale_after) {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Err(VmError::new(format!(
                            "lock file {} is still held after {} s (by pid {}); if no test is \
                             running, delete it",
                            path.display(),
                            limit.as_secs(),
                            std::fs::read_to_string(&path).unwrap_or_default().trim()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(VmError::io("cannot create lock file", &path, e)),
            }
        }
    }

    fn is_stale(path: &Path, stale_after: Duration) -> bool {
        let old = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > stale_after);
        let owner_gone = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        old || owner_gone
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The last `max` bytes of `s` (at a char boundary), for error messages.
pub(crate) fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}
