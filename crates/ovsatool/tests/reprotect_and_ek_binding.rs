//! `ovsatool reprotect` (key rotation after a suspected extraction) and `sale --ek-ca/--ek-cert`
//! (licenses bound to vTPM EK CAs or enrolled EKs), through the real binary.

use std::path::Path;
use std::process::{Command, Output};

use ovsa_core::envelope::Signed;
use ovsa_core::identity::Keystore;
use ovsa_core::license::{CustomerLicense, Registration};
use ovsa_core::package::Package;
use swtpm_tests::names;

fn tool(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ovsatool"))
        .current_dir(dir)
        .args(args)
        .env_remove("OVSA_KEYSTORE_PASSPHRASE")
        .output()
        .expect("run ovsatool")
}

fn ok(dir: &Path, args: &[&str]) -> (String, String) {
    let o = tool(dir, args);
    assert!(
        o.status.success(),
        "ovsatool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let o = tool(dir, args);
    assert!(
        !o.status.success(),
        "ovsatool {args:?} unexpectedly succeeded"
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "panic: {err}");
    err
}

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn setup(d: &Path) {
    for (ks, subject) in [
        ("isv.ks", "CN=Acme Models"),
        ("cust.ks", "CN=Customer One"),
        ("srv.ks", "CN=license.local"),
        ("reg.ks", "CN=license.local registration"),
    ] {
        ok(d, &["keygen", "--keystore", ks, "--subject", subject]);
    }
    ok(
        d,
        &[
            "licgen",
            "--keystore",
            "isv.ks",
            "--out",
            "p.config",
            "--perpetual",
            "--lease",
            "600",
            "--server",
            "https://127.0.0.1:8443",
            "--server-cert",
            "srv.ks.crt",
        ],
    );
    std::fs::write(
        d.join("pcrs.txt"),
        format!("sha256:\n  0 : 0x{}\n", "00".repeat(32)),
    )
    .unwrap();
    ok(
        d,
        &[
            "tcb",
            "--keystore",
            "isv.ks",
            "--out",
            "vm.tcb",
            "--vtpm-pcrs-file",
            "pcrs.txt",
        ],
    );
    let mut xml = b"<?xml version=\"1.0\"?>\n<net name=\"m\" version=\"11\">\n".to_vec();
    xml.extend(pseudo_random(1000, 7));
    std::fs::write(d.join("model.xml"), xml).unwrap();
    // Two full chunks and a partial one; chunk size 64 KiB.
    std::fs::write(d.join("model.bin"), pseudo_random(2 * 65536 + 123, 9)).unwrap();
    ok(
        d,
        &[
            "protect",
            "--keystore",
            "isv.ks",
            "--name",
            "m",
            "--version",
            "1",
            "--out",
            "old.dat",
            "--master-license",
            "old.masterlic",
            "--chunk-size",
            "65536",
            "model.xml",
            "model.bin",
        ],
    );
}

/// The `sale` command line of the fixture: `ml` sold to the customer as `lic` + `reg`, then
/// `extra` flags.
fn sale_args<'a>(ml: &'a str, lic: &'a str, reg: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "sale",
        "--keystore",
        "isv.ks",
        "--master-license",
        ml,
        "--config",
        "p.config",
        "--tcb",
        "vm.tcb",
        "--customer-cert",
        "cust.ks.crt",
        "--registration-cert",
        "reg.ks.crt",
        "--out",
        lic,
        "--registration",
        reg,
    ];
    args.extend_from_slice(extra);
    args
}

fn sale(d: &Path, ml: &str, lic: &str, reg: &str, extra: &[&str]) -> (String, String) {
    ok(d, &sale_args(ml, lic, reg, extra))
}

/// The model key a customer gets for `lic` (customer keystore + the share the service would
/// release, opened from the registration with the service's registration key).
fn customer_key(d: &Path, lic: &str, reg: &str) -> ovsa_core::package::ModelKey {
    let lic = Signed::<CustomerLicense>::load(&d.join(lic)).unwrap();
    let reg = Signed::<Registration>::load(&d.join(reg)).unwrap();
    let share = reg
        .body()
        .open_share(&Keystore::load(&d.join("reg.ks"), None).unwrap())
        .unwrap();
    lic.body()
        .unwrap_model_key(
            &Keystore::load(&d.join("cust.ks"), None).unwrap(),
            Some(&share),
        )
        .unwrap()
}

/// Rotation after a suspected extraction: `reprotect` makes a new package of the same model under
/// a fresh key (new model GUID and header hash); new licenses sold for it open it; a license
/// (and the key) of the old package does not. Bad inputs fail clearly and leave no output.
#[test]
fn reprotect_rotates_the_model_key_and_old_licenses_do_not_open_the_new_package() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    setup(d);
    sale(d, "old.masterlic", "old.lic", "old.reg", &[]);

    let (out, _) = ok(
        d,
        &[
            "reprotect",
            "--keystore",
            "isv.ks",
            "--master-license",
            "old.masterlic",
            "--package",
            "old.dat",
            "--out",
            "new.dat",
            "--new-master-license",
            "new.masterlic",
        ],
    );
    assert!(out.contains("under a new model key"), "{out}");
    let old = Package::open(&d.join("old.dat")).unwrap();
    let new = Package::open(&d.join("new.dat")).unwrap();
    assert_ne!(old.header_hash(), new.header_hash());
    assert_ne!(
        old.header().body().model_guid,
        new.header().body().model_guid
    );
    assert_eq!(old.header().body().files, new.header().body().files);
    assert_eq!(
        old.header().body().model_name,
        new.header().body().model_name
    );
    // The owner recovers the same plaintext from the new package.
    ok(
        d,
        &[
            "decrypt",
            "--keystore",
            "isv.ks",
            "--master-license",
            "new.masterlic",
            "--package",
            "new.dat",
            "--out-dir",
            "plain",
        ],
    );
    for f in ["model.xml", "model.bin"] {
        assert_eq!(
            std::fs::read(d.join("plain").join(f)).unwrap(),
            std::fs::read(d.join(f)).unwrap(),
            "{f}"
        );
    }
    // Sale works on the new package; its license opens it.
    sale(d, "new.masterlic", "new.lic", "new.reg", &[]);
    let new_lic = Signed::<CustomerLicense>::load(&d.join("new.lic")).unwrap();
    CustomerLicense::check_package(&new_lic, new.header()).unwrap();
    let key = customer_key(d, "new.lic", "new.reg");
    let model = new.decrypt_model(&key, 2).unwrap();
    assert_eq!(
        model.files[1].1.as_slice(),
        std::fs::read(d.join("model.bin")).unwrap().as_slice()
    );
    // A license of the old package is refused for the new one, and its key opens nothing.
    let old_lic = Signed::<CustomerLicense>::load(&d.join("old.lic")).unwrap();
    let e = CustomerLicense::check_package(&old_lic, new.header()).unwrap_err();
    assert!(e.to_string().contains("package"), "{e}");
    let old_key = customer_key(d, "old.lic", "old.reg");
    assert!(new.decrypt_model(&old_key, 2).is_err());
    assert!(old.decrypt_model(&old_key, 2).is_ok());
    // The old master license does not open the new package either.
    let err = fails(
        d,
        &[
            "decrypt",
            "--keystore",
            "isv.ks",
            "--master-license",
            "old.masterlic",
            "--package",
            "new.dat",
            "--out-dir",
            "x",
        ],
    );
    assert!(err.contains("package"), "{err}");

    // Bad inputs: a master license of another package; a tampered package; output = input.
    let err = fails(
        d,
        &[
            "reprotect",
            "--keystore",
            "isv.ks",
            "--master-license",
            "new.masterlic",
            "--package",
            "old.dat",
            "--out",
            "r1.dat",
            "--new-master-license",
            "r1.masterlic",
        ],
    );
    assert!(err.contains("master license"), "{err}");
    let mut bytes = std::fs::read(d.join("old.dat")).unwrap();
    let at = bytes.len() - 70_000;
    bytes[at] ^= 1;
    std::fs::write(d.join("tampered.dat"), bytes).unwrap();
    let err = fails(
        d,
        &[
            "reprotect",
            "--keystore",
            "isv.ks",
            "--master-license",
            "old.masterlic",
            "--package",
            "tampered.dat",
            "--out",
            "r2.dat",
            "--new-master-license",
            "r2.masterlic",
        ],
    );
    assert!(err.contains("chunk") || err.contains("authentic"), "{err}");
    let err = fails(
        d,
        &[
            "reprotect",
            "--keystore",
            "isv.ks",
            "--master-license",
            "old.masterlic",
            "--package",
            "old.dat",
            "--out",
            "old.dat",
            "--new-master-license",
            "r3.masterlic",
            "--force",
        ],
    );
    assert!(err.contains("--out") && err.contains("--package"), "{err}");
    for never in [
        "r1.dat",
        "r1.masterlic",
        "r2.dat",
        "r2.masterlic",
        "r3.masterlic",
    ] {
        assert!(!d.join(never).exists(), "{never} was written");
    }
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // The old package still verifies unchanged.
    assert!(Package::open(&d.join("old.dat")).is_ok());
}

/// `sale --ek-ca/--ek-cert` put the binding into the signed license and registration, `inspect`
/// shows it (and warns when there is none); wrong certificates are refused with clear errors.
#[test]
fn sale_binds_licenses_to_ek_cas_and_enrolled_eks_and_inspect_shows_it() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    setup(d);
    let ca = swtpm_tests::ca(names::VTPM_CA);
    std::fs::write(d.join("vtpm-ca.pem"), ca.chain_pem()).unwrap();
    let vtpm = swtpm_tests::Swtpm::start(names::VTPM);
    let ek = vtpm
        .open()
        .ek_certificate(ovsa_tpm::EkKind::Rsa2048)
        .unwrap();
    std::fs::write(d.join("ek.der"), &ek).unwrap();

    // Unbound: a warning at sale and in inspect.
    let (_, err) = sale(d, "old.masterlic", "u.lic", "u.reg", &[]);
    assert!(err.contains("not bound to EK CAs"), "{err}");
    let (shown, _) = ok(d, &["inspect", "u.lic"]);
    assert!(
        shown.contains("\"bound\": false") && shown.contains("any vTPM"),
        "{shown}"
    );

    let (out, _) = sale(
        d,
        "old.masterlic",
        "b.lic",
        "b.reg",
        &["--ek-ca", "vtpm-ca.pem", "--ek-cert", "ek.der"],
    );
    assert!(out.contains("bound to vTPMs"), "{out}");
    let lic = Signed::<CustomerLicense>::load(&d.join("b.lic")).unwrap();
    let reg = Signed::<Registration>::load(&d.join("b.reg")).unwrap();
    let b = lic.body().tcb.vtpm_ek.clone().expect("bound");
    assert_eq!(b.cas.len(), 2, "root and issuer of the chain file");
    assert_eq!(b.eks, vec![ovsa_core::attest::EkCertDigest::of(&ek)]);
    assert_eq!(reg.body().tcb.vtpm_ek.as_ref(), Some(&b));
    for file in ["b.lic", "b.reg"] {
        let (shown, _) = ok(d, &["inspect", file]);
        assert!(
            shown.contains("\"bound\": true")
                && shown.contains("CN=swtpm-localca")
                && shown.contains(&hex::encode(ovsa_core::crypto::hash::sha256(&ek))),
            "{file}: {shown}"
        );
    }

    // Wrong certificates: an end-entity certificate as --ek-ca, a CA as --ek-cert, junk.
    let err = fails(
        d,
        &sale_args("old.masterlic", "x.lic", "x.reg", &["--ek-ca", "ek.der"]),
    );
    assert!(
        err.contains("--ek-ca ek.der") && err.contains("not a CA"),
        "{err}"
    );
    std::fs::write(d.join("root.pem"), ca.root_pem()).unwrap();
    let err = fails(
        d,
        &sale_args(
            "old.masterlic",
            "x.lic",
            "x.reg",
            &["--ek-cert", "root.pem"],
        ),
    );
    assert!(
        err.contains("--ek-cert root.pem") && err.contains("--ek-ca"),
        "{err}"
    );
    std::fs::write(d.join("junk.pem"), "not a certificate").unwrap();
    let err = fails(
        d,
        &sale_args("old.masterlic", "x.lic", "x.reg", &["--ek-ca", "junk.pem"]),
    );
    assert!(err.contains("--ek-ca junk.pem"), "{err}");
    assert!(!d.join("x.lic").exists() && !d.join("x.reg").exists());
}

#[test]
fn sale_binds_a_runtime_policy_and_inspect_shows_it() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    setup(d);
    std::fs::write(d.join("plugin.so"), b"the stock plugin").unwrap();
    let digest = hex::encode(ovsa_core::crypto::hash::sha256(b"the stock plugin"));
    ok(
        d,
        &[
            "runtime-policy",
            "--keystore",
            "isv.ks",
            "--out",
            "rt.rtp",
            "--file",
            "/opt/ovsa/lib/libovsaruntime.so=plugin.so",
        ],
    );
    let (shown, _) = ok(d, &["inspect", "rt.rtp"]);
    assert!(
        shown.contains("/opt/ovsa/lib/libovsaruntime.so") && shown.contains(&digest),
        "{shown}"
    );

    // Bound at sale: the license's and the registration's TCB copies carry the policy, and the
    // service will ask for PCR 10 in the quote.
    sale(
        d,
        "old.masterlic",
        "r.lic",
        "r.reg",
        &["--runtime-policy", "rt.rtp"],
    );
    let policy =
        Signed::<ovsa_core::license::runtime_policy::RuntimePolicy>::load(&d.join("rt.rtp"))
            .unwrap();
    let lic = Signed::<CustomerLicense>::load(&d.join("r.lic")).unwrap();
    let reg = Signed::<Registration>::load(&d.join("r.reg")).unwrap();
    assert_eq!(lic.body().tcb.runtime.as_ref(), Some(policy.body()));
    assert_eq!(reg.body().tcb.runtime.as_ref(), Some(policy.body()));
    assert!(lic.body().tcb.quoted_pcrs().contains(&10));
    let (shown, _) = ok(d, &["inspect", "r.lic"]);
    assert!(shown.contains(&digest), "{shown}");

    // A policy signed by another key is not bound, and nothing is written.
    ok(
        d,
        &[
            "keygen",
            "--keystore",
            "other.ks",
            "--subject",
            "CN=Other ISV",
        ],
    );
    ok(
        d,
        &[
            "runtime-policy",
            "--keystore",
            "other.ks",
            "--out",
            "other.rtp",
            "--file",
            "/opt/ovsa/lib/libovsaruntime.so=plugin.so",
        ],
    );
    let err = fails(
        d,
        &sale_args(
            "old.masterlic",
            "o.lic",
            "o.reg",
            &["--runtime-policy", "other.rtp"],
        ),
    );
    assert!(err.contains("runtime policy"), "{err}");
    assert!(!d.join("o.lic").exists() && !d.join("o.reg").exists());
}
