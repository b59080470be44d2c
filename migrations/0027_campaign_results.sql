-- 0027: campaigns' responses and results (lib/campaigns/results.c).
--
-- A response is a touchpoint of one of a campaign's response_types by one
-- of its targets in the treatment (contacted) or the control group, that
-- occurred within attribution_days after the target was decided (for a
-- control target: when it would have been contacted). When several
-- campaigns could claim it, the one whose decision came last before it
-- takes it (ties: the higher campaign id). The attribution is made once,
-- by the follower of the touchpoints' change feed (campaign_follow: its
-- place), and stored: it never changes afterwards. Its value is the
-- touchpoint's amount in the reporting currency (a refund negative; an
-- amount without a rate counts 0 and is marked unrated).
--
-- campaign_results keeps each campaign's results as served; dirty marks
-- those whose responses or decisions moved since, recomputed by the
-- upkeep (never per read).

CREATE TABLE campaign_responses (
    touchpoint_id bigint PRIMARY KEY,
    campaign_id   bigint NOT NULL REFERENCES campaigns (id),
    customer_id   bigint NOT NULL REFERENCES customers (id),
    grp           text NOT NULL CHECK (grp IN ('treatment', 'control')),
    type          text NOT NULL,
    revenue       numeric NOT NULL,
    unrated       boolean NOT NULL,
    occurred_at   timestamptz NOT NULL,
    attributed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaign_responses_campaign_idx ON campaign_responses (campaign_id, customer_id);
CREATE INDEX campaign_responses_customer_idx ON campaign_responses (customer_id);

CREATE TABLE campaign_results (
    campaign_id bigint PRIMARY KEY REFERENCES campaigns (id),
    results     jsonb,
    computed_at timestamptz,   -- as of when (the computation's start)
    compute_ms  int NOT NULL DEFAULT 0, -- how long the last one took
    dirty       boolean NOT NULL DEFAULT true
);
CREATE INDEX campaign_results_dirty_idx ON campaign_results (campaign_id) WHERE dirty;

CREATE TABLE campaign_follow (
    id      int PRIMARY KEY CHECK (id = 1),
    tp_xid  xid8 NOT NULL,
    tp_seq  bigint NOT NULL
);
-- From the changes still to come: the touchpoints already stored answer no
-- campaign (none has been executed before this migration).
INSERT INTO campaign_follow VALUES (1, pg_snapshot_xmin(pg_current_snapshot()), 0);
