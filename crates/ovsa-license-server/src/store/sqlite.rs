//! Embedded SQLite backend: one database file (created on first open, mode 0600 because it holds
//! key shares), WAL journal, `synchronous=NORMAL`, foreign keys on.
//!
//! rusqlite is blocking, so every operation runs on [`tokio::task::spawn_blocking`] with the
//! connection behind an async mutex whose *owned* guard is moved into the blocking task and back.
//! That lets [`SqliteStore::record_use`] keep one `BEGIN IMMEDIATE` transaction open across two
//! blocking phases (read the state; write the outcome) while the caller's non-`'static` decide
//! closure runs on the async side in between, with the connection still exclusively held. If the
//! calling future is dropped (or the closure panics) between the phases, the guard's drop rolls
//! the transaction back, releasing the write lock at once; every operation also starts by rolling
//! back any transaction it finds left open.
//!
//! One connection serves one store: SQLite admits one writer at a time anyway, and nearly every
//! call on the attestation path writes. Several stores (processes or [`SqliteStore`] values) on the
//! same file serialise on SQLite's write lock; `BEGIN IMMEDIATE` takes it before reading, so the
//! read-decide-write of [`SqliteStore::record_use`] is atomic across all of them, and the busy
//! timeout makes the others wait instead of failing.
//!
//! The row encoding shared with the PostgreSQL backend lives in `store/codec.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use time::OffsetDateTime;
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use super::codec::{
    self, check_version, RawActivation, RawAudit, RawLicense, RawSeats, RawSession, RawUsage,
};
use super::{
    Activation, AuditEntry, AuditFilter, ClockMark, HostSeen, Lease, LicenseRecord, OpenMode,
    SeatRequest, SessionRecord, StoreError, StoreResult, SCHEMA_VERSION,
};
use crate::relying_party::{Decision, UsageState};
use ovsa_core::attest::HostSighting;

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Numbered migrations, one `.sql` file each under `store/migrations/sqlite/` (embedded at build
/// time): `MIGRATIONS[i]` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    include_str!("migrations/sqlite/0001_init.sql"),
    // 2: host AKs proven (credential challenge) to live in the host TPM owning the EK.
    include_str!("migrations/sqlite/0002_host_aks.sql"),
    // 3: host evidence seen per host EK (age and replay checks).
    include_str!("migrations/sqlite/0003_host_evidence.sql"),
    // 4: live seats (leases) and per-EK TPM clock high-water marks.
    include_str!("migrations/sqlite/0004_seats.sql"),
];

const LICENSE_COLUMNS: &str = "license_guid, model_guid, model_name, model_version, header_hash, \
     license_digest, customer_cert, isv_cert_sha256, policy, lease_seconds, tcb, key_share, issued, \
     registered_at, revoked_at, first_use, uses, grace_seconds";

const SESSION_COLUMNS: &str = "session_id, license_guid, purpose, nonce, client_cert_sha256, \
     ek_cert_sha256, ak_name, credential_secret, expires_at";

const AUDIT_COLUMNS: &str =
    "at, license_guid, client, action, purpose, result, reason, message, instance_id";

/// The SQLite store.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn task_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Task(e.to_string())
}

/// The connection, exclusively held. Dropping it with a transaction still open (a caller
/// cancelled between the two phases of `record_use`) rolls that transaction back, releasing
/// SQLite's write lock at once for the other connections on the file.
struct Held(OwnedMutexGuard<Connection>);

impl std::ops::Deref for Held {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl std::ops::DerefMut for Held {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Quick: nothing was written yet, so the rollback only drops the lock.
        let _ = reset(&self.0);
    }
}

/// Rolls back a transaction left open by a cancelled or failed caller.
fn reset(conn: &Connection) -> StoreResult<()> {
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK")?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens the database file at `path`, creating it (mode 0600) if missing, and brings the
    /// schema up to [`SCHEMA_VERSION`]. The parent directory must exist.
    pub async fn open(path: &str) -> StoreResult<SqliteStore> {
        Self::open_with(path, OpenMode::Create).await
    }

    /// Opens the database file at `path` in `mode` (see [`OpenMode`]): only
    /// [`OpenMode::Create`] creates a missing file; [`OpenMode::ReadOnly`] opens it with
    /// `SQLITE_OPEN_READONLY` and `query_only`, without migrating.
    pub async fn open_with(path: &str, mode: OpenMode) -> StoreResult<SqliteStore> {
        let path = PathBuf::from(path);
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || match mode {
            OpenMode::Create => open_blocking(&p),
            OpenMode::Existing => {
                require_file(&p)?;
                open_blocking(&p)
            }
            OpenMode::ReadOnly => open_read_only_blocking(&p),
        })
        .await
        .map_err(task_error)??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    async fn hold(&self) -> Held {
        Held(Arc::clone(&self.conn).lock_owned().await)
    }

    /// Runs `f` on the connection in a blocking task.
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let mut guard = self.hold().await;
        tokio::task::spawn_blocking(move || {
            reset(&guard)?;
            f(&mut guard)
        })
        .await
        .map_err(task_error)?
    }

    /// Registers a license; [`StoreError::Duplicate`] if its GUID is taken.
    pub async fn add_license(&self, rec: &LicenseRecord) -> StoreResult<()> {
        let raw = RawLicense::encode(rec)?;
        let guid = rec.license_guid;
        self.run(move |c| {
            let n = c.execute(
                &format!(
                    "INSERT INTO licenses ({LICENSE_COLUMNS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) \
                     ON CONFLICT (license_guid) DO NOTHING"
                ),
                params![
                    raw.license_guid,
                    raw.model_guid,
                    raw.model_name,
                    raw.model_version,
                    raw.header_hash,
                    raw.license_digest,
                    raw.customer_cert,
                    raw.isv_cert_sha256,
                    raw.policy,
                    raw.lease_seconds,
                    raw.tcb,
                    &raw.key_share[..],
                    raw.issued,
                    raw.registered_at,
                    raw.revoked_at,
                    raw.first_use,
                    raw.uses,
                    raw.grace_seconds,
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Duplicate(guid));
            }
            Ok(())
        })
        .await
    }

    /// One license.
    pub async fn license(&self, guid: Uuid) -> StoreResult<Option<LicenseRecord>> {
        self.run(move |c| {
            c.prepare_cached(&format!(
                "SELECT {LICENSE_COLUMNS} FROM licenses WHERE license_guid = ?1"
            ))?
            .query_row([guid.to_string()], license_row)
            .optional()?
            .map(RawLicense::decode)
            .transpose()
        })
        .await
    }

    /// All licenses, by registration time.
    pub async fn list_licenses(&self) -> StoreResult<Vec<LicenseRecord>> {
        self.run(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {LICENSE_COLUMNS} FROM licenses ORDER BY registered_at, license_guid"
            ))?;
            let rows = stmt.query_map([], license_row)?;
            rows.map(|r| RawLicense::decode(r?)).collect()
        })
        .await
    }

    /// SHA-256 of each distinct customer certificate (see [`super::Store::customer_cert_hashes`]).
    pub async fn customer_cert_hashes(&self) -> StoreResult<Vec<[u8; 32]>> {
        self.run(|c| {
            let mut stmt = c.prepare_cached("SELECT DISTINCT customer_cert FROM licenses")?;
            let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            rows.map(|r| Ok(ovsa_core::crypto::hash::sha256(&r?)))
                .collect()
        })
        .await
    }

    /// The machines that activated a license, by first activation.
    pub async fn activations(&self, guid: Uuid) -> StoreResult<Vec<Activation>> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT instance_id, first_seen, last_seen, checks FROM activations \
                 WHERE license_guid = ?1 ORDER BY first_seen, instance_id",
            )?;
            let rows = stmt.query_map([guid.to_string()], |r| {
                Ok(RawActivation {
                    instance_id: r.get(0)?,
                    first_seen: r.get(1)?,
                    last_seen: r.get(2)?,
                    checks: r.get(3)?,
                })
            })?;
            rows.map(|r| r?.decode()).collect()
        })
        .await
    }

    /// Revokes a license (the earliest revocation time is kept). `false` if unknown.
    pub async fn revoke(&self, guid: Uuid, at: OffsetDateTime) -> StoreResult<bool> {
        let at = codec::ts(at);
        self.run(move |c| {
            let n = c.execute(
                "UPDATE licenses SET revoked_at = COALESCE(revoked_at, ?2) WHERE license_guid = ?1",
                params![guid.to_string(), at],
            )?;
            Ok(n > 0)
        })
        .await
    }

    /// Records an enrolled host AK (see [`crate::store::Store::enroll_host_ak`]).
    pub async fn enroll_host_ak(
        &self,
        host_ek_sha256: [u8; 32],
        ak_name: &[u8],
        license_guid: Uuid,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        let (ek, ak, at) = (hex::encode(host_ek_sha256), ak_name.to_vec(), codec::ts(at));
        self.run(move |c| {
            c.prepare_cached(
                "INSERT INTO host_aks (host_ek_sha256, ak_name, license_guid, enrolled_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (host_ek_sha256, ak_name)
                 DO UPDATE SET license_guid = excluded.license_guid, enrolled_at = excluded.enrolled_at",
            )?
            .execute(params![ek, ak, license_guid.to_string(), at])?;
            Ok(())
        })
        .await
    }

    /// The AK Names enrolled for a host EK.
    pub async fn host_aks(&self, host_ek_sha256: [u8; 32]) -> StoreResult<Vec<Vec<u8>>> {
        let ek = hex::encode(host_ek_sha256);
        self.run(move |c| {
            let mut st = c.prepare_cached(
                "SELECT ak_name FROM host_aks WHERE host_ek_sha256 = ?1 ORDER BY enrolled_at",
            )?;
            let rows = st.query_map([ek], |r| r.get::<_, Vec<u8>>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Records verified host evidence (see [`crate::store::Store::record_host_evidence`]), in
    /// one write transaction.
    pub(crate) async fn record_host_evidence(&self, seen: HostSeen) -> StoreResult<HostSighting> {
        self.run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let highest: Option<i64> = tx
                .prepare_cached(
                    "SELECT MAX(reset_count) FROM host_evidence_seen WHERE host_ek_sha256 = ?1",
                )?
                .query_row([&seen.ek], |r| r.get(0))?;
            if seen.is_recorded(highest) {
                tx.prepare_cached(
                    "INSERT INTO host_evidence_seen
                     (host_ek_sha256, reset_count, restart_count, clock, first_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    seen.ek,
                    seen.reset_count,
                    seen.restart_count,
                    seen.clock,
                    seen.now
                ])?;
                tx.prepare_cached(
                    "DELETE FROM host_evidence_seen WHERE host_ek_sha256 = ?1 AND reset_count < ?2",
                )?
                .execute(params![seen.ek, seen.reset_count])?;
            }
            let first_seen: Option<i64> = tx
                .prepare_cached(
                    "SELECT MIN(first_seen) FROM host_evidence_seen
                     WHERE host_ek_sha256 = ?1 AND reset_count = ?2
                     AND (restart_count > ?3 OR (restart_count = ?3 AND clock >= ?4))",
                )?
                .query_row(
                    params![seen.ek, seen.reset_count, seen.restart_count, seen.clock],
                    |r| r.get(0),
                )?;
            tx.commit()?;
            seen.sighting(highest, first_seen)
        })
        .await
    }

    /// Lifts a revocation.
    pub async fn reinstate(&self, guid: Uuid) -> StoreResult<bool> {
        self.run(move |c| {
            let n = c.execute(
                "UPDATE licenses SET revoked_at = NULL WHERE license_guid = ?1",
                params![guid.to_string()],
            )?;
            Ok(n > 0)
        })
        .await
    }

    /// Stores a new session.
    pub async fn put_session(&self, session: &SessionRecord) -> StoreResult<()> {
        let raw = RawSession::encode(session);
        self.run(move |c| {
            c.prepare_cached(&format!(
                "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?
            .execute(params![
                raw.session_id,
                raw.license_guid,
                raw.purpose,
                raw.nonce,
                raw.client_cert_sha256,
                raw.ek_cert_sha256,
                raw.ak_name,
                &raw.credential_secret[..],
                raw.expires_at,
            ])?;
            Ok(())
        })
        .await
    }

    /// Removes and returns a session (single use).
    pub async fn take_session(&self, id: Uuid) -> StoreResult<Option<SessionRecord>> {
        self.run(move |c| {
            c.prepare_cached(&format!(
                "DELETE FROM sessions WHERE session_id = ?1 RETURNING {SESSION_COLUMNS}"
            ))?
            .query_row([id.to_string()], |r| {
                Ok(RawSession {
                    session_id: r.get(0)?,
                    license_guid: r.get(1)?,
                    purpose: r.get(2)?,
                    nonce: r.get(3)?,
                    client_cert_sha256: r.get(4)?,
                    ek_cert_sha256: r.get(5)?,
                    ak_name: r.get(6)?,
                    credential_secret: zeroize::Zeroizing::new(r.get(7)?),
                    expires_at: r.get(8)?,
                })
            })
            .optional()?
            .map(RawSession::decode)
            .transpose()
        })
        .await
    }

    /// Deletes sessions that expired before `now`.
    pub async fn purge_sessions(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let now = codec::ts(now);
        self.run(move |c| {
            let n = c
                .prepare_cached("DELETE FROM sessions WHERE expires_at < ?1")?
                .execute([now])?;
            Ok(n as u64)
        })
        .await
    }

    /// Applies one check in one `BEGIN IMMEDIATE` transaction (see the module documentation).
    pub async fn record_use(
        &self,
        guid: Uuid,
        seat: &SeatRequest,
        now: OffsetDateTime,
        decide: &(dyn Fn(&UsageState) -> Decision + Sync),
    ) -> StoreResult<Option<Decision>> {
        let guard = self.hold().await;
        let keys = Keys {
            guid: guid.to_string(),
            instance: hex::encode(seat.instance_id),
            lease: seat.lease_id.to_string(),
            now: codec::ts(now),
        };
        let quote = seat.clock;
        // Phase 1: take the write lock and read the state.
        let (guard, keys, state) = tokio::task::spawn_blocking(move || {
            let r = read_usage(&guard, &keys);
            (guard, keys, r)
        })
        .await
        .map_err(task_error)?;
        let state = match state {
            Ok(Some((usage, seats))) => codec::usage_state(usage, seats, quote)?,
            Ok(None) => return Ok(None),
            Err(e) => return Err(e),
        };
        // The connection stays held (and the transaction open) while the Relying Party decides.
        // (An error above drops the guard, which rolls the transaction back.)
        let decision = decide(&state);
        // Phase 2: write the outcome and commit.
        let write = match &decision {
            Decision::Grant {
                uses,
                first_use,
                seat,
                ..
            } => Some(GrantWrite {
                uses: codec::to_i64(*uses, "uses")?,
                first_use: codec::ts(*first_use),
                expires_at: codec::ts(seat.expires_at),
                mark: codec::mark_columns(&seat.mark),
                new_epoch: seat.new_epoch,
                reset: i64::from(quote.reset_count),
            }),
            Decision::Refuse(_) => None,
        };
        tokio::task::spawn_blocking(move || {
            let r = write_usage(&guard, &keys, write);
            if r.is_err() {
                // Best effort: `reset` on the next use rolls back if this fails too.
                let _ = guard.execute_batch("ROLLBACK");
            }
            r
        })
        .await
        .map_err(task_error)??;
        Ok(Some(decision))
    }

    /// Ends a lease; `false` if unknown.
    pub async fn release_lease(&self, guid: Uuid, lease_id: Uuid) -> StoreResult<bool> {
        self.run(move |c| {
            let n = c
                .prepare_cached(
                    "DELETE FROM seat_leases WHERE license_guid = ?1 AND lease_id = ?2",
                )?
                .execute(params![guid.to_string(), lease_id.to_string()])?;
            Ok(n > 0)
        })
        .await
    }

    /// The live leases of a license.
    pub async fn leases(&self, guid: Uuid, now: OffsetDateTime) -> StoreResult<Vec<Lease>> {
        let now = codec::ts(now);
        self.run(move |c| {
            let mut st = c.prepare_cached(
                "SELECT lease_id, instance_id, reset_count, expires_at FROM seat_leases \
                 WHERE license_guid = ?1 AND expires_at > ?2 ORDER BY taken_at, lease_id",
            )?;
            let rows = st.query_map(params![guid.to_string(), now], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            rows.map(|r| {
                let (l, i, rc, e) = r?;
                codec::lease(&l, &i, rc, e)
            })
            .collect()
        })
        .await
    }

    /// The EK's clock high-water mark.
    pub async fn tpm_clock(&self, instance_id: [u8; 32]) -> StoreResult<Option<ClockMark>> {
        let instance = hex::encode(instance_id);
        self.run(move |c| {
            c.prepare_cached(
                "SELECT reset_count, restart_count, clock FROM tpm_clocks WHERE instance_id = ?1",
            )?
            .query_row([instance], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .optional()?
            .map(|(a, b, c)| codec::clock_mark(a, b, c))
            .transpose()
        })
        .await
    }

    /// Appends an audit entry.
    pub async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        let raw = RawAudit::encode(entry);
        self.run(move |c| {
            c.prepare_cached(&format!(
                "INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?
            .execute(params![
                raw.at,
                raw.license_guid,
                raw.client,
                raw.action,
                raw.purpose,
                raw.result,
                raw.reason,
                raw.message,
                raw.instance_id,
            ])?;
            Ok(())
        })
        .await
    }

    /// Lists audit entries, newest first; `limit` 0 means no limit.
    pub async fn audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        let guid = filter.license_guid.map(|g| g.to_string());
        let limit = codec::limit(filter.limit);
        self.run(move |c| {
            let read = |r: &Row<'_>| {
                Ok(RawAudit {
                    at: r.get(0)?,
                    license_guid: r.get(1)?,
                    client: r.get(2)?,
                    action: r.get(3)?,
                    purpose: r.get(4)?,
                    result: r.get(5)?,
                    reason: r.get(6)?,
                    message: r.get(7)?,
                    instance_id: r.get(8)?,
                })
            };
            let raws = match guid {
                Some(g) => c
                    .prepare_cached(&format!(
                        "SELECT {AUDIT_COLUMNS} FROM audit WHERE license_guid = ?1 \
                         ORDER BY id DESC LIMIT ?2"
                    ))?
                    .query_map(params![g, limit], read)?
                    .collect::<Result<Vec<_>, _>>()?,
                None => c
                    .prepare_cached(&format!(
                        "SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id DESC LIMIT ?1"
                    ))?
                    .query_map([limit], read)?
                    .collect::<Result<Vec<_>, _>>()?,
            };
            raws.into_iter().map(RawAudit::decode).collect()
        })
        .await
    }
}

/// Opens, configures and migrates a connection.
fn open_blocking(path: &Path) -> StoreResult<Connection> {
    let shown = path.display().to_string();
    let open_err = |reason: String| StoreError::Open {
        path: shown.clone(),
        reason,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(open_err(format!(
            "directory {} does not exist; create it first",
            dir.display()
        )));
    }
    if path.is_dir() {
        return Err(open_err("it is a directory".into()));
    }
    if !path.exists() {
        // The file holds key shares: create it private (SQLite gives its -wal and -shm files
        // the same mode).
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        match opts.open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(open_err(e.to_string())),
        }
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_err(e.to_string()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(open_err(format!(
            "cannot enable WAL journal mode (got '{mode}')"
        )));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(32);
    migrate(&conn)?;
    Ok(conn)
}

/// Fails with [`StoreError::Missing`] unless `path` is an existing file.
fn require_file(path: &Path) -> StoreResult<()> {
    if path.is_dir() {
        return Err(StoreError::Open {
            path: path.display().to_string(),
            reason: "it is a directory".into(),
        });
    }
    if !path.exists() {
        return Err(StoreError::Missing(path.display().to_string()));
    }
    Ok(())
}

/// Opens an existing database read-only: no file is created, nothing is migrated or written
/// (`SQLITE_OPEN_READONLY` plus `PRAGMA query_only`), and the schema version is checked.
fn open_read_only_blocking(path: &Path) -> StoreResult<Connection> {
    require_file(path)?;
    let shown = path.display().to_string();
    let open_err = |reason: String| StoreError::Open {
        path: shown.clone(),
        reason,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_err(e.to_string()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", "ON")?;
    conn.set_prepared_statement_cache_capacity(32);
    let has_schema: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => {
                open_err("it is not an SQLite database".into())
            }
            _ => open_err(e.to_string()),
        })?;
    if has_schema == 0 {
        return Err(StoreError::NotInitialised(shown));
    }
    let found: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    check_version(found)?;
    Ok(conn)
}

/// Applies the missing migrations in one write transaction (so concurrent openers do not race).
fn migrate(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let r = (|| {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (
                version    INTEGER PRIMARY KEY NOT NULL,
                applied_at INTEGER NOT NULL
            )",
        )?;
        let found: i64 = conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )?;
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
            conn.execute_batch(sql)?;
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
                params![from as i64 + 1, now],
            )?;
        }
        Ok(())
    })();
    match r {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn license_row(r: &Row<'_>) -> rusqlite::Result<RawLicense> {
    Ok(RawLicense {
        license_guid: r.get(0)?,
        model_guid: r.get(1)?,
        model_name: r.get(2)?,
        model_version: r.get(3)?,
        header_hash: r.get(4)?,
        license_digest: r.get(5)?,
        customer_cert: r.get(6)?,
        isv_cert_sha256: r.get(7)?,
        policy: r.get(8)?,
        lease_seconds: r.get(9)?,
        tcb: r.get(10)?,
        key_share: zeroize::Zeroizing::new(r.get(11)?),
        issued: r.get(12)?,
        registered_at: r.get(13)?,
        revoked_at: r.get(14)?,
        first_use: r.get(15)?,
        uses: r.get(16)?,
        grace_seconds: r.get(17)?,
    })
}

/// The keys of one `record_use`, as stored.
struct Keys {
    guid: String,
    instance: String,
    lease: String,
    now: i64,
}

/// What a grant writes.
struct GrantWrite {
    uses: i64,
    first_use: i64,
    expires_at: i64,
    mark: (i64, i64, i64),
    new_epoch: bool,
    reset: i64,
}

/// Phase 1 of `record_use`: begins the write transaction and reads the usage state, the live
/// seats and the EK's high-water mark. Leaves the transaction open only when it returns
/// `Ok(Some(_))`.
fn read_usage(conn: &Connection, k: &Keys) -> StoreResult<Option<(RawUsage, RawSeats)>> {
    reset(conn)?;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let r = (|| {
        let lic = conn
            .prepare_cached(
                "SELECT policy, revoked_at, first_use, uses, lease_seconds, grace_seconds \
                 FROM licenses WHERE license_guid = ?1",
            )?
            .query_row([&k.guid], |r| {
                Ok(RawUsage {
                    policy: r.get(0)?,
                    revoked_at: r.get(1)?,
                    first_use: r.get(2)?,
                    uses: r.get(3)?,
                    lease_seconds: r.get(4)?,
                    grace_seconds: r.get(5)?,
                })
            })
            .optional()?;
        let Some(usage) = lic else {
            return Ok(None);
        };
        let (live_seats, held_here): (i64, i64) = conn
            .prepare_cached(
                "SELECT COUNT(DISTINCT instance_id), COUNT(*) FILTER (WHERE instance_id = ?2) \
                 FROM seat_leases WHERE license_guid = ?1 AND expires_at > ?3",
            )?
            .query_row(params![k.guid, k.instance, k.now], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let other_live_leases: i64 = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM seat_leases WHERE instance_id = ?1 AND expires_at > ?2 \
                 AND NOT (license_guid = ?3 AND lease_id = ?4)",
            )?
            .query_row(params![k.instance, k.now, k.guid, k.lease], |r| r.get(0))?;
        let mark = conn
            .prepare_cached(
                "SELECT reset_count, restart_count, clock FROM tpm_clocks WHERE instance_id = ?1",
            )?
            .query_row([&k.instance], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        Ok(Some((
            usage,
            RawSeats {
                live_seats,
                held_here,
                other_live_leases,
                mark,
            },
        )))
    })();
    if !matches!(r, Ok(Some(_))) {
        let _ = conn.execute_batch("ROLLBACK");
    }
    r
}

/// Phase 2 of `record_use`: on a grant, writes `(uses, first_use)`, the activation, the lease
/// and the EK's high-water mark, ends the EK's leases of earlier resets on a new epoch and
/// purges the license's lapsed leases; commits.
fn write_usage(conn: &Connection, k: &Keys, grant: Option<GrantWrite>) -> StoreResult<()> {
    if let Some(g) = grant {
        conn.prepare_cached(
            "UPDATE licenses SET uses = ?2, first_use = COALESCE(first_use, ?3) \
             WHERE license_guid = ?1",
        )?
        .execute(params![k.guid, g.uses, g.first_use])?;
        conn.prepare_cached(
            "INSERT INTO activations (license_guid, instance_id, first_seen, last_seen, checks) \
             VALUES (?1, ?2, ?3, ?3, 1) \
             ON CONFLICT (license_guid, instance_id) \
             DO UPDATE SET last_seen = excluded.last_seen, checks = checks + 1",
        )?
        .execute(params![k.guid, k.instance, k.now])?;
        if g.new_epoch {
            conn.prepare_cached(
                "DELETE FROM seat_leases WHERE instance_id = ?1 AND reset_count < ?2",
            )?
            .execute(params![k.instance, g.reset])?;
        }
        conn.prepare_cached(
            "DELETE FROM seat_leases WHERE license_guid = ?1 AND expires_at <= ?2",
        )?
        .execute(params![k.guid, k.now])?;
        conn.prepare_cached(
            "INSERT INTO seat_leases \
             (license_guid, lease_id, instance_id, reset_count, taken_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (license_guid, lease_id) DO UPDATE SET \
             instance_id = excluded.instance_id, reset_count = excluded.reset_count, \
             expires_at = excluded.expires_at",
        )?
        .execute(params![
            k.guid,
            k.lease,
            k.instance,
            g.reset,
            k.now,
            g.expires_at
        ])?;
        let (reset, restart, clock) = g.mark;
        conn.prepare_cached(
            "INSERT INTO tpm_clocks (instance_id, reset_count, restart_count, clock, seen_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (instance_id) DO UPDATE SET reset_count = excluded.reset_count, \
             restart_count = excluded.restart_count, clock = excluded.clock, \
             seen_at = excluded.seen_at \
             WHERE (excluded.reset_count, excluded.restart_count, excluded.clock) \
             > (tpm_clocks.reset_count, tpm_clocks.restart_count, tpm_clocks.clock)",
        )?
        .execute(params![k.instance, reset, restart, clock, k.now])?;
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

#[cfg(test)]
mod tests {
    /// Every numbered file under `store/migrations/sqlite/` is embedded, in order, and nothing else.
    #[test]
    fn migration_files_are_all_embedded_in_order() {
        crate::store::tests::assert_migrations_embedded("sqlite", super::MIGRATIONS);
    }
}
