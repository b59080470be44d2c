-- 0019: the whole base's metrics (issue 13): each numeric measure's
-- distribution, the counts the summary reads, and one row per UTC day of
-- the base's figures (lib/metrics/base.c, the job "metrics_base").
--
-- Nothing here names a customer: the rows are aggregates, so none of these
-- tables is in the registry that merge, erasure and export follow, and an
-- erasure or a merge leaves them as they are.

-- Each measure's distribution over customer_metrics as the last
-- metrics_base job found it (openapi.yaml, MetricsDistribution): doc is the
-- page's body without the customer's place; quantiles, the 1001 values of
-- the percentile function at 0, 0.001, ..., 1 (linear interpolation, as
-- percentile_cont), from which a customer's percentile rank is read without
-- ranking the base again.
CREATE TABLE metrics_distributions (
    measure     text PRIMARY KEY,
    as_of       timestamptz,          -- the latest customer_metrics.as_of read
    computed_at timestamptz NOT NULL,
    n           bigint NOT NULL,      -- customers with a value
    missing     bigint NOT NULL,      -- customers left out: no value
    doc         jsonb NOT NULL,
    quantiles   jsonb,                -- 1001 numbers; null when n = 0
    job_id      bigint
);

-- The base as the last metrics_base job counted it: customers by lifecycle
-- stage (unstaged: no stage computed yet) and the latest NPS answer of each
-- customer who gave one. One row.
CREATE TABLE metrics_base (
    one                 boolean PRIMARY KEY DEFAULT true CHECK (one),
    as_of               timestamptz,
    computed_at         timestamptz NOT NULL,
    customers           bigint NOT NULL,
    stage_prospect      bigint NOT NULL,
    stage_new           bigint NOT NULL,
    stage_active        bigint NOT NULL,
    stage_at_risk       bigint NOT NULL,
    stage_lapsed        bigint NOT NULL,
    stage_won_back      bigint NOT NULL,
    stage_unknown       bigint NOT NULL,
    nps_latest_promoters  bigint NOT NULL,
    nps_latest_passives   bigint NOT NULL,
    nps_latest_detractors bigint NOT NULL,
    job_id              bigint
);

-- One row per UTC day, written once when the day is over and never
-- recomputed: what happened that day stays as it was recorded, whatever
-- erasures, merges or late touchpoints come after.
--
-- From the touchpoints of the day (every touchpoint, whatever became of its
-- customer since): orders (purchases), refunds, revenue (purchases minus the
-- refunds' absolute amounts, in the reporting currency; amounts in a
-- currency without a rate left out and counted in unrated), new_customers
-- (customers whose first purchase ever falls on the day) and the NPS answers
-- (feedback on the nps scale: promoters 9-10, passives 7-8, detractors 0-6).
--
-- From lifecycle: lapsed (customer_lifecycle transitions to "lapsed" that
-- day), active (customers in new, active, at_risk or won_back) and the
-- customers by stage. The stages can only be counted as they stand, so they
-- are recorded on the day a job's snapshot closes (source 'snapshot'); days
-- written before it (the backfill of a first run, source 'backfill') and
-- days a later run catches up on (source 'catch_up') have them null. lapsed
-- is null on backfilled days only.
CREATE TABLE metrics_daily (
    day                 date PRIMARY KEY,
    source              text NOT NULL CHECK (source IN ('backfill', 'catch_up', 'snapshot')),
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    orders              bigint NOT NULL,
    refunds             bigint NOT NULL,
    revenue             numeric NOT NULL,
    unrated             bigint NOT NULL,
    new_customers       bigint NOT NULL,
    nps_promoters       bigint NOT NULL,
    nps_passives        bigint NOT NULL,
    nps_detractors      bigint NOT NULL,
    lapsed              bigint,
    active              bigint,
    stage_prospect      bigint,
    stage_new           bigint,
    stage_active        bigint,
    stage_at_risk       bigint,
    stage_lapsed        bigint,
    stage_won_back      bigint,
    stage_unknown       bigint,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    job_id              bigint
);
