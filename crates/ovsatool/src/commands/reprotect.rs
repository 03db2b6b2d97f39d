//! `ovsatool reprotect`: the model of an existing package under a fresh model key.
//!
//! One model key per package means one extraction exposes that package for every customer, and
//! revoking licenses does not revoke the key. Rotation: protect the same model again under a new
//! key, sell new licenses for the new package, revoke the old ones. This reads the old package
//! with its master license (the owner's keys), streams every verified chunk into a new package
//! under a new key, and writes the new package and its master license together or not at all.

use std::io::Write;
use std::time::Instant;

use ovsa_core::envelope::Signed;
use ovsa_core::fsutil::{commit_all, AtomicFile, MODE_SECRET};
use ovsa_core::license::MasterLicense;
use ovsa_core::package::{reprotect_uncommitted, Package};
use ovsa_core::text::escape_controls;

use crate::cli::ReprotectArgs;
use crate::error::CliResult;
use crate::paths::{check_outputs, named};
use crate::progress;
use crate::secrets::load_keystore;

pub fn run(a: &ReprotectArgs) -> CliResult<()> {
    let mut inputs = vec![
        named("--keystore", &a.ks.keystore),
        named("--master-license", &a.master_license),
        named("--package", &a.package),
    ];
    if let Some(p) = &a.ks.passphrase_file {
        inputs.push(named("--passphrase-file", p));
    }
    check_outputs(
        &[
            named("--out", &a.out),
            named("--new-master-license", &a.new_master_license),
        ],
        &inputs,
        a.force,
    )?;
    let isv = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    isv.certificate().check_validity_now()?;
    let master = Signed::<MasterLicense>::load(&a.master_license)?;
    let package = Package::open(&a.package).map_err(|e| {
        ovsa_core::artifact::explain(e, &a.package, &ovsa_core::artifact::ArtifactKind::Package)
    })?;
    master.body().check_package(&package.header_hash())?;
    let old_key = MasterLicense::unwrap_model_key(&master, &isv)?;
    let total = package.header().body().files.iter().map(|f| f.size).sum();
    let bar = progress::bytes(total, "re-protecting");
    let start = Instant::now();
    let (protected, out) =
        reprotect_uncommitted(&package, &old_key, &isv, &a.out, a.force, &mut |done| {
            bar.set_position(done)
        })?;
    bar.finish_and_clear();
    let new_master = MasterLicense::create(&protected, &isv)?;
    let mut ml = AtomicFile::create(&a.new_master_license, MODE_SECRET, a.force)?;
    ml.write_all(&new_master.to_bytes()?)
        .map_err(|e| ovsa_core::Error::io(&a.new_master_license, e))?;
    commit_all(vec![out, ml])?;
    let old = package.header().body();
    let h = protected.header.body();
    say!(
        "re-protected '{}' version {} ({} files, {} bytes) under a new model key into {} in {:.2} s",
        escape_controls(&h.model_name),
        escape_controls(&h.model_version),
        h.files.len(),
        total,
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    say!(
        "old model GUID: {}  header hash {}",
        old.model_guid,
        hex::encode(package.header_hash())
    );
    say!(
        "new model GUID: {}  header hash {}",
        h.model_guid,
        hex::encode(protected.header.digest())
    );
    say!(
        "new master license: {} (keep it secret and safe)",
        a.new_master_license.display()
    );
    say!("next: sell new licenses with --master-license {}, ship the new package, then revoke the old licenses", a.new_master_license.display());
    Ok(())
}
