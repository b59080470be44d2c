-- 0002: the single customer view — customers, their external ids, consent
-- history, the audit trail of every write, and stored responses for
-- Idempotency-Key. Every table carries customer_id (or is keyed by it) so the
-- schema can later be distributed by customer.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE customers (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version            integer NOT NULL DEFAULT 1,
    kind               text NOT NULL DEFAULT 'person' CHECK (kind IN ('person', 'company')),
    -- active: a live record; merged: folded into merged_into; deleted: gone
    -- from lists, still known to sync; erased: a tombstone, no personal data.
    status             text NOT NULL DEFAULT 'active'
                       CHECK (status IN ('active', 'merged', 'deleted', 'erased')),
    merged_into        bigint REFERENCES customers (id),
    first_name         text,
    last_name          text,
    display_name       text,
    company            text,
    email              text,
    email_normalized   text,
    phone              text,
    phone_normalized   text,
    country            text CHECK (country ~ '^[A-Z]{2}$'),
    region             text,
    city               text,
    postal_code        text,
    street             text,
    latitude           double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude          double precision CHECK (longitude BETWEEN -180 AND 180),
    birth_date         date,
    preferred_language text,
    lifecycle_stage    text,
    tags               text[] NOT NULL DEFAULT '{}',
    attributes         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- What `q` searches: names, e-mail and company, lower-cased.
    search_text        text GENERATED ALWAYS AS (lower(
                           coalesce(first_name, '') || ' ' || coalesce(last_name, '') || ' ' ||
                           coalesce(display_name, '') || ' ' || coalesce(company, '') || ' ' ||
                           coalesce(email, ''))) STORED
);

CREATE INDEX customers_email_idx ON customers (email_normalized) WHERE email_normalized IS NOT NULL;
CREATE INDEX customers_phone_idx ON customers (phone_normalized) WHERE phone_normalized IS NOT NULL;
CREATE INDEX customers_country_city_idx ON customers (country, city);
CREATE INDEX customers_lifecycle_idx ON customers (lifecycle_stage);
CREATE INDEX customers_tags_idx ON customers USING gin (tags);
CREATE INDEX customers_attributes_idx ON customers USING gin (attributes jsonb_path_ops);
CREATE INDEX customers_created_idx ON customers (created_at, id);
CREATE INDEX customers_updated_idx ON customers (updated_at, id);
CREATE INDEX customers_name_idx ON customers (lower(coalesce(display_name, last_name, first_name, company, '')), id);
CREATE INDEX customers_search_idx ON customers USING gin (search_text gin_trgm_ops);

-- Ids that other systems (a sales app, a partner, a web login) use for the
-- same person. One (source, id) names at most one customer.
CREATE TABLE customer_external_ids (
    source      text NOT NULL CHECK (char_length(source) BETWEEN 1 AND 100),
    external_id text NOT NULL CHECK (char_length(external_id) BETWEEN 1 AND 500),
    customer_id bigint NOT NULL REFERENCES customers (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, external_id)
);
CREATE INDEX customer_external_ids_customer_idx ON customer_external_ids (customer_id);

-- Consent history: every decision is a row; the current state of a channel
-- and purpose is the latest row by captured_at (then id); no row means not given.
CREATE TABLE customer_consents (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    channel     text NOT NULL,
    purpose     text NOT NULL,
    status      text NOT NULL CHECK (status IN ('granted', 'revoked')),
    source      text NOT NULL,
    captured_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    api_key_id  bigint
);
CREATE INDEX customer_consents_current_idx
    ON customer_consents (customer_id, channel, purpose, captured_at DESC, id DESC);

-- Every write to a customer: who (API key), when, what changed.
CREATE TABLE customer_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    at          timestamptz NOT NULL DEFAULT now(),
    api_key_id  bigint,
    action      text NOT NULL
                CHECK (action IN ('create', 'update', 'consent', 'merge', 'delete', 'erase')),
    changes     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX customer_audit_customer_idx ON customer_audit (customer_id, id);

-- The first response to a POST with Idempotency-Key, kept 24 hours.
CREATE TABLE idempotency_keys (
    api_key_id   bigint NOT NULL,
    key          text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    request_hash bytea NOT NULL,
    status       integer,
    location     text,
    body         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
