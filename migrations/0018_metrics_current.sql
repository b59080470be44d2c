-- 0018: metrics kept current between full recomputes (issue 13): the
-- lifecycle stage and its history, engagement and satisfaction, the base's
-- scales that score one customer without ranking the base again, and where
-- the follower of the change feeds stands.
--
-- customer_metrics and metrics_staging stay twins (the recompute swaps
-- their names): every column is added to both.

ALTER TABLE customer_metrics
    ADD COLUMN lifecycle_stage  text CHECK (lifecycle_stage IN
        ('prospect', 'new', 'active', 'at_risk', 'lapsed', 'won_back')),
    ADD COLUMN last_gap_days    integer,          -- days between the last two purchase days
    ADD COLUMN overdue_days     double precision, -- recency - the mean interval
    ADD COLUMN touchpoints_90d  integer,          -- of any kind in the 90 days to as_of
    ADD COLUMN last_inbound_at  timestamptz,
    ADD COLUMN nps_latest       smallint,
    ADD COLUMN nps_mean         double precision,
    ADD COLUMN nps_responses    integer,
    ADD COLUMN csat_latest      smallint,
    ADD COLUMN csat_mean        double precision,
    ADD COLUMN csat_responses   integer;

ALTER TABLE metrics_staging
    ADD COLUMN lifecycle_stage  text CHECK (lifecycle_stage IN
        ('prospect', 'new', 'active', 'at_risk', 'lapsed', 'won_back')),
    ADD COLUMN last_gap_days    integer,
    ADD COLUMN overdue_days     double precision,
    ADD COLUMN touchpoints_90d  integer,
    ADD COLUMN last_inbound_at  timestamptz,
    ADD COLUMN nps_latest       smallint,
    ADD COLUMN nps_mean         double precision,
    ADD COLUMN nps_responses    integer,
    ADD COLUMN csat_latest      smallint,
    ADD COLUMN csat_mean        double precision,
    ADD COLUMN csat_responses   integer;

-- The follower replaces a customer's row in place: room on each page makes
-- that a heap-only update, without touching the indexes.
ALTER TABLE customer_metrics SET (fillfactor = 80);
ALTER TABLE metrics_staging SET (fillfactor = 80);

CREATE INDEX customer_metrics_stage_idx ON customer_metrics (lifecycle_stage);
CREATE INDEX metrics_staging_stage_idx ON metrics_staging (lifecycle_stage);

-- Every change of a customer's lifecycle stage, when crmd saw it.
CREATE TABLE customer_lifecycle (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL,
    stage       text NOT NULL CHECK (stage IN
        ('prospect', 'new', 'active', 'at_risk', 'lapsed', 'won_back')),
    previous    text CHECK (previous IN
        ('prospect', 'new', 'active', 'at_risk', 'lapsed', 'won_back')),
    changed_at  timestamptz NOT NULL  -- the as_of of the computation that saw it
);
CREATE INDEX customer_lifecycle_customer_idx ON customer_lifecycle (customer_id, id);
CREATE INDEX customer_lifecycle_changed_idx ON customer_lifecycle (changed_at);

-- The base's scales as of each full recompute: the RFM scores' upper
-- bounds (scores 1 to 4; recency as the last purchase's time in epoch ms)
-- and the lowest predicted value in the tiers top and high. A customer
-- updated between recomputes is scored against the latest row.
CREATE TABLE metrics_scales (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    as_of       timestamptz NOT NULL,
    recency     double precision[] NOT NULL,
    frequency   double precision[] NOT NULL,
    monetary    double precision[] NOT NULL,
    tier_top    double precision,
    tier_high   double precision,
    customers   bigint NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    job_id      bigint
);

-- Where the metrics' follower stands in the change feeds of touchpoints and
-- customers (migration 0009): the changes after these places are not yet
-- reflected in customer_metrics.
CREATE TABLE metrics_follow (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    tp_xid      xid8 NOT NULL DEFAULT '0',
    tp_seq      bigint NOT NULL DEFAULT 0,
    cu_xid      xid8 NOT NULL DEFAULT '0',
    cu_seq      bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO metrics_follow DEFAULT VALUES;
