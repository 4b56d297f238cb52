-- gatherd run history: notifications (issue 14).
--
-- notify_state: per job, where its failure streak stands, so a restarted
-- daemon neither tells a streak again nor forgets to tell its recovery.
CREATE TABLE notify_state (
    job         TEXT PRIMARY KEY,           -- JobId
    failures    INTEGER NOT NULL,           -- consecutive runs that did not succeed
    told        INTEGER NOT NULL CHECK (told IN (0, 1)),  -- this streak's `failure` was sent
    told_at     TEXT,                       -- when it was last sent (for repeat_every)
    stale       INTEGER NOT NULL DEFAULT 0 CHECK (stale IN (0, 1)),  -- `stale` sent, no success since
    invalid     TEXT,                       -- the invalid version told (its diagnostic), until a valid one
    updated_at  TEXT NOT NULL
);

-- One row per notification (target × event), updated after each attempt to
-- deliver it. Not tied to `runs` by a foreign key: a delivery outlives the
-- retention of its run. The newest 10,000 are kept.
CREATE TABLE notifications (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job         TEXT NOT NULL,
    run_id      INTEGER,
    target      TEXT NOT NULL,
    event       TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status = 'pending' OR status = 'delivered' OR status = 'failed'),
    attempts    INTEGER NOT NULL,
    error       TEXT,                       -- the last attempt's error
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX notifications_run ON notifications (run_id) WHERE run_id IS NOT NULL;
