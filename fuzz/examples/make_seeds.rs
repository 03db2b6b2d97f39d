//! Writes seed corpora for every fuzz target into `fuzz/corpus/<target>/`, made with the real
//! ovsa-core API (so every seed is a valid artifact the fuzzer can mutate), plus the tiny
//! hand-written seeds of `fuzz/seeds/<target>/`.
//!
//! ```text
//! cd fuzz && cargo run --release --example make_seeds
//! ```
//! Packages sealed with the fixed model key `[7; 32]` (the key the `package` target decrypts
//! with) are built by hand from the public format API, so the fuzzer reaches successful
//! decryption; a package made by `package::protect` (random key) is included too.

use std::fs;
use std::path::{Path, PathBuf};

use ovsa_core::crypto::KeyAlgorithm;
use ovsa_core::encoding::now_rfc3339;
use ovsa_core::envelope::Signed;
use ovsa_core::identity::cert;
use ovsa_core::identity::{Keystore, KeystoreProtection};
use ovsa_core::license::customer::SaleRequest;
use ovsa_core::license::policy::Pin;
use ovsa_core::license::{
    sell, LicenseConfig, MasterLicense, PcrBank, PcrSet, PcrValue, Policy, ServiceEndpoint,
    TcbReference, Validity,
};
use ovsa_core::package::format::{encode_prefix, FileEntry, FileKind, PackageHeader, AEAD_NAME};
use ovsa_core::package::stream::{chunk_count, FileCipher};
use ovsa_core::package::{protect, ModelInput, ModelKey, ProtectOptions};

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) -> R<()> {
    let dir = root.join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), bytes)?;
    Ok(())
}

/// A package sealed by hand with `key`, exactly as `package::protect` lays it out.
pub fn craft_package(
    isv: &Keystore,
    key: &ModelKey,
    files: &[(&str, FileKind, Vec<u8>)],
    chunk_size: u32,
) -> R<Vec<u8>> {
    let header = PackageHeader {
        model_guid: uuid::Uuid::new_v4(),
        model_name: "fuzz-seed".into(),
        model_version: "1".into(),
        description: "seed package for the fuzzer".into(),
        created: now_rfc3339(),
        aead: AEAD_NAME.into(),
        chunk_size,
        files: files
            .iter()
            .map(|(n, k, b)| FileEntry {
                name: (*n).into(),
                kind: *k,
                size: b.len() as u64,
            })
            .collect(),
    };
    let header = Signed::sign(header, isv)?;
    let header_bytes = header.to_bytes()?;
    let mut out = encode_prefix(u32::try_from(header_bytes.len())?).to_vec();
    out.extend_from_slice(&header_bytes);
    let hash = header.digest();
    for (i, (_, _, plain)) in files.iter().enumerate() {
        let cipher = FileCipher::new(key, &hash, u32::try_from(i)?)?;
        let chunks = chunk_count(plain.len() as u64, chunk_size);
        let mut pieces: Vec<&[u8]> = plain.chunks(chunk_size as usize).collect();
        if pieces.is_empty() {
            pieces.push(&[]);
        }
        assert_eq!(pieces.len() as u64, chunks);
        for (c, piece) in pieces.iter().enumerate() {
            let mut buf = piece.to_vec();
            let tag = cipher.seal_chunk(c as u64, c as u64 + 1 == chunks, &mut buf)?;
            out.extend_from_slice(&buf);
            out.extend_from_slice(&tag);
        }
    }
    Ok(out)
}

fn main() -> R<()> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("corpus");
    let t0 = std::time::Instant::now();

    // Hand-written seeds.
    if let Ok(targets) = fs::read_dir(manifest.join("seeds")) {
        for t in targets.flatten() {
            for f in fs::read_dir(t.path())?.flatten() {
                write(
                    &root,
                    &t.file_name().to_string_lossy(),
                    &f.file_name().to_string_lossy(),
                    &fs::read(f.path())?,
                )?;
            }
        }
    }

    // Identities.
    let (isv, _) = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=Fuzz ISV, O=Fuzz", 3650)?;
    let (isv384, _) = Keystore::generate(KeyAlgorithm::EcdsaP384, "CN=Fuzz ISV 384", 3650)?;
    let (customer, csr) = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=Fuzz Customer", 3650)?;
    let (service, _) = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=Fuzz Registration", 3650)?;
    write(
        &root,
        "keystore",
        "clear-p256.json",
        &isv.to_bytes(&KeystoreProtection::None)?,
    )?;
    write(
        &root,
        "keystore",
        "clear-p384.json",
        &isv384.to_bytes(&KeystoreProtection::None)?,
    )?;
    let enc = isv.to_bytes(&KeystoreProtection::Passphrase("pw".to_string().into()))?;
    write(&root, "keystore", "passphrase-600k.json", &enc)?;
    // The keystore target skips iteration counts above 100 000 (PBKDF2 cost): same file at the
    // minimum the parser accepts, so the fuzzer reaches the decrypt branch (BadPassphrase).
    let mut v: serde_json::Value = serde_json::from_slice(&enc)?;
    v["private_key"]["iterations"] = 100_000.into();
    write(
        &root,
        "keystore",
        "passphrase-100k.json",
        &serde_json::to_vec_pretty(&v)?,
    )?;

    // Certificates: PEM, DER, a CA-signed chain.
    let ca_key = ovsa_core::crypto::SigningKey::generate(KeyAlgorithm::EcdsaP256)?;
    let ca = cert::self_signed_ca(&ca_key, "CN=Fuzz CA", 3650)?;
    let signed = cert::sign_csr(&csr, &ca_key, &ca, 365)?;
    let mut imported = Keystore::from_bytes(&customer.to_bytes(&KeystoreProtection::None)?, None)?;
    imported.import_certificate(signed.clone(), vec![ca.clone()])?;
    write(
        &root,
        "keystore",
        "clear-with-chain.json",
        &imported.to_bytes(&KeystoreProtection::None)?,
    )?;
    write(
        &root,
        "certificate",
        "isv.pem",
        isv.certificate().to_pem().as_bytes(),
    )?;
    write(&root, "certificate", "isv.der", isv.certificate().der())?;
    write(
        &root,
        "certificate",
        "isv384.der",
        isv384.certificate().der(),
    )?;
    write(&root, "certificate", "ca.der", ca.der())?;
    write(
        &root,
        "certificate",
        "chain.pem",
        format!("{}{}", signed.to_pem(), ca.to_pem()).as_bytes(),
    )?;
    write(&root, "certificate", "csr.pem", csr.as_bytes())?;

    // Packages: protect() on tiny IR and ONNX models, and hand-sealed ones under key [7; 32].
    let dir = tempfile::tempdir()?;
    let xml = dir.path().join("model.xml");
    let bin = dir.path().join("model.bin");
    let onnx = dir.path().join("model.onnx");
    fs::write(&xml, b"<net name=\"fuzz\"><layers/></net>\n")?;
    fs::write(&bin, (0..9000u32).map(|i| i as u8).collect::<Vec<u8>>())?;
    fs::write(&onnx, b"\x08\x07fuzz-onnx")?;
    let opts = ProtectOptions {
        model_name: "fuzz".into(),
        model_version: "1".into(),
        description: "tiny".into(),
        chunk_size: 4096,
        overwrite: true,
    };
    let ir_inputs = [
        ModelInput {
            path: xml.clone(),
            kind: FileKind::IrXml,
        },
        ModelInput {
            path: bin.clone(),
            kind: FileKind::IrBin,
        },
    ];
    let ir_dat = dir.path().join("ir.dat");
    let ir = protect(&ir_inputs, &opts, &isv, &ir_dat, &mut |_| {})?;
    let onnx_dat = dir.path().join("onnx.dat");
    let onnx_p = protect(
        &[ModelInput {
            path: onnx.clone(),
            kind: FileKind::Onnx,
        }],
        &opts,
        &isv384,
        &onnx_dat,
        &mut |_| {},
    )?;
    let mut packages = vec![
        ("protect-ir.dat".to_string(), fs::read(&ir_dat)?),
        ("protect-onnx-p384.dat".to_string(), fs::read(&onnx_dat)?),
    ];
    let k7 = ModelKey::from_bytes([7; 32]);
    let cases: Vec<(&str, Vec<(&str, FileKind, Vec<u8>)>)> = vec![
        (
            "k7-onnx-empty.dat",
            vec![("m.onnx", FileKind::Onnx, vec![])],
        ),
        (
            "k7-onnx-1chunk.dat",
            vec![("m.onnx", FileKind::Onnx, vec![0xAB; 4096])],
        ),
        (
            "k7-onnx-3chunks.dat",
            vec![("m.onnx", FileKind::Onnx, vec![0x5A; 8193])],
        ),
        (
            "k7-ir.dat",
            vec![
                ("m.xml", FileKind::IrXml, b"<net/>".to_vec()),
                ("m.bin", FileKind::IrBin, vec![1; 5000]),
            ],
        ),
    ];
    for (name, files) in &cases {
        packages.push((name.to_string(), craft_package(&isv, &k7, files, 4096)?));
    }
    for (name, bytes) in &packages {
        write(&root, "package", name, bytes)?;
        write(&root, "package_prefix", name, &bytes[..16])?;
        let hl = u32::from_be_bytes(bytes[12..16].try_into()?) as usize;
        write(
            &root,
            "envelope",
            &format!("header-{name}.json"),
            &bytes[16..16 + hl],
        )?;
    }

    // Licenses: master license, configs, TCB references, a sale.
    let master = MasterLicense::create(&ir, &isv)?;
    write(&root, "envelope", "master.masterlic", &master.to_bytes()?)?;
    write(
        &root,
        "envelope",
        "master-onnx.masterlic",
        &MasterLicense::create(&onnx_p, &isv384)?.to_bytes()?,
    )?;
    let endpoint = |url: &str| ServiceEndpoint {
        url: url.into(),
        pins: vec![Pin([0x11; 32]), Pin([0x22; 32])],
    };
    let configs = [
        (
            "perpetual",
            Validity::Perpetual,
            None,
            None,
            vec![endpoint("https://lic.example:8443")],
        ),
        (
            "days",
            Validity::DaysFromFirstUse { days: 30 },
            Some(100),
            Some(2),
            vec![endpoint("https://[::1]:443/api")],
        ),
        (
            "window",
            Validity::Window {
                not_before: Some("2026-01-01T00:00:00Z".into()),
                not_after: "2099-01-01T00:00:00Z".into(),
            },
            Some(5),
            None,
            vec![
                endpoint("https://127.0.0.1:1"),
                endpoint("https://b.example"),
            ],
        ),
    ];
    let mut signed_configs = Vec::new();
    for (name, validity, usage_limit, instance_limit, services) in configs {
        let c = Signed::sign(
            LicenseConfig {
                name: name.into(),
                policy: Policy {
                    validity,
                    usage_limit,
                    instance_limit,
                },
                lease_seconds: 3600,
                grace_seconds: ovsa_core::license::policy::DEFAULT_GRACE_SECONDS,
                services,
                created: now_rfc3339(),
            },
            &isv,
        )?;
        write(
            &root,
            "envelope",
            &format!("config-{name}.config"),
            &c.to_bytes()?,
        )?;
        signed_configs.push(c);
    }
    let pcr = |bank: PcrBank, idx: &[u8]| {
        PcrSet::new(
            bank,
            idx.iter()
                .map(|i| PcrValue {
                    index: *i,
                    value: vec![*i; bank.digest_len()],
                })
                .collect(),
        )
    };
    let tcb = Signed::sign(
        TcbReference {
            name: "fuzz-vm".into(),
            vtpm: pcr(PcrBank::Sha256, &[0, 1, 7])?,
            host: Some(pcr(PcrBank::Sha384, &[0, 23])?),
            host_max_age_seconds: None,
            vtpm_ek: None,
            events: None,
            runtime: None,
            created: now_rfc3339(),
        },
        &isv,
    )?;
    write(&root, "envelope", "ref.tcb", &tcb.to_bytes()?)?;
    let tcb_sha1 = Signed::sign(
        TcbReference {
            name: "sha1".into(),
            vtpm: pcr(PcrBank::Sha1, &[4])?,
            host: None,
            host_max_age_seconds: None,
            vtpm_ek: None,
            events: None,
            runtime: None,
            created: now_rfc3339(),
        },
        &isv,
    )?;
    write(&root, "envelope", "ref-sha1.tcb", &tcb_sha1.to_bytes()?)?;
    for (i, config) in signed_configs.iter().enumerate() {
        let sale = sell(&SaleRequest {
            isv: &isv,
            master: &master,
            config,
            tcb: &tcb,
            customer: imported.certificate(),
            service: service.certificate(),
        })?;
        write(
            &root,
            "envelope",
            &format!("sale-{i}.lic"),
            &sale.license.to_bytes()?,
        )?;
        write(
            &root,
            "envelope",
            &format!("sale-{i}.reg"),
            &sale.registration.to_bytes()?,
        )?;
    }
    // Canonical JSON odds and ends.
    for (i, s) in [
        &br#"{"b":1,"a":[1,-2,{"z":null,"y":true}],"c":"\u0001\u00e9\ud83d\ude00"}"#[..],
        br#"[18446744073709551615,-9223372036854775808,0,1e3]"#,
        br#""\/\b\f\n\r\t""#,
    ]
    .iter()
    .enumerate()
    {
        write(&root, "envelope", &format!("json-{i}.json"), s)?;
    }

    // PCR text.
    let mut pcrread = String::from("sha256:\n");
    for i in 0..24 {
        pcrread.push_str(&format!("  {i} : 0x{}\n", hex_of(i as u8, 32)));
    }
    pcrread.push_str("sha1:\n  0 : 0x");
    pcrread.push_str(&hex_of(0, 20));
    pcrread.push_str("\nsha384:\n  23: 0X");
    pcrread.push_str(&hex_of(0xEE, 48));
    pcrread.push('\n');
    write(&root, "pcrs", "pcrread.txt", pcrread.as_bytes())?;
    write(
        &root,
        "pcrs",
        "arg.txt",
        format!("7=0x{}", hex_of(7, 32)).as_bytes(),
    )?;

    // Measured-boot event log and IMA list seeds (built with the parsers' own builders).
    {
        use ovsa_core::attest::eventlog::{EventLogBuilder, EV_EVENT_TAG, EV_SEPARATOR};
        use ovsa_core::attest::ima::ImaLogBuilder;
        use ovsa_core::attest::HashAlg;
        let log = EventLogBuilder::new(&[HashAlg::Sha1, HashAlg::Sha256])
            .startup_locality(0)
            .measure(0, 0x8, b"crtm", b"crtm")
            .measure(4, 0x8000_0003, b"kernel", b"")
            .measure(9, EV_EVENT_TAG, b"initrd", b"Linux initrd")
            .measure(7, EV_SEPARATOR, &[0; 4], &[0; 4])
            .build();
        write(&root, "measurement_logs", "eventlog.bin", &log)?;
        let ima = ImaLogBuilder::new()
            .entry("boot_aggregate", "sha256", &[1; 32], false)
            .file("/usr/lib/libovsaruntime.so", b"plugin")
            .entry("/tmp/violation", "sha256", &[0; 32], true)
            .build();
        write(&root, "measurement_logs", "ima.bin", &ima)?;
    }

    // TPM wire seeds for the bonus attest_wire target (first byte selects the parser).
    let ev = ovsa_core::attest::HostEvidence {
        ek_cert: isv.certificate().der().to_vec(),
        ak_public: vec![0, 0x23, 0, 0x0b],
        quote: vec![0xff, 0x54, 0x43, 0x47, 0x80, 0x18],
        signature: vec![0, 0x18, 0, 0x0b],
        pcrs: ovsa_core::attest::PcrSet {
            bank: ovsa_core::attest::HashAlg::Sha256,
            values: [(0u8, vec![0u8; 32]), (7, vec![7; 32])]
                .into_iter()
                .collect(),
        },
    };
    let mut blob = vec![3u8];
    blob.extend_from_slice(&ev.encode()?);
    write(&root, "attest_wire", "host-evidence.bin", &blob)?;
    let mut ek = vec![4u8];
    ek.extend_from_slice(isv.certificate().der());
    write(&root, "attest_wire", "ek.der", &ek)?;
    let mut quote = vec![0u8, 0xff, 0x54, 0x43, 0x47, 0x80, 0x18];
    quote.extend_from_slice(&[0; 64]);
    write(&root, "attest_wire", "quote-prefix.bin", &quote)?;

    let mut counts = Vec::new();
    for t in fs::read_dir(&root)?.flatten() {
        counts.push(format!(
            "{}: {}",
            t.file_name().to_string_lossy(),
            fs::read_dir(t.path())?.count()
        ));
    }
    counts.sort();
    println!(
        "seeds written to {} in {:.1?}: {}",
        root.display(),
        t0.elapsed(),
        counts.join(", ")
    );
    Ok(())
}

fn hex_of(b: u8, n: usize) -> String {
    std::iter::repeat_n(format!("{b:02x}"), n).collect()
}
