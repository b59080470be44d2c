-- 0004: the rules of consent decisions, enforced by the database too (lib/
-- consents.c checks them first and names the field at fault), and an index
-- for reading a customer's consent history newest first, page by page.

ALTER TABLE customer_consents
    ADD CONSTRAINT customer_consents_channel_check
        CHECK (channel IN ('email', 'sms', 'phone', 'mail', 'push', 'web', 'in_app')),
    ADD CONSTRAINT customer_consents_purpose_check
        CHECK (purpose IN ('marketing', 'service', 'profiling', 'analytics', 'third_party')),
    ADD CONSTRAINT customer_consents_source_check
        CHECK (char_length(source) BETWEEN 1 AND 100);

CREATE INDEX customer_consents_history_idx ON customer_consents (customer_id, id);
