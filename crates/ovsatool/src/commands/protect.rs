//! `ovsatool protect` (alias `controlAccess`).

use std::io::Read;
use std::time::Instant;

use ovsa_core::fsutil::{commit_all, AtomicFile, MODE_SECRET};
use ovsa_core::license::MasterLicense;
use ovsa_core::package::{classify_inputs, protect_uncommitted, FileKind, ProtectOptions};

use crate::cli::ProtectArgs;
use crate::error::{CliError, CliResult};
use crate::paths::{check_name, check_outputs, named};
use crate::progress;
use crate::secrets::load_keystore;

pub fn run(a: &ProtectArgs) -> CliResult<()> {
    check_name("--name", &a.name)?;
    check_name("--version", &a.version)?;
    let mut inputs = vec![named("--keystore", &a.ks.keystore)];
    if let Some(p) = &a.ks.passphrase_file {
        inputs.push(named("--passphrase-file", p));
    }
    inputs.extend(a.files.iter().map(|f| named("MODEL_FILE", f)));
    check_outputs(
        &[
            named("--out", &a.out),
            named("--master-license", &a.master_license),
        ],
        &inputs,
        a.force,
    )?;
    let models = classify_inputs(&a.files)?;
    for m in &models {
        check_model_file(&m.path, m.kind)?;
    }
    let isv = load_keystore(&a.ks.keystore, a.ks.passphrase_file.as_deref())?;
    isv.certificate().check_validity_now()?;
    let total: u64 = models
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
    let (protected, package) = protect_uncommitted(&models, &opts, &isv, &a.out, &mut |done| {
        bar.set_position(done)
    })?;
    bar.finish_and_clear();
    // The package and its master license land together or not at all: a package without its
    // master license could never be sold or decrypted.
    let master = MasterLicense::create(&protected, &isv)?;
    let mut ml = AtomicFile::create(&a.master_license, MODE_SECRET, a.force)?;
    {
        use std::io::Write;
        ml.write_all(&master.to_bytes()?)
            .map_err(|e| ovsa_core::Error::io(&a.master_license, e))?;
    }
    commit_all(vec![package, ml])?;
    let secs = start.elapsed().as_secs_f64();
    let h = protected.header.body();
    say!(
        "protected '{}' version {} ({} files, {} bytes) into {} in {:.2} s ({:.0} MiB/s)",
        ovsa_core::text::escape_controls(&h.model_name),
        ovsa_core::text::escape_controls(&h.model_version),
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

/// Refuses empty files and files whose content is not what their extension says: an IR `.xml`
/// must be XML with a `<net` element, an `.onnx` file must start like an ONNX protobuf
/// (ModelProto). The weights (`.bin`) have no magic; they must only be non-empty.
fn check_model_file(path: &std::path::Path, kind: FileKind) -> CliResult<()> {
    let meta = std::fs::metadata(path).map_err(|e| ovsa_core::Error::io(path, e))?;
    if !meta.is_file() {
        return Err(CliError::Usage(format!(
            "MODEL_FILE {} is not a regular file",
            path.display()
        )));
    }
    if meta.len() == 0 {
        return Err(CliError::Usage(format!(
            "MODEL_FILE {} is empty (0 bytes); give the model's real files",
            path.display()
        )));
    }
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .map_err(|e| ovsa_core::Error::io(path, e))?;
    let ok = match kind {
        FileKind::IrXml => {
            ovsa_core::artifact::detect(&head) == ovsa_core::artifact::ArtifactKind::IrXml
        }
        FileKind::Onnx => looks_like_onnx(&head),
        _ => true,
    };
    if !ok {
        let found = ovsa_core::artifact::detect(&head).describe();
        let expected = match kind {
            FileKind::IrXml => "an OpenVINO IR model description (XML with a <net> element)",
            _ => "an ONNX model (a ModelProto protobuf)",
        };
        return Err(CliError::Usage(format!(
            "MODEL_FILE {} is {found}, not {expected}; give the model's real files",
            path.display()
        )));
    }
    Ok(())
}

/// The first field of an ONNX ModelProto: its first byte is the protobuf key of one of the
/// ModelProto fields (ir_version = 1 varint is what every exporter writes first).
fn looks_like_onnx(head: &[u8]) -> bool {
    const KEYS: [u8; 12] = [
        0x08, // 1 ir_version (varint)
        0x12, // 2 producer_name
        0x1a, // 3 producer_version
        0x22, // 4 domain
        0x28, // 5 model_version (varint)
        0x32, // 6 doc_string
        0x3a, // 7 graph
        0x42, // 8 opset_import
        0x72, // 14 metadata_props
        0xa2, // 20 training_info (two-byte key)
        0xaa, // 21 functions (two-byte key)
        0xca, // 25 configuration (two-byte key)
    ];
    head.len() >= 2 && KEYS.contains(&head[0]) && (head[0] < 0x80 || head[1] == 0x01)
}
