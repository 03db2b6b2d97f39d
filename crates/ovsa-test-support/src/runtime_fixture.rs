//! The runtime's end-to-end fixture on top of the license-service `World`: a vTPM, model
//! repositories laid out as OVMS expects (`<base>/<version>/{model.dat,model.lic,customer.ks}`),
//! a loader config file, and service stop/restart on the same address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ovsa_core::envelope::Signed;
use ovsa_core::identity::{Keystore, KeystoreProtection};
use ovsa_core::license::{CustomerLicense, MasterLicense};
use ovsa_license_server::server::{self, Limits};
use swtpm_tests::{names, Swtpm};

pub use crate::shop::perpetual;
use crate::shop::{self, Terms};
use crate::world::World;

/// The OVMS `custom_loader_options` the model repositories of [`Fixture::version_dir`] match.
pub const OPTIONS: &str =
    r#"{"loader_name":"ovsa","keystore":"customer.ks","controlled_access_file":"model"}"#;

/// A [`World`], a vTPM and a directory for model repositories and loader configs.
pub struct Fixture {
    /// The license service, ISV, customer and model.
    pub w: World,
    /// The vTPM the plugin attests with.
    pub vtpm: Swtpm,
    /// Model repositories and config files.
    pub root: tempfile::TempDir,
    /// The service's address (kept across stop/restart).
    pub addr: SocketAddr,
    /// The service's URL.
    pub url: String,
}

/// A second model protected by the same ISV, with its plaintext files.
pub struct OtherModel {
    /// The package.
    pub package: PathBuf,
    /// Its plaintext files.
    pub files: Vec<PathBuf>,
    /// Its master license.
    pub master: Signed<MasterLicense>,
}

impl Default for Fixture {
    fn default() -> Fixture {
        Fixture::new()
    }
}

impl Fixture {
    /// A world on SQLite and a fresh vTPM.
    pub fn new() -> Fixture {
        let w = World::sqlite();
        let vtpm = Swtpm::start(names::VTPM);
        let addr = w.server.as_ref().unwrap().addr;
        let url = w.url();
        Fixture {
            w,
            vtpm,
            root: tempfile::tempdir().unwrap(),
            addr,
            url,
        }
    }

    /// `rel` under the fixture's root directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// Writes a loader config file with the vTPM's TCTI and `extra` settings (JSON members).
    pub fn config(&self, name: &str, extra: &str) -> String {
        let ak = self.path("ak-cache");
        let body = format!(
            r#"{{"tcti":"{}","ak_cache_dir":"{}","log_level":"debug"{}{}}}"#,
            self.vtpm.tcti(),
            ak.display(),
            if extra.is_empty() { "" } else { "," },
            extra
        );
        let p = self.path(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    }

    /// Writes `<base>/<version>/` with the given package, license and keystore (any may be
    /// omitted) under the file names OPTIONS names.
    pub fn version_dir(
        &self,
        base: &str,
        version: i32,
        package: Option<&Path>,
        license: Option<&Signed<CustomerLicense>>,
        keystore: Option<&Keystore>,
    ) -> String {
        let base = self.path(base);
        let dir = base.join(version.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(p) = package {
            std::fs::copy(p, dir.join("model.dat")).unwrap();
        }
        if let Some(l) = license {
            l.save(&dir.join("model.lic"), 0o644, true).unwrap();
        }
        if let Some(k) = keystore {
            k.save(&dir.join("customer.ks"), &KeystoreProtection::None, true)
                .unwrap();
        }
        base.display().to_string()
    }

    /// A repository with one good version of the World's model under a fresh license.
    pub fn good_model(&self, base: &str, version: i32) -> (String, Signed<CustomerLicense>) {
        let lic = self.w.sell(perpetual(), &self.w.customer, None);
        let b = self.version_dir(
            base,
            version,
            Some(&self.w.package),
            Some(&lic),
            Some(&self.w.customer),
        );
        (b, lic)
    }

    /// A repository with version `version` of the World's model (the same plaintext files,
    /// protected as that version: a package only serves the version it was protected as) under
    /// a fresh license.
    pub fn good_version(&self, base: &str, version: i32) -> (String, Signed<CustomerLicense>) {
        if version == 1 {
            return self.good_model(base, version);
        }
        // "test": the model name the World protected its package under.
        let m = self.protect_files_as("test", &version.to_string(), self.w.model_files.clone());
        let lic = self.sell_for(&m.master);
        let b = self.version_dir(
            base,
            version,
            Some(&m.package),
            Some(&lic),
            Some(&self.w.customer),
        );
        (b, lic)
    }

    /// The World model's plaintext (xml, bin).
    pub fn plaintext(&self) -> (Vec<u8>, Vec<u8>) {
        (
            std::fs::read(&self.w.model_files[0]).unwrap(),
            std::fs::read(&self.w.model_files[1]).unwrap(),
        )
    }

    /// Stops the service (the address stays reserved for [`Fixture::start_service`]).
    pub fn stop_service(&mut self) {
        if let Some(s) = self.w.server.take() {
            self.w.rt.block_on(s.shutdown());
        }
    }

    /// Restarts the service on the same address (same TLS key, same database).
    pub fn start_service(&mut self) {
        let dir = self.w.dir.path();
        let tls = ovsa_license_server::tls::server_config(
            &dir.join("server.crt"),
            &dir.join("server.ks"),
        )
        .unwrap();
        let server = self
            .w
            .rt
            .block_on(server::start(
                self.addr,
                tls,
                self.w.state.clone(),
                Limits::default(),
            ))
            .unwrap();
        self.w.server = Some(server);
    }

    /// Protects another IR model (same ISV).
    pub fn other_model(&self, name: &str, seed: u32) -> OtherModel {
        let dir = self.path(&format!("src-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let xml = dir.join("model.xml");
        let bin = dir.join("model.bin");
        std::fs::write(&xml, format!("<net name='{name}'/>")).unwrap();
        std::fs::write(
            &bin,
            (0..300_000u32)
                .map(|i| (i.wrapping_mul(seed) % 253) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        self.protect_files(name, vec![xml, bin])
    }

    /// Protects an ONNX model (same ISV; the bytes are opaque to the plugin).
    pub fn onnx_model(&self, name: &str) -> OtherModel {
        let dir = self.path(&format!("src-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let onnx = dir.join("model.onnx");
        std::fs::write(
            &onnx,
            (0..150_001u32)
                .map(|i| (i % 241) as u8 ^ 0x5a)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        self.protect_files(name, vec![onnx])
    }

    /// Protects the given model files (same ISV).
    pub fn other_model_from(&self, files: &[PathBuf], name: &str) -> OtherModel {
        self.protect_files(name, files.to_vec())
    }

    /// Protects the given model files as version `version` of `name` (same ISV).
    pub fn other_model_versioned(
        &self,
        files: &[PathBuf],
        name: &str,
        version: &str,
    ) -> OtherModel {
        self.protect_files_as(name, version, files.to_vec())
    }

    fn protect_files(&self, name: &str, files: Vec<PathBuf>) -> OtherModel {
        self.protect_files_as(name, "1", files)
    }

    fn protect_files_as(&self, name: &str, version: &str, files: Vec<PathBuf>) -> OtherModel {
        let package = self.path(&format!("src-{name}/model-v{version}.dat"));
        std::fs::create_dir_all(package.parent().unwrap()).unwrap();
        let shop::Protection {
            package, master, ..
        } = shop::protect_files(
            &files,
            &shop::protect_options(name, version, 65536),
            &self.w.isv,
            &package,
        );
        OtherModel {
            package,
            files,
            master,
        }
    }

    /// Sells and registers a license for `master` (like World::sell, for another package).
    pub fn sell_for(&self, master: &Signed<MasterLicense>) -> Signed<CustomerLicense> {
        self.sell_with_lease(
            master,
            60,
            ovsa_core::license::policy::DEFAULT_GRACE_SECONDS,
        )
    }

    /// Sells and registers a perpetual license for `master` signed with the given lease and
    /// grace period (seconds).
    pub fn sell_with_lease(
        &self,
        master: &Signed<MasterLicense>,
        lease_seconds: u32,
        grace_seconds: u32,
    ) -> Signed<CustomerLicense> {
        let config = Terms {
            lease_seconds,
            grace_seconds,
            services: vec![shop::endpoint(&self.url, vec![self.w.server_pin()])],
            ..Terms::default()
        }
        .sign(&self.w.isv);
        self.w
            .sell_registered(master, &config, &self.w.tcb, &self.w.customer)
    }
}

/// Polls `f` every 100 ms until it returns true or `secs` pass; returns whether it did.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    f()
}
