-- gatherd run history, version 3: the same `steps` table, its status CHECK
-- written as comparisons instead of an IN list.
--
-- Why: SQLite evaluates a CHECK's `IN ('a', 'b', ...)` of more than two values
-- by building a temporary b-tree of the list, anew for every row it checks —
-- twice per step (the `running` row, then the upsert of its end). That was
-- about half of the writer's time at a large fan-out; a chain of `=` tests
-- accepts exactly the same words and costs a few comparisons.
--
-- SQLite cannot alter a CHECK in place: the table is rebuilt, its rows (and
-- their ids, which keep the order steps were first seen) copied over.

ALTER TABLE steps RENAME TO steps_v2;

-- One row per node path of a run (groups included), in the order first seen
-- (rowid), upserted by (run_id, path): NodeStarted, then NodeFinished.
CREATE TABLE steps (
    id        INTEGER PRIMARY KEY,
    run_id    INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    path      TEXT NOT NULL,
    name      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    status    TEXT NOT NULL
              CHECK (status = 'running' OR status = 'succeeded' OR status = 'failed' OR status = 'timed_out'
                     OR status = 'cancelled' OR status = 'skipped' OR status = 'interrupted'),
    attempts  INTEGER NOT NULL,
    start_ms  INTEGER,
    end_ms    INTEGER,
    output    TEXT,                         -- JSON, at most 64 KiB
    truncated INTEGER NOT NULL DEFAULT 0,
    error     TEXT,
    start_seq INTEGER,                      -- node_started's number in the run's events (version 2)
    end_seq   INTEGER,                      -- node_finished's
    UNIQUE (run_id, path)
);

INSERT INTO steps (id, run_id, path, name, kind, status, attempts, start_ms, end_ms, output, truncated, error,
                   start_seq, end_seq)
    SELECT id, run_id, path, name, kind, status, attempts, start_ms, end_ms, output, truncated, error,
           start_seq, end_seq FROM steps_v2;

DROP TABLE steps_v2;
