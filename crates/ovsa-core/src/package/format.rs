//! Container constants and the signed package header.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::stream::sealed_len;
use crate::envelope::Artifact;
use crate::error::{Error, Result};

/// File magic.
pub const MAGIC: [u8; 8] = *b"OVSAPKG\0";
/// Container version written and read by this build.
pub const CONTAINER_VERSION: u32 = 1;
/// Length of the fixed prefix (magic, version, header length).
pub const PREFIX_LEN: usize = 16;
/// Largest header accepted.
pub const MAX_HEADER_LEN: u32 = 1 << 20;
/// Smallest chunk size.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// Largest chunk size.
pub const MAX_CHUNK_SIZE: u32 = 64 * 1024 * 1024;
/// Default chunk size (1 MiB: large enough for full AEAD speed, small enough to stream).
pub const DEFAULT_CHUNK_SIZE: u32 = 1024 * 1024;
/// The AEAD named in headers.
pub const AEAD_NAME: &str = "AES-256-GCM";
/// Most files in one package.
pub const MAX_FILES: usize = 16;

/// What a model file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// OpenVINO IR topology (`.xml`).
    IrXml,
    /// OpenVINO IR weights (`.bin`).
    IrBin,
    /// ONNX model (`.onnx`).
    Onnx,
}

/// How OpenVINO should read the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// IR: an XML topology and a weights file.
    Ir,
    /// A single ONNX file.
    Onnx,
}

/// One model file in the package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Base file name (no directories).
    pub name: String,
    /// Its role.
    pub kind: FileKind,
    /// Plaintext size in bytes.
    pub size: u64,
}

/// The signed package header body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageHeader {
    /// Random identifier of this model package.
    pub model_guid: Uuid,
    /// Model name.
    pub model_name: String,
    /// Model version label (free text, e.g. "1" or "2024.1").
    pub model_version: String,
    /// Description.
    pub description: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The AEAD: always "AES-256-GCM".
    pub aead: String,
    /// Plaintext bytes per chunk (a power of two).
    pub chunk_size: u32,
    /// The files, in payload order.
    pub files: Vec<FileEntry>,
}

impl Artifact for PackageHeader {
    const TYPE: &'static str = "package-header";
    const VERSION: u64 = 1;

    fn validate(&self) -> Result<()> {
        let bad = |d: String| Err(Error::malformed("package header", d));
        if self.aead != AEAD_NAME {
            return bad(format!("unsupported AEAD '{}'", self.aead));
        }
        if !self.chunk_size.is_power_of_two()
            || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size)
        {
            return bad(format!(
                "chunk size {} is not a power of two in {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
                self.chunk_size
            ));
        }
        check_text("model name", &self.model_name, 1, 256)?;
        check_text("model version", &self.model_version, 1, 64)?;
        check_text("description", &self.description, 0, 4096)?;
        if self.files.is_empty() || self.files.len() > MAX_FILES {
            return bad(format!(
                "{} files (1..={MAX_FILES} allowed)",
                self.files.len()
            ));
        }
        let mut total: u64 = 0;
        for (i, f) in self.files.iter().enumerate() {
            check_file_name(&f.name)?;
            if self.files[..i].iter().any(|g| g.name == f.name) {
                return bad(format!("file name '{}' appears twice", f.name));
            }
            let len = sealed_len(f.size, self.chunk_size).ok_or_else(|| {
                Error::malformed("package header", format!("file '{}' is too large", f.name))
            })?;
            total = total.checked_add(len).ok_or_else(|| {
                Error::malformed("package header", "total payload size overflows")
            })?;
        }
        self.format().map(|_| ())
    }
}

impl PackageHeader {
    /// The model format implied by the file kinds: exactly one `.xml` + one `.bin`, or exactly
    /// one `.onnx`.
    pub fn format(&self) -> Result<ModelFormat> {
        let count = |k| self.files.iter().filter(|f| f.kind == k).count();
        match (count(FileKind::IrXml), count(FileKind::IrBin), count(FileKind::Onnx)) {
            (1, 1, 0) if self.files.len() == 2 => Ok(ModelFormat::Ir),
            (0, 0, 1) if self.files.len() == 1 => Ok(ModelFormat::Onnx),
            (x, b, o) => Err(Error::malformed(
                "package header",
                format!("a model is one .xml + one .bin (IR) or one .onnx; this package has {x} xml, {b} bin, {o} onnx"),
            )),
        }
    }

    /// Total payload length (sum of every file's sealed length).
    pub fn payload_len(&self) -> u64 {
        self.files
            .iter()
            .map(|f| sealed_len(f.size, self.chunk_size).unwrap_or(u64::MAX))
            .fold(0u64, u64::saturating_add)
    }

    /// Index of the first file of `kind`.
    pub fn find(&self, kind: FileKind) -> Option<usize> {
        self.files.iter().position(|f| f.kind == kind)
    }
}

fn check_text(what: &str, s: &str, min: usize, max: usize) -> Result<()> {
    if s.len() < min || s.len() > max || s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::malformed(
            "package header",
            format!("{what} must be {min}..={max} bytes of printable text"),
        ));
    }
    Ok(())
}

/// A package file name must be a plain base name: it becomes a path on decryption.
pub fn check_file_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(Error::malformed(
            "package header",
            format!("file name {name:?} is not a plain base name"),
        ))
    }
}

/// Parses the fixed prefix and returns the header length.
pub fn parse_prefix(prefix: &[u8]) -> Result<u32> {
    if prefix.len() < PREFIX_LEN {
        return Err(Error::Truncated(format!(
            "{} bytes; not even the {PREFIX_LEN}-byte package prefix",
            prefix.len()
        )));
    }
    if prefix[..8] != MAGIC {
        return Err(Error::malformed(
            "package",
            "not an OVSA protected model (bad magic); expected a .dat file made by `ovsatool protect`",
        ));
    }
    let version = u32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
    if version != CONTAINER_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "package container",
            found: version.into(),
            supported: CONTAINER_VERSION.into(),
        });
    }
    let header_len = u32::from_be_bytes([prefix[12], prefix[13], prefix[14], prefix[15]]);
    if header_len == 0 || header_len > MAX_HEADER_LEN {
        return Err(Error::malformed(
            "package",
            format!("header length {header_len} is out of range 1..={MAX_HEADER_LEN}"),
        ));
    }
    Ok(header_len)
}

/// Encodes the fixed prefix.
pub fn encode_prefix(header_len: u32) -> [u8; PREFIX_LEN] {
    let mut p = [0u8; PREFIX_LEN];
    p[..8].copy_from_slice(&MAGIC);
    p[8..12].copy_from_slice(&CONTAINER_VERSION.to_be_bytes());
    p[12..16].copy_from_slice(&header_len.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        for good in ["model.xml", "a b.bin", "m-1.onnx"] {
            check_file_name(good).unwrap();
        }
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a\\b", "x\0"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefix_round_trip_and_errors() {
        assert_eq!(parse_prefix(&encode_prefix(77)).unwrap(), 77);
        assert!(matches!(parse_prefix(b"OVSA"), Err(Error::Truncated(_))));
        let mut p = encode_prefix(77);
        p[0] = b'X';
        assert!(matches!(parse_prefix(&p), Err(Error::Malformed { .. })));
        let mut p = encode_prefix(77);
        p[11] = 9;
        assert!(matches!(
            parse_prefix(&p),
            Err(Error::UnsupportedVersion { .. })
        ));
        assert!(parse_prefix(&encode_prefix(MAX_HEADER_LEN + 1)).is_err());
    }
}
