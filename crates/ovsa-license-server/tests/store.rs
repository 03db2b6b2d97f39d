//! Storage backends: the same test bodies against SQLite and a private PostgreSQL server.
//!
//! `cargo test -p ovsa-license-server --test store -- --nocapture` also prints the
//! `record_use` throughput figures of `throughput_8_concurrent`.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration as StdDuration, Instant};

use common::{Backend, TestDb};
use ovsa_core::attest::ClockInfo;
use ovsa_core::license::{PcrBank, PcrSet, PcrValue, Policy, TcbReference, Validity};
use ovsa_core::protocol::{Purpose, Reason};
use ovsa_license_server::relying_party::{decide, Decision};
use ovsa_license_server::store::{
    AuditEntry, AuditFilter, ClockMark, LicenseRecord, OpenMode, SeatRequest, SessionRecord, Store,
    StoreError, SCHEMA_VERSION,
};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use zeroize::Zeroizing;

both!(
    licenses_add_get_list_duplicate,
    revocation,
    sessions_single_use_and_purge,
    usage_limit_reached_exactly_at_n,
    instance_limit,
    days_from_first_use_expiry,
    unknown_license,
    audit_append_filter_limit,
    schema_too_new_is_refused,
    reopen_sees_the_data,
    concurrent_checks_spend_exactly_the_limit,
    two_replicas_race_for_the_last_use,
    throughput_8_concurrent,
    interrupted_check_leaves_nothing_locked,
    host_aks_per_host_ek,
    host_evidence_seen_per_host_ek,
    read_only_open_creates_migrates_and_writes_nothing,
);

// ---------------------------------------------------------------------------------------------
// Fixtures

fn customer_cert() -> Vec<u8> {
    static CERT: OnceLock<Vec<u8>> = OnceLock::new();
    CERT.get_or_init(|| {
        let (ks, _) = ovsa_core::identity::Keystore::generate(
            ovsa_core::crypto::KeyAlgorithm::EcdsaP256,
            "CN=customer",
            30,
        )
        .expect("keystore");
        ks.certificate().der().to_vec()
    })
    .clone()
}

fn policy(validity: Validity, usage_limit: Option<u64>, instance_limit: Option<u32>) -> Policy {
    Policy {
        validity,
        usage_limit,
        instance_limit,
    }
}

fn perpetual(usage_limit: Option<u64>, instance_limit: Option<u32>) -> Policy {
    policy(Validity::Perpetual, usage_limit, instance_limit)
}

fn random32() -> [u8; 32] {
    ovsa_core::crypto::random_array::<32>().expect("randomness")
}

/// Whole seconds (what the stores keep).
fn secs(t: OffsetDateTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.unix_timestamp()).expect("time")
}

fn license(policy: Policy, registered_at: OffsetDateTime) -> LicenseRecord {
    LicenseRecord {
        license_guid: Uuid::new_v4(),
        model_guid: Uuid::new_v4(),
        model_name: "resnet-50".into(),
        model_version: "1.2.3".into(),
        header_hash: random32(),
        license_digest: random32(),
        customer_cert: customer_cert(),
        isv_cert_sha256: random32(),
        policy,
        lease_seconds: 600,
        grace_seconds: 300,
        tcb: TcbReference {
            name: "test-vm".into(),
            vtpm: PcrSet::new(
                PcrBank::Sha256,
                vec![
                    PcrValue {
                        index: 0,
                        value: random32().to_vec(),
                    },
                    PcrValue {
                        index: 7,
                        value: random32().to_vec(),
                    },
                ],
            )
            .expect("PCR set"),
            host: None,
            host_max_age_seconds: None,
            vtpm_ek: None,
            events: None,
            runtime: None,
            created: "2026-01-01T00:00:00Z".into(),
        },
        key_share: Zeroizing::new(random32().to_vec()),
        issued: "2026-01-01T00:00:00Z".into(),
        registered_at: secs(registered_at),
        revoked_at: None,
        first_use: None,
        uses: 0,
    }
}

fn assert_same_license(a: &LicenseRecord, b: &LicenseRecord) {
    assert_eq!(a.license_guid, b.license_guid);
    assert_eq!(a.model_guid, b.model_guid);
    assert_eq!(a.model_name, b.model_name);
    assert_eq!(a.model_version, b.model_version);
    assert_eq!(a.header_hash, b.header_hash);
    assert_eq!(a.license_digest, b.license_digest);
    assert_eq!(a.customer_cert, b.customer_cert);
    assert_eq!(a.isv_cert_sha256, b.isv_cert_sha256);
    assert_eq!(a.policy, b.policy);
    assert_eq!(a.lease_seconds, b.lease_seconds);
    assert_eq!(a.tcb, b.tcb);
    assert_eq!(*a.key_share, *b.key_share);
    assert_eq!(a.issued, b.issued);
    assert_eq!(a.registered_at, b.registered_at);
    assert_eq!(a.revoked_at, b.revoked_at);
    assert_eq!(a.first_use, b.first_use);
    assert_eq!(a.uses, b.uses);
}

fn session(license_guid: Uuid, expires_at: OffsetDateTime) -> SessionRecord {
    SessionRecord {
        session_id: Uuid::new_v4(),
        license_guid,
        purpose: Purpose::Renew,
        nonce: random32().to_vec(),
        client_cert_sha256: random32(),
        ek_cert_sha256: random32(),
        ak_name: random32().to_vec(),
        credential_secret: Zeroizing::new(random32().to_vec()),
        expires_at: secs(expires_at),
    }
}

/// A new lease of `instance` whose quote's clock is later than every earlier one of this test
/// binary (one TPM reset, a clock that only moves forward).
fn seat(instance: [u8; 32]) -> SeatRequest {
    static CLOCK: AtomicU64 = AtomicU64::new(1_000);
    SeatRequest {
        instance_id: instance,
        lease_id: Uuid::new_v4(),
        clock: ClockMark {
            reset_count: 1,
            restart_count: 0,
            clock: CLOCK.fetch_add(10, Ordering::Relaxed),
        },
    }
}

/// One check with the real Relying Party.
async fn check(
    store: &Store,
    guid: Uuid,
    instance: [u8; 32],
    purpose: Purpose,
    now: OffsetDateTime,
) -> Option<Decision> {
    store
        .record_use(guid, &seat(instance), now, &|s| decide(s, purpose, now))
        .await
        .expect("record_use")
}

async fn load(store: &Store, guid: Uuid, instance: [u8; 32], now: OffsetDateTime) -> Decision {
    check(store, guid, instance, Purpose::Load, now)
        .await
        .expect("known license")
}

async fn uses(store: &Store, guid: Uuid) -> u64 {
    store.license(guid).await.unwrap().expect("license").uses
}

fn granted(d: &Decision) -> bool {
    matches!(d, Decision::Grant { .. })
}

// ---------------------------------------------------------------------------------------------
// Functional tests

async fn licenses_add_get_list_duplicate(db: TestDb) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    assert!(store.list_licenses().await.unwrap().is_empty());
    let a = license(perpetual(Some(3), None), now);
    let b = license(
        policy(
            Validity::Window {
                not_before: Some("2026-01-01T00:00:00Z".into()),
                not_after: "2036-01-01T00:00:00Z".into(),
            },
            None,
            Some(2),
        ),
        now - Duration::hours(1),
    );
    store.add_license(&a).await.unwrap();
    store.add_license(&b).await.unwrap();
    assert_same_license(&store.license(a.license_guid).await.unwrap().unwrap(), &a);
    assert_same_license(&store.license(b.license_guid).await.unwrap().unwrap(), &b);
    assert!(store.license(Uuid::new_v4()).await.unwrap().is_none());
    // By registration time: b was registered first.
    let list = store.list_licenses().await.unwrap();
    assert_eq!(list.len(), 2);
    assert_same_license(&list[0], &b);
    assert_same_license(&list[1], &a);
    // Duplicate GUID: refused, the original untouched.
    let mut dup = license(perpetual(None, None), now);
    dup.license_guid = a.license_guid;
    match store.add_license(&dup).await {
        Err(StoreError::Duplicate(g)) => assert_eq!(g, a.license_guid),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert_same_license(&store.license(a.license_guid).await.unwrap().unwrap(), &a);
    assert!(store.activations(a.license_guid).await.unwrap().is_empty());
}

async fn host_aks_per_host_ek(db: TestDb) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    let (ek_a, ek_b) = (random32(), random32());
    let (ak1, ak2) = (vec![0, 11, 1, 2, 3], vec![0, 11, 4, 5, 6]);
    assert!(store.host_aks(ek_a).await.unwrap().is_empty());
    let guid = Uuid::new_v4();
    store.enroll_host_ak(ek_a, &ak1, guid, now).await.unwrap();
    // Re-enrolling the same AK is idempotent.
    store
        .enroll_host_ak(ek_a, &ak1, guid, now + Duration::seconds(1))
        .await
        .unwrap();
    store
        .enroll_host_ak(ek_a, &ak2, guid, now + Duration::seconds(2))
        .await
        .unwrap();
    assert_eq!(store.host_aks(ek_a).await.unwrap(), vec![ak1, ak2]);
    // Enrolments belong to their host EK only.
    assert!(store.host_aks(ek_b).await.unwrap().is_empty());
}

fn host_clock(reset_count: u32, restart_count: u32, clock: u64) -> ClockInfo {
    ClockInfo {
        clock,
        reset_count,
        restart_count,
        safe: true,
    }
}

/// Host evidence sightings: first seen is kept per quote (and bounds every earlier quote of the
/// same reset), the highest reset count per host EK is the replay floor, a later reset drops the
/// earlier resets' rows, and host EKs are independent.
async fn host_evidence_seen_per_host_ek(db: TestDb) {
    let store = db.open().await;
    let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let at = |s: i64| t0 + Duration::seconds(s);
    let secs = |s: i64| (t0.unix_timestamp() + s) as u64;
    let (ek_a, ek_b) = (random32(), random32());
    let seen = |ek, c, t| {
        let store = &store;
        async move { store.record_host_evidence(ek, &c, t).await.unwrap() }
    };
    // First sighting: nothing known, first seen now.
    let s = seen(ek_a, host_clock(5, 0, 1_000), at(0)).await;
    assert_eq!(s.highest_reset_count, None);
    assert_eq!(s.first_seen, secs(0));
    // The same quote later: still first seen at t0.
    let s = seen(ek_a, host_clock(5, 0, 1_000), at(100)).await;
    assert_eq!((s.highest_reset_count, s.first_seen), (Some(5), secs(0)));
    // A later quote of the same reset: its own first sighting.
    let s = seen(ek_a, host_clock(5, 0, 90_000), at(200)).await;
    assert_eq!((s.highest_reset_count, s.first_seen), (Some(5), secs(200)));
    // An earlier quote of the same reset never seen before: no newer than the t0 quote.
    let s = seen(ek_a, host_clock(5, 0, 500), at(300)).await;
    assert_eq!(s.first_seen, secs(0));
    // A later restart of the same reset is newer than every quote of the earlier restart.
    let s = seen(ek_a, host_clock(5, 1, 10), at(400)).await;
    assert_eq!(s.first_seen, secs(400));
    let s = seen(ek_a, host_clock(5, 0, 95_000), at(500)).await;
    assert_eq!(s.first_seen, secs(400));
    // Another host EK is independent.
    let s = seen(ek_b, host_clock(1, 0, 1_000), at(600)).await;
    assert_eq!((s.highest_reset_count, s.first_seen), (None, secs(600)));
    // The host rebooted: reset 6 is recorded and the floor rises.
    let s = seen(ek_a, host_clock(6, 0, 2_000), at(700)).await;
    assert_eq!((s.highest_reset_count, s.first_seen), (Some(5), secs(700)));
    // An old reset-5 quote now reports floor 6 (a replay) and is not recorded.
    let s = seen(ek_a, host_clock(5, 0, 1_000), at(800)).await;
    assert_eq!(s.highest_reset_count, Some(6));
    assert_eq!(s.first_seen, secs(800));
    // Only the latest reset's rows remain for ek_a.
    let rows = raw_sql(
        &db,
        &format!(
            "SELECT COUNT(*) FROM host_evidence_seen WHERE host_ek_sha256 = '{}'",
            hex::encode(ek_a)
        ),
    )
    .await;
    assert_eq!(rows, Some(1));
    // A TPM clock beyond i64 is stored clamped, not refused.
    let s = seen(ek_a, host_clock(6, 0, u64::MAX), at(900)).await;
    assert_eq!((s.highest_reset_count, s.first_seen), (Some(6), secs(900)));
}

async fn revocation(db: TestDb) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    let lic = license(perpetual(Some(10), None), now);
    store.add_license(&lic).await.unwrap();
    let vm = random32();
    assert!(granted(&load(&store, lic.license_guid, vm, now).await));
    assert!(!store.revoke(Uuid::new_v4(), now).await.unwrap());
    let at = now + Duration::seconds(5);
    assert!(store.revoke(lic.license_guid, at).await.unwrap());
    // A later revocation keeps the first time.
    assert!(store
        .revoke(lic.license_guid, at + Duration::hours(1))
        .await
        .unwrap());
    let rec = store.license(lic.license_guid).await.unwrap().unwrap();
    assert_eq!(rec.revoked_at, Some(secs(at)));
    // Effective on the next check (load and renewal), and nothing is written.
    let later = at + Duration::seconds(1);
    assert_eq!(
        load(&store, lic.license_guid, vm, later).await,
        Decision::Refuse(Reason::LicenseRevoked)
    );
    assert_eq!(
        check(&store, lic.license_guid, vm, Purpose::Renew, later).await,
        Some(Decision::Refuse(Reason::LicenseRevoked))
    );
    assert_eq!(uses(&store, lic.license_guid).await, 1);
    assert_eq!(
        store.activations(lic.license_guid).await.unwrap()[0].checks,
        1
    );
    // Reinstated: granted again; unknown licenses report false.
    assert!(store.reinstate(lic.license_guid).await.unwrap());
    assert!(!store.reinstate(Uuid::new_v4()).await.unwrap());
    assert_eq!(
        store
            .license(lic.license_guid)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );
    assert!(granted(&load(&store, lic.license_guid, vm, later).await));
}

async fn sessions_single_use_and_purge(db: TestDb) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    let guid = Uuid::new_v4();
    let fresh = session(guid, now + Duration::seconds(60));
    let mut load_session = session(guid, now + Duration::seconds(60));
    load_session.purpose = Purpose::Load;
    let old1 = session(guid, now - Duration::seconds(1));
    let old2 = session(guid, now - Duration::hours(1));
    for s in [&fresh, &load_session, &old1, &old2] {
        store.put_session(s).await.unwrap();
    }
    // Single use.
    let got = store.take_session(fresh.session_id).await.unwrap().unwrap();
    assert_eq!(got.session_id, fresh.session_id);
    assert_eq!(got.license_guid, fresh.license_guid);
    assert_eq!(got.purpose, Purpose::Renew);
    assert_eq!(got.nonce, fresh.nonce);
    assert_eq!(got.client_cert_sha256, fresh.client_cert_sha256);
    assert_eq!(got.ek_cert_sha256, fresh.ek_cert_sha256);
    assert_eq!(got.ak_name, fresh.ak_name);
    assert_eq!(*got.credential_secret, *fresh.credential_secret);
    assert_eq!(got.expires_at, fresh.expires_at);
    assert!(store
        .take_session(fresh.session_id)
        .await
        .unwrap()
        .is_none());
    assert!(store.take_session(Uuid::new_v4()).await.unwrap().is_none());
    // Purge removes exactly the expired ones.
    assert_eq!(store.purge_sessions(now).await.unwrap(), 2);
    assert_eq!(store.purge_sessions(now).await.unwrap(), 0);
    assert!(store.take_session(old1.session_id).await.unwrap().is_none());
    let got = store
        .take_session(load_session.session_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.purpose, Purpose::Load);
}

async fn usage_limit_reached_exactly_at_n(db: TestDb) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    let lic = license(perpetual(Some(3), None), now);
    let guid = lic.license_guid;
    store.add_license(&lic).await.unwrap();
    let vm = random32();
    for n in 1..=3u64 {
        match load(&store, guid, vm, now + Duration::seconds(n as i64)).await {
            Decision::Grant {
                uses,
                first_use,
                not_after,
                ..
            } => {
                assert_eq!(uses, n);
                assert_eq!(secs(first_use), secs(now + Duration::seconds(1)));
                assert_eq!(not_after, None);
            }
            d => panic!("load {n}: {d:?}"),
        }
        assert_eq!(uses(&store, guid).await, n);
    }
    assert_eq!(
        load(&store, guid, vm, now + Duration::seconds(10)).await,
        Decision::Refuse(Reason::UsageLimitReached)
    );
    assert_eq!(uses(&store, guid).await, 3);
    // A renewal of the loaded model still passes and spends nothing.
    let renew = check(
        &store,
        guid,
        vm,
        Purpose::Renew,
        now + Duration::seconds(11),
    )
    .await;
    assert!(
        matches!(renew, Some(Decision::Grant { uses: 3, .. })),
        "{renew:?}"
    );
    let rec = store.license(guid).await.unwrap().unwrap();
    assert_eq!(rec.uses, 3);
    assert_eq!(rec.first_use, Some(secs(now + Duration::seconds(1))));
    let acts = store.activations(guid).await.unwrap();
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].instance_id, vm);
    assert_eq!(
        acts[0].checks, 4,
        "3 loads + 1 renewal; the refusal is not counted"
    );
    assert_eq!(acts[0].first_seen, secs(now + Duration::seconds(1)));
    assert_eq!(acts[0].last_seen, secs(now + Duration::seconds(11)));
}

async fn instance_limit(db: TestDb) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    let lic = license(perpetual(None, Some(2)), now);
    let guid = lic.license_guid;
    store.add_license(&lic).await.unwrap();
    let (a, b, c) = (random32(), random32(), random32());
    assert!(granted(&load(&store, guid, a, now).await));
    assert!(granted(&load(&store, guid, b, now).await));
    assert_eq!(
        load(&store, guid, c, now).await,
        Decision::Refuse(Reason::InstanceLimitReached)
    );
    // Known machines keep working.
    assert!(granted(&load(&store, guid, a, now).await));
    assert!(granted(&load(&store, guid, b, now).await));
    let mut acts: Vec<_> = store
        .activations(guid)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.instance_id, a.checks))
        .collect();
    acts.sort();
    let mut want = vec![(a, 2), (b, 2)];
    want.sort();
    assert_eq!(acts, want);
    assert_eq!(uses(&store, guid).await, 4);
}

async fn days_from_first_use_expiry(db: TestDb) {
    let store = db.open().await;
    let t0 = secs(OffsetDateTime::now_utc()) - Duration::days(100);
    let lic = license(
        policy(Validity::DaysFromFirstUse { days: 30 }, None, None),
        t0 - Duration::days(1),
    );
    let guid = lic.license_guid;
    store.add_license(&lic).await.unwrap();
    let vm = random32();
    match load(&store, guid, vm, t0).await {
        Decision::Grant {
            first_use,
            not_after,
            ..
        } => {
            assert_eq!(first_use, t0);
            assert_eq!(not_after, Some(t0 + Duration::days(30)));
        }
        d => panic!("{d:?}"),
    }
    // Later checks keep the first use.
    match load(&store, guid, vm, t0 + Duration::days(29)).await {
        Decision::Grant { first_use, .. } => assert_eq!(first_use, t0),
        d => panic!("{d:?}"),
    }
    let last = t0 + Duration::days(30) - Duration::seconds(1);
    assert!(granted(&load(&store, guid, vm, last).await));
    assert_eq!(
        load(&store, guid, vm, t0 + Duration::days(30)).await,
        Decision::Refuse(Reason::LicenseExpired)
    );
    assert_eq!(
        check(&store, guid, vm, Purpose::Renew, t0 + Duration::days(31)).await,
        Some(Decision::Refuse(Reason::LicenseExpired))
    );
    let rec = store.license(guid).await.unwrap().unwrap();
    assert_eq!(rec.first_use, Some(t0));
    assert_eq!(rec.uses, 3);
}

async fn unknown_license(db: TestDb) {
    let store = db.open().await;
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        check(&store, Uuid::new_v4(), random32(), Purpose::Load, now).await,
        None
    );
    // The store stays usable after the early return (transaction closed).
    let lic = license(perpetual(Some(1), None), now);
    store.add_license(&lic).await.unwrap();
    assert!(granted(
        &load(&store, lic.license_guid, random32(), now).await
    ));
}

async fn audit_append_filter_limit(db: TestDb) {
    let store = db.open().await;
    let now = secs(OffsetDateTime::now_utc());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let entry = |i: i64, guid: Option<Uuid>| AuditEntry {
        at: now + Duration::seconds(i),
        license_guid: guid,
        client: format!("CN=customer {i} / sha256:{}", hex::encode([i as u8; 32])),
        action: if i % 2 == 0 { "challenge" } else { "attest" }.into(),
        purpose: guid.map(|_| {
            if i % 3 == 0 {
                Purpose::Renew
            } else {
                Purpose::Load
            }
        }),
        result: if i == 4 { "refused" } else { "granted" }.into(),
        reason: (i == 4).then_some(Reason::UsageLimitReached),
        message: format!("entry {i}"),
        instance_id: (i % 2 == 1).then(random32),
    };
    let entries = vec![
        entry(0, Some(a)),
        entry(1, Some(b)),
        entry(2, Some(a)),
        entry(3, None),
        entry(4, Some(a)),
        entry(5, Some(b)),
    ];
    for e in &entries {
        store.append_audit(e).await.unwrap();
    }
    let newest_first = |pick: &dyn Fn(&AuditEntry) -> bool| -> Vec<AuditEntry> {
        entries.iter().rev().filter(|e| pick(e)).cloned().collect()
    };
    let all = store.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(all, newest_first(&|_| true));
    let only_a = store
        .audit(&AuditFilter {
            license_guid: Some(a),
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(only_a, newest_first(&|e| e.license_guid == Some(a)));
    let two = store
        .audit(&AuditFilter {
            license_guid: Some(a),
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(two, only_a[..2].to_vec());
    let last = store
        .audit(&AuditFilter {
            license_guid: None,
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(last, vec![entries[5].clone()]);
    assert!(store
        .audit(&AuditFilter {
            license_guid: Some(Uuid::new_v4()),
            limit: 10,
        })
        .await
        .unwrap()
        .is_empty());
}

async fn schema_too_new_is_refused(db: TestDb) {
    // Opening twice is idempotent (no second migration).
    drop(db.open().await);
    drop(db.open().await);
    let newer = SCHEMA_VERSION + 1;
    let sql = format!("INSERT INTO schema_version (version, applied_at) VALUES ({newer}, 0)");
    match db.backend {
        Backend::Sqlite => {
            let path = db.url.strip_prefix("sqlite:").unwrap();
            let conn = rusqlite::Connection::open(path).unwrap();
            let versions: i64 = conn
                .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(versions, SCHEMA_VERSION);
            conn.execute_batch(&sql).unwrap();
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let versions: i64 = client
                .query_one("SELECT COUNT(*) FROM schema_version", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(versions, SCHEMA_VERSION);
            client.batch_execute(&sql).await.unwrap();
        }
    }
    match Store::open(&db.url).await {
        Err(e @ StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (newer, SCHEMA_VERSION));
            assert!(e.to_string().contains("upgrade"), "{e}");
        }
        Err(e) => panic!("expected SchemaTooNew, got {e}"),
        Ok(_) => panic!("expected SchemaTooNew, the store opened"),
    }
}

/// Runs one SQL statement on the raw database and returns the first column of its first row
/// as an integer, if it returns a row.
async fn raw_sql(db: &TestDb, sql: &str) -> Option<i64> {
    match db.backend {
        Backend::Sqlite => {
            let path = db.url.strip_prefix("sqlite:").unwrap();
            let conn = rusqlite::Connection::open(path).unwrap();
            let mut st = conn.prepare(sql).unwrap();
            let mut rows = st.query([]).unwrap();
            rows.next().unwrap().map(|r| r.get::<_, i64>(0).unwrap())
        }
        Backend::Postgres => {
            let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let rows = client.query(sql, &[]).await.unwrap();
            rows.first().map(|r| r.get::<_, i64>(0))
        }
    }
}

/// Whether the database holds a `schema_version` table.
async fn has_schema(db: &TestDb) -> bool {
    match db.backend {
        Backend::Sqlite => {
            let path = db.url.strip_prefix("sqlite:").unwrap();
            if !std::path::Path::new(path).exists() {
                return false;
            }
            raw_sql(
                db,
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_version'",
            )
            .await
                == Some(1)
        }
        Backend::Postgres => {
            raw_sql(
                db,
                "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'schema_version'",
            )
            .await
                == Some(1)
        }
    }
}

/// `license list|show|audit` open read-only: a missing (or empty) database is an error and
/// stays missing (nothing created, no migration), an older schema is reported (not upgraded),
/// and every write through a read-only store fails. `Existing` (revoke/reinstate) needs the
/// database too, but upgrades its schema.
async fn read_only_open_creates_migrates_and_writes_nothing(db: TestDb) {
    for mode in [OpenMode::ReadOnly, OpenMode::Existing] {
        match Store::open_with(&db.url, mode).await {
            Err(e @ (StoreError::Missing(_) | StoreError::NotInitialised(_))) => {
                let msg = e.to_string();
                assert!(msg.contains("--db") && msg.contains("serve"), "{msg}");
            }
            Err(e) => panic!("{mode:?}: expected Missing/NotInitialised, got {e}"),
            Ok(_) => panic!("{mode:?} opened a database that does not exist"),
        }
        assert!(!has_schema(&db).await, "{mode:?} set up a schema");
    }
    if db.backend == Backend::Sqlite {
        let path = db.url.strip_prefix("sqlite:").unwrap();
        assert!(!std::path::Path::new(path).exists(), "a file was created");
    }

    let now = OffsetDateTime::now_utc();
    let lic = license(perpetual(Some(3), None), now);
    {
        let store = db.open().await;
        store.add_license(&lic).await.unwrap();
    }
    let ro = Store::open_with(&db.url, OpenMode::ReadOnly).await.unwrap();
    assert_eq!(ro.list_licenses().await.unwrap().len(), 1);
    assert!(ro.license(lic.license_guid).await.unwrap().is_some());
    assert!(ro.audit(&AuditFilter::default()).await.unwrap().is_empty());
    let entry = AuditEntry {
        at: now,
        license_guid: None,
        client: "admin".into(),
        action: "add".into(),
        purpose: None,
        result: "ok".into(),
        reason: None,
        message: "must not be written".into(),
        instance_id: None,
    };
    assert!(
        ro.append_audit(&entry).await.is_err(),
        "a read-only store wrote"
    );
    assert!(!ro.revoke(lic.license_guid, now).await.unwrap_or(false));
    drop(ro);
    assert_eq!(raw_sql(&db, "SELECT COUNT(*) FROM audit").await, Some(0));
    assert_eq!(
        raw_sql(
            &db,
            "SELECT COUNT(*) FROM licenses WHERE revoked_at IS NULL"
        )
        .await,
        Some(1)
    );

    // An older schema (the last migration, seats and TPM clocks, undone): read-only reports it
    // and leaves it; Existing upgrades it.
    raw_sql(&db, "DROP TABLE seat_leases").await;
    raw_sql(&db, "DROP TABLE tpm_clocks").await;
    raw_sql(&db, "ALTER TABLE licenses DROP COLUMN grace_seconds").await;
    raw_sql(
        &db,
        &format!("DELETE FROM schema_version WHERE version = {SCHEMA_VERSION} RETURNING version"),
    )
    .await;
    match Store::open_with(&db.url, OpenMode::ReadOnly).await {
        Err(e @ StoreError::SchemaTooOld { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION - 1, SCHEMA_VERSION));
            let msg = e.to_string();
            assert!(msg.contains("older") && msg.contains("serve"), "{msg}");
        }
        Err(e) => panic!("expected SchemaTooOld, got {e}"),
        Ok(_) => panic!("read-only opened an older schema"),
    }
    let max = "SELECT MAX(version) FROM schema_version";
    assert_eq!(raw_sql(&db, max).await, Some(SCHEMA_VERSION - 1));
    drop(Store::open_with(&db.url, OpenMode::Existing).await.unwrap());
    assert_eq!(raw_sql(&db, max).await, Some(SCHEMA_VERSION));
}

async fn reopen_sees_the_data(db: TestDb) {
    let now = OffsetDateTime::now_utc();
    let lic = license(perpetual(Some(5), None), now);
    let vm = random32();
    {
        let store = db.open().await;
        store.add_license(&lic).await.unwrap();
        assert!(granted(&load(&store, lic.license_guid, vm, now).await));
        store
            .put_session(&session(lic.license_guid, now))
            .await
            .unwrap();
    }
    let store = db.open().await;
    let rec = store.license(lic.license_guid).await.unwrap().unwrap();
    assert_eq!(rec.uses, 1);
    assert_eq!(rec.first_use, Some(secs(now)));
    assert_eq!(*rec.key_share, *lic.key_share);
    assert_eq!(store.activations(lic.license_guid).await.unwrap().len(), 1);
    assert!(matches!(
        load(&store, lic.license_guid, vm, now).await,
        Decision::Grant { uses: 2, .. }
    ));
    if db.backend == Backend::Sqlite {
        // The file holds key shares: private to its owner.
        use std::os::unix::fs::PermissionsExt;
        let path = db.url.strip_prefix("sqlite:").unwrap();
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrency

/// `tasks` tasks x `per_task` loads on `guid`, spread round-robin over `stores`; each task is
/// one machine. Returns the number of grants and each check's latency.
async fn hammer(
    stores: &[Arc<Store>],
    guid: Uuid,
    tasks: usize,
    per_task: usize,
) -> (u64, Vec<StdDuration>) {
    let grants = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = Arc::clone(&stores[t % stores.len()]);
        let grants = Arc::clone(&grants);
        handles.push(tokio::spawn(async move {
            let vm = random32();
            let mut lat = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let now = OffsetDateTime::now_utc();
                let start = Instant::now();
                let d = load(&store, guid, vm, now).await;
                lat.push(start.elapsed());
                match d {
                    Decision::Grant { .. } => {
                        grants.fetch_add(1, Ordering::Relaxed);
                    }
                    Decision::Refuse(Reason::UsageLimitReached) => {}
                    d => panic!("unexpected {d:?}"),
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.expect("task"));
    }
    (grants.load(Ordering::Relaxed), lat)
}

async fn concurrent_checks_spend_exactly_the_limit(db: TestDb) {
    let store = Arc::new(db.open().await);
    let now = OffsetDateTime::now_utc();
    let (tasks, per_task, limit) = (8, 25, 50);
    let lic = license(perpetual(Some(limit), None), now);
    store.add_license(&lic).await.unwrap();
    let (grants, _) = hammer(&[Arc::clone(&store)], lic.license_guid, tasks, per_task).await;
    assert_eq!(grants, limit);
    assert_eq!(uses(&store, lic.license_guid).await, limit);
    let acts = store.activations(lic.license_guid).await.unwrap();
    assert_eq!(acts.iter().map(|a| a.checks).sum::<u64>(), limit);
}

async fn two_replicas_race_for_the_last_use(db: TestDb) {
    // Two independent stores (connections/pools) on one database, like two service replicas.
    let r1 = Arc::new(db.open().await);
    let r2 = Arc::new(db.open().await);
    let now = OffsetDateTime::now_utc();
    for round in 0..3 {
        let lic = license(perpetual(Some(1), None), now);
        r1.add_license(&lic).await.unwrap();
        let stores = [Arc::clone(&r1), Arc::clone(&r2)];
        let (grants, _) = hammer(&stores, lic.license_guid, 16, 4).await;
        assert_eq!(
            grants, 1,
            "round {round}: exactly one replica wins the last use"
        );
        assert_eq!(uses(&r2, lic.license_guid).await, 1);
        assert_eq!(uses(&r1, lic.license_guid).await, 1);
    }
}

async fn interrupted_check_leaves_nothing_locked(db: TestDb) {
    // A check whose caller goes away mid-transaction (here: the decide closure panics) must roll
    // back and release its locks at once, for this store and for other replicas.
    let r1 = Arc::new(db.open().await);
    let r2 = db.open().await;
    let now = OffsetDateTime::now_utc();
    let lic = license(perpetual(Some(5), None), now);
    let guid = lic.license_guid;
    r1.add_license(&lic).await.unwrap();
    let store = Arc::clone(&r1);
    let crashed = tokio::spawn(async move {
        store
            .record_use(guid, &seat(random32()), now, &|_| {
                panic!("decide interrupted (expected)")
            })
            .await
    })
    .await;
    assert!(crashed.unwrap_err().is_panic());
    let quick = StdDuration::from_secs(2);
    for store in [&r2, &*r1] {
        let d = tokio::time::timeout(quick, load(store, guid, random32(), now))
            .await
            .expect("no lock left behind");
        assert!(granted(&d));
    }
    assert_eq!(uses(&r2, guid).await, 2);
}

fn percentile(sorted: &[StdDuration], p: f64) -> StdDuration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn throughput_8_concurrent(db: TestDb) {
    let store = Arc::new(db.open().await);
    let now = OffsetDateTime::now_utc();
    let lic = license(perpetual(None, None), now);
    store.add_license(&lic).await.unwrap();
    let (tasks, per_task) = (8, 150);
    // Warm up (prepared statements, pool connections).
    hammer(&[Arc::clone(&store)], lic.license_guid, tasks, 5).await;
    let start = Instant::now();
    let (grants, mut lat) = hammer(&[Arc::clone(&store)], lic.license_guid, tasks, per_task).await;
    let wall = start.elapsed();
    let total = (tasks * per_task) as u64;
    assert_eq!(grants, total);
    assert_eq!(
        uses(&store, lic.license_guid).await,
        total + (tasks * 5) as u64
    );
    lat.sort();
    eprintln!(
        "record_use {:?}: {} tasks x {} checks: {:.0} checks/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        db.backend,
        tasks,
        per_task,
        total as f64 / wall.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3,
    );
}

// ---------------------------------------------------------------------------------------------
// Backend-specific

#[tokio::test]
async fn sqlite_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("no/such/dir/l.db").display());
    match Store::open(&url).await {
        Err(e @ StoreError::Open { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("does not exist"), "{msg}");
        }
        Err(e) => panic!("expected Open, got {e}"),
        Ok(_) => panic!("opened a database in a missing directory"),
    }
}

#[tokio::test]
async fn postgres_unreachable_is_an_error() {
    // Nothing listens on port 1.
    let r = tokio::time::timeout(
        StdDuration::from_secs(20),
        Store::open("postgres://postgres@127.0.0.1:1/x"),
    )
    .await
    .expect("fails fast");
    match r {
        Err(e @ StoreError::Postgres(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("connect") && msg.contains("refused"), "{msg}");
        }
        Err(e) => panic!("expected a PostgreSQL error, got {e}"),
        Ok(_) => panic!("connected to port 1"),
    }
}

#[tokio::test]
async fn postgres_server_errors_are_described_without_detail() {
    let server = common::pg::shared();
    let e = Store::open(&server.url("no_such_database"))
        .await
        .err()
        .expect("no such database");
    let msg = e.to_string();
    assert!(
        msg.contains("does not exist") && msg.contains("SQLSTATE 3D000"),
        "{msg}"
    );
    // A constraint violation's DETAIL quotes the failing row (key share included): not shown.
    let url = server.create_database();
    let store = Store::open(&url).await.unwrap();
    let lic = license(perpetual(None, None), OffsetDateTime::now_utc());
    store.add_license(&lic).await.unwrap();
    let db = url.rsplit('/').next().unwrap();
    server
        .psql(
            db,
            "ALTER TABLE licenses ADD CONSTRAINT tiny_uses CHECK (uses < 1) NOT VALID",
        )
        .unwrap();
    let e = store
        .record_use(
            lic.license_guid,
            &seat(random32()),
            OffsetDateTime::now_utc(),
            &|s| decide(s, Purpose::Load, OffsetDateTime::now_utc()),
        )
        .await
        .expect_err("check constraint violated");
    let msg = e.to_string();
    assert!(msg.contains("tiny_uses"), "{msg}");
    assert!(!msg.contains("Failing row"), "{msg}");
    assert!(!msg.contains(&hex::encode(&lic.key_share[..])), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_migrating_together() {
    // Several replicas starting at once on an empty database: the advisory lock serialises the
    // migrations, every one of them opens.
    let url = common::pg::shared().create_database();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::open(&url).await.map(|_| ()) })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap();
    }
    let versions = common::pg::shared()
        .psql(
            url.rsplit('/').next().unwrap(),
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_version",
        )
        .unwrap();
    // Each migration applied exactly once.
    let all: Vec<String> = (1..=SCHEMA_VERSION).map(|v| v.to_string()).collect();
    assert_eq!(versions, all.join(","));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_openers_migrating_together() {
    let db = TestDb::sqlite();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { Store::open(&url).await.map(|_| ()) })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Figures (run with `-- --ignored --nocapture`)

/// What a benchmark checks against.
enum Target {
    Store(Store),
    Pg(ovsa_license_server::store::postgres::PgStore),
}

impl Target {
    async fn load(&self, guid: Uuid, vm: [u8; 32]) -> Decision {
        let now = OffsetDateTime::now_utc();
        let decide = |s: &_| decide(s, Purpose::Load, now);
        match self {
            Target::Store(s) => s.record_use(guid, &seat(vm), now, &decide).await,
            Target::Pg(p) => p.record_use(guid, &seat(vm), now, &decide).await,
        }
        .expect("record_use")
        .expect("known license")
    }
}

/// 8 tasks x `per_task` loads; `spread`: each task on its own license, else all on one.
async fn figures(label: &str, target: Target, add: &Store, spread: bool, per_task: usize) {
    let tasks = 8;
    let now = OffsetDateTime::now_utc();
    let guids: Vec<Uuid> = (0..if spread { tasks } else { 1 })
        .map(|_| Uuid::new_v4())
        .collect();
    for g in &guids {
        let mut lic = license(perpetual(None, None), now);
        lic.license_guid = *g;
        add.add_license(&lic).await.unwrap();
    }
    let target = Arc::new(target);
    let run = |n: usize| {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (target, guid) = (Arc::clone(&target), guids[t % guids.len()]);
                tokio::spawn(async move {
                    let vm = random32();
                    let mut lat = Vec::with_capacity(n);
                    for _ in 0..n {
                        let start = Instant::now();
                        assert!(granted(&target.load(guid, vm).await));
                        lat.push(start.elapsed());
                    }
                    lat
                })
            })
            .collect();
        async move {
            let mut lat = Vec::new();
            for h in handles {
                lat.extend(h.await.unwrap());
            }
            lat
        }
    };
    run(10).await;
    let start = Instant::now();
    let mut lat = run(per_task).await;
    let wall = start.elapsed();
    let mut total = 0;
    for g in &guids {
        total += uses(add, *g).await;
    }
    assert_eq!(total, (tasks * (per_task + 10)) as u64);
    lat.sort();
    eprintln!(
        "{label:<34} {:<10} {:>6.0} checks/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
        if spread { "8 licenses" } else { "1 license" },
        lat.len() as f64 / wall.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "prints figures; slow"]
async fn record_use_figures() {
    use ovsa_license_server::store::postgres::PgStore;
    let per_task = 250;
    for spread in [false, true] {
        let db = TestDb::sqlite();
        let add = db.open().await;
        figures(
            "sqlite",
            Target::Store(db.open().await),
            &add,
            spread,
            per_task,
        )
        .await;
    }
    let durable = common::pg::PgServer::start_with(&[
        ("fsync", "on"),
        ("synchronous_commit", "on"),
        ("full_page_writes", "on"),
    ])
    .unwrap();
    for (name, server) in [("fsync off", common::pg::shared()), ("fsync on", &durable)] {
        for pool in [1, 2, 4, 8] {
            for spread in [false, true] {
                let url = server.create_database();
                let add = Store::open(&url).await.unwrap();
                let pg = PgStore::connect_with_pool(&url, pool).await.unwrap();
                let label = format!("postgres {name}, pool {pool}");
                figures(&label, Target::Pg(pg), &add, spread, per_task).await;
            }
        }
    }
}
