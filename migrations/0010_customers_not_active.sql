-- 0010: the customers that are not active (deleted, merged or erased), by id.
--
-- A batch of touchpoints asks which of its customer ids are among them
-- before it copies its rows in. This index holds only those few customers,
-- so the answer costs an index probe per id instead of reading each
-- customer's row.
CREATE INDEX customers_not_active_idx ON customers (id) WHERE status <> 'active';
