//! Small file helpers: atomic writes with explicit permissions, bounded reads, and the
//! process-wide registry of in-flight temporary files that a signal handler removes.
//!
//! Every [`AtomicFile`] registers its temporary path when it is created and unregisters it when
//! it is committed (renamed into place) or dropped (deleted). A program that wants Ctrl-C or
//! SIGTERM to leave nothing behind calls [`discard_in_flight`] from its signal handling (a
//! normal thread, e.g. `signal-hook`'s iterator) and exits while holding the returned guard: the
//! guard keeps every further commit from renaming a file into place.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};

/// What an interrupted run must remove (see the module documentation).
struct Registry {
    /// Temporary files being written now.
    files: Vec<PathBuf>,
    /// Directories this run created, removed (when empty) unless kept.
    dirs: Vec<PathBuf>,
}

/// Temporary files being written now (see the module documentation).
static IN_FLIGHT: Mutex<Registry> = Mutex::new(Registry {
    files: Vec::new(),
    dirs: Vec::new(),
});

fn in_flight() -> MutexGuard<'static, Registry> {
    // A panic while holding the lock leaves the lists themselves consistent (push/retain only).
    IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner())
}

fn unregister(list: &mut Registry, tmp: &Path) {
    list.files.retain(|p| p != tmp);
}

/// Holds the in-flight registry locked after [`discard_in_flight`]: while it lives no
/// [`AtomicFile`] can be created, committed or dropped. Keep it until the process exits.
pub struct InFlightDiscarded {
    _guard: MutexGuard<'static, Registry>,
    /// How many temporary files were removed.
    pub removed: usize,
}

/// Deletes every in-flight temporary file (and the empty directories made for them) and returns
/// a guard that blocks all further [`AtomicFile`] activity; for a signal handler that exits the
/// process right after.
pub fn discard_in_flight() -> InFlightDiscarded {
    let mut guard = in_flight();
    let mut removed = 0;
    for tmp in guard.files.drain(..) {
        if std::fs::remove_file(&tmp).is_ok() {
            removed += 1;
        }
    }
    for dir in guard.dirs.drain(..).rev() {
        let _ = std::fs::remove_dir(dir);
    }
    InFlightDiscarded {
        _guard: guard,
        removed,
    }
}

/// The temporary files being written right now (for tests and diagnostics).
pub fn in_flight_paths() -> Vec<PathBuf> {
    in_flight().files.clone()
}

/// A directory created for a run's output: removed again (if still empty) when dropped or
/// when the run is interrupted, unless [`CreatedDir::keep`] is called.
pub struct CreatedDir {
    path: Option<PathBuf>,
}

impl CreatedDir {
    /// Creates `path` (one level; its parent must exist) if it is missing. An existing
    /// directory is left alone whatever happens.
    pub fn create(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Ok(CreatedDir { path: None });
        }
        let mut list = in_flight();
        std::fs::create_dir(path).map_err(|e| Error::io(path, e))?;
        list.dirs.push(path.to_path_buf());
        Ok(CreatedDir {
            path: Some(path.to_path_buf()),
        })
    }

    /// Keeps the directory.
    pub fn keep(mut self) {
        if let Some(p) = self.path.take() {
            in_flight().dirs.retain(|d| *d != p);
        }
    }
}

impl Drop for CreatedDir {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let mut list = in_flight();
            let _ = std::fs::remove_dir(&p);
            list.dirs.retain(|d| *d != p);
        }
    }
}

/// Permission bits for files holding secrets.
pub const MODE_SECRET: u32 = 0o600;
/// Permission bits for public artifacts.
pub const MODE_PUBLIC: u32 = 0o644;

/// A temporary file beside `dest` that is renamed onto `dest` by [`AtomicFile::commit`] and
/// deleted if dropped before that, so a failed write never leaves a partial file at `dest`.
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    file: Option<std::fs::File>,
}

impl AtomicFile {
    /// Creates the temporary file with `mode`. Fails if `dest` exists and `overwrite` is false.
    pub fn create(dest: &Path, mode: u32, overwrite: bool) -> Result<Self> {
        if !overwrite && dest.exists() {
            return Err(Error::InvalidInput(format!(
                "{} already exists; refusing to overwrite it (pass --force to replace it)",
                dest.display()
            )));
        }
        let name = dest
            .file_name()
            .ok_or_else(|| Error::InvalidInput(format!("{} is not a file path", dest.display())))?;
        let suffix = hex::encode(crate::crypto::random_array::<6>()?);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{suffix}.tmp"));
        let tmp = dest.with_file_name(tmp_name);
        // Create and register under the lock, so a signal handler never misses the file.
        let mut list = in_flight();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        list.files.push(tmp.clone());
        drop(list);
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
            file: Some(file),
        })
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(self) -> Result<()> {
        commit_all(vec![self])
    }

    fn sync(&mut self) -> Result<()> {
        if let Some(file) = self.file.as_ref() {
            file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        }
        Ok(())
    }

    /// The final path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The path written to until commit.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Err(std::io::Error::other("file already committed")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let mut list = in_flight();
            let _ = std::fs::remove_file(&self.tmp);
            unregister(&mut list, &self.tmp);
        }
    }
}

/// Commits several files as one step: all are synced first, then renamed into place under the
/// in-flight lock, so an interrupt handled with [`discard_in_flight`] sees either none or all of
/// them in place. If a rename fails, the files already renamed are removed again (a failed run
/// leaves nothing) and the rest are discarded.
pub fn commit_all(mut files: Vec<AtomicFile>) -> Result<()> {
    for f in &mut files {
        f.sync()?;
    }
    let mut list = in_flight();
    let mut done: Vec<PathBuf> = Vec::new();
    let mut failure = None;
    for f in &mut files {
        if f.file.is_none() {
            continue;
        }
        match std::fs::rename(&f.tmp, &f.dest) {
            Ok(()) => {
                f.file = None;
                unregister(&mut list, &f.tmp);
                done.push(f.dest.clone());
            }
            Err(e) => {
                failure = Some(Error::io(&f.dest, e));
                break;
            }
        }
    }
    if let Some(e) = failure {
        for d in done {
            let _ = std::fs::remove_file(d);
        }
        for f in &mut files {
            if f.file.take().is_some() {
                let _ = std::fs::remove_file(&f.tmp);
                unregister(&mut list, &f.tmp);
            }
        }
        return Err(e);
    }
    Ok(())
}

/// Writes `bytes` to `dest` atomically with permissions `mode`.
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> Result<()> {
    let mut f = AtomicFile::create(dest, mode, overwrite)?;
    f.write_all(bytes).map_err(|e| Error::io(dest, e))?;
    f.commit()
}

/// Reads a whole file, refusing files larger than `limit` bytes (without reading more than
/// `limit + 1` bytes, so `/dev/zero` or a huge file fails at once).
pub fn read_limited(path: &Path, limit: usize) -> Result<Vec<u8>> {
    read_limited_as(path, limit, "OVSA artifact")
}

/// Like [`read_limited`], naming what the file should have been in the error
/// (`"{path} is larger than 1 MiB; a certificate is far smaller: is it the right file?"`).
pub fn read_limited_as(path: &Path, limit: usize, what: &str) -> Result<Vec<u8>> {
    read_bounded(path, limit).map_err(|e| match e {
        BoundedReadError::Io(e) => Error::io(path, e),
        BoundedReadError::Directory => Error::InvalidInput(format!(
            "{} is a directory; expected a {what} file",
            path.display()
        )),
        BoundedReadError::TooLarge => Error::InvalidInput(format!(
            "{} is larger than {}; a {what} is far smaller: is it the right file?",
            path.display(),
            human_size(limit)
        )),
    })
}

/// Why [`read_bounded`] refused a file; callers word the message for their own flag or setting.
#[derive(Debug)]
pub enum BoundedReadError {
    /// Opening or reading failed.
    Io(std::io::Error),
    /// The path is a directory.
    Directory,
    /// The file holds more than the limit (only `limit + 1` bytes were read to tell).
    TooLarge,
}

/// Reads a whole file of at most `limit` bytes without ever reading more than `limit + 1`: the
/// one bounded reader behind every non-model input (`/dev/zero` or a huge file fails at once).
pub fn read_bounded(path: &Path, limit: usize) -> std::result::Result<Vec<u8>, BoundedReadError> {
    let file = std::fs::File::open(path).map_err(BoundedReadError::Io)?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(BoundedReadError::Directory);
    }
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    file.take(cap)
        .read_to_end(&mut out)
        .map_err(BoundedReadError::Io)?;
    if out.len() > limit {
        return Err(BoundedReadError::TooLarge);
    }
    Ok(out)
}

fn human_size(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_files_register_until_commit_or_drop() {
        let d = tempfile::tempdir().unwrap();
        let a = AtomicFile::create(&d.path().join("a"), MODE_PUBLIC, false).unwrap();
        let b = AtomicFile::create(&d.path().join("b"), MODE_PUBLIC, false).unwrap();
        let (ta, tb) = (a.tmp_path().to_path_buf(), b.tmp_path().to_path_buf());
        let now = in_flight_paths();
        assert!(now.contains(&ta) && now.contains(&tb));
        drop(a);
        assert!(!ta.exists() && !in_flight_paths().contains(&ta));
        commit_all(vec![b]).unwrap();
        assert!(d.path().join("b").exists() && !in_flight_paths().contains(&tb));
    }

    #[test]
    fn read_limited_refuses_dev_zero_fast() {
        let start = std::time::Instant::now();
        let e = read_limited_as(Path::new("/dev/zero"), 1 << 20, "certificate").unwrap_err();
        assert!(
            e.to_string()
                .contains("/dev/zero is larger than 1 MiB; a certificate"),
            "{e}"
        );
        assert!(start.elapsed().as_secs() < 2);
    }
}
