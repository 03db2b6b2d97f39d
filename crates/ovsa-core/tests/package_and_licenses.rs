//! End-to-end tests of the owner-side formats with real files: round trips for IR and ONNX, and
//! every tamper case refused with its own error and no plaintext released.

use std::path::PathBuf;

use ovsa_core::encoding::now_rfc3339;
use ovsa_core::envelope::Signed;
use ovsa_core::identity::{cert, Keystore};
use ovsa_core::license::customer::SaleRequest;
use ovsa_core::license::policy::Pin;
use ovsa_core::license::{
    sell, CustomerLicense, KeyShare, LicenseConfig, MasterLicense, PcrBank, PcrSet, PcrValue,
    Policy, Registration, ServiceEndpoint, TcbReference, Validity,
};
use ovsa_core::package::format::{DEFAULT_CHUNK_SIZE, PREFIX_LEN};
use ovsa_core::package::{classify_inputs, protect, ModelKey, Package, ProtectOptions, Protected};
use ovsa_core::{crypto::KeyAlgorithm, Error};

const CHUNK: u32 = 4096;

fn keystore(cn: &str) -> Keystore {
    Keystore::generate(KeyAlgorithm::EcdsaP256, &format!("CN={cn}"), 30)
        .unwrap()
        .0
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Model {
    dir: tempfile::TempDir,
    files: Vec<PathBuf>,
}

fn ir_model(xml_len: usize, bin_len: usize, seed: u64) -> Model {
    let dir = tempfile::tempdir().unwrap();
    let xml = dir.path().join("model.xml");
    let bin = dir.path().join("model.bin");
    std::fs::write(&xml, data(xml_len, seed)).unwrap();
    std::fs::write(&bin, data(bin_len, seed + 1)).unwrap();
    Model {
        files: vec![xml, bin],
        dir,
    }
}

fn protect_model(m: &Model, isv: &Keystore, chunk_size: u32) -> (PathBuf, Protected) {
    let out = m.dir.path().join("model.dat");
    let opts = ProtectOptions {
        model_name: "test-model".into(),
        model_version: "1".into(),
        description: "for tests".into(),
        chunk_size,
        overwrite: true,
    };
    let p = protect(
        &classify_inputs(&m.files).unwrap(),
        &opts,
        isv,
        &out,
        &mut |_| {},
    )
    .unwrap();
    (out, p)
}

fn decrypt_all(pkg: &Package<impl ovsa_core::package::ReadAt>, key: &ModelKey) -> Vec<Vec<u8>> {
    pkg.decrypt_model(key, 2)
        .unwrap()
        .files
        .into_iter()
        .map(|(_, b)| b.to_vec())
        .collect()
}

#[test]
fn ir_round_trip_is_byte_identical_for_all_thread_counts_and_streaming() {
    let isv = keystore("isv");
    // Sizes straddling chunk boundaries: a partial last chunk, an exact multiple, a tiny file.
    let m = ir_model(100, 5 * CHUNK as usize + 123, 1);
    let (path, protected) = protect_model(&m, &isv, CHUNK);
    let pkg = Package::open(&path).unwrap();
    assert_eq!(pkg.header_hash(), protected.header.digest());
    for (i, f) in m.files.iter().enumerate() {
        let want = std::fs::read(f).unwrap();
        for threads in [1, 2, 3, 8] {
            let mut out = vec![0u8; want.len()];
            pkg.decrypt_file_into(i, &protected.model_key, &mut out, threads)
                .unwrap();
            assert_eq!(out, want, "file {i} threads {threads}");
        }
        let mut streamed = Vec::new();
        pkg.decrypt_file_to(i, &protected.model_key, &mut streamed)
            .unwrap();
        assert_eq!(streamed, want);
    }
    // Exact multiple of the chunk size and an empty-ish xml.
    let m2 = ir_model(1, 4 * CHUNK as usize, 2);
    let (p2, prot2) = protect_model(&m2, &isv, CHUNK);
    let got = decrypt_all(&Package::open(&p2).unwrap(), &prot2.model_key);
    assert_eq!(got[1], std::fs::read(&m2.files[1]).unwrap());
}

#[test]
fn onnx_and_empty_files_round_trip() {
    let isv = keystore("isv");
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("net.onnx");
    std::fs::write(&onnx, data(70_001, 3)).unwrap();
    let m = Model {
        files: vec![onnx.clone()],
        dir,
    };
    let (path, p) = protect_model(&m, &isv, DEFAULT_CHUNK_SIZE);
    let pkg = Package::open(&path).unwrap();
    assert_eq!(
        pkg.header().body().format().unwrap(),
        ovsa_core::package::ModelFormat::Onnx
    );
    assert_eq!(
        decrypt_all(&pkg, &p.model_key)[0],
        std::fs::read(&onnx).unwrap()
    );

    let empty = ir_model(0, 0, 4);
    let (path, p) = protect_model(&empty, &isv, CHUNK);
    let got = decrypt_all(&Package::open(&path).unwrap(), &p.model_key);
    assert!(got.iter().all(Vec::is_empty));
}

/// Decrypts every file into a buffer pre-filled with a marker and returns the error; asserts
/// that the buffer holds no plaintext afterwards (wiped to zero).
fn decrypt_err(bytes: Vec<u8>, key: &ModelKey) -> Error {
    let pkg = match Package::from_source(bytes) {
        Ok(p) => p,
        Err(e) => return e,
    };
    for i in 0..pkg.header().body().files.len() {
        let size = pkg.header().body().files[i].size as usize;
        let mut out = vec![0xA5u8; size];
        if let Err(e) = pkg.decrypt_file_into(i, key, &mut out, 2) {
            assert!(
                out.iter().all(|b| *b == 0),
                "plaintext or garbage left after failure"
            );
            return e;
        }
    }
    panic!("tampered package decrypted");
}

#[test]
fn every_payload_bit_flip_is_detected_without_releasing_plaintext() {
    let isv = keystore("isv");
    let m = ir_model(300, 3 * CHUNK as usize + 17, 5);
    let (path, p) = protect_model(&m, &isv, CHUNK);
    let good = std::fs::read(&path).unwrap();
    let pkg = Package::open(&path).unwrap();
    let payload_start = good.len() as u64 - pkg.header().body().payload_len();
    // Every 7th byte of the payload (ciphertext and tags of every chunk of both files).
    for pos in (payload_start as usize..good.len()).step_by(7) {
        let mut bad = good.clone();
        bad[pos] ^= 1 << (pos % 8);
        let e = decrypt_err(bad, &p.model_key);
        assert!(
            matches!(e, Error::ChunkAuthentication { .. }),
            "pos {pos}: {e}"
        );
    }
}

#[test]
fn header_and_prefix_bit_flips_are_refused() {
    let isv = keystore("isv");
    let m = ir_model(10, 10, 6);
    let (path, p) = protect_model(&m, &isv, CHUNK);
    let good = std::fs::read(&path).unwrap();
    let header_len = u32::from_be_bytes(good[12..16].try_into().unwrap()) as usize;
    for pos in 0..PREFIX_LEN + header_len {
        let mut bad = good.clone();
        bad[pos] ^= 1 << (pos % 8);
        let e = decrypt_err(bad, &p.model_key);
        assert!(
            matches!(
                e,
                Error::Malformed { .. }
                    | Error::BadSignature { .. }
                    | Error::UnsupportedVersion { .. }
                    | Error::Truncated(_)
                    | Error::TrailingData(_)
                    | Error::BadCertificate(_)
                    | Error::WrongArtifactType { .. }
            ),
            "pos {pos}: {e:?}"
        );
    }
}

fn chunk_span(
    pkg: &Package<std::fs::File>,
    total: usize,
    file: usize,
    chunk: usize,
) -> std::ops::Range<usize> {
    let h = pkg.header().body();
    let mut off = total - h.payload_len() as usize;
    for f in &h.files[..file] {
        off += ovsa_core::package::stream::sealed_len(f.size, h.chunk_size).unwrap() as usize;
    }
    let sealed_chunk = h.chunk_size as usize + 16;
    let start = off + chunk * sealed_chunk;
    start..start + sealed_chunk
}

#[test]
fn truncation_reordering_swapping_and_substitution_are_detected() {
    let isv = keystore("isv");
    let m = ir_model(2 * CHUNK as usize, 4 * CHUNK as usize, 7);
    let (path, p) = protect_model(&m, &isv, CHUNK);
    let good = std::fs::read(&path).unwrap();
    let pkg = Package::open(&path).unwrap();
    let n = good.len();

    // Truncated by one byte, by a whole chunk; extended.
    assert!(matches!(
        decrypt_err(good[..n - 1].to_vec(), &p.model_key),
        Error::Truncated(_)
    ));
    assert!(matches!(
        decrypt_err(good[..n - (CHUNK as usize + 16)].to_vec(), &p.model_key),
        Error::Truncated(_)
    ));
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 16]);
    assert!(matches!(
        decrypt_err(longer, &p.model_key),
        Error::TrailingData(16)
    ));
    assert!(matches!(
        decrypt_err(good[..10].to_vec(), &p.model_key),
        Error::Truncated(_)
    ));

    // Reordered: chunks 1 and 2 of the weights swapped.
    let (a, b) = (chunk_span(&pkg, n, 1, 1), chunk_span(&pkg, n, 1, 2));
    let mut bad = good.clone();
    let ca = good[a.clone()].to_vec();
    bad[a.clone()].copy_from_slice(&good[b.clone()]);
    bad[b].copy_from_slice(&ca);
    assert!(matches!(
        decrypt_err(bad, &p.model_key),
        Error::ChunkAuthentication { chunk: 1, .. }
    ));

    // Swapped between files: chunk 0 of the xml and chunk 0 of the bin.
    let (x0, b0) = (chunk_span(&pkg, n, 0, 0), chunk_span(&pkg, n, 1, 0));
    let mut bad = good.clone();
    bad[x0.clone()].copy_from_slice(&good[b0.clone()]);
    bad[b0].copy_from_slice(&good[x0]);
    assert!(matches!(
        decrypt_err(bad, &p.model_key),
        Error::ChunkAuthentication { chunk: 0, .. }
    ));

    // Substituted from another package of the same shape (other key and header hash), even
    // when the attacker knows that package's key.
    let other_model = ir_model(2 * CHUNK as usize, 4 * CHUNK as usize, 8);
    let (other_path, _) = protect_model(&other_model, &isv, CHUNK);
    let other = std::fs::read(&other_path).unwrap();
    let other_pkg = Package::open(&other_path).unwrap();
    let theirs = chunk_span(&other_pkg, other.len(), 1, 3);
    let ours = chunk_span(&pkg, n, 1, 3);
    let mut bad = good.clone();
    bad[ours].copy_from_slice(&other[theirs]);
    assert!(matches!(
        decrypt_err(bad, &p.model_key),
        Error::ChunkAuthentication { chunk: 3, .. }
    ));

    // Wrong model key.
    assert!(matches!(
        decrypt_err(good, &ModelKey::generate().unwrap()),
        Error::ChunkAuthentication { chunk: 0, .. }
    ));
}

struct Shop {
    isv: Keystore,
    customer: Keystore,
    model: Model,
    package: PathBuf,
    master: Signed<MasterLicense>,
    config: Signed<LicenseConfig>,
    tcb: Signed<TcbReference>,
    /// The license service's registration key.
    service: Keystore,
}

fn shop() -> Shop {
    let isv = keystore("isv");
    let customer = keystore("customer");
    let service = keystore("license service registration");
    let model = ir_model(50, 9_000, 9);
    let (package, protected) = protect_model(&model, &isv, CHUNK);
    let master = MasterLicense::create(&protected, &isv).unwrap();
    let config = Signed::sign(
        LicenseConfig {
            name: "trial".into(),
            policy: Policy {
                validity: Validity::DaysFromFirstUse { days: 30 },
                usage_limit: Some(10),
                instance_limit: Some(1),
            },
            lease_seconds: 600,
            grace_seconds: ovsa_core::license::policy::DEFAULT_GRACE_SECONDS,
            services: vec![ServiceEndpoint {
                url: "https://127.0.0.1:8443".into(),
                pins: vec![Pin([1; 32])],
            }],
            created: now_rfc3339(),
        },
        &isv,
    )
    .unwrap();
    let tcb = Signed::sign(
        TcbReference {
            name: "vm".into(),
            vtpm: PcrSet::new(
                PcrBank::Sha256,
                vec![PcrValue {
                    index: 0,
                    value: vec![0; 32],
                }],
            )
            .unwrap(),
            host: None,
            host_max_age_seconds: None,
            vtpm_ek: None,
            events: None,
            runtime: None,
            created: now_rfc3339(),
        },
        &isv,
    )
    .unwrap();
    Shop {
        isv,
        customer,
        model,
        package,
        master,
        config,
        tcb,
        service,
    }
}

fn sale_of(s: &Shop) -> ovsa_core::license::Sale {
    sell(&SaleRequest {
        isv: &s.isv,
        master: &s.master,
        config: &s.config,
        tcb: &s.tcb,
        customer: s.customer.certificate(),
        service: s.service.certificate(),
    })
    .unwrap()
}

#[test]
fn customer_path_needs_key_and_share_and_the_right_package() {
    let s = shop();
    let sale = sale_of(&s);
    // Round trip through files, as the runtime will read them.
    let lic = Signed::<CustomerLicense>::from_bytes(&sale.license.to_bytes().unwrap()).unwrap();
    let reg = Signed::<Registration>::from_bytes(&sale.registration.to_bytes().unwrap()).unwrap();
    assert_eq!(reg.body().license_digest, lic.digest());
    let pkg = Package::open(&s.package).unwrap();
    CustomerLicense::check_package(&lic, pkg.header()).unwrap();
    let share = reg.body().open_share(&s.service).unwrap();
    let key = lic
        .body()
        .unwrap_model_key(&s.customer, Some(&share))
        .unwrap();
    assert_eq!(
        decrypt_all(&pkg, &key)[1],
        std::fs::read(&s.model.files[1]).unwrap()
    );

    // Everything on the customer's disk but not the share: refused.
    assert!(matches!(
        lic.body().unwrap_model_key(&s.customer, None),
        Err(Error::MissingShare)
    ));
    // A guessed or another license's share: refused.
    let wrong = KeyShare::generate().unwrap();
    assert!(matches!(
        lic.body().unwrap_model_key(&s.customer, Some(&wrong)),
        Err(Error::UnwrapFailed { .. })
    ));
    let other_sale = sale_of(&s);
    assert!(matches!(
        lic.body().unwrap_model_key(
            &s.customer,
            Some(
                &other_sale
                    .registration
                    .body()
                    .open_share(&s.service)
                    .unwrap()
            )
        ),
        Err(Error::UnwrapFailed { .. })
    ));
    // Another customer's keystore.
    assert!(matches!(
        lic.body()
            .unwrap_model_key(&keystore("mallory"), Some(&share)),
        Err(Error::WrongKey { .. })
    ));
    // A license for another package.
    let other = shop();
    let other_pkg = Package::open(&other.package).unwrap();
    assert!(matches!(
        CustomerLicense::check_package(&lic, other_pkg.header()),
        Err(Error::PackageMismatch { .. })
    ));
    // The master license only opens with the ISV's own key, and only for its package.
    assert!(matches!(
        MasterLicense::unwrap_model_key(&s.master, &s.customer),
        Err(Error::WrongKey { .. })
    ));
    assert!(matches!(
        s.master.body().check_package(&other_pkg.header_hash()),
        Err(Error::PackageMismatch { .. })
    ));
}

/// Flips one bit at every byte position of a JSON artifact: each must be refused.
fn assert_every_flip_refused<T: ovsa_core::envelope::Artifact>(bytes: &[u8]) {
    Signed::<T>::from_bytes(bytes).unwrap();
    for pos in 0..bytes.len() {
        let mut bad = bytes.to_vec();
        bad[pos] ^= 1 << (pos % 8);
        match Signed::<T>::from_bytes(&bad) {
            Ok(_) => panic!("{}: flip at {pos} accepted", T::TYPE),
            Err(
                Error::BadSignature { .. }
                | Error::Malformed { .. }
                | Error::WrongArtifactType { .. }
                | Error::UnsupportedVersion { .. }
                | Error::BadCertificate(_),
            ) => {}
            Err(e) => panic!("{}: flip at {pos}: unexpected error {e:?}", T::TYPE),
        }
    }
}

#[test]
fn every_bit_flip_in_every_signed_artifact_is_refused() {
    let s = shop();
    let sale = sale_of(&s);
    assert_every_flip_refused::<MasterLicense>(&s.master.to_bytes().unwrap());
    assert_every_flip_refused::<LicenseConfig>(&s.config.to_bytes().unwrap());
    assert_every_flip_refused::<TcbReference>(&s.tcb.to_bytes().unwrap());
    assert_every_flip_refused::<CustomerLicense>(&sale.license.to_bytes().unwrap());
    assert_every_flip_refused::<Registration>(&sale.registration.to_bytes().unwrap());
}

/// The red team's "stolen .reg" attack: the registration file plus everything on the customer's
/// disk. With the share sealed to the license service's registration key, the thief has no share
/// to give; only that key opens it, and the sealed share is no model key.
#[test]
fn a_stolen_registration_does_not_give_the_model_key() {
    let s = shop();
    let sale = sale_of(&s);
    let reg_bytes = sale.registration.to_bytes().unwrap();
    let reg = Signed::<Registration>::from_bytes(&reg_bytes).unwrap();
    let lic = sale.license.body();
    // The share is not in the file: neither the share's bytes nor its base64 appear.
    let share = reg.body().open_share(&s.service).unwrap();
    let text = String::from_utf8_lossy(&reg_bytes);
    assert!(!text.contains(&ovsa_core::encoding::b64::encode(share.as_bytes())));
    assert!(!reg_bytes
        .windows(share.as_bytes().len())
        .any(|w| w == share.as_bytes()));
    // The thief's own keys (the customer's included) do not open it.
    for thief in [&s.customer, &s.isv, &keystore("thief")] {
        let e = reg.body().open_share(thief).unwrap_err();
        assert!(
            e.to_string().contains("sealed to the registration key"),
            "{e}"
        );
    }
    // A key claiming the right certificate but another private key: the AEAD refuses.
    let impostor = Keystore::from_parts(
        ovsa_core::crypto::SigningKey::generate(KeyAlgorithm::EcdsaP256).unwrap(),
        s.service.certificate().clone(),
        vec![],
    );
    if let Ok(impostor) = impostor {
        assert!(reg.body().open_share(&impostor).is_err());
    }
    // The sealed bytes used as a share do not unwrap the model key.
    let sealed = &reg.body().sealed_share.wrapped.ciphertext[..32];
    assert!(matches!(
        lic.unwrap_model_key(&s.customer, Some(&KeyShare::from_bytes(sealed).unwrap())),
        Err(Error::UnwrapFailed { .. })
    ));
    // A registration claiming version 1 (the format with the share in clear) is refused.
    let v1 = text
        .replace("\"version\":2", "\"version\":1")
        .replace("\"version\": 2", "\"version\": 1");
    assert_ne!(v1, text);
    assert!(Signed::<Registration>::from_bytes(v1.as_bytes()).is_err());
}

#[test]
fn artifacts_of_the_wrong_type_or_signer_are_refused() {
    let s = shop();
    let sale = sale_of(&s);
    assert!(matches!(
        Signed::<TcbReference>::from_bytes(&sale.license.to_bytes().unwrap()),
        Err(Error::WrongArtifactType { .. })
    ));
    // A config signed by someone else cannot be sold by this ISV.
    let mallory = keystore("mallory");
    let foreign = Signed::sign(s.config.body().clone(), &mallory).unwrap();
    let r = sell(&SaleRequest {
        isv: &s.isv,
        master: &s.master,
        config: &foreign,
        tcb: &s.tcb,
        customer: s.customer.certificate(),
        service: s.service.certificate(),
    });
    assert!(matches!(r, Err(Error::WrongKey { .. })));
    // A license re-signed by another key no longer matches the package's signer.
    let resigned = Signed::sign(sale.license.body().clone(), &mallory).unwrap();
    let pkg = Package::open(&s.package).unwrap();
    assert!(matches!(
        CustomerLicense::check_package(&resigned, pkg.header()),
        Err(Error::SignerMismatch { .. })
    ));
}

#[test]
fn expired_certificates_are_refused() {
    let key = ovsa_core::crypto::SigningKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let expired = cert::self_signed_with_validity(
        &key,
        "CN=expired isv",
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    )
    .unwrap();
    let isv = Keystore::from_parts(key, expired, vec![]).unwrap();
    let tcb = Signed::sign(shop().tcb.body().clone(), &isv).unwrap();
    let bytes = tcb.to_bytes().unwrap();
    assert!(matches!(
        Signed::<TcbReference>::from_bytes(&bytes),
        Err(Error::CertificateExpired { .. })
    ));
    // Inspection can still read it.
    Signed::<TcbReference>::from_bytes_ignoring_time(&bytes).unwrap();

    // An expired customer certificate cannot be sold to.
    let s = shop();
    let ck = ovsa_core::crypto::SigningKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let old = cert::self_signed_with_validity(
        &ck,
        "CN=old customer",
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    )
    .unwrap();
    let r = sell(&SaleRequest {
        isv: &s.isv,
        master: &s.master,
        config: &s.config,
        tcb: &s.tcb,
        customer: &old,
        service: s.service.certificate(),
    });
    assert!(matches!(r, Err(Error::CertificateExpired { .. })));
}

#[test]
fn protect_rejects_bad_inputs_and_leaves_no_partial_output() {
    let isv = keystore("isv");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.dat");
    let write = |name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, b"x").unwrap();
        p
    };
    let (xml, bin, txt) = (write("a.xml"), write("a.bin"), write("a.txt"));
    assert!(classify_inputs(std::slice::from_ref(&xml)).is_err());
    assert!(classify_inputs(&[txt]).is_err());
    assert!(classify_inputs(&[xml.clone(), bin.clone(), write("b.onnx")]).is_err());
    let inputs = classify_inputs(&[xml, bin]).unwrap();
    let mut opts = ProtectOptions {
        model_name: "m".into(),
        model_version: "1".into(),
        description: String::new(),
        chunk_size: 1000, // not a power of two
        overwrite: false,
    };
    assert!(protect(&inputs, &opts, &isv, &out, &mut |_| {}).is_err());
    opts.chunk_size = CHUNK;
    let missing = vec![ovsa_core::package::ModelInput {
        path: dir.path().join("missing.onnx"),
        kind: ovsa_core::package::FileKind::Onnx,
    }];
    assert!(matches!(
        protect(&missing, &opts, &isv, &out, &mut |_| {}),
        Err(Error::Io { .. })
    ));
    assert!(!out.exists());
    protect(&inputs, &opts, &isv, &out, &mut |_| {}).unwrap();
    // No overwrite without asking.
    assert!(matches!(
        protect(&inputs, &opts, &isv, &out, &mut |_| {}),
        Err(Error::InvalidInput(_))
    ));
    // Nothing but the package is left in the directory (no temporary files).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn grace_seconds_is_signed_and_licenses_without_it_verify_unchanged() {
    use ovsa_core::license::policy::DEFAULT_GRACE_SECONDS;
    let s = shop();
    // The default grace is not serialized: the body is exactly what a license sold before the
    // field existed holds, its bytes verify and its grace is the default.
    let old = sale_of(&s).license;
    assert!(old.body_json().get("grace_seconds").is_none());
    let bytes = old.to_bytes().unwrap();
    let parsed = Signed::<CustomerLicense>::from_bytes(&bytes).unwrap();
    assert_eq!(parsed.body().grace_seconds, DEFAULT_GRACE_SECONDS);
    assert_eq!(parsed.digest(), old.digest());
    // Parsing then re-serializing such a body gives back the same canonical JSON.
    assert_eq!(
        &serde_json::to_value(parsed.body()).unwrap(),
        old.body_json()
    );
    let cfg_bytes = s.config.to_bytes().unwrap();
    assert!(s.config.body_json().get("grace_seconds").is_none());
    let cfg = Signed::<LicenseConfig>::from_bytes(&cfg_bytes).unwrap();
    assert_eq!(cfg.body().grace_seconds, DEFAULT_GRACE_SECONDS);

    // A config's grace is copied into the license, signed: raising it breaks the signature.
    let mut body = s.config.body().clone();
    body.grace_seconds = 1;
    body.lease_seconds = 2;
    let config = Signed::sign(body, &s.isv).unwrap();
    let sale = sell(&SaleRequest {
        isv: &s.isv,
        master: &s.master,
        config: &config,
        tcb: &s.tcb,
        customer: s.customer.certificate(),
        service: s.service.certificate(),
    })
    .unwrap();
    assert_eq!(sale.license.body().grace_seconds, 1);
    assert_eq!(sale.license.body().lease_seconds, 2);
    let text = String::from_utf8(sale.license.to_bytes().unwrap()).unwrap();
    assert!(text.contains("\"grace_seconds\": 1,"), "{text}");
    let forged = text.replace("\"grace_seconds\": 1,", "\"grace_seconds\": 86400,");
    assert!(matches!(
        Signed::<CustomerLicense>::from_bytes(forged.as_bytes()),
        Err(Error::BadSignature { .. })
    ));

    // Out-of-range grace is refused when signing.
    let mut body = s.config.body().clone();
    body.grace_seconds = 86_401;
    let e = Signed::sign(body, &s.isv).unwrap_err().to_string();
    assert!(e.contains("grace period of 86401 s is out of range"), "{e}");
}
