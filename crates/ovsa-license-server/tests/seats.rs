//! Live seats and vTPM clone detection in the store, against SQLite and a private PostgreSQL
//! server (the same bodies, `NAME::sqlite` and `NAME::postgres`), with the real Relying Party.

#[macro_use]
mod common;

use std::sync::Arc;

use common::{Backend, TestDb};
use ovsa_core::license::{PcrBank, PcrSet, PcrValue, Policy, TcbReference, Validity};
use ovsa_core::protocol::{Purpose, Reason};
use ovsa_license_server::relying_party::{decide, Decision};
use ovsa_license_server::store::{ClockMark, LicenseRecord, SeatRequest, Store};
use ovsa_license_server::tpm_clock::CLOCK_SKEW_MS;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use zeroize::Zeroizing;

both!(
    a_seat_is_held_until_released_and_shared_by_one_machine,
    a_lapsed_lease_frees_the_seat,
    limit_n_is_never_exceeded_by_concurrent_loads_on_two_replicas,
    a_clock_behind_the_high_water_mark_is_refused,
    a_clone_at_the_next_reset_is_refused_while_the_original_holds_a_lease,
    a_reboot_after_a_crash_loads_once_the_old_leases_lapse,
);

const LEASE: u32 = 60;
const GRACE: u32 = 30;

fn random32() -> [u8; 32] {
    ovsa_core::crypto::random_array().unwrap()
}

fn license(instance_limit: Option<u32>, now: OffsetDateTime) -> LicenseRecord {
    LicenseRecord {
        license_guid: Uuid::new_v4(),
        model_guid: Uuid::new_v4(),
        model_name: "m".into(),
        model_version: "1".into(),
        header_hash: random32(),
        license_digest: random32(),
        customer_cert: vec![0x30, 0x00],
        isv_cert_sha256: random32(),
        policy: Policy {
            validity: Validity::Perpetual,
            usage_limit: None,
            instance_limit,
        },
        lease_seconds: LEASE,
        grace_seconds: GRACE,
        tcb: TcbReference {
            name: "vm".into(),
            vtpm: PcrSet::new(
                PcrBank::Sha256,
                vec![PcrValue {
                    index: 0,
                    value: random32().to_vec(),
                }],
            )
            .unwrap(),
            host: None,
            host_max_age_seconds: None,
            vtpm_ek: None,
            events: None,
            runtime: None,
            created: "2026-01-01T00:00:00Z".into(),
        },
        key_share: Zeroizing::new(random32().to_vec()),
        issued: "2026-01-01T00:00:00Z".into(),
        registered_at: OffsetDateTime::from_unix_timestamp(now.unix_timestamp()).unwrap(),
        revoked_at: None,
        first_use: None,
        uses: 0,
    }
}

fn clock(reset_count: u32, clock: u64) -> ClockMark {
    ClockMark {
        reset_count,
        restart_count: 0,
        clock,
    }
}

/// One check: `lease` of machine `vm` with a quote showing `at`.
async fn check(
    store: &Store,
    guid: Uuid,
    vm: [u8; 32],
    lease: Uuid,
    at: ClockMark,
    purpose: Purpose,
    now: OffsetDateTime,
) -> Decision {
    let seat = SeatRequest {
        instance_id: vm,
        lease_id: lease,
        clock: at,
    };
    store
        .record_use(guid, &seat, now, &|s| decide(s, purpose, now))
        .await
        .expect("record_use")
        .expect("known license")
}

async fn load(
    store: &Store,
    guid: Uuid,
    vm: [u8; 32],
    at: ClockMark,
    now: OffsetDateTime,
) -> (Uuid, Decision) {
    let lease = Uuid::new_v4();
    (
        lease,
        check(store, guid, vm, lease, at, Purpose::Load, now).await,
    )
}

fn granted(d: &Decision) -> bool {
    matches!(d, Decision::Grant { .. })
}

async fn add(store: &Store, limit: Option<u32>, now: OffsetDateTime) -> Uuid {
    let lic = license(limit, now);
    store.add_license(&lic).await.unwrap();
    lic.license_guid
}

async fn a_seat_is_held_until_released_and_shared_by_one_machine(db: TestDb) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    let guid = add(&store, Some(1), now).await;
    let (a, b) = (random32(), random32());
    let (a1, d) = load(&store, guid, a, clock(1, 10_000), now).await;
    assert!(granted(&d), "{d:?}");
    // Another machine: the only seat is held.
    let (_, d) = load(&store, guid, b, clock(1, 10_000), now).await;
    assert_eq!(d, Decision::Refuse(Reason::InstanceLimitReached));
    // Several models of one license in one VM: same EK, same clock, one seat.
    let (a2, d) = load(&store, guid, a, clock(1, 10_050), now).await;
    assert!(granted(&d), "{d:?}");
    assert_eq!(store.leases(guid, now).await.unwrap().len(), 2);
    // Renewals keep the lease.
    let d = check(&store, guid, a, a1, clock(1, 40_000), Purpose::Renew, now).await;
    assert!(granted(&d), "{d:?}");
    assert_eq!(store.leases(guid, now).await.unwrap().len(), 2);
    // Unloading one model keeps the machine's seat (the other model still holds it).
    assert!(store.release_lease(guid, a1).await.unwrap());
    assert!(!store.release_lease(guid, a1).await.unwrap(), "idempotent");
    let (_, d) = load(&store, guid, b, clock(1, 10_000), now).await;
    assert_eq!(d, Decision::Refuse(Reason::InstanceLimitReached));
    // Unloading the last model frees the seat for another machine.
    assert!(store.release_lease(guid, a2).await.unwrap());
    let (_, d) = load(&store, guid, b, clock(1, 20_000), now).await;
    assert!(granted(&d), "{d:?}");
    let leases = store.leases(guid, now).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].instance_id, b);
    assert_eq!(
        leases[0].expires_at.unix_timestamp(),
        (now + Duration::seconds(i64::from(LEASE + GRACE))).unix_timestamp()
    );
}

async fn a_lapsed_lease_frees_the_seat(db: TestDb) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    let guid = add(&store, Some(1), now).await;
    let (a, b) = (random32(), random32());
    let (a1, d) = load(&store, guid, a, clock(1, 10_000), now).await;
    assert!(granted(&d));
    // Within lease + grace the seat is held ...
    let inside = now + Duration::seconds(i64::from(LEASE + GRACE) - 1);
    let (_, d) = load(&store, guid, b, clock(1, 10_000), inside).await;
    assert_eq!(d, Decision::Refuse(Reason::InstanceLimitReached));
    // ... once lease + grace passed without a renewal (service clock), it is free.
    let after = now + Duration::seconds(i64::from(LEASE + GRACE));
    let (_, d) = load(&store, guid, b, clock(1, 10_000), after).await;
    assert!(granted(&d), "{d:?}");
    // The lapsed holder's late renewal must take a seat again: none is free.
    let d = check(
        &store,
        guid,
        a,
        a1,
        clock(1, 200_000),
        Purpose::Renew,
        after,
    )
    .await;
    assert_eq!(d, Decision::Refuse(Reason::InstanceLimitReached));
}

async fn limit_n_is_never_exceeded_by_concurrent_loads_on_two_replicas(db: TestDb) {
    const N: u32 = 3;
    const MACHINES: usize = 24;
    let r1 = Arc::new(db.open().await);
    let r2 = Arc::new(db.open().await);
    let now = OffsetDateTime::now_utc();
    let guid = add(&r1, Some(N), now).await;
    let mut tasks = Vec::new();
    for i in 0..MACHINES {
        let store = Arc::clone(if i % 2 == 0 { &r1 } else { &r2 });
        tasks.push(tokio::spawn(async move {
            let vm = random32();
            // Each machine loads two models at once (two leases of one seat).
            let (x, y) = tokio::join!(
                load(&store, guid, vm, clock(1, 5_000), now),
                load(&store, guid, vm, clock(1, 5_010), now)
            );
            (vm, granted(&x.1), granted(&y.1))
        }));
    }
    let mut seated = std::collections::HashSet::new();
    for t in tasks {
        let (vm, x, y) = t.await.unwrap();
        if x || y {
            seated.insert(vm);
        }
    }
    assert_eq!(seated.len(), N as usize, "exactly N machines got a seat");
    let live: std::collections::HashSet<_> = r2
        .leases(guid, now)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.instance_id)
        .collect();
    assert_eq!(live, seated);
}

async fn a_clock_behind_the_high_water_mark_is_refused(db: TestDb) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    let guid = add(&store, None, now).await;
    let vm = random32();
    let (_, d) = load(&store, guid, vm, clock(3, 100_000), now).await;
    assert!(granted(&d));
    // Out of order within the skew window (another model's quote, another replica): accepted.
    let (_, d) = load(&store, guid, vm, clock(3, 100_000 - CLOCK_SKEW_MS), now).await;
    assert!(granted(&d), "{d:?}");
    // Behind the window, or from an earlier reset: refused, nothing recorded.
    let (l, d) = load(&store, guid, vm, clock(3, 100_000 - CLOCK_SKEW_MS - 1), now).await;
    assert_eq!(d, Decision::Refuse(Reason::TpmClockRegressed));
    assert!(!store
        .leases(guid, now)
        .await
        .unwrap()
        .iter()
        .any(|x| x.lease_id == l));
    let (_, d) = load(&store, guid, vm, clock(2, 900_000), now).await;
    assert_eq!(d, Decision::Refuse(Reason::TpmClockRegressed));
    // The mark is per EK, across licenses.
    let other = add(&store, None, now).await;
    let (_, d) = load(&store, other, vm, clock(3, 1_000), now).await;
    assert_eq!(d, Decision::Refuse(Reason::TpmClockRegressed));
    assert_eq!(store.tpm_clock(vm).await.unwrap(), Some(clock(3, 100_000)));
    // A quote ahead moves it.
    let (_, d) = load(&store, other, vm, clock(3, 160_000), now).await;
    assert!(granted(&d));
    assert_eq!(store.tpm_clock(vm).await.unwrap(), Some(clock(3, 160_000)));
}

async fn a_clone_at_the_next_reset_is_refused_while_the_original_holds_a_lease(db: TestDb) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    let guid = add(&store, Some(5), now).await;
    let other = add(&store, Some(5), now).await;
    let vm = random32();
    let (orig, d) = load(&store, guid, vm, clock(1, 50_000), now).await;
    assert!(granted(&d));
    // A copy of the state directory started as a second swtpm: same EK, next reset count,
    // clock back at the last saved value. Refused on this license and on any other.
    let (_, d) = load(&store, guid, vm, clock(2, 1_000), now).await;
    assert_eq!(d, Decision::Refuse(Reason::TpmCloneSuspected));
    let (_, d) = load(&store, other, vm, clock(2, 1_000), now).await;
    assert_eq!(d, Decision::Refuse(Reason::TpmCloneSuspected));
    // The original keeps renewing.
    let d = check(
        &store,
        guid,
        vm,
        orig,
        clock(1, 110_000),
        Purpose::Renew,
        now,
    )
    .await;
    assert!(granted(&d), "{d:?}");
    // A clean shutdown (unload releases) then a reboot: the new reset is a new epoch.
    assert!(store.release_lease(guid, orig).await.unwrap());
    let (_, d) = load(&store, guid, vm, clock(2, 1_000), now).await;
    match d {
        Decision::Grant { seat, .. } => assert!(seat.new_epoch),
        d => panic!("{d:?}"),
    }
    // From now on the earlier boot's state is a regression.
    let (_, d) = load(&store, guid, vm, clock(1, 500_000), now).await;
    assert_eq!(d, Decision::Refuse(Reason::TpmClockRegressed));
}

async fn a_reboot_after_a_crash_loads_once_the_old_leases_lapse(db: TestDb) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    let guid = add(&store, Some(1), now).await;
    let vm = random32();
    let (_, d) = load(&store, guid, vm, clock(7, 50_000), now).await;
    assert!(granted(&d));
    // Crash: no release. The rebooted VM is refused while the crashed boot's lease is live ...
    let soon = now + Duration::seconds(10);
    let (_, d) = load(&store, guid, vm, clock(8, 2_000), soon).await;
    assert_eq!(d, Decision::Refuse(Reason::TpmCloneSuspected));
    // ... and loads once it lapsed; the earlier boot's leases end.
    let later = now + Duration::seconds(i64::from(LEASE + GRACE));
    let (_, d) = load(&store, guid, vm, clock(8, 90_000), later).await;
    assert!(granted(&d), "{d:?}");
    let leases = store.leases(guid, later).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].reset_count, 8);
}
