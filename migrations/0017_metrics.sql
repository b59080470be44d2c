-- 0017: customer metrics (issue 13): what each customer is worth, how they
-- buy and how likely they are to stay, computed from the touchpoints.
--
-- customer_metrics holds one row per live customer as of the last full
-- recompute (and incremental updates since). metrics_staging, its twin, is
-- where a recompute writes the next version; publishing swaps the two
-- tables' names in one short transaction, so readers never see half a
-- recompute and no row is rewritten twice. Neither has a foreign key to
-- customers: the rows are derived, customers are never deleted, and a key
-- checked on a million rows would cost more than the recompute.
-- metrics_models keeps every fit of the models, the one in force marked.
-- currency_rates converts amounts to the reporting currency.

CREATE TABLE currency_rates (
    currency   text PRIMARY KEY CHECK (currency ~ '^[A-Z]{3}$'),
    -- Units of the reporting currency for one unit of this currency.
    rate       numeric NOT NULL CHECK (rate > 0 AND rate < 1e9),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customer_metrics (
    customer_id         bigint PRIMARY KEY,
    as_of               timestamptz NOT NULL,  -- the end of observation
    computed_at         timestamptz NOT NULL,
    -- value (reporting currency; purchases in a currency without a rate left out)
    purchases           integer NOT NULL,      -- purchase touchpoints, all time
    refunds             integer NOT NULL,
    unrated             integer NOT NULL,      -- purchases and refunds left out: no rate
    first_purchase_at   timestamptz,
    last_purchase_at    timestamptz,
    historic_value      numeric NOT NULL,      -- purchases - |refunds|, all time
    average_order_value numeric,               -- purchase value / purchases with a value
    -- RFM over the window
    recency_days        double precision,      -- as_of - last purchase, in days
    frequency           integer NOT NULL,      -- purchases in the window
    monetary            numeric NOT NULL,      -- purchases - |refunds| in the window
    r_score             smallint CHECK (r_score BETWEEN 1 AND 5),
    f_score             smallint CHECK (f_score BETWEEN 1 AND 5),
    m_score             smallint CHECK (m_score BETWEEN 1 AND 5),
    rfm_cell            text,
    rfm_group           text,
    -- the models' summary (days): repeat purchase days, last one, age
    x                   integer,
    t_x                 integer,
    t_age               integer,
    repeat_mean_value   numeric,               -- mean value of a repeat purchase day
    p_alive             double precision,
    predicted_purchases double precision,      -- over the horizon
    predicted_value     double precision,      -- over the horizon, discounted
    value_tier          text,
    -- velocity and variability (openapi.yaml, CustomerMetrics)
    interval_mean       double precision,      -- days between purchase days
    interval_cv         double precision,
    interval_trend      double precision,      -- days per interval, the slope
    spend_cv            double precision,      -- of the purchases' amounts
    spend_trend         double precision       -- amount per purchase, the slope
);

CREATE TABLE metrics_staging (LIKE customer_metrics INCLUDING ALL);

CREATE TABLE metrics_models (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model       text NOT NULL CHECK (model IN ('bg_nbd', 'gamma_gamma')),
    params      jsonb NOT NULL,
    loglik      double precision,
    customers   bigint NOT NULL,   -- customers the fit used
    rows_used   bigint NOT NULL,   -- distinct summaries they collapsed into
    iterations  integer NOT NULL,
    converged   boolean NOT NULL,
    in_force    boolean NOT NULL,  -- used for the scores (the last converged fit)
    as_of       timestamptz NOT NULL,
    fitted_at   timestamptz NOT NULL DEFAULT now(),
    job_id      bigint
);
CREATE INDEX metrics_models_latest_idx ON metrics_models (model, id DESC);
