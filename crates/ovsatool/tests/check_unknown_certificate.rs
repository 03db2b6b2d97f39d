//! A customer whose license was never registered with the license service (`license add`) is
//! refused at the TLS handshake (`access_denied`, issue 10 item 4). The client turns that alert
//! into a typed, actionable error (`ClientError::UnknownClientCertificate`), and `ovsatool check`
//! shows it instead of "unreachable: received fatal alert: AccessDenied". Real license service
//! (TLS 1.3 on loopback, SQLite), real swtpm vTPM, the real binary.

use ovsa_test_support::world;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ovsa_client::http::Connection;
use ovsa_client::ClientError;
use ovsa_core::encoding::now_rfc3339;
use ovsa_core::envelope::Signed;
use ovsa_core::identity::KeystoreProtection;
use ovsa_core::license::customer::SaleRequest;
use ovsa_core::license::{sell, LicenseConfig, Policy, ServiceEndpoint, Validity};
use swtpm_tests::{names, Swtpm};

const EXPECTED: &str = "does not know this client certificate: the license must be registered \
                        with `ovsa-license-server license add` on the service, and the keystore \
                        must be the customer's one the license was sold to";

#[test]
fn an_unregistered_customer_gets_a_typed_actionable_error_from_the_handshake_refusal() {
    let w = world::World::sqlite();
    let vtpm = Swtpm::start(names::VTPM);
    // Sold, but its registration never reaches the service.
    let customer = world::World::keystore("CN=Unregistered Customer");
    let config = Signed::sign(
        LicenseConfig {
            name: "test".into(),
            policy: Policy {
                validity: Validity::Perpetual,
                usage_limit: None,
                instance_limit: None,
            },
            lease_seconds: 60,
            grace_seconds: ovsa_core::license::policy::DEFAULT_GRACE_SECONDS,
            services: vec![ServiceEndpoint {
                url: w.url(),
                pins: vec![w.server_pin()],
            }],
            created: now_rfc3339(),
        },
        &w.isv,
    )
    .unwrap();
    let sale = sell(&SaleRequest {
        isv: &w.isv,
        master: &w.master,
        config: &config,
        tcb: &w.tcb,
        customer: customer.certificate(),
        service: w.registration_ks.certificate(),
    })
    .unwrap();
    let d = w.dir.path();
    sale.license.save(&d.join("u.lic"), 0o644, true).unwrap();
    customer
        .save(&d.join("u.ks"), &KeystoreProtection::None, true)
        .unwrap();

    // Unknown certificates are admitted provisionally (and closed after a reload from the store)
    // while the reload budget lasts; keep it spent, as a burst of such clients does, so that
    // every further handshake is refused with `access_denied`.
    let stop = Arc::new(AtomicBool::new(false));
    let typed = Arc::new(AtomicU32::new(0));
    let hammer = {
        let (stop, typed) = (stop.clone(), typed.clone());
        let (url, pin) = (w.url(), w.server_pin());
        let customer = ovsa_core::identity::Keystore::from_bytes(
            &std::fs::read(d.join("u.ks")).unwrap(),
            None,
        )
        .unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // A fresh configuration each time: a resumed TLS session would skip the
                // handshake-time check (the service closes those after it) and spend no budget.
                let config = Arc::new(ovsa_client::tls::client_config(&customer, &[pin]).unwrap());
                let r = Connection::open(&url, config, Duration::from_secs(5))
                    .and_then(|mut c| c.post("/v1/challenge", b"{}"));
                match r {
                    Err(e @ ClientError::UnknownClientCertificate { .. }) => {
                        assert!(e.to_string().contains(EXPECTED), "{e}");
                        typed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, _)) => panic!("an unregistered client got HTTP {status}"),
                    Err(e) => eprintln!("hammer: {e}"), // closed after a provisional admission
                }
            }
        })
    };

    let mut seen = None;
    for _ in 0..5 {
        let o = Command::new(env!("CARGO_BIN_EXE_ovsatool"))
            .current_dir(d)
            .env("TSS2_LOG", "all+none")
            .args([
                "check",
                "--keystore",
                "u.ks",
                "--license",
                "u.lic",
                "--package",
            ])
            .arg(&w.package)
            .args(["--tcti", &vtpm.tcti()])
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        eprintln!("check: {err}");
        if err.contains(EXPECTED) {
            seen = Some(err);
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    hammer.join().unwrap();
    let typed = typed.load(Ordering::Relaxed);
    eprintln!("typed refusals seen by the library: {typed}");
    assert!(typed > 0, "no access_denied seen");
    let err = seen.expect("ovsatool check never showed the typed error");
    assert!(
        !err.contains("AccessDenied") && !err.contains("unreachable"),
        "{err}"
    );
    assert!(err.contains(&w.url()), "names the service: {err}");
}
