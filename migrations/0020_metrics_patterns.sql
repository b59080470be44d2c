-- 0020: the base's purchase patterns (issue 13): retention and revenue by
-- first-purchase month (cohorts) and the items bought together (market
-- basket), precomputed by the job metrics_patterns (lib/metrics/patterns.c)
-- so that GET /v1/metrics/cohorts and /v1/metrics/market-basket read a few
-- hundred rows by index, whatever the number of touchpoints.
--
-- Each phase of the job replaces its tables' rows in one transaction
-- (DELETE and INSERT, never TRUNCATE, so readers keep reading the previous
-- result meanwhile) and records what it covered in metrics_patterns.
-- No table here holds a customer id: the figures are anonymous aggregates,
-- outside the registry that merge, erasure and export follow, and they stay
-- as they are until the next run.

-- One row per cohort (the UTC month of its customers' first purchase) and
-- month offset (0: that month) in which any of them purchased or refunded.
CREATE TABLE metrics_cohorts (
    cohort       date NOT NULL CHECK (extract(day FROM cohort) = 1),
    month_offset integer NOT NULL CHECK (month_offset >= 0),
    customers    bigint NOT NULL CHECK (customers >= 0),  -- of the cohort, purchasing that month
    revenue      numeric NOT NULL,  -- their purchases - |refunds| that month, reporting currency
    unrated      bigint NOT NULL CHECK (unrated >= 0),    -- their amounts left out: no rate
    PRIMARY KEY (cohort, month_offset)
);

-- Per SKU, the orders (purchase touchpoints with items) that hold it.
-- COLLATE "C": pairs are ordered and compared bytewise, the same everywhere.
CREATE TABLE metrics_basket_items (
    sku    text COLLATE "C" PRIMARY KEY,
    orders bigint NOT NULL CHECK (orders > 0)
);

-- The pairs bought together in at least metrics_patterns.min_pair_orders
-- orders, each stored in both directions (sku -> other and other -> sku):
-- the two rules share orders, support and lift, and differ in confidence.
-- The measures are stored, computed by the job from the counts, so that the
-- page reads them in order from an index: support = orders / orders with
-- items; confidence = orders / orders with sku; lift = confidence / support
-- of other.
CREATE TABLE metrics_basket_pairs (
    sku        text COLLATE "C" NOT NULL,
    other      text COLLATE "C" NOT NULL,
    orders     bigint NOT NULL CHECK (orders > 0),
    support    double precision NOT NULL,
    confidence double precision NOT NULL,
    lift       double precision NOT NULL,
    PRIMARY KEY (sku, other),
    CHECK (sku <> other)
);
-- The page's two orders: every rule by lift, and one SKU's rules by lift.
CREATE INDEX metrics_basket_pairs_lift_idx
    ON metrics_basket_pairs (lift DESC, confidence DESC, orders DESC, sku, other);
CREATE INDEX metrics_basket_pairs_sku_idx
    ON metrics_basket_pairs (sku, lift DESC, confidence DESC, orders DESC, other);
-- A high minimum support or confidence that few rules pass: those rules
-- found directly, instead of walking every rule in lift order.
CREATE INDEX metrics_basket_pairs_support_idx ON metrics_basket_pairs (support);
CREATE INDEX metrics_basket_pairs_confidence_idx ON metrics_basket_pairs (confidence);

-- What each result covers: one row per pattern, written with it.
CREATE TABLE metrics_patterns (
    pattern         text PRIMARY KEY CHECK (pattern IN ('cohorts', 'basket')),
    as_of           timestamptz NOT NULL,  -- touchpoints up to this time
    computed_at     timestamptz NOT NULL,
    job_id          bigint,
    currency        text,     -- cohorts: the reporting currency of revenue
    customers       bigint,   -- cohorts: customers with a purchase
    orders          bigint,   -- basket: orders with items
    min_pair_orders integer   -- basket: pairs bought together in fewer orders are not kept
);
