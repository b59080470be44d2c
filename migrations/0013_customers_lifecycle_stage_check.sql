-- 0013: the lifecycle stages the API accepts are a rule of the table too.
--
-- Every other allow-list of the API (kinds, channels, types, purposes, ...)
-- is also a CHECK constraint, and a unit test (test_allow_lists.c) holds
-- each C list equal to its constraint; lifecycle_stage had none, so a row
-- written past the API could carry any text. (A migration runs in one
-- transaction: adding the constraint NOT VALID and validating it after
-- would hold the same lock, so it is added and checked at once.)
ALTER TABLE customers ADD CONSTRAINT customers_lifecycle_stage_check
    CHECK (lifecycle_stage IN ('subscriber', 'lead', 'prospect', 'customer', 'loyal', 'at_risk',
                               'churned'));
