//! `ovsatool decrypt`: owner-side recovery of a package's model files.

use std::io::Write;

use ovsa_core::envelope::Signed;
use ovsa_core::fsutil::{AtomicFile, MODE_SECRET};
use ovsa_core::license::MasterLicense;
use ovsa_core::package::Package;

use crate::cli::DecryptArgs;
use crate::error::CliResult;
use crate::progress;
use crate::secrets::load_keystore;

pub fn run(a: &DecryptArgs) -> CliResult<()> {
    let isv = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    let master = Signed::<MasterLicense>::load(&a.master_license)?;
    let package = Package::open(&a.package)?;
    master.body().check_package(&package.header_hash())?;
    let key = MasterLicense::unwrap_model_key(&master, &isv)?;
    std::fs::create_dir_all(&a.out_dir).map_err(|e| ovsa_core::Error::io(&a.out_dir, e))?;
    let files = &package.header().body().files;
    let total = files.iter().map(|f| f.size).sum();
    let bar = progress::bytes(total, "decrypting");
    // Every file is verified completely before any is renamed into place.
    let mut pending = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let dest = a.out_dir.join(&f.name);
        let mut out = AtomicFile::create(&dest, MODE_SECRET, a.force)?;
        let mut counting = Counting {
            inner: &mut out,
            bar: &bar,
        };
        package.decrypt_file_to(i, &key, &mut counting)?;
        out.flush().map_err(|e| ovsa_core::Error::io(&dest, e))?;
        pending.push((out, dest));
    }
    bar.finish_and_clear();
    for (out, dest) in pending {
        out.commit()?;
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
