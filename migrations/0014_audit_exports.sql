-- 0014: an export (GET /v1/customers/{id}/export, the right of access) hands
-- every personal datum of a person to the caller, so it is audited like a
-- write: who (api_key_id), when (at), which customers (changes.customer_ids).
ALTER TABLE customer_audit DROP CONSTRAINT customer_audit_action_check;
ALTER TABLE customer_audit ADD CONSTRAINT customer_audit_action_check
    CHECK (action IN ('create', 'update', 'consent', 'merge', 'delete', 'erase', 'export'));
