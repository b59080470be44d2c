-- 0005: finding likely duplicates (GET /v1/customers/{id}/duplicates).
-- E-mail and phone matches use the indexes of 0002; a close name counts
-- only at the same postal code, so the candidates of the name comparison
-- are found through this index (postal code upper-cased, spaces removed:
-- "sw1a 1aa" and "SW1A1AA" are the same code) and only they are compared.
CREATE INDEX customers_postal_code_idx
    ON customers ((upper(replace(postal_code, ' ', ''))))
    WHERE postal_code IS NOT NULL AND status = 'active';
