-- 0016: jobs, long work that every crmd process shares (lib/jobs.h).
--
-- A job is queued by a request and run by whichever crmd claims it first
-- (FOR UPDATE SKIP LOCKED). While it runs, its process renews lease_until;
-- a job still "running" past its lease lost its process and is claimed
-- again, resuming from checkpoint, until it has been tried
-- CRM_JOB_MAX_ATTEMPTS times (then it fails). claimed_by and attempts
-- together name the one claim that may still write to a running job.
--
-- exclusive names work of which only one job may be queued or running at a
-- time: the partial unique index refuses a second one atomically (23505),
-- whatever the number of crmd processes.
--
-- No customer id is held here (params name what the work covers, never a
-- person), so jobs is not in the registry that merge, erasure and export
-- follow.
CREATE TABLE jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,62}$'),
    params           jsonb NOT NULL DEFAULT '{}',
    state            text NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    phase            text,
    done             bigint NOT NULL DEFAULT 0 CHECK (done >= 0),
    total            bigint NOT NULL DEFAULT 0 CHECK (total >= 0),
    checkpoint       jsonb,
    result           jsonb,
    error            jsonb,
    attempts         int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    exclusive        text,
    api_key_id       bigint REFERENCES api_keys (id) ON DELETE SET NULL,
    cancel_requested boolean NOT NULL DEFAULT false,
    claimed_by       text,
    lease_until      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'running') = (lease_until IS NOT NULL)),
    CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);

-- One queued or running job per exclusive name: the "409, one at a time".
CREATE UNIQUE INDEX jobs_exclusive_active_idx ON jobs (exclusive)
    WHERE exclusive IS NOT NULL AND state IN ('queued', 'running');

-- What the claimer reads: the jobs not yet ended, oldest first. Ended jobs
-- (nearly all rows, in time) stay out of it.
CREATE INDEX jobs_claimable_idx ON jobs (id) WHERE state IN ('queued', 'running');

-- What the claimer settles before claiming: running jobs by lease.
CREATE INDEX jobs_running_lease_idx ON jobs (lease_until) WHERE state = 'running';
