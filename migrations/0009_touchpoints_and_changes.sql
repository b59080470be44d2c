-- 0009: touchpoints, and the change feeds of customers and touchpoints.
--
-- Every row of customers and touchpoints carries the place of its latest
-- change: (change_xid, change_seq), the transaction that wrote it and a
-- number from one sequence. A sync page returns rows in that order and only
-- those written by transactions older than every transaction still running
-- (pg_snapshot_xmin of the reader's snapshot): a transaction that took its
-- number early but commits late is therefore never passed over. Inserts get
-- the place from the column defaults; updates from the BEFORE UPDATE
-- triggers below.

CREATE SEQUENCE crm_change_seq;

CREATE FUNCTION crm_note_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_xid := pg_current_xact_id();
    NEW.change_seq := nextval('crm_change_seq');
    RETURN NEW;
END
$$;

ALTER TABLE customers
    ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ADD COLUMN change_seq bigint NOT NULL DEFAULT nextval('crm_change_seq');
CREATE INDEX customers_change_idx ON customers (change_xid, change_seq);
CREATE TRIGGER customers_note_change BEFORE UPDATE ON customers
    FOR EACH ROW EXECUTE FUNCTION crm_note_change();

-- One interaction with a customer on one channel. (source, event_id) is the
-- sender's own id for it: the same pair is stored once.
CREATE TABLE touchpoints (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    channel     text NOT NULL CHECK (channel IN ('web', 'mobile_app', 'email', 'sms', 'phone',
                    'call_centre', 'store', 'sales_visit', 'mail', 'partner', 'social')),
    type        text NOT NULL CHECK (type IN ('purchase', 'refund', 'visit', 'page_view', 'call',
                    'email_sent', 'email_opened', 'email_clicked', 'sms_sent', 'push_sent',
                    'campaign_contact', 'campaign_response', 'feedback', 'service_case',
                    'meeting', 'note', 'signup', 'other')),
    direction   text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text NOT NULL CHECK (char_length(source) BETWEEN 1 AND 100),
    event_id    text NOT NULL CHECK (char_length(event_id) BETWEEN 1 AND 200),
    campaign_id text CHECK (char_length(campaign_id) BETWEEN 1 AND 100),
    amount      numeric,
    currency    text CHECK (currency ~ '^[A-Z]{3}$'),
    items       jsonb,
    feedback    jsonb,
    properties  jsonb NOT NULL DEFAULT '{}',
    -- Set when the customer was erased: the free text and properties are gone.
    erased      boolean NOT NULL DEFAULT false,
    change_xid  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    change_seq  bigint NOT NULL DEFAULT nextval('crm_change_seq'),
    CHECK ((amount IS NULL) = (currency IS NULL)),
    UNIQUE (source, event_id)
);
-- The timeline: a customer's touchpoints, newest first.
CREATE INDEX touchpoints_timeline_idx ON touchpoints (customer_id, occurred_at DESC, id DESC);
CREATE INDEX touchpoints_change_idx ON touchpoints (change_xid, change_seq);
CREATE TRIGGER touchpoints_note_change BEFORE UPDATE ON touchpoints
    FOR EACH ROW EXECUTE FUNCTION crm_note_change();
