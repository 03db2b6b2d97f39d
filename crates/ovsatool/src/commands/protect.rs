//! `ovsatool protect` (alias `controlAccess`).

use std::time::Instant;

use ovsa_core::fsutil::MODE_SECRET;
use ovsa_core::license::MasterLicense;
use ovsa_core::package::{classify_inputs, protect, ProtectOptions};

use crate::cli::ProtectArgs;
use crate::error::{CliError, CliResult};
use crate::progress;
use crate::secrets::load_keystore;

pub fn run(a: &ProtectArgs) -> CliResult<()> {
    if !a.force && a.master_license.exists() {
        return Err(CliError::Usage(format!(
            "{} already exists; refusing to overwrite it (pass --force to replace it)",
            a.master_license.display()
        )));
    }
    let isv = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    isv.certificate().check_validity_now()?;
    let inputs = classify_inputs(&a.files)?;
    let total: u64 = inputs
        .iter()
        .map(|i| std::fs::metadata(&i.path).map(|m| m.len()).unwrap_or(0))
        .sum();
    let opts = ProtectOptions {
        model_name: a.name.clone(),
        model_version: a.version.clone(),
        description: a.description.clone(),
        chunk_size: a.chunk_size,
        overwrite: a.force,
    };
    let bar = progress::bytes(total, "protecting");
    let start = Instant::now();
    let protected = protect(&inputs, &opts, &isv, &a.out, &mut |done| {
        bar.set_position(done)
    })?;
    bar.finish_and_clear();
    let master = MasterLicense::create(&protected, &isv)?;
    master.save(&a.master_license, MODE_SECRET, a.force)?;
    let secs = start.elapsed().as_secs_f64();
    let h = protected.header.body();
    say!(
        "protected '{}' version {} ({} files, {} bytes) into {} in {:.2} s ({:.0} MiB/s)",
        h.model_name,
        h.model_version,
        h.files.len(),
        total,
        a.out.display(),
        secs,
        total as f64 / (1024.0 * 1024.0) / secs.max(1e-9)
    );
    say!("model GUID:  {}", h.model_guid);
    say!("header hash: {}", hex::encode(protected.header.digest()));
    say!(
        "master license: {} (keep it secret and safe)",
        a.master_license.display()
    );
    Ok(())
}
