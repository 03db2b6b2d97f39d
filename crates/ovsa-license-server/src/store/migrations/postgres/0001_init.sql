-- Schema version 1: initial schema.
CREATE TABLE licenses (
    license_guid    TEXT PRIMARY KEY,
    model_guid      TEXT NOT NULL,
    model_name      TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    header_hash     TEXT NOT NULL,
    license_digest  TEXT NOT NULL,
    customer_cert   BYTEA NOT NULL,
    isv_cert_sha256 TEXT NOT NULL,
    policy          TEXT NOT NULL,
    lease_seconds   BIGINT NOT NULL,
    tcb             TEXT NOT NULL,
    key_share       BYTEA NOT NULL,
    issued          TEXT NOT NULL,
    registered_at   BIGINT NOT NULL,
    revoked_at      BIGINT,
    first_use       BIGINT,
    uses            BIGINT NOT NULL DEFAULT 0 CHECK (uses >= 0)
);
CREATE TABLE activations (
    license_guid TEXT NOT NULL REFERENCES licenses (license_guid) ON DELETE CASCADE,
    instance_id  TEXT NOT NULL,
    first_seen   BIGINT NOT NULL,
    last_seen    BIGINT NOT NULL,
    checks       BIGINT NOT NULL,
    PRIMARY KEY (license_guid, instance_id)
);
CREATE TABLE sessions (
    session_id         TEXT PRIMARY KEY,
    license_guid       TEXT NOT NULL,
    purpose            TEXT NOT NULL,
    nonce              BYTEA NOT NULL,
    client_cert_sha256 TEXT NOT NULL,
    ek_cert_sha256     TEXT NOT NULL,
    ak_name            BYTEA NOT NULL,
    credential_secret  BYTEA NOT NULL,
    expires_at         BIGINT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
CREATE TABLE audit (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           BIGINT NOT NULL,
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
