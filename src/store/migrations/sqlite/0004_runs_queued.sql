-- gatherd run history, version 4: a run may be `queued` — recorded the moment
-- it was asked for, while it waits for a slot (`max_concurrent_runs`) or its
-- semaphore; it becomes `running` when it starts. The same `runs` table, its
-- status CHECK taking the new word, and written as comparisons instead of an IN
-- list (see 0003: an IN list of more than two words costs a temporary b-tree
-- per row checked).
--
-- SQLite cannot alter a CHECK in place: the table is rebuilt, its rows (and
-- ids) copied over. The migration runs with foreign keys off (the migrator
-- turns them off around every migration and checks them before each commit),
-- so dropping the old table neither cascades into `steps`, `attempts` and
-- `logs` nor nulls `claims.run_id`; their REFERENCES name `runs`, which is
-- the new table once it is renamed. AUTOINCREMENT's high-water mark is carried
-- over, so an id pruned from the top is still never reused.

CREATE TABLE runs_v4 (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job             TEXT NOT NULL,
    trigger         TEXT NOT NULL CHECK (trigger IN ('file', 'schedule', 'interval', 'manual')),
    fire_time       TEXT NOT NULL,
    content_hash    BLOB NOT NULL,          -- the version of the job file this run ran
    node            TEXT NOT NULL,          -- the daemon that ran it
    status          TEXT NOT NULL DEFAULT 'running'
                    CHECK (status = 'queued' OR status = 'running' OR status = 'succeeded' OR status = 'failed'
                           OR status = 'timed_out' OR status = 'cancelled' OR status = 'interrupted'
                           OR status = 'missed'),
    started_at      TEXT NOT NULL,          -- while `queued`: when it was queued
    finished_at     TEXT,
    duration_ms     INTEGER,
    error           TEXT,
    result          TEXT,                   -- JSON
    result_truncated INTEGER NOT NULL DEFAULT 0,
    start_seq       INTEGER,                -- run_started's number in the run's events (version 2)
    end_seq         INTEGER                 -- run_finished's
);

INSERT INTO runs_v4 (id, job, trigger, fire_time, content_hash, node, status, started_at, finished_at, duration_ms,
                     error, result, result_truncated, start_seq, end_seq)
    SELECT id, job, trigger, fire_time, content_hash, node, status, started_at, finished_at, duration_ms,
           error, result, result_truncated, start_seq, end_seq FROM runs;

DELETE FROM sqlite_sequence WHERE name = 'runs_v4';
INSERT INTO sqlite_sequence (name, seq) SELECT 'runs_v4', seq FROM sqlite_sequence WHERE name = 'runs';

DROP TABLE runs;
ALTER TABLE runs_v4 RENAME TO runs;

CREATE INDEX runs_job_started ON runs (job, started_at);
-- The runs a crash left going (recovery at start): running or queued.
CREATE INDEX runs_running ON runs (node) WHERE status = 'running' OR status = 'queued';
CREATE INDEX runs_one_shot ON runs (job, content_hash) WHERE trigger = 'file';
CREATE INDEX runs_job_fire ON runs (job, fire_time);
