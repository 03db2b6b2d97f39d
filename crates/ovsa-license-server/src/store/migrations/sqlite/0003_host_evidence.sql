-- Schema version 3: host evidence seen, per host EK, to bound its age and refuse replays.
-- One row per distinct host quote of the host TPM's latest reset (reset count, restart count,
-- clock): when the service first saw it. Rows of earlier resets are dropped once a later reset
-- is seen; the highest reset count of a host EK stays as the replay floor.
CREATE TABLE host_evidence_seen (
    host_ek_sha256 TEXT NOT NULL,
    reset_count    INTEGER NOT NULL,
    restart_count  INTEGER NOT NULL,
    clock          INTEGER NOT NULL,
    first_seen     INTEGER NOT NULL,
    PRIMARY KEY (host_ek_sha256, reset_count, restart_count, clock)
) WITHOUT ROWID;
