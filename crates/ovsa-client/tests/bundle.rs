//! `CustomerBundle::open`, the one place where the runtime plugin and `ovsatool check` open and
//! cross-check the customer's package, license and keystore: real files made by the ISV-side
//! functions (protect, master license, sale).

use std::path::{Path, PathBuf};

use ovsa_client::{BundleError, BundleFiles, BundleStep, CustomerBundle};
use ovsa_core::crypto::KeyAlgorithm;
use ovsa_core::encoding::now_rfc3339;
use ovsa_core::envelope::Signed;
use ovsa_core::identity::{cert, Keystore, KeystoreProtection};
use ovsa_core::license::customer::SaleRequest;
use ovsa_core::license::policy::Pin;
use ovsa_core::license::{
    sell, CustomerLicense, LicenseConfig, MasterLicense, PcrBank, PcrSet, PcrValue, Policy,
    ServiceEndpoint, TcbReference, Validity,
};
use ovsa_core::package::{classify_inputs, protect, ProtectOptions};

fn keystore(subject: &str) -> Keystore {
    Keystore::generate(KeyAlgorithm::EcdsaP256, subject, 30)
        .unwrap()
        .0
}

/// A fresh directory under the test target's scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bundle-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An ISV-protected IR model (`model.dat`) in `dir`, and a customer license for `customer`.
fn protected_and_sold(
    dir: &Path,
    isv: &Keystore,
    customer: &Keystore,
    seed: u8,
) -> (PathBuf, Signed<CustomerLicense>) {
    let xml = dir.join(format!("model{seed}.xml"));
    let bin = dir.join(format!("model{seed}.bin"));
    std::fs::write(&xml, vec![seed; 100]).unwrap();
    std::fs::write(&bin, vec![seed ^ 0x5a; 5000]).unwrap();
    let dat = dir.join(format!("model{seed}.dat"));
    let protected = protect(
        &classify_inputs(&[xml, bin]).unwrap(),
        &ProtectOptions {
            model_name: "m".into(),
            model_version: "1".into(),
            description: String::new(),
            chunk_size: 4096,
            overwrite: true,
        },
        isv,
        &dat,
        &mut |_| {},
    )
    .unwrap();
    let master = MasterLicense::create(&protected, isv).unwrap();
    let config = Signed::sign(
        LicenseConfig {
            name: "perpetual".into(),
            policy: Policy {
                validity: Validity::Perpetual,
                usage_limit: None,
                instance_limit: None,
            },
            lease_seconds: 600,
            grace_seconds: ovsa_core::license::policy::DEFAULT_GRACE_SECONDS,
            services: vec![ServiceEndpoint {
                url: "https://127.0.0.1:8443".into(),
                pins: vec![Pin([1; 32])],
            }],
            created: now_rfc3339(),
        },
        isv,
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
        isv,
    )
    .unwrap();
    let service = keystore("CN=registration");
    let sale = sell(&SaleRequest {
        isv,
        master: &master,
        config: &config,
        tcb: &tcb,
        customer: customer.certificate(),
        service: service.certificate(),
    })
    .unwrap();
    (dat, sale.license)
}

struct Files {
    dir: PathBuf,
    package: PathBuf,
    license: PathBuf,
    customer: Keystore,
    isv: Keystore,
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn files(name: &str) -> Files {
    let dir = scratch(name);
    let isv = keystore("CN=isv");
    let customer = keystore("CN=customer");
    let (package, license) = protected_and_sold(&dir, &isv, &customer, 1);
    let lic = dir.join("model.lic");
    license.save(&lic, 0o644, true).unwrap();
    Files {
        package,
        license: lic,
        customer,
        isv,
        dir,
    }
}

fn save(dir: &Path, name: &str, ks: &Keystore) -> PathBuf {
    let path = dir.join(name);
    ks.save(&path, &KeystoreProtection::None, true).unwrap();
    path
}

fn open(f: &Files, keystore: &Path) -> Result<CustomerBundle, BundleError> {
    CustomerBundle::open(
        BundleFiles {
            package: &f.package,
            license: &f.license,
            keystore,
        },
        None,
        &mut |_| {},
    )
}

#[test]
fn opens_the_licensed_bundle_and_reports_each_step() {
    let f = files("good");
    let ks = save(&f.dir, "customer.ks", &f.customer);
    let mut steps = Vec::new();
    let bundle = CustomerBundle::open(
        BundleFiles {
            package: &f.package,
            license: &f.license,
            keystore: &ks,
        },
        None,
        &mut |s| {
            steps.push(match s {
                BundleStep::LicenseVerified(_) => "license",
                BundleStep::LicenseMatchesPackage(_) => "package",
                BundleStep::KeystoreMatches(_) => "keystore",
                _ => "other",
            })
        },
    )
    .unwrap();
    assert_eq!(steps, ["license", "package", "keystore"]);
    assert_eq!(
        bundle.keystore.certificate().der(),
        f.customer.certificate().der()
    );
    assert_eq!(bundle.license.body().model_name, "m");
}

/// The case where `ovsatool check` used to pass and the plugin refused: the keystore holds the
/// licensed key but a re-issued certificate. The license service authenticates the exact
/// certificate, so both now refuse here, with this message.
#[test]
fn same_key_but_another_certificate_is_refused() {
    let f = files("reissued");
    let mut reissued = Keystore::from_bytes(
        &f.customer.to_bytes(&KeystoreProtection::None).unwrap(),
        None,
    )
    .unwrap();
    reissued
        .import_certificate(
            cert::self_signed(f.customer.key(), "CN=customer reissued", 30).unwrap(),
            vec![],
        )
        .unwrap();
    assert_eq!(
        reissued.key().public_key(),
        f.customer.key().public_key(),
        "same key"
    );
    let ks = save(&f.dir, "reissued.ks", &reissued);
    let e = open(&f, &ks).err().expect("refused");
    assert!(
        matches!(
            &e,
            BundleError::NotLicensedCertificate { same_key: true, .. }
        ),
        "{e:?}"
    );
    let message = e.to_string();
    assert!(
        message.starts_with(&format!(
            "keystore '{}' holds 'CN=customer reissued', but the license was sold to another certificate ('CN=customer')",
            ks.display()
        )),
        "{message}"
    );
    assert!(
        message.contains("licensed key but a different certificate")
            && message.contains("--import-cert"),
        "{message}"
    );

    // Another customer's keystore: refused by the same check, told to use the right keystore.
    let stranger = save(&f.dir, "stranger.ks", &keystore("CN=Someone Else"));
    let message = open(&f, &stranger).err().expect("refused").to_string();
    assert!(
        message.contains("holds 'CN=Someone Else', but the license was sold to another certificate ('CN=customer'); use the keystore the license was sold to"),
        "{message}"
    );
}

#[test]
fn wrong_package_license_or_keystore_files_name_the_file() {
    let f = files("wrong");
    let ks = save(&f.dir, "customer.ks", &f.customer);
    // A license for another package of the same ISV.
    let (other, _) = protected_and_sold(&f.dir, &f.isv, &f.customer, 2);
    let e = CustomerBundle::open(
        BundleFiles {
            package: &other,
            license: &f.license,
            keystore: &ks,
        },
        None,
        &mut |_| {},
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        e.contains(&format!(
            "license '{}' does not belong to package '{}'",
            f.license.display(),
            other.display()
        )),
        "{e}"
    );
    // The license file is a keystore; the keystore file is missing.
    let e = CustomerBundle::open(
        BundleFiles {
            package: &f.package,
            license: &ks,
            keystore: &ks,
        },
        None,
        &mut |_| {},
    )
    .err()
    .expect("refused");
    assert!(matches!(e, BundleError::License { .. }), "{e:?}");
    assert!(e.to_string().contains("not a customer license"), "{e}");
    let missing = f.dir.join("missing.ks");
    let e = open(&f, &missing).err().expect("refused").to_string();
    assert!(
        e.starts_with(&format!("keystore '{}'", missing.display())),
        "{e}"
    );
    // A package that is not one.
    let e = CustomerBundle::open(
        BundleFiles {
            package: &f.license,
            license: &f.license,
            keystore: &ks,
        },
        None,
        &mut |_| {},
    )
    .err()
    .expect("refused");
    assert!(matches!(e, BundleError::Package { .. }), "{e:?}");
    assert!(e.to_string().starts_with("model package: "), "{e}");
}
