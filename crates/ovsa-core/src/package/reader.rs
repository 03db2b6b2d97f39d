//! Reading a package: header verification, length checks, and chunk decryption (streaming, or
//! in parallel straight into a caller's buffer).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use zeroize::{Zeroize, Zeroizing};

use super::format::{parse_prefix, FileEntry, ModelFormat, PackageHeader, PREFIX_LEN};
use super::stream::{chunk_count, sealed_len, FileCipher};
use super::ModelKey;
use crate::crypto::aead::TAG_LEN;
use crate::envelope::{with_path, Signed};
use crate::error::{Error, Result};

/// Positional reads, so several threads can read one source at once.
pub trait ReadAt: Sync {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// Total length of the source.
    fn source_len(&self) -> std::io::Result<u64>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
    fn source_len(&self) -> std::io::Result<u64> {
        self.metadata().map(|m| m.len())
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn source_len(&self) -> std::io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
    fn source_len(&self) -> std::io::Result<u64> {
        Ok(self.as_slice().len() as u64)
    }
}

/// An opened package whose header signature and length have been verified.
pub struct Package<R> {
    src: R,
    header: Signed<PackageHeader>,
    file_offsets: Vec<u64>,
}

/// A fully decrypted model (for tools and tests; the runtime decrypts into its own buffers).
pub struct DecryptedModel {
    /// IR or ONNX.
    pub format: ModelFormat,
    /// Each file with its plaintext, in header order.
    pub files: Vec<(FileEntry, Zeroizing<Vec<u8>>)>,
}

impl Package<File> {
    /// Opens and verifies a package file.
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        Package::from_source(f).map_err(|e| with_path(e, path))
    }
}

impl<R: ReadAt> Package<R> {
    /// Parses the prefix and header from `src`, verifies the header signature and the signer's
    /// validity, and checks that the source is exactly as long as the header says.
    pub fn from_source(src: R) -> Result<Self> {
        let total = src.source_len().map_err(|e| Error::io("package", e))?;
        let mut prefix = [0u8; PREFIX_LEN];
        if total < PREFIX_LEN as u64 {
            return Err(Error::Truncated(format!(
                "{total} bytes; not even the {PREFIX_LEN}-byte package prefix"
            )));
        }
        src.read_exact_at(&mut prefix, 0)
            .map_err(|e| Error::io("package", e))?;
        let header_len = parse_prefix(&prefix)?;
        let payload_start = PREFIX_LEN as u64 + u64::from(header_len);
        if total < payload_start {
            return Err(Error::Truncated(format!(
                "the header needs {header_len} bytes but the package has {} after its prefix",
                total - PREFIX_LEN as u64
            )));
        }
        let mut header_bytes = vec![0u8; header_len as usize];
        src.read_exact_at(&mut header_bytes, PREFIX_LEN as u64)
            .map_err(|e| Error::io("package", e))?;
        let header = Signed::<PackageHeader>::from_bytes(&header_bytes)?;
        let body = header.body();
        let mut file_offsets = Vec::with_capacity(body.files.len());
        let mut off = payload_start;
        for f in &body.files {
            file_offsets.push(off);
            off = sealed_len(f.size, body.chunk_size)
                .and_then(|l| off.checked_add(l))
                .ok_or_else(|| Error::malformed("package header", "payload size overflows"))?;
        }
        if total < off {
            return Err(Error::Truncated(format!(
                "the header describes {} payload bytes but only {} are present",
                off - payload_start,
                total - payload_start
            )));
        }
        if total > off {
            return Err(Error::TrailingData(total - off));
        }
        Ok(Package {
            src,
            header,
            file_offsets,
        })
    }

    /// The verified header.
    pub fn header(&self) -> &Signed<PackageHeader> {
        &self.header
    }

    /// The header hash that licenses bind to.
    pub fn header_hash(&self) -> [u8; 32] {
        self.header.digest()
    }

    fn entry(&self, index: usize) -> Result<&FileEntry> {
        self.header
            .body()
            .files
            .get(index)
            .ok_or_else(|| Error::InvalidInput(format!("the package has no file number {index}")))
    }

    /// Decrypts file `index` into `out` (which must be exactly the file's size), verifying every
    /// chunk, using up to `threads` threads that each read and decrypt a contiguous range.
    ///
    /// On any failure `out` is wiped before the error is returned: no partial plaintext.
    pub fn decrypt_file_into(
        &self,
        index: usize,
        key: &ModelKey,
        out: &mut [u8],
        threads: usize,
    ) -> Result<()> {
        let entry = self.entry(index)?;
        if out.len() as u64 != entry.size {
            return Err(Error::InvalidInput(format!(
                "output buffer is {} bytes but '{}' is {} bytes",
                out.len(),
                entry.name,
                entry.size
            )));
        }
        let result = self.decrypt_into_inner(index, entry, key, out, threads.max(1));
        if result.is_err() {
            out.zeroize();
        }
        result
    }

    fn decrypt_into_inner(
        &self,
        index: usize,
        entry: &FileEntry,
        key: &ModelKey,
        out: &mut [u8],
        threads: usize,
    ) -> Result<()> {
        let file_index =
            u32::try_from(index).map_err(|_| Error::InvalidInput("file index".into()))?;
        let cipher = FileCipher::new(key, &self.header_hash(), file_index)?;
        let chunk = self.header.body().chunk_size as usize;
        let chunks = chunk_count(entry.size, self.header.body().chunk_size);
        let base = self.file_offsets[index];
        if entry.size == 0 {
            return self.open_one(&cipher, entry, base, 0, true, out, chunk);
        }
        let per_thread = chunks.div_ceil(threads as u64).max(1);
        // The lowest failing chunk so far: threads skip only the chunks after it, so the error
        // reported is always that of the file's first bad chunk, whatever the thread timing.
        let lowest_failed = AtomicU64::new(u64::MAX);
        let first_error: Mutex<Option<(u64, Error)>> = Mutex::new(None);
        let span = usize::try_from(per_thread)
            .ok()
            .and_then(|p| p.checked_mul(chunk))
            .unwrap_or(usize::MAX);
        std::thread::scope(|scope| {
            for (t, part) in out.chunks_mut(span).enumerate() {
                let (cipher, lowest_failed, first_error) = (&cipher, &lowest_failed, &first_error);
                let first_chunk = t as u64 * per_thread;
                scope.spawn(move || {
                    for (j, piece) in part.chunks_mut(chunk).enumerate() {
                        let c = first_chunk + j as u64;
                        if c > lowest_failed.load(Ordering::Relaxed) {
                            return;
                        }
                        if let Err(e) =
                            self.open_one(cipher, entry, base, c, c + 1 == chunks, piece, chunk)
                        {
                            lowest_failed.fetch_min(c, Ordering::Relaxed);
                            let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            if slot.as_ref().is_none_or(|(k, _)| c < *k) {
                                *slot = Some((c, e));
                            }
                            return;
                        }
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open_one(
        &self,
        cipher: &FileCipher,
        entry: &FileEntry,
        base: u64,
        c: u64,
        last: bool,
        piece: &mut [u8],
        chunk: usize,
    ) -> Result<()> {
        let off = base + c * (chunk + TAG_LEN) as u64;
        let io = |e: std::io::Error| {
            Error::Truncated(format!("reading '{}' chunk {c}: {e}", entry.name))
        };
        self.src.read_exact_at(piece, off).map_err(io)?;
        let mut tag = [0u8; TAG_LEN];
        self.src
            .read_exact_at(&mut tag, off + piece.len() as u64)
            .map_err(io)?;
        if cipher.open_chunk(c, last, piece, &tag) {
            Ok(())
        } else {
            Err(Error::ChunkAuthentication {
                file: entry.name.clone(),
                chunk: c,
            })
        }
    }

    /// Decrypts file `index` chunk by chunk into `w`. A chunk is written only after it verified,
    /// but earlier chunks have already been written when a later one fails: the caller must
    /// discard `w`'s content on error (e.g. by writing to an [`crate::fsutil::AtomicFile`]).
    pub fn decrypt_file_to(&self, index: usize, key: &ModelKey, w: &mut dyn Write) -> Result<u64> {
        let entry = self.entry(index)?;
        let file_index =
            u32::try_from(index).map_err(|_| Error::InvalidInput("file index".into()))?;
        let cipher = FileCipher::new(key, &self.header_hash(), file_index)?;
        let chunk_size = self.header.body().chunk_size;
        let chunks = chunk_count(entry.size, chunk_size);
        let mut buf = Zeroizing::new(vec![0u8; chunk_size as usize]);
        let mut remaining = entry.size;
        for c in 0..chunks {
            let len = remaining.min(u64::from(chunk_size)) as usize;
            let piece = &mut buf[..len];
            self.open_one(
                &cipher,
                entry,
                self.file_offsets[index],
                c,
                c + 1 == chunks,
                piece,
                chunk_size as usize,
            )?;
            w.write_all(piece)
                .map_err(|e| Error::io(entry.name.clone(), e))?;
            remaining -= len as u64;
        }
        Ok(entry.size)
    }

    /// Decrypts every file into fresh zeroizing buffers.
    pub fn decrypt_model(&self, key: &ModelKey, threads: usize) -> Result<DecryptedModel> {
        let format = self.header.body().format()?;
        let mut files = Vec::new();
        for (i, entry) in self.header.body().files.iter().enumerate() {
            let size = usize::try_from(entry.size).map_err(|_| {
                Error::InvalidInput(format!("'{}' is too large for memory", entry.name))
            })?;
            let mut buf = Zeroizing::new(vec![0u8; size]);
            self.decrypt_file_into(i, key, &mut buf, threads)?;
            files.push((entry.clone(), buf));
        }
        Ok(DecryptedModel { format, files })
    }
}

/// A sensible default thread count for decryption.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
}
