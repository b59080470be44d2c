-- 0022: segments (lib/segments.h, lib/segments/store.c): a named rule over
-- the base, its live membership and the exact log of who entered and left.
--
-- A segment's rule is versioned: a changed rule is a new rule_version and
-- a new row of segment_versions. version counts every change of the
-- segment (name, description or rule): its ETag. Membership is kept by
-- every write that can change it, in that write's transaction, under the
-- advisory locks lib/segments/store.c describes (so a build that runs beside
-- the writes neither misses nor undoes one).
--
-- size is the count at the last fold; the deltas written since (one row per
-- write that changed the membership, never an update of the segment's row,
-- so concurrent writers do not queue on it) are added to it on read and
-- folded into it by the background work.
CREATE TABLE segments (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text CHECK (length(description) <= 2000),
    rule        jsonb NOT NULL,
    version     int NOT NULL DEFAULT 1 CHECK (version >= 1),
    rule_version int NOT NULL DEFAULT 1 CHECK (rule_version >= 1),
    -- building: the first build (or a rebuild after a new version) has not
    -- finished; its job is build_job_id. live: the membership is exact.
    state       text NOT NULL DEFAULT 'building' CHECK (state IN ('building', 'live', 'failed')),
    build_job_id bigint REFERENCES jobs (id) ON DELETE SET NULL,
    -- What the rule reads (lib/segments.h, CRM_RULE_READS_*), so a write
    -- refreshes only the segments it can change.
    reads       int NOT NULL DEFAULT 0,
    -- The segments its rule names ({"segment": id}); their memberships are
    -- kept first.
    depends_on  bigint[] NOT NULL DEFAULT '{}',
    rank        int NOT NULL DEFAULT 0,
    size        bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE UNIQUE INDEX segments_name_key ON segments (name) WHERE deleted_at IS NULL;

CREATE TABLE segment_versions (
    segment_id bigint NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    rule_version int NOT NULL,
    rule       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (segment_id, rule_version)
);

-- Who is in a segment now, since when and under which version of its rule.
CREATE TABLE segment_memberships (
    segment_id  bigint NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    customer_id bigint NOT NULL REFERENCES customers (id),
    entered_at  timestamptz NOT NULL,
    rule_version int NOT NULL,
    PRIMARY KEY (segment_id, customer_id)
);
CREATE INDEX segment_memberships_customer_idx ON segment_memberships (customer_id);

-- When a customer's standing in a segment may next change with no write at
-- all (a touchpoint leaving a rolling window, a days_ago boundary passing):
-- the background work re-evaluates the customer then.
CREATE TABLE segment_flips (
    segment_id  bigint NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    customer_id bigint NOT NULL REFERENCES customers (id),
    flip_at     timestamptz NOT NULL,
    PRIMARY KEY (segment_id, customer_id)
);
CREATE INDEX segment_flips_due_idx ON segment_flips (flip_at);
CREATE INDEX segment_flips_customer_idx ON segment_flips (customer_id);

-- Every entry and exit, with the version of the rule and what caused it.
-- (change_xid, change_seq) place it in the sync feed of memberships, as in
-- migration 0009.
CREATE TABLE segment_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    segment_id  bigint NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    customer_id bigint NOT NULL,
    entered     boolean NOT NULL,
    at          timestamptz NOT NULL,
    rule_version int NOT NULL,
    cause       text NOT NULL CHECK (cause IN ('build', 'rule', 'customer', 'consent', 'touchpoint',
                                               'touchpoints', 'metrics', 'merge', 'erasure',
                                               'time', 'segment', 'deletion')),
    cause_ref   text,
    change_xid  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    change_seq  bigint NOT NULL DEFAULT nextval('crm_change_seq')
);
CREATE INDEX segment_changes_segment_idx ON segment_changes (segment_id, id);
CREATE INDEX segment_changes_at_idx ON segment_changes (segment_id, customer_id, at DESC, id DESC);
CREATE INDEX segment_changes_customer_idx ON segment_changes (customer_id);
CREATE INDEX segment_changes_change_idx ON segment_changes (change_xid, change_seq);

-- The change in size each membership-changing write made; see segments.size.
CREATE TABLE segment_size_deltas (
    segment_id bigint NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    delta      bigint NOT NULL
);
CREATE INDEX segment_size_deltas_segment_idx ON segment_size_deltas (segment_id);

-- The size over time: one row a day at least (the background work), and
-- one after every build: the first, a new version of the rule, a rebuild
-- of a segment it names, a full recompute of the metrics it reads.
CREATE TABLE segment_sizes (
    segment_id bigint NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL,
    size       bigint NOT NULL,
    rule_version int NOT NULL,
    reason     text NOT NULL CHECK (reason IN ('daily', 'build', 'rule', 'segment', 'metrics')),
    PRIMARY KEY (segment_id, at, reason)
);
