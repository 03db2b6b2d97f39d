//! Row encoding shared by both backends: GUIDs as text, hashes as lowercase hex, policy and TCB
//! reference as JSON text, times as whole unix seconds (rounded down, which errs on the strict
//! side for every limit), counters as signed 64-bit integers. Also the schema-version checks both
//! backends apply.

use ovsa_core::protocol::{Purpose, Reason};
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::relying_party::{SeatState, UsageState};
use crate::store::{
    Activation, AuditEntry, ClockMark, Lease, LicenseRecord, SessionRecord, StoreError,
    StoreResult, SCHEMA_VERSION,
};

/// Unix seconds.
pub fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// From unix seconds.
pub fn from_ts(s: i64, what: &str) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(s)
        .map_err(|_| StoreError::Corrupt(format!("{what}: time {s} is out of range")))
}

fn opt_ts(s: Option<i64>, what: &str) -> StoreResult<Option<OffsetDateTime>> {
    s.map(|s| from_ts(s, what)).transpose()
}

/// A counter to its column value.
pub fn to_i64(v: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} does not fit")))
}

/// A counter from its column value.
pub fn to_u64(v: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is negative ({v})")))
}

/// An audit limit (0: none) as a SQL `LIMIT`.
pub fn limit(limit: u32) -> i64 {
    if limit == 0 {
        i64::MAX
    } else {
        i64::from(limit)
    }
}

/// Number of migrations already applied for schema version `found` (checked `0..=current`).
pub fn version_index(found: i64) -> StoreResult<usize> {
    usize::try_from(found)
        .map_err(|_| StoreError::Corrupt(format!("schema version {found} is negative")))
}

fn guid(s: &str, what: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| StoreError::Corrupt(format!("{what} is not a GUID")))
}

/// 32 bytes from lowercase hex.
pub fn hex32(s: &str, what: &str) -> StoreResult<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| StoreError::Corrupt(format!("{what} is not 32 bytes of hex")))?;
    Ok(out)
}

fn json<T: DeserializeOwned>(s: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn to_json<T: Serialize>(v: &T, what: &str) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The serde (snake_case) name of a unit enum value such as [`Purpose`] or [`Reason`].
fn name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        // Unit variants always serialise as strings; keep something readable regardless.
        _ => String::from("unknown"),
    }
}

fn from_name<T: DeserializeOwned>(s: String, what: &str) -> StoreResult<T> {
    serde_json::from_value(serde_json::Value::String(s))
        .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The locked license row as `record_use` reads it.
pub struct RawUsage {
    pub policy: String,
    pub revoked_at: Option<i64>,
    pub first_use: Option<i64>,
    pub uses: i64,
    pub lease_seconds: i64,
    pub grace_seconds: i64,
}

/// What `record_use` reads about seats and the EK's counters.
pub struct RawSeats {
    /// Distinct machines with a live lease of the license.
    pub live_seats: i64,
    /// Live leases of the license held by this machine.
    pub held_here: i64,
    /// Live leases of this EK on any license, other than the one renewed.
    pub other_live_leases: i64,
    /// The EK's high-water mark (reset, restart, clock).
    pub mark: Option<(i64, i64, i64)>,
}

fn to_u32(v: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} is out of range")))
}

/// A stored high-water mark.
pub fn clock_mark(reset: i64, restart: i64, clock: i64) -> StoreResult<ClockMark> {
    Ok(ClockMark {
        reset_count: to_u32(reset, "TPM reset count")?,
        restart_count: to_u32(restart, "TPM restart count")?,
        clock: to_u64(clock, "TPM clock")?,
    })
}

/// A high-water mark as columns (reset, restart, clock); a clock beyond `i64::MAX` ms (292
/// million years) is clamped.
pub fn mark_columns(m: &ClockMark) -> (i64, i64, i64) {
    (
        i64::from(m.reset_count),
        i64::from(m.restart_count),
        i64::try_from(m.clock).unwrap_or(i64::MAX),
    )
}

/// Builds the Relying Party's view from the locked license row and the seat reads.
pub fn usage_state(u: RawUsage, seats: RawSeats, quote: ClockMark) -> StoreResult<UsageState> {
    Ok(UsageState {
        policy: json(&u.policy, "license policy")?,
        revoked_at: opt_ts(u.revoked_at, "revoked_at")?,
        first_use: opt_ts(u.first_use, "first_use")?,
        uses: to_u64(u.uses, "uses")?,
        seats: SeatState {
            lease_seconds: to_u32(u.lease_seconds, "lease_seconds")?,
            grace_seconds: to_u32(u.grace_seconds, "grace_seconds")?,
            live_seats: to_u64(seats.live_seats, "live seats")?,
            holds_seat: seats.held_here > 0,
            quote,
            mark: seats
                .mark
                .map(|(a, b, c)| clock_mark(a, b, c))
                .transpose()?,
            other_live_leases: to_u64(seats.other_live_leases, "live leases")?,
        },
    })
}

/// A `seat_leases` row (without the license GUID): lease id, instance, reset count, expiry.
pub fn lease(lease_id: &str, instance: &str, reset: i64, expires_at: i64) -> StoreResult<Lease> {
    Ok(Lease {
        lease_id: guid(lease_id, "lease_id")?,
        instance_id: hex32(instance, "lease instance_id")?,
        reset_count: to_u32(reset, "lease reset count")?,
        expires_at: from_ts(expires_at, "lease expires_at")?,
    })
}

/// A `licenses` row.
pub struct RawLicense {
    pub license_guid: String,
    pub model_guid: String,
    pub model_name: String,
    pub model_version: String,
    pub header_hash: String,
    pub license_digest: String,
    pub customer_cert: Vec<u8>,
    pub isv_cert_sha256: String,
    pub policy: String,
    pub lease_seconds: i64,
    pub grace_seconds: i64,
    pub tcb: String,
    pub key_share: Zeroizing<Vec<u8>>,
    pub issued: String,
    pub registered_at: i64,
    pub revoked_at: Option<i64>,
    pub first_use: Option<i64>,
    pub uses: i64,
}

impl RawLicense {
    /// Encodes a record.
    pub fn encode(r: &LicenseRecord) -> StoreResult<RawLicense> {
        Ok(RawLicense {
            license_guid: r.license_guid.to_string(),
            model_guid: r.model_guid.to_string(),
            model_name: r.model_name.clone(),
            model_version: r.model_version.clone(),
            header_hash: hex::encode(r.header_hash),
            license_digest: hex::encode(r.license_digest),
            customer_cert: r.customer_cert.clone(),
            isv_cert_sha256: hex::encode(r.isv_cert_sha256),
            policy: to_json(&r.policy, "license policy")?,
            lease_seconds: i64::from(r.lease_seconds),
            grace_seconds: i64::from(r.grace_seconds),
            tcb: to_json(&r.tcb, "TCB reference")?,
            key_share: r.key_share.clone(),
            issued: r.issued.clone(),
            registered_at: ts(r.registered_at),
            revoked_at: r.revoked_at.map(ts),
            first_use: r.first_use.map(ts),
            uses: to_i64(r.uses, "uses")?,
        })
    }

    /// Decodes a row.
    pub fn decode(self) -> StoreResult<LicenseRecord> {
        Ok(LicenseRecord {
            license_guid: guid(&self.license_guid, "license_guid")?,
            model_guid: guid(&self.model_guid, "model_guid")?,
            model_name: self.model_name,
            model_version: self.model_version,
            header_hash: hex32(&self.header_hash, "header_hash")?,
            license_digest: hex32(&self.license_digest, "license_digest")?,
            customer_cert: self.customer_cert,
            isv_cert_sha256: hex32(&self.isv_cert_sha256, "isv_cert_sha256")?,
            policy: json(&self.policy, "license policy")?,
            lease_seconds: u32::try_from(self.lease_seconds).map_err(|_| {
                StoreError::Corrupt(format!(
                    "lease_seconds {} is out of range",
                    self.lease_seconds
                ))
            })?,
            grace_seconds: to_u32(self.grace_seconds, "grace_seconds")?,
            tcb: json(&self.tcb, "TCB reference")?,
            key_share: self.key_share,
            issued: self.issued,
            registered_at: from_ts(self.registered_at, "registered_at")?,
            revoked_at: opt_ts(self.revoked_at, "revoked_at")?,
            first_use: opt_ts(self.first_use, "first_use")?,
            uses: to_u64(self.uses, "uses")?,
        })
    }
}

/// An `activations` row (without the license GUID).
pub struct RawActivation {
    pub instance_id: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub checks: i64,
}

impl RawActivation {
    /// Decodes a row.
    pub fn decode(self) -> StoreResult<Activation> {
        Ok(Activation {
            instance_id: hex32(&self.instance_id, "instance_id")?,
            first_seen: from_ts(self.first_seen, "first_seen")?,
            last_seen: from_ts(self.last_seen, "last_seen")?,
            checks: to_u64(self.checks, "checks")?,
        })
    }
}

/// A `sessions` row.
pub struct RawSession {
    pub session_id: String,
    pub license_guid: String,
    pub purpose: String,
    pub nonce: Vec<u8>,
    pub client_cert_sha256: String,
    pub ek_cert_sha256: String,
    pub ak_name: Vec<u8>,
    pub credential_secret: Zeroizing<Vec<u8>>,
    pub expires_at: i64,
}

impl RawSession {
    /// Encodes a record.
    pub fn encode(s: &SessionRecord) -> RawSession {
        RawSession {
            session_id: s.session_id.to_string(),
            license_guid: s.license_guid.to_string(),
            purpose: name(&s.purpose),
            nonce: s.nonce.clone(),
            client_cert_sha256: hex::encode(s.client_cert_sha256),
            ek_cert_sha256: hex::encode(s.ek_cert_sha256),
            ak_name: s.ak_name.clone(),
            credential_secret: s.credential_secret.clone(),
            expires_at: ts(s.expires_at),
        }
    }

    /// Decodes a row.
    pub fn decode(self) -> StoreResult<SessionRecord> {
        Ok(SessionRecord {
            session_id: guid(&self.session_id, "session_id")?,
            license_guid: guid(&self.license_guid, "session license_guid")?,
            purpose: from_name::<Purpose>(self.purpose, "session purpose")?,
            nonce: self.nonce,
            client_cert_sha256: hex32(&self.client_cert_sha256, "client_cert_sha256")?,
            ek_cert_sha256: hex32(&self.ek_cert_sha256, "ek_cert_sha256")?,
            ak_name: self.ak_name,
            credential_secret: self.credential_secret,
            expires_at: from_ts(self.expires_at, "session expires_at")?,
        })
    }
}

/// An `audit` row (without the id).
pub struct RawAudit {
    pub at: i64,
    pub license_guid: Option<String>,
    pub client: String,
    pub action: String,
    pub purpose: Option<String>,
    pub result: String,
    pub reason: Option<String>,
    pub message: String,
    pub instance_id: Option<String>,
}

impl RawAudit {
    /// Encodes an entry.
    pub fn encode(e: &AuditEntry) -> RawAudit {
        RawAudit {
            at: ts(e.at),
            license_guid: e.license_guid.map(|g| g.to_string()),
            client: e.client.clone(),
            action: e.action.clone(),
            purpose: e.purpose.as_ref().map(name),
            result: e.result.clone(),
            reason: e.reason.as_ref().map(name),
            message: e.message.clone(),
            instance_id: e.instance_id.map(hex::encode),
        }
    }

    /// Decodes a row.
    pub fn decode(self) -> StoreResult<AuditEntry> {
        Ok(AuditEntry {
            at: from_ts(self.at, "audit time")?,
            license_guid: self
                .license_guid
                .map(|g| guid(&g, "audit license_guid"))
                .transpose()?,
            client: self.client,
            action: self.action,
            purpose: self
                .purpose
                .map(|p| from_name::<Purpose>(p, "audit purpose"))
                .transpose()?,
            result: self.result,
            reason: self
                .reason
                .map(|r| from_name::<Reason>(r, "audit reason"))
                .transpose()?,
            message: self.message,
            instance_id: self
                .instance_id
                .map(|i| hex32(&i, "audit instance_id"))
                .transpose()?,
        })
    }
}

/// The schema found must be exactly this build's for a read-only open.
pub fn check_version(found: i64) -> StoreResult<()> {
    if found > SCHEMA_VERSION {
        Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        })
    } else if found < SCHEMA_VERSION {
        Err(StoreError::SchemaTooOld {
            found,
            supported: SCHEMA_VERSION,
        })
    } else {
        Ok(())
    }
}
