-- gatherd run history, version 5: jobs paused by `gatherd pause` (`POST
-- /jobs/{job}/pause`), by job id (the path in the jobs folder), so a pause
-- survives a restart; `gatherd resume` deletes the row. A job's pause is kept
-- while its file is gone: dropped again, the job is still paused.
CREATE TABLE paused_jobs (
    job       TEXT PRIMARY KEY,
    paused_at TEXT NOT NULL
) WITHOUT ROWID;
