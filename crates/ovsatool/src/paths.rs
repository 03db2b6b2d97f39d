//! Checks done before a command writes anything: every output path differs from every other
//! output and from every input (compared canonicalized, and by inode for existing files, so
//! `./x`, `dir/../x` and hard links all count as the same file), existing outputs need
//! `--force`, and names that become paths elsewhere are plain.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{CliError, CliResult};

/// One file a command reads or writes, with the flag that names it.
#[derive(Clone, Copy)]
pub struct Named<'a> {
    /// The flag (`--out`) or argument (`MODEL_FILE`).
    pub flag: &'a str,
    /// The path given.
    pub path: &'a Path,
}

/// Shorthand for [`Named`].
pub fn named<'a>(flag: &'a str, path: &'a Path) -> Named<'a> {
    Named { flag, path }
}

struct Resolved {
    canonical: Option<PathBuf>,
    inode: Option<(u64, u64)>,
}

fn resolve(path: &Path) -> Resolved {
    let inode = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let canonical = path.canonicalize().ok().or_else(|| {
        // A new file: its parent's canonical path plus its name.
        let name = path.file_name()?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Some(parent.canonicalize().ok()?.join(name))
    });
    Resolved { canonical, inode }
}

fn same(a: &Resolved, b: &Resolved) -> bool {
    matches!((&a.inode, &b.inode), (Some(x), Some(y)) if x == y)
        || matches!((&a.canonical, &b.canonical), (Some(x), Some(y)) if x == y)
}

/// Fails (before anything is written) if two outputs are the same file, an output is one of
/// the inputs, an output is a directory, or an output exists and `force` is false.
pub fn check_outputs(outputs: &[Named<'_>], inputs: &[Named<'_>], force: bool) -> CliResult<()> {
    let outs: Vec<Resolved> = outputs.iter().map(|o| resolve(o.path)).collect();
    let ins: Vec<Resolved> = inputs.iter().map(|i| resolve(i.path)).collect();
    for (i, (o, r)) in outputs.iter().zip(&outs).enumerate() {
        for (o2, r2) in outputs.iter().zip(&outs).take(i) {
            if same(r, r2) {
                return Err(CliError::Usage(format!(
                    "{} {} and {} {} are the same file; give each output its own path",
                    o2.flag,
                    o2.path.display(),
                    o.flag,
                    o.path.display()
                )));
            }
        }
        for (input, ri) in inputs.iter().zip(&ins) {
            if same(r, ri) {
                return Err(CliError::Usage(format!(
                    "output {} {} is the input {} {}; writing it would destroy the input, give another output path",
                    o.flag,
                    o.path.display(),
                    input.flag,
                    input.path.display()
                )));
            }
        }
        if o.path.is_dir() {
            return Err(CliError::Usage(format!(
                "{} {} is a directory; give a file path",
                o.flag,
                o.path.display()
            )));
        }
        if !force && o.path.symlink_metadata().is_ok() {
            return Err(CliError::Usage(format!(
                "{} {} already exists; refusing to overwrite it (pass --force to replace it)",
                o.flag,
                o.path.display()
            )));
        }
        match o.path.parent() {
            Some(p) if !p.as_os_str().is_empty() && !p.is_dir() => {
                return Err(CliError::Usage(format!(
                    "{} {}: the directory {} does not exist",
                    o.flag,
                    o.path.display(),
                    p.display()
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A model, license or TCB name: it becomes a directory or file name in OVMS and the license
/// service, so it must be plain text without path separators or `..`.
pub fn check_name(flag: &str, name: &str) -> CliResult<()> {
    let bad = name.is_empty()
        || name.len() > 255
        || name == "."
        || name.contains("..")
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control);
    if bad {
        return Err(CliError::Usage(format!(
            "{flag} '{}' is not a plain name: it must be 1..=255 characters without '/', '\\', '..' or control characters",
            name.escape_default()
        )));
    }
    Ok(())
}
