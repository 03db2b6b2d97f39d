//! Storage behind one interface: SQLite (embedded default, one file, WAL) or PostgreSQL (a fleet
//! of stateless replicas sharing one database).
//!
//! Durability: SQLite runs WAL with `synchronous=NORMAL`: a crash of the service loses nothing,
//! a power loss of the host may lose the last few commits (some spent uses given back) — the
//! price of not paying an fsync per check. Deployments that must not give uses back on power
//! loss use PostgreSQL with its default `fsync=on`.
//!
//! Every policy-relevant update happens in [`Store::record_use`], one transaction per check:
//! read the license row under a lock, then its live seats and the vTPM's clock high-water mark,
//! ask the Relying Party's pure [`crate::relying_party::decide`], write the outcome (use count,
//! activation, the lease holding the seat, the new high-water mark). Concurrent checks, on one replica or
//! many, are serialised by the database, so a use count can never be spent twice.

mod codec;
pub mod postgres;
pub mod sqlite;

use ovsa_core::attest::{ClockInfo, HostSighting};
use ovsa_core::license::{Policy, Registration, TcbReference};
use ovsa_core::protocol::{Purpose, Reason};
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::relying_party::{Decision, UsageState};
pub use crate::tpm_clock::ClockMark;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL is not understood.
    #[error(
        "database URL '{0}' is not understood: use sqlite:PATH or postgres://USER@HOST:PORT/DB"
    )]
    BadUrl(String),
    /// A license with this GUID is already registered.
    #[error("license {0} is already registered")]
    Duplicate(Uuid),
    /// The schema in the database is newer than this build.
    #[error("database schema version {found} is newer than this build's {supported}; upgrade ovsa-license-server")]
    SchemaTooNew {
        /// Version found.
        found: i64,
        /// Version this build knows.
        supported: i64,
    },
    /// A command that needs an existing database found none at the path given.
    #[error(
        "database '{0}' does not exist: check --db (or OVSA_LS_DB / `db` in the config file); \
         `ovsa-license-server serve` or `ovsa-license-server license add` creates a new one"
    )]
    Missing(String),
    /// The database exists but holds no OVSA license schema.
    #[error(
        "database '{0}' holds no OVSA license data (no schema): check --db; \
         `ovsa-license-server serve` or `ovsa-license-server license add` sets one up"
    )]
    NotInitialised(String),
    /// A read-only command found a schema older than this build (it does not migrate).
    #[error(
        "database schema version {found} is older than this build's {supported}; read-only \
         commands do not change the database: run `ovsa-license-server serve` (or `license add`) \
         with this build once to upgrade it"
    )]
    SchemaTooOld {
        /// Version found.
        found: i64,
        /// Version this build knows.
        supported: i64,
    },
    /// The database cannot be opened or created (e.g. its directory does not exist).
    #[error("cannot open database '{path}': {reason}")]
    Open {
        /// The database file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A stored row does not decode (corruption or manual edits).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// SQLite failure.
    #[error("SQLite: {0}")]
    Sqlite(rusqlite::Error),
    /// PostgreSQL failure.
    #[error("PostgreSQL: {}", postgres::describe(.0))]
    Postgres(tokio_postgres::Error),
    /// A blocking task failed.
    #[error("storage task failed: {0}")]
    Task(String),
}

/// Result alias for storage.
pub type StoreResult<T> = Result<T, StoreError>;

// The database errors are part of the message, so they are not also the `source()` (a chain
// reporter would print them twice): the `From`s are written out instead of thiserror's `#[from]`.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

/// The schema version this build writes (migrations bring older databases up to it).
pub const SCHEMA_VERSION: i64 = 4;

/// A registered license as stored.
#[derive(Clone)]
pub struct LicenseRecord {
    /// License GUID.
    pub license_guid: Uuid,
    /// Model GUID.
    pub model_guid: Uuid,
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// Package header hash.
    pub header_hash: [u8; 32],
    /// Digest of the customer license.
    pub license_digest: [u8; 32],
    /// Customer certificate (DER): the only TLS client identity accepted for this license.
    pub customer_cert: Vec<u8>,
    /// SHA-256 of the signing ISV certificate.
    pub isv_cert_sha256: [u8; 32],
    /// The limits.
    pub policy: Policy,
    /// Lease length.
    pub lease_seconds: u32,
    /// Grace period (a seat stays live for lease + grace after its last check).
    pub grace_seconds: u32,
    /// Reference measurements.
    pub tcb: TcbReference,
    /// The secret share.
    pub key_share: Zeroizing<Vec<u8>>,
    /// Sale time (RFC 3339, from the registration).
    pub issued: String,
    /// When it was registered here.
    pub registered_at: OffsetDateTime,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// First successful activation.
    pub first_use: Option<OffsetDateTime>,
    /// Successful loads.
    pub uses: u64,
}

impl std::fmt::Debug for LicenseRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LicenseRecord")
            .field("license_guid", &self.license_guid)
            .field("model_name", &self.model_name)
            .field("uses", &self.uses)
            .finish_non_exhaustive()
    }
}

impl LicenseRecord {
    /// Builds the record to insert from a verified registration and its share, opened with the
    /// service's registration key ([`Registration::open_share`]).
    pub fn from_registration(
        reg: &Registration,
        share: &ovsa_core::license::KeyShare,
        isv_cert_sha256: [u8; 32],
        registered_at: OffsetDateTime,
    ) -> Self {
        LicenseRecord {
            license_guid: reg.license_guid,
            model_guid: reg.model_guid,
            model_name: reg.model_name.clone(),
            model_version: reg.model_version.clone(),
            header_hash: reg.header_hash,
            license_digest: reg.license_digest,
            customer_cert: reg.customer_certificate.clone(),
            isv_cert_sha256,
            policy: reg.policy.clone(),
            lease_seconds: reg.lease_seconds,
            grace_seconds: reg.grace_seconds,
            tcb: reg.tcb.clone(),
            key_share: Zeroizing::new(share.as_bytes().to_vec()),
            issued: reg.issued.clone(),
            registered_at,
            revoked_at: None,
            first_use: None,
            uses: 0,
        }
    }
}

/// One machine that activated a license: identified by SHA-256 of its vTPM EK certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// SHA-256 of the vTPM EK certificate.
    pub instance_id: [u8; 32],
    /// First successful check.
    pub first_seen: OffsetDateTime,
    /// Latest successful check.
    pub last_seen: OffsetDateTime,
    /// Successful checks (loads and renewals).
    pub checks: u64,
}

/// The seat one check takes (a load) or keeps (a renewal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatRequest {
    /// SHA-256 of the vTPM EK certificate: the machine.
    pub instance_id: [u8; 32],
    /// The lease: the load's session id, named again by each renewal.
    pub lease_id: Uuid,
    /// The verified quote's counters.
    pub clock: ClockMark,
}

/// A live lease of a license (see [`Store::leases`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease id.
    pub lease_id: Uuid,
    /// The machine holding it.
    pub instance_id: [u8; 32],
    /// The TPM reset count (boot) it was taken or last renewed in.
    pub reset_count: u32,
    /// Until when it is live without a renewal.
    pub expires_at: OffsetDateTime,
}

/// A pending attestation session (challenge issued, attestation not yet received).
#[derive(Clone)]
pub struct SessionRecord {
    /// Session identifier.
    pub session_id: Uuid,
    /// License it is for.
    pub license_guid: Uuid,
    /// Load or renew.
    pub purpose: Purpose,
    /// The nonce sent.
    pub nonce: Vec<u8>,
    /// SHA-256 of the TLS client certificate that asked.
    pub client_cert_sha256: [u8; 32],
    /// SHA-256 of the EK certificate the credential challenge was made for.
    pub ek_cert_sha256: [u8; 32],
    /// Name of the AK the challenge was made for.
    pub ak_name: Vec<u8>,
    /// The credential secret (single use; deleted with the session).
    pub credential_secret: Zeroizing<Vec<u8>>,
    /// Expiry.
    pub expires_at: OffsetDateTime,
}

impl SessionRecord {
    /// A new session (fresh id) for a credential challenge just issued: keeps the challenge's
    /// EK certificate hash, AK Name and secret.
    pub fn issued(
        pending: &ovsa_core::attest::PendingCredential,
        license_guid: Uuid,
        purpose: Purpose,
        nonce: Vec<u8>,
        client_cert_sha256: [u8; 32],
        expires_at: OffsetDateTime,
    ) -> Self {
        SessionRecord {
            session_id: Uuid::new_v4(),
            license_guid,
            purpose,
            nonce,
            client_cert_sha256,
            ek_cert_sha256: *pending.ek_cert_sha256(),
            ak_name: pending.ak_name().to_vec(),
            credential_secret: Zeroizing::new(pending.secret().to_vec()),
            expires_at,
        }
    }

    /// The credential challenge state back from the stored session (the inverse of
    /// [`SessionRecord::issued`]), to check the answer against.
    pub fn pending_credential(&self) -> StoreResult<ovsa_core::attest::PendingCredential> {
        let secret: [u8; 32] =
            self.credential_secret.as_slice().try_into().map_err(|_| {
                StoreError::Corrupt("stored credential secret is not 32 bytes".into())
            })?;
        Ok(ovsa_core::attest::PendingCredential::from_parts(
            self.ek_cert_sha256,
            self.ak_name.clone(),
            secret,
        ))
    }
}

/// An audit log entry: every decision the service makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Time of the decision.
    pub at: OffsetDateTime,
    /// License concerned, if known.
    pub license_guid: Option<Uuid>,
    /// Who asked: the client certificate's subject and SHA-256.
    pub client: String,
    /// Which step: `challenge` or `attest`, or an admin action (`add`, `revoke`).
    pub action: String,
    /// `load` / `renew` where relevant.
    pub purpose: Option<Purpose>,
    /// `granted`, `issued` or `refused`.
    pub result: String,
    /// Reason code when refused.
    pub reason: Option<Reason>,
    /// Human-readable detail (never secret).
    pub message: String,
    /// Instance (SHA-256 of the vTPM EK certificate), if known.
    pub instance_id: Option<[u8; 32]>,
}

/// One sighting of verified host evidence, in the stored representation.
#[derive(Debug, Clone)]
pub(crate) struct HostSeen {
    /// Hex SHA-256 of the host EK certificate.
    pub ek: String,
    pub reset_count: i64,
    pub restart_count: i64,
    /// The quote's clock (ms), clamped to `i64::MAX`.
    pub clock: i64,
    /// Unix seconds.
    pub now: i64,
}

impl HostSeen {
    fn new(host_ek_sha256: [u8; 32], clock: &ClockInfo, now: OffsetDateTime) -> Self {
        HostSeen {
            ek: hex::encode(host_ek_sha256),
            reset_count: i64::from(clock.reset_count),
            restart_count: i64::from(clock.restart_count),
            clock: i64::try_from(clock.clock).unwrap_or(i64::MAX),
            now: codec::ts(now),
        }
    }

    /// The answer from the highest reset count before this sighting and the earliest first
    /// sighting of this quote or a later one of the same reset.
    pub fn sighting(
        &self,
        highest: Option<i64>,
        first_seen: Option<i64>,
    ) -> StoreResult<HostSighting> {
        let highest_reset_count = highest
            .map(|h| {
                u32::try_from(h).map_err(|_| {
                    StoreError::Corrupt(format!("host evidence reset count {h} is out of range"))
                })
            })
            .transpose()?;
        Ok(HostSighting {
            highest_reset_count,
            first_seen: u64::try_from(first_seen.unwrap_or(self.now)).unwrap_or(0),
        })
    }

    /// Whether this sighting is recorded: not when it is from a reset below the highest seen.
    pub fn is_recorded(&self, highest: Option<i64>) -> bool {
        highest.is_none_or(|h| self.reset_count >= h)
    }
}

/// Which audit entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this license.
    pub license_guid: Option<Uuid>,
    /// At most this many, newest first; 0 means no limit.
    pub limit: u32,
}

/// How a command opens the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the database if it is missing and bring its schema up to date (`serve`,
    /// `license add`).
    Create,
    /// An existing database only ([`StoreError::Missing`] / [`StoreError::NotInitialised`]
    /// otherwise), schema brought up to date (`license revoke`, `license reinstate`).
    Existing,
    /// An existing database, read-only: nothing is created, no migration runs and every write
    /// fails (`license list`, `license show`, `audit`). A schema older than this build is
    /// [`StoreError::SchemaTooOld`].
    ReadOnly,
}

/// A storage backend.
pub enum Store {
    /// Embedded SQLite.
    Sqlite(sqlite::SqliteStore),
    /// PostgreSQL (boxed: its connection pool makes it much larger than the SQLite handle).
    Postgres(Box<postgres::PgStore>),
}

/// A database URL fit for error messages and logs: the whole `user:password@` part (everything
/// before the last `@` of the URL) becomes `***@`, and the value of every `password=` parameter
/// (a `?`/`&` query parameter, or a `key=value` word of a libpq connection string) becomes `***`.
pub fn redact_url(url: &str) -> String {
    let redacted = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    };
    redact_password_params(&redacted)
}

/// `password=VALUE` (any case) at the start, after `?`, `&` or whitespace: VALUE (up to the next
/// `&` or whitespace, or a quoted `'...'`) becomes `***`.
fn redact_password_params(s: &str) -> String {
    const KEY: &str = "password=";
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut prev: Option<char> = None;
    while !rest.is_empty() {
        let at_boundary = prev.is_none_or(|c| c == '?' || c == '&' || c.is_whitespace());
        if at_boundary
            && rest.len() >= KEY.len()
            && rest.is_char_boundary(KEY.len())
            && rest[..KEY.len()].eq_ignore_ascii_case(KEY)
        {
            out.push_str(&rest[..KEY.len()]);
            out.push_str("***");
            let value = &rest[KEY.len()..];
            let end = if let Some(quoted) = value.strip_prefix('\'') {
                quoted.find('\'').map(|i| i + 2).unwrap_or(value.len())
            } else {
                value
                    .find(|c: char| c == '&' || c.is_whitespace())
                    .unwrap_or(value.len())
            };
            rest = &value[end..];
            prev = Some('=');
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        prev = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Opens (creating and migrating as needed) `sqlite:PATH` or `postgres://...`.
    pub async fn open(url: &str) -> StoreResult<Store> {
        Self::open_with(url, OpenMode::Create).await
    }

    /// Opens `sqlite:PATH` or `postgres://...` in `mode` (see [`OpenMode`]).
    pub async fn open_with(url: &str, mode: OpenMode) -> StoreResult<Store> {
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::BadUrl(redact_url(url)));
            }
            Ok(Store::Sqlite(
                sqlite::SqliteStore::open_with(path, mode).await?,
            ))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(Box::new(
                postgres::PgStore::connect_with_mode(url, postgres::POOL_SIZE, mode).await?,
            )))
        } else {
            Err(StoreError::BadUrl(redact_url(url)))
        }
    }

    /// Short name of the backend.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Registers a license. Fails with [`StoreError::Duplicate`] if already registered.
    pub async fn add_license(&self, rec: &LicenseRecord) -> StoreResult<()> {
        dispatch!(self, s => s.add_license(rec).await)
    }

    /// One license.
    pub async fn license(&self, guid: Uuid) -> StoreResult<Option<LicenseRecord>> {
        dispatch!(self, s => s.license(guid).await)
    }

    /// All licenses, by registration time.
    pub async fn list_licenses(&self) -> StoreResult<Vec<LicenseRecord>> {
        dispatch!(self, s => s.list_licenses().await)
    }

    /// SHA-256 of every registered license's customer certificate (revoked licenses included),
    /// each once: the TLS client identities the service accepts at the handshake
    /// ([`crate::tls::ClientRegistry`]). Reads only the certificate column.
    pub async fn customer_cert_hashes(&self) -> StoreResult<Vec<[u8; 32]>> {
        dispatch!(self, s => s.customer_cert_hashes().await)
    }

    /// The machines that activated a license.
    pub async fn activations(&self, guid: Uuid) -> StoreResult<Vec<Activation>> {
        dispatch!(self, s => s.activations(guid).await)
    }

    /// Revokes a license (effective for every later check). `false` if unknown.
    pub async fn revoke(&self, guid: Uuid, at: OffsetDateTime) -> StoreResult<bool> {
        dispatch!(self, s => s.revoke(guid, at).await)
    }

    /// Lifts a revocation (the license checks again from the next request). `false` if unknown.
    pub async fn reinstate(&self, guid: Uuid) -> StoreResult<bool> {
        dispatch!(self, s => s.reinstate(guid).await)
    }

    /// Stores a new session.
    pub async fn put_session(&self, session: &SessionRecord) -> StoreResult<()> {
        dispatch!(self, s => s.put_session(session).await)
    }

    /// Atomically removes and returns a session: a second call for the same id returns `None`
    /// (so a nonce can be used once only, across replicas).
    pub async fn take_session(&self, id: Uuid) -> StoreResult<Option<SessionRecord>> {
        dispatch!(self, s => s.take_session(id).await)
    }

    /// Deletes sessions that expired before `now`; returns how many.
    pub async fn purge_sessions(&self, now: OffsetDateTime) -> StoreResult<u64> {
        dispatch!(self, s => s.purge_sessions(now).await)
    }

    /// Applies one check atomically: locks the license row, reads its usage, its live seats
    /// and the EK's clock high-water mark, calls `decide`, and on [`Decision::Grant`] writes the
    /// new use count, first use, activation, the lease (`seat.lease_id`, live until the grant's
    /// expiry) and the new high-water mark; a new reset epoch ends the EK's leases of earlier
    /// resets, and lapsed leases of the license are purged. Returns `Ok(None)` if the license
    /// is unknown.
    pub async fn record_use(
        &self,
        guid: Uuid,
        seat: &SeatRequest,
        now: OffsetDateTime,
        decide: &(dyn Fn(&UsageState) -> Decision + Sync),
    ) -> StoreResult<Option<Decision>> {
        dispatch!(self, s => s.record_use(guid, seat, now, decide).await)
    }

    /// Ends a lease (`/v1/release`): its seat is free once the machine holds no other live
    /// lease of the license. `false` if there was no such lease (idempotent).
    pub async fn release_lease(&self, guid: Uuid, lease_id: Uuid) -> StoreResult<bool> {
        dispatch!(self, s => s.release_lease(guid, lease_id).await)
    }

    /// The live leases of a license at `now`.
    pub async fn leases(&self, guid: Uuid, now: OffsetDateTime) -> StoreResult<Vec<Lease>> {
        dispatch!(self, s => s.leases(guid, now).await)
    }

    /// The highest TPM counters seen for the vTPM whose EK certificate hashes to
    /// `instance_id` (the Verifier's `previous_clock` fact), if it was seen.
    pub async fn tpm_clock(&self, instance_id: [u8; 32]) -> StoreResult<Option<ClockMark>> {
        dispatch!(self, s => s.tpm_clock(instance_id).await)
    }

    /// Records that `ak_name` answered a credential challenge under the host TPM EK whose
    /// certificate hashes to `host_ek_sha256` (idempotent: re-enrolling refreshes the time).
    pub async fn enroll_host_ak(
        &self,
        host_ek_sha256: [u8; 32],
        ak_name: &[u8],
        license_guid: Uuid,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        dispatch!(self, s => s.enroll_host_ak(host_ek_sha256, ak_name, license_guid, at).await)
    }

    /// The AK Names enrolled for the host EK whose certificate hashes to `host_ek_sha256`.
    pub async fn host_aks(&self, host_ek_sha256: [u8; 32]) -> StoreResult<Vec<Vec<u8>>> {
        dispatch!(self, s => s.host_aks(host_ek_sha256).await)
    }

    /// Records verified host evidence with quote clock `clock` from the host EK whose
    /// certificate hashes to `host_ek_sha256`, seen at `now`, and returns what was known before
    /// (atomically): the highest reset count recorded for that host EK, and when this quote or a
    /// later quote of the same reset was first seen (`now` if none). Evidence from a reset below
    /// the highest is not recorded; a higher reset drops the rows of the earlier resets. Call
    /// only with evidence whose signature verified (a forged high reset count would make the
    /// host's real evidence look replayed).
    pub async fn record_host_evidence(
        &self,
        host_ek_sha256: [u8; 32],
        clock: &ClockInfo,
        now: OffsetDateTime,
    ) -> StoreResult<HostSighting> {
        let seen = HostSeen::new(host_ek_sha256, clock, now);
        dispatch!(self, s => s.record_host_evidence(seen).await)
    }

    /// Appends an audit entry.
    pub async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        dispatch!(self, s => s.append_audit(entry).await)
    }

    /// Lists audit entries, newest first.
    pub async fn audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        dispatch!(self, s => s.audit(filter).await)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// Every numbered file under `store/migrations/<backend>/` is embedded in `embedded`, in
    /// order, and nothing else.
    pub(crate) fn assert_migrations_embedded(backend: &str, embedded: &[&str]) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/store/migrations")
            .join(backend);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), embedded.len(), "{names:?}");
        for (i, name) in names.iter().enumerate() {
            assert!(name.starts_with(&format!("{:04}_", i + 1)), "{name}");
            assert!(name.ends_with(".sql"), "{name}");
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            assert_eq!(text, embedded[i], "{name}");
        }
    }

    use super::redact_url;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://***@h:5432/db"
        );
        assert_eq!(redact_url("mysql://h/db"), "mysql://h/db");
    }

    #[test]
    fn redact_url_hides_userinfo_and_password_parameters() {
        for (url, want) in [
            // Passwords in the userinfo, the user name with them.
            (
                "postgres://u:secret@h:5432/db?x=1",
                "postgres://***@h:5432/db?x=1",
            ),
            ("postgresql://u@h/db", "postgresql://***@h/db"),
            ("postgres://u:se/cr@et@h/db", "postgres://***@h/db"),
            // `password=` query parameters, in any position and case.
            (
                "postgres://h/db?password=secret&sslmode=disable",
                "postgres://h/db?password=***&sslmode=disable",
            ),
            (
                "postgres://u:secret@h/db?application_name=a&PassWord=secret",
                "postgres://***@h/db?application_name=a&PassWord=***",
            ),
            ("postgres://h/db?password=", "postgres://h/db?password=***"),
            // libpq key=value strings (refused as URLs, but never echoed with the password).
            (
                "host=h password=secret dbname=d",
                "host=h password=*** dbname=d",
            ),
            (
                "host=h password='se cret' dbname=d",
                "host=h password=*** dbname=d",
            ),
            // Nothing secret: unchanged.
            (
                "postgres://h:5432/db?sslmode=disable",
                "postgres://h:5432/db?sslmode=disable",
            ),
            (
                "postgres://h/db?mypassword=x",
                "postgres://h/db?mypassword=x",
            ),
            ("sqlite:licenses.db", "sqlite:licenses.db"),
            ("", ""),
        ] {
            let got = redact_url(url);
            assert_eq!(got, want, "{url}");
            assert!(!got.contains("secret") && !got.contains("cret"), "{got}");
        }
    }
}

#[cfg(test)]
mod error_tests {
    use std::error::Error as _;

    use super::StoreError;

    #[test]
    fn database_cause_prints_once() {
        let e = StoreError::from(rusqlite::Error::QueryReturnedNoRows);
        assert_eq!(e.to_string(), "SQLite: Query returned no rows");
        assert!(e.source().is_none(), "{e}");
    }
}
