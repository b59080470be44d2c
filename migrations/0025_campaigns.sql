-- 0025: campaign definitions (lib/campaigns.h).
--
-- A campaign reaches an audience (one segment or one treatment rule) on
-- consent channels for one consent purpose, with an offer, in a window
-- [starts_at, ends_at); a share of the audience is held out as control
-- (assigned later, deterministically, from salt). code is what delivery
-- systems put in touchpoints.campaign_id: unique among live campaigns (a
-- campaign is deleted only as a draft, before anything carried its code).
-- Costs (per contact and fixed) are in currency, which a cost above 0
-- needs; response_types are the touchpoint types that count as responses
-- within attribution_days of a contact.
--
-- status moves draft -> scheduled -> (execution) running -> completed, back
-- from scheduled to draft, and to cancelled from any but the final ones;
-- lib/campaigns/def.c holds the machine. version counts every change (the
-- ETag); campaign_versions keeps each version whole, with who made it.

-- True when the array has no element twice and no NULL (CHECKs cannot
-- hold a subquery; this is immutable, so they can call it).
CREATE FUNCTION campaigns_distinct_texts(a text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT count(DISTINCT x) = cardinality(a) FROM unnest(a) x $$;

CREATE TABLE campaigns (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code                text NOT NULL CHECK (char_length(code) BETWEEN 1 AND 100),
    name                text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    objective           text CHECK (char_length(objective) <= 2000),
    audience_segment_id bigint REFERENCES segments (id),
    audience_rule_id    bigint REFERENCES treatment_rules (id),
    channels            text[] NOT NULL
        CHECK (cardinality(channels) BETWEEN 1 AND 7
               AND channels <@ ARRAY['email', 'sms', 'phone', 'mail', 'push', 'web', 'in_app']
               AND campaigns_distinct_texts(channels)),
    purpose             text NOT NULL
        CHECK (purpose IN ('marketing', 'service', 'profiling', 'analytics', 'third_party')),
    offer_code          text CHECK (char_length(offer_code) BETWEEN 1 AND 100),
    starts_at           timestamptz,
    ends_at             timestamptz,
    control_share       numeric NOT NULL CHECK (control_share >= 0 AND control_share <= 0.5),
    cost_per_contact    numeric(14, 4) NOT NULL DEFAULT 0 CHECK (cost_per_contact >= 0),
    fixed_cost          numeric(14, 2) NOT NULL DEFAULT 0 CHECK (fixed_cost >= 0),
    currency            text CHECK (currency ~ '^[A-Z]{3}$'),
    response_types      text[] NOT NULL
        CHECK (cardinality(response_types) BETWEEN 1 AND 20
               AND response_types <@ ARRAY['purchase', 'refund', 'visit', 'page_view', 'call',
                   'email_sent', 'email_opened', 'email_clicked', 'sms_sent', 'push_sent',
                   'campaign_contact', 'campaign_response', 'feedback', 'service_case',
                   'meeting', 'note', 'signup', 'other',
                   'contact', 'offer_accepted', 'offer_rejected', 'offer_ignored']
               AND campaigns_distinct_texts(response_types)),
    attribution_days    int NOT NULL DEFAULT 30 CHECK (attribution_days BETWEEN 1 AND 365),
    status              text NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'scheduled', 'running', 'completed', 'cancelled')),
    salt                uuid NOT NULL DEFAULT gen_random_uuid(),
    version             int NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    CHECK ((audience_segment_id IS NULL) <> (audience_rule_id IS NULL)),
    CHECK (ends_at > starts_at),
    CHECK ((cost_per_contact = 0 AND fixed_cost = 0) OR currency IS NOT NULL),
    CHECK (status NOT IN ('scheduled', 'running') OR (starts_at IS NOT NULL AND ends_at IS NOT NULL)),
    CHECK (deleted_at IS NULL OR status = 'draft')
);
CREATE UNIQUE INDEX campaigns_code_key ON campaigns (code) WHERE deleted_at IS NULL;
CREATE INDEX campaigns_status_idx ON campaigns (status, id) WHERE deleted_at IS NULL;

CREATE TABLE campaign_versions (
    campaign_id bigint NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    version     int NOT NULL,
    definition  jsonb NOT NULL,
    status      text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    api_key_id  bigint,
    PRIMARY KEY (campaign_id, version)
);
