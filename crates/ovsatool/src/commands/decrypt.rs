//! `ovsatool decrypt`: owner-side recovery of a package's model files.
//!
//! Plaintext is written only to temporary files that are removed on any failure and on Ctrl-C /
//! SIGTERM (see `crate::signals`); all files are verified completely and then renamed into place
//! together.

use std::io::Write;

use ovsa_core::envelope::Signed;
use ovsa_core::fsutil::{commit_all, AtomicFile, CreatedDir, MODE_SECRET};
use ovsa_core::license::MasterLicense;
use ovsa_core::package::Package;

use crate::cli::DecryptArgs;
use crate::error::{CliError, CliResult};
use crate::paths::{check_outputs, named};
use crate::progress;
use crate::secrets::load_keystore;

pub fn run(a: &DecryptArgs) -> CliResult<()> {
    let isv = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    let master = Signed::<MasterLicense>::load(&a.master_license)?;
    let package = Package::open(&a.package).map_err(|e| {
        ovsa_core::artifact::explain(e, &a.package, &ovsa_core::artifact::ArtifactKind::Package)
    })?;
    master.body().check_package(&package.header_hash())?;
    let key = MasterLicense::unwrap_model_key(&master, &isv)?;
    let files = &package.header().body().files;
    if a.out_dir.exists() && !a.out_dir.is_dir() {
        return Err(CliError::Usage(format!(
            "--out-dir {} is not a directory",
            a.out_dir.display()
        )));
    }
    // Check every output against every input before anything is written.
    let dests: Vec<_> = files.iter().map(|f| a.out_dir.join(&f.name)).collect();
    let mut inputs = vec![
        named("--keystore", &a.ks.keystore),
        named("--master-license", &a.master_license),
        named("--package", &a.package),
    ];
    if let Some(p) = &a.ks.passphrase_file {
        inputs.push(named("--passphrase-file", p));
    }
    if a.out_dir.is_dir() {
        let outputs: Vec<_> = dests.iter().map(|d| named("--out-dir", d)).collect();
        check_outputs(&outputs, &inputs, a.force)?;
    }
    let dir = CreatedDir::create(&a.out_dir)?;
    let total = files.iter().map(|f| f.size).sum();
    let bar = progress::bytes(total, "decrypting");
    // Every file is verified completely before any is renamed into place.
    let mut pending = Vec::new();
    for (i, dest) in dests.iter().enumerate() {
        let mut out = AtomicFile::create(dest, MODE_SECRET, a.force)?;
        let mut counting = Counting {
            inner: &mut out,
            bar: &bar,
        };
        package.decrypt_file_to(i, &key, &mut counting)?;
        out.flush().map_err(|e| ovsa_core::Error::io(dest, e))?;
        pending.push(out);
    }
    bar.finish_and_clear();
    commit_all(pending)?;
    dir.keep();
    for dest in &dests {
        say!("wrote {}", dest.display());
    }
    Ok(())
}

struct Counting<'a, W> {
    inner: &'a mut W,
    bar: &'a indicatif::ProgressBar,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
