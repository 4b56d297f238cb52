-- The fleet's claims (issue 16, ARCHITECTURE.md "Fleets"): each scheduled
-- fire (job, `fire:<slot>`), caught-up or missed fire, and one-shot version
-- (job, `sha256:<hash>`) is claimed once, insert-if-absent, by the node that
-- runs or records it; the claim says which version of the job file it was.
-- (0002 is the nodes' migration.)
ALTER TABLE claims ADD COLUMN content_hash BYTEA;
CREATE INDEX claims_job_claimed ON claims (job, claimed_at);

-- Named semaphores held across the fleet: a run holds one of the `count`
-- slots of its semaphore while it runs; the primary key is what makes a
-- semaphore of 1 have one holder in the whole fleet.
CREATE TABLE semaphore_slots (
    name        TEXT NOT NULL,
    slot        INTEGER NOT NULL,
    node        TEXT NOT NULL,
    run_id      BIGINT,
    acquired_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (name, slot)
);
CREATE INDEX semaphore_slots_node ON semaphore_slots (node);
