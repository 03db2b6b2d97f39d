-- Schema version 1: initial schema.
CREATE TABLE licenses (
    license_guid    TEXT PRIMARY KEY NOT NULL,
    model_guid      TEXT NOT NULL,
    model_name      TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    header_hash     TEXT NOT NULL,
    license_digest  TEXT NOT NULL,
    customer_cert   BLOB NOT NULL,
    isv_cert_sha256 TEXT NOT NULL,
    policy          TEXT NOT NULL,
    lease_seconds   INTEGER NOT NULL,
    tcb             TEXT NOT NULL,
    key_share       BLOB NOT NULL,
    issued          TEXT NOT NULL,
    registered_at   INTEGER NOT NULL,
    revoked_at      INTEGER,
    first_use       INTEGER,
    uses            INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0)
);
CREATE TABLE activations (
    license_guid TEXT NOT NULL REFERENCES licenses (license_guid) ON DELETE CASCADE,
    instance_id  TEXT NOT NULL,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    checks       INTEGER NOT NULL,
    PRIMARY KEY (license_guid, instance_id)
) WITHOUT ROWID;
CREATE TABLE sessions (
    session_id         TEXT PRIMARY KEY NOT NULL,
    license_guid       TEXT NOT NULL,
    purpose            TEXT NOT NULL,
    nonce              BLOB NOT NULL,
    client_cert_sha256 TEXT NOT NULL,
    ek_cert_sha256     TEXT NOT NULL,
    ak_name            BLOB NOT NULL,
    credential_secret  BLOB NOT NULL,
    expires_at         INTEGER NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE TABLE audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    license_guid TEXT,
    client       TEXT NOT NULL,
    action       TEXT NOT NULL,
    purpose      TEXT,
    result       TEXT NOT NULL,
    reason       TEXT,
    message      TEXT NOT NULL,
    instance_id  TEXT
);
CREATE INDEX audit_by_license ON audit (license_guid, id);
