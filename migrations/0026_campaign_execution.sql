-- 0026: executing a campaign (lib/campaigns/execute.c).
--
-- Execution takes the audience as it is at that moment into
-- campaign_targets, one row per customer, each assigned to the treatment
-- or the control group from the campaign's salt (the same customer always
-- lands in the same group for a campaign). Then every target is decided,
-- in batches, under the customers' row locks, with the check of POST
-- /v1/customers/{id}/contacts: a treatment customer who may be contacted
-- on one of the campaign's channels is 'contacted' (its campaign_contact
-- touchpoint written in the same transaction); a control customer who
-- could have been is 'control' (held out); either who could not is
-- 'excluded', with the reason. So both groups are judged by the same
-- rules, and the results compare like with like. A target is decided
-- once: the batch moves only 'pending' rows, and the touchpoint's
-- (source, event_id) is the campaign's and the customer's.

CREATE TABLE campaign_targets (
    -- No foreign keys: the audience is taken by one INSERT ... SELECT that
    -- joins the campaign and its customers (the references hold by
    -- construction), campaigns are never deleted once executed (only a
    -- draft is, and softly) and customers never (erasure works in place);
    -- keys checked per row would run a lookup, and lock each customer's row
    -- FOR KEY SHARE, half a million times.
    campaign_id   bigint NOT NULL,
    customer_id   bigint NOT NULL,
    grp           text NOT NULL CHECK (grp IN ('treatment', 'control')),
    state         text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'contacted', 'control', 'excluded')),
    reason        text CHECK (reason IN ('not_active', 'no_consent', 'consent_revoked',
                                         'cap_reached', 'quiet_hours')),
    channel       text CHECK (channel IN ('email', 'sms', 'phone', 'mail', 'push', 'web', 'in_app')),
    touchpoint_id bigint,
    decided_at    timestamptz,
    PRIMARY KEY (campaign_id, customer_id),
    CHECK ((state = 'excluded') = (reason IS NOT NULL)),
    CHECK ((state = 'contacted') = (touchpoint_id IS NOT NULL)),
    CHECK (state <> 'contacted' OR grp = 'treatment'),
    CHECK (state <> 'control' OR grp = 'control'),
    CHECK ((state = 'pending') = (decided_at IS NULL))
) WITH (fillfactor = 60);
-- No index reads state: deciding a target changes no indexed column, and
-- with the room fillfactor leaves on each page the update is HOT (no index
-- entry written). The batches walk the primary key in customer order.
CREATE INDEX campaign_targets_customer_idx ON campaign_targets (customer_id);

-- When the audience was taken, how many it held, and the job deciding it.
ALTER TABLE campaigns ADD COLUMN executed_at timestamptz,
                      ADD COLUMN audience_size bigint,
                      ADD COLUMN execute_job_id bigint;
