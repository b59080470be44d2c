-- 0024: treatment rules, contact policies and the contacts decided under
-- them (lib/treatments.h).
--
-- A treatment rule is a condition in the rule language of segments
-- (lib/segments.h) and a treatment: an offer or entitlement code, a next
-- best action (code and text), preferred channels, the purpose its
-- contacts serve, a value and a priority; an active window and a position
-- in the order of evaluation. version counts every change (the ETag);
-- treatment_rule_versions keeps each version whole, with who made it.
--
-- A contact policy limits contacts: at most max_contacts per period_hours,
-- and/or none in the quiet hours of a time zone; for one channel or all,
-- one purpose or all, one rule's contacts or everyone's. Every policy that
-- applies must allow a contact (the most restrictive wins).
--
-- contacts is the log of decisions of POST /v1/customers/{id}/contacts:
-- allowed or refused (with the reasons), the rule and its version, and the
-- outbound touchpoint recorded when allowed. Caps count outbound
-- touchpoints (from any source) by channel and purpose, and this log's
-- allowed rows by rule.
--
-- treatment_config has one row whose stamp moves with every change of a
-- rule or a policy, in the change's transaction: a crmd process keeps the
-- rules and policies in memory and reloads them when the stamp it reads
-- with a customer's state has moved.

-- Touchpoints: the purpose of an outbound contact, the offer a reaction
-- answers, and the types of contacts and reactions (the new check accepts
-- every row the old one did; checking them reads the table once).
ALTER TABLE touchpoints
    ADD COLUMN purpose text
        CHECK (purpose IN ('marketing', 'service', 'profiling', 'analytics', 'third_party')),
    ADD COLUMN offer_code text CHECK (char_length(offer_code) BETWEEN 1 AND 100);
ALTER TABLE touchpoints DROP CONSTRAINT touchpoints_type_check;
ALTER TABLE touchpoints ADD CONSTRAINT touchpoints_type_check
    CHECK (type IN ('purchase', 'refund', 'visit', 'page_view', 'call',
        'email_sent', 'email_opened', 'email_clicked', 'sms_sent', 'push_sent',
        'campaign_contact', 'campaign_response', 'feedback', 'service_case',
        'meeting', 'note', 'signup', 'other',
        'contact', 'offer_accepted', 'offer_rejected', 'offer_ignored'));

CREATE TABLE treatment_rules (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description      text CHECK (char_length(description) <= 2000),
    condition        jsonb NOT NULL,
    reads            int NOT NULL DEFAULT 0,
    depends_on       bigint[] NOT NULL DEFAULT '{}',
    offer_code       text CHECK (char_length(offer_code) BETWEEN 1 AND 100),
    entitlement_code text CHECK (char_length(entitlement_code) BETWEEN 1 AND 100),
    action_code      text CHECK (char_length(action_code) BETWEEN 1 AND 100),
    action_text      text CHECK (char_length(action_text) BETWEEN 1 AND 2000),
    channels         text[] NOT NULL DEFAULT '{}'
        CHECK (channels <@ ARRAY['email', 'sms', 'phone', 'mail', 'push', 'web', 'in_app']),
    purpose          text NOT NULL DEFAULT 'marketing'
        CHECK (purpose IN ('marketing', 'service', 'profiling', 'analytics', 'third_party')),
    value            numeric NOT NULL DEFAULT 0 CHECK (value >= 0),
    priority         int NOT NULL DEFAULT 0 CHECK (priority >= 0),
    active_from      timestamptz,
    active_until     timestamptz,
    position         int NOT NULL,
    version          int NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    CHECK (active_until > active_from),
    CHECK (action_text IS NULL OR action_code IS NOT NULL)
);
CREATE UNIQUE INDEX treatment_rules_name_key ON treatment_rules (name) WHERE deleted_at IS NULL;
CREATE INDEX treatment_rules_order_idx ON treatment_rules (position, id) WHERE deleted_at IS NULL;

CREATE TABLE treatment_rule_versions (
    rule_id    bigint NOT NULL REFERENCES treatment_rules (id) ON DELETE CASCADE,
    version    int NOT NULL,
    body       jsonb NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    api_key_id bigint,
    PRIMARY KEY (rule_id, version)
);

CREATE TABLE contact_policies (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    channel      text CHECK (channel IN ('email', 'sms', 'phone', 'mail', 'push', 'web', 'in_app')),
    purpose      text
        CHECK (purpose IN ('marketing', 'service', 'profiling', 'analytics', 'third_party')),
    rule_id      bigint REFERENCES treatment_rules (id),
    max_contacts int CHECK (max_contacts BETWEEN 1 AND 1000000),
    period_hours int CHECK (period_hours BETWEEN 1 AND 87840),
    quiet_from   time,
    quiet_until  time,
    time_zone    text CHECK (char_length(time_zone) BETWEEN 1 AND 64),
    version      int NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    CHECK ((max_contacts IS NULL) = (period_hours IS NULL)),
    CHECK ((quiet_from IS NULL) = (quiet_until IS NULL)
           AND (quiet_from IS NULL) = (time_zone IS NULL)),
    CHECK (max_contacts IS NOT NULL OR quiet_from IS NOT NULL),
    CHECK (quiet_from <> quiet_until)
);
CREATE UNIQUE INDEX contact_policies_name_key ON contact_policies (name) WHERE deleted_at IS NULL;

CREATE TABLE contacts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id   bigint NOT NULL REFERENCES customers (id),
    channel       text NOT NULL
        CHECK (channel IN ('email', 'sms', 'phone', 'mail', 'push', 'web', 'in_app')),
    purpose       text NOT NULL
        CHECK (purpose IN ('marketing', 'service', 'profiling', 'analytics', 'third_party')),
    rule_id       bigint REFERENCES treatment_rules (id),
    rule_version  int,
    campaign_id   text CHECK (char_length(campaign_id) BETWEEN 1 AND 100),
    source        text NOT NULL CHECK (char_length(source) BETWEEN 1 AND 100),
    event_id      text NOT NULL CHECK (char_length(event_id) BETWEEN 1 AND 200),
    decided_at    timestamptz NOT NULL DEFAULT now(),
    allowed       boolean NOT NULL,
    reasons       jsonb NOT NULL DEFAULT '[]',
    touchpoint_id bigint,
    UNIQUE (source, event_id),
    CHECK ((rule_version IS NULL) = (rule_id IS NULL)),
    CHECK (allowed = (touchpoint_id IS NOT NULL))
);
CREATE INDEX contacts_customer_idx ON contacts (customer_id, decided_at DESC, id DESC);
CREATE INDEX contacts_rule_idx ON contacts (customer_id, rule_id, decided_at) WHERE allowed;

CREATE TABLE treatment_config (
    id    int PRIMARY KEY CHECK (id = 1),
    stamp bigint NOT NULL
);
INSERT INTO treatment_config VALUES (1, 0);
