-- gatherd run history, version 1 (SQLite).
-- Times are RFC 3339 UTC text with microseconds and a `Z` (fixed width, so they
-- sort as text); offsets within a run are integer milliseconds from its start.
-- Hashes are the 32 bytes of a SHA-256.

-- Every job file seen, its last content hash and whether that version loaded.
CREATE TABLE jobs (
    job          TEXT PRIMARY KEY,          -- JobId: path relative to the jobs folder
    kind         TEXT NOT NULL CHECK (kind IN ('toml', 'rhai')),
    content_hash BLOB NOT NULL,
    valid        INTEGER NOT NULL CHECK (valid IN (0, 1)),
    diagnostic   TEXT,                      -- why it is invalid
    first_seen   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);

-- One row per run (a fire missed while the daemon was down is a row too, with
-- status 'missed'). AUTOINCREMENT: an id is never reused, even after retention
-- deletes the newest rows, because the daemon's logs name runs by id.
CREATE TABLE runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job             TEXT NOT NULL,
    trigger         TEXT NOT NULL CHECK (trigger IN ('file', 'schedule', 'interval', 'manual')),
    fire_time       TEXT NOT NULL,
    content_hash    BLOB NOT NULL,          -- the version of the job file this run ran
    node            TEXT NOT NULL,          -- the daemon that ran it
    status          TEXT NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'interrupted',
                                      'missed')),
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    duration_ms     INTEGER,
    error           TEXT,
    result          TEXT,                   -- JSON
    result_truncated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_job_started ON runs (job, started_at);
CREATE INDEX runs_running ON runs (node) WHERE status = 'running';
CREATE INDEX runs_one_shot ON runs (job, content_hash) WHERE trigger = 'file';
-- The last fire of a job (to find the fires missed while the daemon was down).
CREATE INDEX runs_job_fire ON runs (job, fire_time);

-- One row per node path of a run (groups included), in the order first seen
-- (rowid), upserted by (run_id, path): NodeStarted, then NodeFinished.
CREATE TABLE steps (
    id        INTEGER PRIMARY KEY,
    run_id    INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    path      TEXT NOT NULL,
    name      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    status    TEXT NOT NULL
              CHECK (status IN ('running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'skipped', 'interrupted')),
    attempts  INTEGER NOT NULL,
    start_ms  INTEGER,
    end_ms    INTEGER,
    output    TEXT,                         -- JSON, at most 64 KiB
    truncated INTEGER NOT NULL DEFAULT 0,
    error     TEXT,
    UNIQUE (run_id, path)
);

-- Attempts of a step that failed and were retried.
CREATE TABLE attempts (
    run_id  INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    path    TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    error   TEXT NOT NULL,
    at_ms   INTEGER NOT NULL,
    PRIMARY KEY (run_id, path, attempt)
) WITHOUT ROWID;

-- Lines scripts printed, in order (rowid).
CREATE TABLE logs (
    id     INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    path   TEXT NOT NULL,
    at_ms  INTEGER NOT NULL,
    level  TEXT NOT NULL,                   -- print | debug
    text   TEXT NOT NULL
);
CREATE INDEX logs_run ON logs (run_id);

-- Who runs what, for fleets sharing one database: one row per scheduled fire
-- (slot = the fire time) or per one-shot version of a file (slot =
-- 'sha256:<hex>'). The first node to insert the row owns it until lease_until;
-- a node that dies stops renewing and another may take the claim over.
CREATE TABLE claims (
    job         TEXT NOT NULL,
    slot        TEXT NOT NULL,
    node        TEXT NOT NULL,
    claimed_at  TEXT NOT NULL,
    lease_until TEXT NOT NULL,
    run_id      INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    PRIMARY KEY (job, slot)
);
