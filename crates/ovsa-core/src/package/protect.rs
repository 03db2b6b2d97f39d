//! Protecting a model: encrypt its files into a package, streaming with bounded memory.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;
use zeroize::Zeroize;

use super::format::{encode_prefix, FileEntry, FileKind, PackageHeader, AEAD_NAME, MAX_HEADER_LEN};
use super::stream::{chunk_count, FileCipher};
use super::ModelKey;
use crate::encoding::now_rfc3339;
use crate::envelope::Signed;
use crate::error::{Error, Result};
use crate::fsutil::{AtomicFile, MODE_PUBLIC};
use crate::identity::Keystore;

/// A model file to protect.
#[derive(Debug, Clone)]
pub struct ModelInput {
    /// Where it is.
    pub path: PathBuf,
    /// What it is.
    pub kind: FileKind,
}

/// Metadata and settings for [`protect`].
#[derive(Debug, Clone)]
pub struct ProtectOptions {
    /// Model name.
    pub model_name: String,
    /// Model version label.
    pub model_version: String,
    /// Description.
    pub description: String,
    /// Chunk size in bytes (power of two, 4 KiB..=64 MiB).
    pub chunk_size: u32,
    /// Replace an existing output file.
    pub overwrite: bool,
}

/// The result of [`protect`]: the signed header and the fresh model key (secret; wrap it into a
/// master license straight away).
#[derive(Debug)]
pub struct Protected {
    /// The signed header written into the package.
    pub header: Signed<PackageHeader>,
    /// The model key.
    pub model_key: ModelKey,
}

/// Classifies model files by extension: `.xml` + `.bin` (IR) or one `.onnx`.
pub fn classify_inputs(paths: &[PathBuf]) -> Result<Vec<ModelInput>> {
    let inputs = paths
        .iter()
        .map(|p| {
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            let kind = match ext.as_deref() {
                Some("xml") => FileKind::IrXml,
                Some("bin") => FileKind::IrBin,
                Some("onnx") => FileKind::Onnx,
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "{}: model files must be .xml + .bin (OpenVINO IR) or .onnx",
                        p.display()
                    )))
                }
            };
            Ok(ModelInput {
                path: p.clone(),
                kind,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let n = |k| inputs.iter().filter(|i| i.kind == k).count();
    match (n(FileKind::IrXml), n(FileKind::IrBin), n(FileKind::Onnx)) {
        (1, 1, 0) | (0, 0, 1) => Ok(inputs),
        _ => Err(Error::InvalidInput(
            "give exactly one .xml and one .bin (OpenVINO IR), or exactly one .onnx".into(),
        )),
    }
}

/// Encrypts the model files into a package at `out`, signed with the ISV keystore.
///
/// Memory use is one chunk, whatever the model size. The package is written to a temporary file
/// and renamed into place only when complete. `progress` is called with the number of plaintext
/// bytes processed so far.
pub fn protect(
    inputs: &[ModelInput],
    opts: &ProtectOptions,
    isv: &Keystore,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Protected> {
    let (protected, dest) = protect_uncommitted(inputs, opts, isv, out, progress)?;
    dest.commit()?;
    Ok(protected)
}

/// Like [`protect`], but leaves the complete package in its temporary file: the caller commits
/// it (e.g. together with the master license, [`crate::fsutil::commit_all`]) or drops it.
pub fn protect_uncommitted(
    inputs: &[ModelInput],
    opts: &ProtectOptions,
    isv: &Keystore,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(Protected, AtomicFile)> {
    let mut files = Vec::with_capacity(inputs.len());
    for input in inputs {
        let meta = std::fs::metadata(&input.path).map_err(|e| Error::io(&input.path, e))?;
        if !meta.is_file() {
            return Err(Error::InvalidInput(format!(
                "{} is not a regular file",
                input.path.display()
            )));
        }
        let name = input
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                Error::InvalidInput(format!("{}: file name is not UTF-8", input.path.display()))
            })?
            .to_string();
        files.push(FileEntry {
            name,
            kind: input.kind,
            size: meta.len(),
        });
    }
    let header = PackageHeader {
        model_guid: Uuid::new_v4(),
        model_name: opts.model_name.clone(),
        model_version: opts.model_version.clone(),
        description: opts.description.clone(),
        created: now_rfc3339(),
        aead: AEAD_NAME.into(),
        chunk_size: opts.chunk_size,
        files,
    };
    let header = Signed::sign(header, isv)?;
    let header_bytes = header.to_bytes()?;
    let header_len = u32::try_from(header_bytes.len())
        .ok()
        .filter(|l| *l <= MAX_HEADER_LEN)
        .ok_or_else(|| Error::InvalidInput("package header is too large".into()))?;
    let header_hash = header.digest();
    let model_key = ModelKey::generate()?;

    let mut dest = AtomicFile::create(out, MODE_PUBLIC, opts.overwrite)?;
    let werr = |e| Error::io(out, e);
    dest.write_all(&encode_prefix(header_len)).map_err(werr)?;
    dest.write_all(&header_bytes).map_err(werr)?;

    let chunk_size = header.body().chunk_size as usize;
    let mut buf = vec![0u8; chunk_size];
    let mut done: u64 = 0;
    let result = (|| {
        for (index, (input, entry)) in inputs.iter().zip(&header.body().files).enumerate() {
            let index =
                u32::try_from(index).map_err(|_| Error::InvalidInput("too many files".into()))?;
            let cipher = FileCipher::new(&model_key, &header_hash, index)?;
            let mut src = File::open(&input.path).map_err(|e| Error::io(&input.path, e))?;
            let chunks = chunk_count(entry.size, header.body().chunk_size);
            let mut remaining = entry.size;
            for c in 0..chunks {
                let len = usize::try_from(remaining.min(chunk_size as u64)).unwrap_or(chunk_size);
                let piece = &mut buf[..len];
                src.read_exact(piece).map_err(|e| {
                    Error::InvalidInput(format!(
                        "{}: file shrank while it was being protected ({e}); try again",
                        input.path.display()
                    ))
                })?;
                let tag = cipher.seal_chunk(c, c + 1 == chunks, piece)?;
                dest.write_all(piece).map_err(werr)?;
                dest.write_all(&tag).map_err(werr)?;
                remaining -= len as u64;
                done += len as u64;
                progress(done);
            }
            let mut probe = [0u8; 1];
            if src
                .read(&mut probe)
                .map_err(|e| Error::io(&input.path, e))?
                != 0
            {
                return Err(Error::InvalidInput(format!(
                    "{}: file grew while it was being protected; try again",
                    input.path.display()
                )));
            }
        }
        Ok(())
    })();
    buf.zeroize();
    result?;
    dest.flush().map_err(werr)?;
    Ok((Protected { header, model_key }, dest))
}

/// Protects the model of an existing package again under a fresh model key: the same files
/// (names, kinds, sizes), name, version and description, a new model GUID and header (so a new
/// header hash: every license sold for the old package is for the old package only). `old_key`
/// is the old package's model key (from its master license). Streaming: one chunk of plaintext
/// at a time, in a zeroizing buffer; every old chunk is verified before its plaintext is
/// re-sealed. The result is left in its temporary file like [`protect_uncommitted`]; on any
/// error nothing is written at `out`.
pub fn reprotect_uncommitted<R: super::ReadAt>(
    package: &super::Package<R>,
    old_key: &ModelKey,
    isv: &Keystore,
    out: &Path,
    overwrite: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<(Protected, AtomicFile)> {
    let old = package.header().body();
    let header = PackageHeader {
        model_guid: Uuid::new_v4(),
        model_name: old.model_name.clone(),
        model_version: old.model_version.clone(),
        description: old.description.clone(),
        created: now_rfc3339(),
        aead: AEAD_NAME.into(),
        chunk_size: old.chunk_size,
        files: old.files.clone(),
    };
    let header = Signed::sign(header, isv)?;
    let header_bytes = header.to_bytes()?;
    let header_len = u32::try_from(header_bytes.len())
        .ok()
        .filter(|l| *l <= MAX_HEADER_LEN)
        .ok_or_else(|| Error::InvalidInput("package header is too large".into()))?;
    let header_hash = header.digest();
    let model_key = ModelKey::generate()?;
    let mut dest = AtomicFile::create(out, MODE_PUBLIC, overwrite)?;
    let werr = |e| Error::io(out, e);
    dest.write_all(&encode_prefix(header_len)).map_err(werr)?;
    dest.write_all(&header_bytes).map_err(werr)?;
    let chunk_size = header.body().chunk_size;
    let mut done = 0u64;
    for (index, entry) in header.body().files.iter().enumerate() {
        let file_index =
            u32::try_from(index).map_err(|_| Error::InvalidInput("too many files".into()))?;
        let mut sealer = Resealer {
            cipher: FileCipher::new(&model_key, &header_hash, file_index)?,
            chunks: chunk_count(entry.size, chunk_size),
            next: 0,
            buf: zeroize::Zeroizing::new(Vec::with_capacity(chunk_size as usize)),
            chunk_size: chunk_size as usize,
            dest: &mut dest,
            out,
            done: &mut done,
            progress: &mut *progress,
        };
        package.decrypt_file_to(index, old_key, &mut sealer)?;
        sealer.finish()?;
    }
    dest.flush().map_err(werr)?;
    Ok((Protected { header, model_key }, dest))
}

/// A writer that takes a file's plaintext in order and writes it sealed chunk by chunk under
/// the new key (the last chunk on [`Resealer::finish`]).
struct Resealer<'a> {
    cipher: FileCipher,
    chunks: u64,
    next: u64,
    buf: zeroize::Zeroizing<Vec<u8>>,
    chunk_size: usize,
    dest: &'a mut AtomicFile,
    out: &'a Path,
    done: &'a mut u64,
    progress: &'a mut dyn FnMut(u64),
}

impl Resealer<'_> {
    fn seal(&mut self, last: bool) -> Result<()> {
        if self.next >= self.chunks {
            return Err(Error::InvalidInput(
                "the package holds more plaintext than its header says".into(),
            ));
        }
        let tag = self.cipher.seal_chunk(self.next, last, &mut self.buf[..])?;
        self.dest
            .write_all(&self.buf)
            .and_then(|()| self.dest.write_all(&tag))
            .map_err(|e| Error::io(self.out, e))?;
        *self.done += self.buf.len() as u64;
        (self.progress)(*self.done);
        self.buf.zeroize();
        self.buf.clear();
        self.next += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.seal(true)?;
        if self.next != self.chunks {
            return Err(Error::InvalidInput(
                "the package holds less plaintext than its header says".into(),
            ));
        }
        Ok(())
    }
}

impl Write for Resealer<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            if self.buf.len() == self.chunk_size {
                // A full chunk with more plaintext after it: not the last one.
                self.seal(false).map_err(std::io::Error::other)?;
            }
            let take = (self.chunk_size - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
