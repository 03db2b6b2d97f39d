//! Small file helpers: atomic writes with explicit permissions, bounded reads.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

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
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
            file: Some(file),
        })
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        }
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io(&self.dest, e))
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
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `dest` atomically with permissions `mode`.
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> Result<()> {
    let mut f = AtomicFile::create(dest, mode, overwrite)?;
    f.write_all(bytes).map_err(|e| Error::io(dest, e))?;
    f.commit()
}

/// Reads a whole file, refusing files larger than `limit` bytes.
pub fn read_limited(path: &Path, limit: usize) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    let limit64 = u64::try_from(limit).unwrap_or(u64::MAX);
    file.take(limit64.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| Error::io(path, e))?;
    if out.len() > limit {
        return Err(Error::InvalidInput(format!(
            "{} is larger than {limit} bytes; it is not an OVSA artifact",
            path.display()
        )));
    }
    Ok(out)
}
