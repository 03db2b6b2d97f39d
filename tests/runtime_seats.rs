//! The plugin and live seats: renewals keep the load's lease (one seat), and `unloadModel`
//! gives the seat back at once (best effort, never delaying the unload), so another machine
//! can load under `instance_limit: 1` without waiting for the lease to lapse.

mod common_lib;
mod plugin;
use ovsa_test_support::runtime_fixture;
use ovsa_test_support::world;

use ovsa_core::license::{Policy, Validity};
use ovsa_core::protocol::{Purpose, Reason};
use plugin::{Plugin, MODEL_TYPE_IR, OK};
use runtime_fixture::{eventually, Fixture, OPTIONS};
use swtpm_tests::{names, Swtpm};
use world::refused;

#[test]
fn renewals_keep_the_seat_and_unload_releases_it() {
    let f = Fixture::new();
    let plugin = Plugin::new(Some(
        &f.config("loader.json", r#""lease_seconds_override":1"#),
    ))
    .unwrap();
    let lic = f.w.sell(
        Policy {
            validity: Validity::Perpetual,
            usage_limit: None,
            instance_limit: Some(1),
        },
        &f.w.customer,
        None,
    );
    let guid = lic.body().license_guid;
    let base = f.version_dir(
        "models/m",
        1,
        Some(&f.w.package),
        Some(&lic),
        Some(&f.w.customer),
    );
    let loaded = plugin.load("m", &base, 1, OPTIONS);
    assert_eq!(loaded.status, MODEL_TYPE_IR, "{}", loaded.error);
    let leases = |w: &world::World| {
        w.rt.block_on(w.state.store.leases(guid, time::OffsetDateTime::now_utc()))
            .unwrap()
    };
    // Renewed every second, on the same lease: still one lease, one seat.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    assert_eq!(plugin.status("m", 1), OK);
    assert_eq!(leases(&f.w).len(), 1, "renewals keep the load's lease");
    // Another machine: the seat is taken.
    let other = Swtpm::start(names::VTPM_B);
    let e = f.w.check(&lic, &f.w.customer, &other, Purpose::Load);
    assert_eq!(refused(e), Reason::InstanceLimitReached);
    // Unload returns at once; the seat is given back in the background.
    let t = std::time::Instant::now();
    assert_eq!(plugin.unload("m", 1), OK);
    assert!(
        t.elapsed() < std::time::Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(
        eventually(5, || leases(&f.w).is_empty()),
        "the unload released the lease"
    );
    f.w.check(&lic, &f.w.customer, &other, Purpose::Load)
        .expect("the other machine takes the released seat");
    assert!(f
        .w
        .audit(guid)
        .iter()
        .any(|a| a.action == "release" && a.result == "released"));
}

/// With the license service gone, `unloadModel` still returns at once (the release gives up
/// within its short deadline on its own thread).
#[test]
fn unload_does_not_wait_for_an_unreachable_service() {
    let mut f = Fixture::new();
    let plugin = Plugin::new(Some(&f.config("loader.json", ""))).unwrap();
    let (base, _) = f.good_model("models/m", 1);
    assert_eq!(plugin.load("m", &base, 1, OPTIONS).status, MODEL_TYPE_IR);
    f.stop_service();
    let t = std::time::Instant::now();
    assert_eq!(plugin.unload("m", 1), OK);
    assert!(
        t.elapsed() < std::time::Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    // Freeing the loader right after does not wait either.
    let t = std::time::Instant::now();
    drop(plugin);
    assert!(t.elapsed() < std::time::Duration::from_millis(500));
}
