//! PostgreSQL backend for a fleet of stateless replicas sharing one database.
//!
//! - Connections: a `deadpool-postgres` pool of at most [`POOL_SIZE`] `tokio-postgres` clients
//!   per store, opened on demand and replaced when they break; each client caches its prepared
//!   statements (`prepare_cached`). A client is held exclusively for one operation (a transaction
//!   must not interleave with other callers' statements), so concurrent requests run in parallel
//!   up to the pool size. `docs/SERVICE.md` §5 has the figures behind the choice.
//! - Migrations run at connect inside one transaction holding a transaction-scoped advisory lock,
//!   so replicas starting together apply them once, in order.
//! - [`PgStore::record_use`] locks the license row (`SELECT ... FOR UPDATE`) in a `READ COMMITTED`
//!   transaction: concurrent checks of one license, from any replica, queue on that row lock; then
//!   the vTPM EK's clock high-water mark row (checks of one EK on several licenses queue there).
//!   The live seats are counted by later statements of the same transaction, so they see
//!   everything the previous lock holders committed. Dropping the future mid-way rolls the
//!   transaction back.
//! - No TLS: the database is expected on loopback or a private link (`NoTls`).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use time::OffsetDateTime;
use tokio_postgres::{Config, NoTls, Row};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::codec::{self, RawActivation, RawAudit, RawLicense, RawSeats, RawSession, RawUsage};
use super::{
    Activation, AuditEntry, AuditFilter, ClockMark, HostSeen, Lease, LicenseRecord, OpenMode,
    SeatRequest, SessionRecord, StoreError, StoreResult, SCHEMA_VERSION,
};
use crate::relying_party::{Decision, UsageState};
use ovsa_core::attest::HostSighting;

/// Clients per store (per replica). With 8 concurrent checks and durable commits, more clients
/// let PostgreSQL group-commit checks of distinct licenses (see `record_use_figures` in the
/// storage tests and `docs/SERVICE.md` §5). Checks of one license queue on its row lock
/// whatever the pool size.
pub const POOL_SIZE: usize = 8;

/// Advisory lock key serialising migrations ("OVSA" "MIGR" in ASCII).
const MIGRATION_LOCK: i64 = 0x4f56_5341_4d49_4752;

/// Numbered migrations, one `.sql` file each under `store/migrations/postgres/` (embedded at build
/// time): `MIGRATIONS[i]` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    include_str!("migrations/postgres/0001_init.sql"),
    // 2: host AKs proven (credential challenge) to live in the host TPM owning the EK.
    include_str!("migrations/postgres/0002_host_aks.sql"),
    // 3: host evidence seen per host EK (age and replay checks).
    include_str!("migrations/postgres/0003_host_evidence.sql"),
    // 4: live seats (leases) and per-EK TPM clock high-water marks.
    include_str!("migrations/postgres/0004_seats.sql"),
];

const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

macro_rules! license_columns {
    () => {
        "license_guid, model_guid, model_name, model_version, header_hash, license_digest, \
         customer_cert, isv_cert_sha256, policy, lease_seconds, tcb, key_share, issued, \
         registered_at, revoked_at, first_use, uses, grace_seconds"
    };
}
macro_rules! session_columns {
    () => {
        "session_id, license_guid, purpose, nonce, client_cert_sha256, ek_cert_sha256, ak_name, \
         credential_secret, expires_at"
    };
}
macro_rules! audit_columns {
    () => {
        "at, license_guid, client, action, purpose, result, reason, message, instance_id"
    };
}

const ADD_LICENSE: &str = concat!(
    "INSERT INTO licenses (",
    license_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
     ON CONFLICT (license_guid) DO NOTHING"
);
const GET_LICENSE: &str = concat!(
    "SELECT ",
    license_columns!(),
    " FROM licenses WHERE license_guid = $1"
);
const LIST_LICENSES: &str = concat!(
    "SELECT ",
    license_columns!(),
    " FROM licenses ORDER BY registered_at, license_guid"
);
const ACTIVATIONS: &str = "SELECT instance_id, first_seen, last_seen, checks FROM activations \
     WHERE license_guid = $1 ORDER BY first_seen, instance_id";
const REVOKE: &str =
    "UPDATE licenses SET revoked_at = COALESCE(revoked_at, $2) WHERE license_guid = $1";
const REINSTATE: &str = "UPDATE licenses SET revoked_at = NULL WHERE license_guid = $1";
const ENROLL_HOST_AK: &str =
    "INSERT INTO host_aks (host_ek_sha256, ak_name, license_guid, enrolled_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (host_ek_sha256, ak_name) \
     DO UPDATE SET license_guid = EXCLUDED.license_guid, enrolled_at = EXCLUDED.enrolled_at";
const HOST_AKS: &str =
    "SELECT ak_name FROM host_aks WHERE host_ek_sha256 = $1 ORDER BY enrolled_at";
const HOST_EVIDENCE_HIGHEST: &str =
    "SELECT MAX(reset_count) FROM host_evidence_seen WHERE host_ek_sha256 = $1";
const HOST_EVIDENCE_INSERT: &str = "INSERT INTO host_evidence_seen \
     (host_ek_sha256, reset_count, restart_count, clock, first_seen) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
const HOST_EVIDENCE_PRUNE: &str =
    "DELETE FROM host_evidence_seen WHERE host_ek_sha256 = $1 AND reset_count < $2";
const HOST_EVIDENCE_FIRST_SEEN: &str = "SELECT MIN(first_seen) FROM host_evidence_seen \
     WHERE host_ek_sha256 = $1 AND reset_count = $2 \
     AND (restart_count > $3 OR (restart_count = $3 AND clock >= $4))";
const PUT_SESSION: &str = concat!(
    "INSERT INTO sessions (",
    session_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
);
const TAKE_SESSION: &str = concat!(
    "DELETE FROM sessions WHERE session_id = $1 RETURNING ",
    session_columns!()
);
const PURGE_SESSIONS: &str = "DELETE FROM sessions WHERE expires_at < $1";
const LOCK_LICENSE: &str = "SELECT policy, revoked_at, first_use, uses, lease_seconds, \
     grace_seconds FROM licenses WHERE license_guid = $1 FOR UPDATE";
const LOCK_TPM_CLOCK: &str = "SELECT reset_count, restart_count, clock FROM tpm_clocks \
     WHERE instance_id = $1 FOR UPDATE";
const TPM_CLOCK: &str =
    "SELECT reset_count, restart_count, clock FROM tpm_clocks WHERE instance_id = $1";
const COUNT_SEATS: &str = "SELECT COUNT(DISTINCT instance_id), \
     COUNT(*) FILTER (WHERE instance_id = $2) \
     FROM seat_leases WHERE license_guid = $1 AND expires_at > $3";
const COUNT_OTHER_LEASES: &str = "SELECT COUNT(*) FROM seat_leases \
     WHERE instance_id = $1 AND expires_at > $2 AND NOT (license_guid = $3 AND lease_id = $4)";
const END_OLDER_EPOCHS: &str =
    "DELETE FROM seat_leases WHERE instance_id = $1 AND reset_count < $2";
const PURGE_LAPSED: &str = "DELETE FROM seat_leases WHERE license_guid = $1 AND expires_at <= $2";
const UPSERT_LEASE: &str = "INSERT INTO seat_leases \
     (license_guid, lease_id, instance_id, reset_count, taken_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (license_guid, lease_id) DO UPDATE SET \
     instance_id = EXCLUDED.instance_id, reset_count = EXCLUDED.reset_count, \
     expires_at = EXCLUDED.expires_at";
const UPSERT_TPM_CLOCK: &str = "INSERT INTO tpm_clocks \
     (instance_id, reset_count, restart_count, clock, seen_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (instance_id) DO UPDATE SET reset_count = EXCLUDED.reset_count, \
     restart_count = EXCLUDED.restart_count, clock = EXCLUDED.clock, seen_at = EXCLUDED.seen_at \
     WHERE (EXCLUDED.reset_count, EXCLUDED.restart_count, EXCLUDED.clock) \
     > (tpm_clocks.reset_count, tpm_clocks.restart_count, tpm_clocks.clock)";
const RELEASE_LEASE: &str = "DELETE FROM seat_leases WHERE license_guid = $1 AND lease_id = $2";
const LIVE_LEASES: &str = "SELECT lease_id, instance_id, reset_count, expires_at FROM seat_leases \
     WHERE license_guid = $1 AND expires_at > $2 ORDER BY taken_at, lease_id";
const SET_USES: &str = "UPDATE licenses SET uses = $2, first_use = COALESCE(first_use, $3) \
     WHERE license_guid = $1";
const UPSERT_ACTIVATION: &str =
    "INSERT INTO activations (license_guid, instance_id, first_seen, last_seen, checks) \
     VALUES ($1, $2, $3, $3, 1) ON CONFLICT (license_guid, instance_id) \
     DO UPDATE SET last_seen = EXCLUDED.last_seen, checks = activations.checks + 1";
const APPEND_AUDIT: &str = concat!(
    "INSERT INTO audit (",
    audit_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
);
const AUDIT_ALL: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit ORDER BY id DESC LIMIT $1"
);
const AUDIT_LICENSE: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit WHERE license_guid = $1 ORDER BY id DESC LIMIT $2"
);

type SqlParam = dyn tokio_postgres::types::ToSql + Sync;

/// The PostgreSQL store.
pub struct PgStore {
    /// deadpool-postgres: at most `pool_size` clients, connected on demand, a broken one
    /// replaced on the next checkout (`RecyclingMethod::Fast`), each with its own statement
    /// cache (`prepare_cached`).
    pool: Pool,
    /// For `Debug` (host and database names; never printed with the password).
    config: Box<Config>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish_non_exhaustive()
    }
}

/// A pool failure: the connection error itself when connecting failed (so it reads like any
/// other PostgreSQL error), otherwise what the pool reported.
fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => StoreError::Postgres(e),
        other => StoreError::Task(format!("PostgreSQL connection pool: {other}")),
    }
}

/// A PostgreSQL error for operators: the server's severity, message and SQLSTATE, or the client
/// error with its causes (e.g. "error connecting to server: Connection refused"). The server's
/// DETAIL is left out on purpose: for constraint violations it quotes the failing row, which can
/// hold a key share or credential secret.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

impl PgStore {
    /// Connects to `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (no TLS) and brings the schema up
    /// to [`SCHEMA_VERSION`].
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        Self::connect_with_pool(url, POOL_SIZE).await
    }

    /// [`PgStore::connect`] with `pool_size` clients (at least 1) instead of [`POOL_SIZE`].
    pub async fn connect_with_pool(url: &str, pool_size: usize) -> StoreResult<PgStore> {
        Self::connect_with_mode(url, pool_size, OpenMode::Create).await
    }

    /// [`PgStore::connect_with_pool`] in `mode`: [`OpenMode::Create`] and [`OpenMode::Existing`]
    /// migrate (the latter only a database that already holds the schema);
    /// [`OpenMode::ReadOnly`] never migrates, checks the schema version and runs every session
    /// with `default_transaction_read_only = on`, so any write fails.
    pub async fn connect_with_mode(
        url: &str,
        pool_size: usize,
        mode: OpenMode,
    ) -> StoreResult<PgStore> {
        let pool_size = pool_size.max(1);
        let mut config: Config = url
            .parse()
            .map_err(|_| StoreError::BadUrl(super::redact_url(url)))?;
        if mode == OpenMode::ReadOnly {
            let options = match config.get_options() {
                Some(o) => format!("{o} -c default_transaction_read_only=on"),
                None => "-c default_transaction_read_only=on".to_string(),
            };
            config.options(options);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("ovsa-license-server");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .build()
            .map_err(|e| StoreError::Task(format!("PostgreSQL connection pool: {e}")))?;
        let store = PgStore {
            pool,
            config: Box::new(config),
        };
        match mode {
            OpenMode::Create => store.migrate().await?,
            OpenMode::Existing => {
                store.schema_version(url).await?;
                store.migrate().await?;
            }
            OpenMode::ReadOnly => {
                codec::check_version(store.schema_version(url).await?)?;
            }
        }
        Ok(store)
    }

    /// A client from the pool, exclusively held until dropped (a transaction must not interleave
    /// with other callers' statements).
    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// The schema version in the database, without changing anything;
    /// [`StoreError::NotInitialised`] if it holds no schema.
    async fn schema_version(&self, url: &str) -> StoreResult<i64> {
        let c = self.client().await?;
        let exists: bool = c
            .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
            .await?
            .try_get(0)?;
        if !exists {
            return Err(StoreError::NotInitialised(super::redact_url(url)));
        }
        Ok(c.query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version",
            &[],
        )
        .await?
        .try_get(0)?)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
             CREATE TABLE IF NOT EXISTS schema_version (
                version    BIGINT PRIMARY KEY,
                applied_at BIGINT NOT NULL
             );"
        ))
        .await?;
        let found: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version",
                &[],
            )
            .await?
            .try_get(0)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let now = codec::ts(OffsetDateTime::now_utc());
        for (from, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(codec::version_index(found)?)
        {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                &[&(from as i64 + 1), &now],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Registers a license; [`StoreError::Duplicate`] if its GUID is taken.
    pub async fn add_license(&self, rec: &LicenseRecord) -> StoreResult<()> {
        let r = RawLicense::encode(rec)?;
        let c = self.client().await?;
        let st = c.prepare_cached(ADD_LICENSE).await?;
        let n = c
            .execute(
                &st,
                &[
                    &r.license_guid,
                    &r.model_guid,
                    &r.model_name,
                    &r.model_version,
                    &r.header_hash,
                    &r.license_digest,
                    &r.customer_cert,
                    &r.isv_cert_sha256,
                    &r.policy,
                    &r.lease_seconds,
                    &r.tcb,
                    &&r.key_share[..],
                    &r.issued,
                    &r.registered_at,
                    &r.revoked_at,
                    &r.first_use,
                    &r.uses,
                    &r.grace_seconds,
                ],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::Duplicate(rec.license_guid));
        }
        Ok(())
    }

    /// One license.
    pub async fn license(&self, guid: Uuid) -> StoreResult<Option<LicenseRecord>> {
        let c = self.client().await?;
        let st = c.prepare_cached(GET_LICENSE).await?;
        c.query_opt(&st, &[&guid.to_string()])
            .await?
            .map(|r| license_row(&r)?.decode())
            .transpose()
    }

    /// All licenses, by registration time.
    pub async fn list_licenses(&self) -> StoreResult<Vec<LicenseRecord>> {
        let c = self.client().await?;
        let st = c.prepare_cached(LIST_LICENSES).await?;
        c.query(&st, &[])
            .await?
            .iter()
            .map(|r| license_row(r)?.decode())
            .collect()
    }

    /// SHA-256 of each distinct customer certificate (see [`super::Store::customer_cert_hashes`]).
    pub async fn customer_cert_hashes(&self) -> StoreResult<Vec<[u8; 32]>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT DISTINCT customer_cert FROM licenses")
            .await?;
        c.query(&st, &[])
            .await?
            .iter()
            .map(|r| {
                Ok(ovsa_core::crypto::hash::sha256(
                    &r.try_get::<_, Vec<u8>>(0)?,
                ))
            })
            .collect()
    }

    /// The machines that activated a license, by first activation.
    pub async fn activations(&self, guid: Uuid) -> StoreResult<Vec<Activation>> {
        let c = self.client().await?;
        let st = c.prepare_cached(ACTIVATIONS).await?;
        c.query(&st, &[&guid.to_string()])
            .await?
            .iter()
            .map(|r| {
                RawActivation {
                    instance_id: r.try_get(0)?,
                    first_seen: r.try_get(1)?,
                    last_seen: r.try_get(2)?,
                    checks: r.try_get(3)?,
                }
                .decode()
            })
            .collect()
    }

    /// Revokes a license (the earliest revocation time is kept). `false` if unknown.
    pub async fn revoke(&self, guid: Uuid, at: OffsetDateTime) -> StoreResult<bool> {
        let c = self.client().await?;
        let st = c.prepare_cached(REVOKE).await?;
        let n = c.execute(&st, &[&guid.to_string(), &codec::ts(at)]).await?;
        Ok(n > 0)
    }

    /// Records an enrolled host AK (see [`crate::store::Store::enroll_host_ak`]).
    pub async fn enroll_host_ak(
        &self,
        host_ek_sha256: [u8; 32],
        ak_name: &[u8],
        license_guid: Uuid,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        let c = self.client().await?;
        let st = c.prepare_cached(ENROLL_HOST_AK).await?;
        c.execute(
            &st,
            &[
                &hex::encode(host_ek_sha256),
                &ak_name,
                &license_guid.to_string(),
                &codec::ts(at),
            ],
        )
        .await?;
        Ok(())
    }

    /// The AK Names enrolled for a host EK.
    pub async fn host_aks(&self, host_ek_sha256: [u8; 32]) -> StoreResult<Vec<Vec<u8>>> {
        let c = self.client().await?;
        let st = c.prepare_cached(HOST_AKS).await?;
        let rows = c.query(&st, &[&hex::encode(host_ek_sha256)]).await?;
        Ok(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
    }

    /// Records verified host evidence (see [`crate::store::Store::record_host_evidence`]), in
    /// one transaction.
    pub(crate) async fn record_host_evidence(&self, seen: HostSeen) -> StoreResult<HostSighting> {
        let mut c = self.client().await?;
        let highest_st = c.prepare_cached(HOST_EVIDENCE_HIGHEST).await?;
        let insert = c.prepare_cached(HOST_EVIDENCE_INSERT).await?;
        let prune = c.prepare_cached(HOST_EVIDENCE_PRUNE).await?;
        let first = c.prepare_cached(HOST_EVIDENCE_FIRST_SEEN).await?;
        let tx = c.transaction().await?;
        let highest: Option<i64> = tx.query_one(&highest_st, &[&seen.ek]).await?.get(0);
        if seen.is_recorded(highest) {
            tx.execute(
                &insert,
                &[
                    &seen.ek,
                    &seen.reset_count,
                    &seen.restart_count,
                    &seen.clock,
                    &seen.now,
                ],
            )
            .await?;
            tx.execute(&prune, &[&seen.ek, &seen.reset_count]).await?;
        }
        let first_seen: Option<i64> = tx
            .query_one(
                &first,
                &[
                    &seen.ek,
                    &seen.reset_count,
                    &seen.restart_count,
                    &seen.clock,
                ],
            )
            .await?
            .get(0);
        tx.commit().await?;
        seen.sighting(highest, first_seen)
    }

    /// Lifts a revocation.
    pub async fn reinstate(&self, guid: Uuid) -> StoreResult<bool> {
        let c = self.client().await?;
        let st = c.prepare_cached(REINSTATE).await?;
        let n = c.execute(&st, &[&guid.to_string()]).await?;
        Ok(n > 0)
    }

    /// Stores a new session.
    pub async fn put_session(&self, session: &SessionRecord) -> StoreResult<()> {
        let s = RawSession::encode(session);
        let c = self.client().await?;
        let st = c.prepare_cached(PUT_SESSION).await?;
        c.execute(
            &st,
            &[
                &s.session_id,
                &s.license_guid,
                &s.purpose,
                &s.nonce,
                &s.client_cert_sha256,
                &s.ek_cert_sha256,
                &s.ak_name,
                &&s.credential_secret[..],
                &s.expires_at,
            ],
        )
        .await?;
        Ok(())
    }

    /// Removes and returns a session (single use, across replicas).
    pub async fn take_session(&self, id: Uuid) -> StoreResult<Option<SessionRecord>> {
        let c = self.client().await?;
        let st = c.prepare_cached(TAKE_SESSION).await?;
        let Some(r) = c.query_opt(&st, &[&id.to_string()]).await? else {
            return Ok(None);
        };
        RawSession {
            session_id: r.try_get(0)?,
            license_guid: r.try_get(1)?,
            purpose: r.try_get(2)?,
            nonce: r.try_get(3)?,
            client_cert_sha256: r.try_get(4)?,
            ek_cert_sha256: r.try_get(5)?,
            ak_name: r.try_get(6)?,
            credential_secret: Zeroizing::new(r.try_get(7)?),
            expires_at: r.try_get(8)?,
        }
        .decode()
        .map(Some)
    }

    /// Deletes sessions that expired before `now`.
    pub async fn purge_sessions(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let c = self.client().await?;
        let st = c.prepare_cached(PURGE_SESSIONS).await?;
        Ok(c.execute(&st, &[&codec::ts(now)]).await?)
    }

    /// Applies one check in one transaction holding the license row lock (see the module
    /// documentation).
    pub async fn record_use(
        &self,
        guid: Uuid,
        seat: &SeatRequest,
        now: OffsetDateTime,
        decide: &(dyn Fn(&UsageState) -> Decision + Sync),
    ) -> StoreResult<Option<Decision>> {
        let guid = guid.to_string();
        let instance = hex::encode(seat.instance_id);
        let lease = seat.lease_id.to_string();
        let now = codec::ts(now);
        let mut c = self.client().await?;
        let lock = c.prepare_cached(LOCK_LICENSE).await?;
        let lock_clock = c.prepare_cached(LOCK_TPM_CLOCK).await?;
        let count_seats = c.prepare_cached(COUNT_SEATS).await?;
        let count_other = c.prepare_cached(COUNT_OTHER_LEASES).await?;
        let set_uses = c.prepare_cached(SET_USES).await?;
        let upsert = c.prepare_cached(UPSERT_ACTIVATION).await?;
        let end_older = c.prepare_cached(END_OLDER_EPOCHS).await?;
        let purge = c.prepare_cached(PURGE_LAPSED).await?;
        let upsert_lease = c.prepare_cached(UPSERT_LEASE).await?;
        let upsert_clock = c.prepare_cached(UPSERT_TPM_CLOCK).await?;
        let tx = c.transaction().await?;
        // Pipelined, executed in order: the license row lock first (checks of one license queue
        // here), then the EK's high-water mark row (checks of one EK on different licenses queue
        // there; always in this order, so no deadlock), then the counts, each with a snapshot
        // taken after both locks were granted.
        let lock_args: [&SqlParam; 1] = [&guid];
        let clock_args: [&SqlParam; 1] = [&instance];
        let seats_args: [&SqlParam; 3] = [&guid, &instance, &now];
        let other_args: [&SqlParam; 4] = [&instance, &now, &guid, &lease];
        // `join!` then `?` in order: after a failure PostgreSQL rejects the rest of the
        // transaction, and the first statement's error is the one worth reporting.
        let (license, mark, seats, other) = tokio::join!(
            tx.query_opt(&lock, &lock_args),
            tx.query_opt(&lock_clock, &clock_args),
            tx.query_one(&count_seats, &seats_args),
            tx.query_one(&count_other, &other_args),
        );
        let (license, mark, seats, other) = (license?, mark?, seats?, other?);
        let Some(license) = license else {
            return Ok(None);
        };
        let mark = match mark {
            Some(m) => Some((m.try_get(0)?, m.try_get(1)?, m.try_get(2)?)),
            None => None,
        };
        let state = codec::usage_state(
            RawUsage {
                policy: license.try_get(0)?,
                revoked_at: license.try_get(1)?,
                first_use: license.try_get(2)?,
                uses: license.try_get(3)?,
                lease_seconds: license.try_get(4)?,
                grace_seconds: license.try_get(5)?,
            },
            RawSeats {
                live_seats: seats.try_get(0)?,
                held_here: seats.try_get(1)?,
                other_live_leases: other.try_get(0)?,
                mark,
            },
            seat.clock,
        )?;
        let decision = decide(&state);
        if let Decision::Grant {
            uses,
            first_use,
            seat: grant,
            ..
        } = &decision
        {
            let uses = codec::to_i64(*uses, "uses")?;
            let first_use = codec::ts(*first_use);
            let expires_at = codec::ts(grant.expires_at);
            let reset = i64::from(seat.clock.reset_count);
            let (m_reset, m_restart, m_clock) = codec::mark_columns(&grant.mark);
            let set_args: [&SqlParam; 3] = [&guid, &uses, &first_use];
            let upsert_args: [&SqlParam; 3] = [&guid, &instance, &now];
            let end_args: [&SqlParam; 2] = [&instance, &reset];
            let purge_args: [&SqlParam; 2] = [&guid, &now];
            let lease_args: [&SqlParam; 6] = [&guid, &lease, &instance, &reset, &now, &expires_at];
            let clock_args: [&SqlParam; 5] = [&instance, &m_reset, &m_restart, &m_clock, &now];
            let end_older_epochs = async {
                if grant.new_epoch {
                    tx.execute(&end_older, &end_args).await.map(drop)
                } else {
                    Ok(())
                }
            };
            let (set, upserted, ended, purged, leased, clocked) = tokio::join!(
                tx.execute(&set_uses, &set_args),
                tx.execute(&upsert, &upsert_args),
                end_older_epochs,
                tx.execute(&purge, &purge_args),
                tx.execute(&upsert_lease, &lease_args),
                tx.execute(&upsert_clock, &clock_args),
            );
            set?;
            upserted?;
            ended?;
            purged?;
            leased?;
            clocked?;
        }
        tx.commit().await?;
        Ok(Some(decision))
    }

    /// Ends a lease; `false` if unknown.
    pub async fn release_lease(&self, guid: Uuid, lease_id: Uuid) -> StoreResult<bool> {
        let c = self.client().await?;
        let st = c.prepare_cached(RELEASE_LEASE).await?;
        let n = c
            .execute(&st, &[&guid.to_string(), &lease_id.to_string()])
            .await?;
        Ok(n > 0)
    }

    /// The live leases of a license.
    pub async fn leases(&self, guid: Uuid, now: OffsetDateTime) -> StoreResult<Vec<Lease>> {
        let c = self.client().await?;
        let st = c.prepare_cached(LIVE_LEASES).await?;
        c.query(&st, &[&guid.to_string(), &codec::ts(now)])
            .await?
            .iter()
            .map(|r| {
                codec::lease(
                    &r.try_get::<_, String>(0)?,
                    &r.try_get::<_, String>(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                )
            })
            .collect()
    }

    /// The EK's clock high-water mark.
    pub async fn tpm_clock(&self, instance_id: [u8; 32]) -> StoreResult<Option<ClockMark>> {
        let c = self.client().await?;
        let st = c.prepare_cached(TPM_CLOCK).await?;
        match c.query_opt(&st, &[&hex::encode(instance_id)]).await? {
            Some(r) => Ok(Some(codec::clock_mark(
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
            )?)),
            None => Ok(None),
        }
    }

    /// Appends an audit entry.
    pub async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        let a = RawAudit::encode(entry);
        let c = self.client().await?;
        let st = c.prepare_cached(APPEND_AUDIT).await?;
        c.execute(
            &st,
            &[
                &a.at,
                &a.license_guid,
                &a.client,
                &a.action,
                &a.purpose,
                &a.result,
                &a.reason,
                &a.message,
                &a.instance_id,
            ],
        )
        .await?;
        Ok(())
    }

    /// Lists audit entries, newest first; `limit` 0 means no limit.
    pub async fn audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        let limit = codec::limit(filter.limit);
        let c = self.client().await?;
        let rows = match filter.license_guid {
            Some(g) => {
                let st = c.prepare_cached(AUDIT_LICENSE).await?;
                c.query(&st, &[&g.to_string(), &limit]).await?
            }
            None => {
                let st = c.prepare_cached(AUDIT_ALL).await?;
                c.query(&st, &[&limit]).await?
            }
        };
        rows.iter()
            .map(|r| {
                RawAudit {
                    at: r.try_get(0)?,
                    license_guid: r.try_get(1)?,
                    client: r.try_get(2)?,
                    action: r.try_get(3)?,
                    purpose: r.try_get(4)?,
                    result: r.try_get(5)?,
                    reason: r.try_get(6)?,
                    message: r.try_get(7)?,
                    instance_id: r.try_get(8)?,
                }
                .decode()
            })
            .collect()
    }
}

fn license_row(r: &Row) -> Result<RawLicense, tokio_postgres::Error> {
    Ok(RawLicense {
        license_guid: r.try_get(0)?,
        model_guid: r.try_get(1)?,
        model_name: r.try_get(2)?,
        model_version: r.try_get(3)?,
        header_hash: r.try_get(4)?,
        license_digest: r.try_get(5)?,
        customer_cert: r.try_get(6)?,
        isv_cert_sha256: r.try_get(7)?,
        policy: r.try_get(8)?,
        lease_seconds: r.try_get(9)?,
        tcb: r.try_get(10)?,
        key_share: Zeroizing::new(r.try_get(11)?),
        issued: r.try_get(12)?,
        registered_at: r.try_get(13)?,
        revoked_at: r.try_get(14)?,
        first_use: r.try_get(15)?,
        uses: r.try_get(16)?,
        grace_seconds: r.try_get(17)?,
    })
}

#[cfg(test)]
mod tests {
    /// Every numbered file under `store/migrations/postgres/` is embedded, in order, and nothing else.
    #[test]
    fn migration_files_are_all_embedded_in_order() {
        crate::store::tests::assert_migrations_embedded("postgres", super::MIGRATIONS);
    }
}
