-- The nodes of a fleet (ARCHITECTURE.md "Fleets: nodes, leases, takeover"):
-- one row per daemon start (its id is new at each start). Every time here is
-- the database's (now()), never a node's clock.

CREATE TABLE nodes (
    id             TEXT PRIMARY KEY,        -- {label}-{8 hex}
    label          TEXT NOT NULL,           -- node_name, or the host name
    version        TEXT NOT NULL,           -- the gatherd version it runs
    started_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    runs_in_flight BIGINT NOT NULL DEFAULT 0,
    state          TEXT NOT NULL DEFAULT 'alive' CHECK (state IN ('alive', 'stopped', 'dead')),
    lease_ms       BIGINT NOT NULL,         -- dead once heartbeat_at is older than this
    ended_at       TIMESTAMPTZ,             -- when it stopped or was declared dead
    taken_over_by  TEXT                     -- the node that declared it dead
);
CREATE INDEX nodes_alive ON nodes (heartbeat_at) WHERE state = 'alive';

-- The version (content hash) of each job file each node has: a node that
-- sees another live node with another hash for a job logs it (version skew).
CREATE TABLE node_jobs (
    node         TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    job          TEXT NOT NULL,
    content_hash BYTEA NOT NULL,
    PRIMARY KEY (node, job)
);
CREATE INDEX node_jobs_job ON node_jobs (job);
