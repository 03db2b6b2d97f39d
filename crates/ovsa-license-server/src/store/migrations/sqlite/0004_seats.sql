-- Schema version 4: live seats and per-EK TPM clock high-water marks (clone detection).
-- The grace period of each license (signed; seats stay live for lease + grace).
ALTER TABLE licenses ADD COLUMN grace_seconds INTEGER NOT NULL DEFAULT 300;
-- One row per lease: a loaded model holding its machine's seat of a license. Live while
-- expires_at (unix seconds, service clock) is in the future; released leases are deleted.
CREATE TABLE seat_leases (
    license_guid TEXT NOT NULL REFERENCES licenses (license_guid) ON DELETE CASCADE,
    lease_id     TEXT NOT NULL,
    instance_id  TEXT NOT NULL,
    reset_count  INTEGER NOT NULL,
    taken_at     INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (license_guid, lease_id)
) WITHOUT ROWID;
CREATE INDEX seat_leases_by_instance ON seat_leases (instance_id, expires_at);
-- Per vTPM EK (SHA-256 of its certificate): the highest (reset, restart, clock) seen.
CREATE TABLE tpm_clocks (
    instance_id   TEXT PRIMARY KEY NOT NULL,
    reset_count   INTEGER NOT NULL,
    restart_count INTEGER NOT NULL,
    clock         INTEGER NOT NULL,
    seen_at       INTEGER NOT NULL
) WITHOUT ROWID;
