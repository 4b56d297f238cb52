-- gatherd run history, version 2: where each stored fact was in its run's event
-- stream. The daemon numbers a run's events 0, 1, 2, … as it streams them live
-- (the SSE `id:`); these columns keep those numbers so that the replay of a run
-- is the live stream, in the order sent. NULL for rows written before this
-- version or without a number (`gatherd run`, a run's end recorded by the
-- daemon after its task failed, the statuses recovery sets).
ALTER TABLE runs ADD COLUMN start_seq INTEGER;    -- run_started
ALTER TABLE runs ADD COLUMN end_seq INTEGER;      -- run_finished
ALTER TABLE steps ADD COLUMN start_seq INTEGER;   -- node_started
ALTER TABLE steps ADD COLUMN end_seq INTEGER;     -- node_finished
ALTER TABLE attempts ADD COLUMN seq INTEGER;      -- attempt_failed
ALTER TABLE attempts ADD COLUMN retry_in_ms INTEGER;
ALTER TABLE logs ADD COLUMN seq INTEGER;          -- log
