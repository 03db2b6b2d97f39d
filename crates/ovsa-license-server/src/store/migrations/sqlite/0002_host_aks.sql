-- Schema version 2: host AKs proven (credential challenge) to live in the host TPM owning the EK.
CREATE TABLE host_aks (
    host_ek_sha256 TEXT NOT NULL,
    ak_name        BLOB NOT NULL,
    license_guid   TEXT NOT NULL,
    enrolled_at    INTEGER NOT NULL,
    PRIMARY KEY (host_ek_sha256, ak_name)
) WITHOUT ROWID;
