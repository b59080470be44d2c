-- 0006: erasure of a customer's personal data (POST /v1/customers/{id}/erase)
-- must also remove the stored responses of Idempotency-Key that hold it.
-- Each stored response now names the customer it is about, so erasure finds
-- them by key rather than by reading response bodies.

ALTER TABLE idempotency_keys ADD COLUMN customer_id bigint;

CREATE INDEX idempotency_keys_customer_idx ON idempotency_keys (customer_id)
    WHERE customer_id IS NOT NULL;
