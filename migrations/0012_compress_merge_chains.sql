-- 0012: every merged customer names its survivor directly.
--
-- Merges used to leave older aliases pointing at the customer that was
-- merged next, so each merge added a hop to their chain, and the readers,
-- which follow at most 16 hops, lost the oldest ids. A merge now moves every
-- alias of the customers it merges to the survivor in its own transaction
-- (lib/customer_merge.c). This compresses the chains stored before, once:
-- each customer with merged_into is pointed at the end of its chain (the
-- first customer on it that is not merged: active, deleted or erased). The
-- walk is bounded, so a cycle in broken data ends it instead of looping.
WITH RECURSIVE walk (id, target, hops) AS (
    SELECT id, merged_into, 1 FROM customers WHERE merged_into IS NOT NULL
    UNION ALL
    SELECT w.id, c.merged_into, w.hops + 1
    FROM walk w JOIN customers c ON c.id = w.target
    WHERE c.status = 'merged' AND c.merged_into IS NOT NULL AND w.hops < 10000
), ends AS (
    SELECT DISTINCT ON (id) id, target FROM walk ORDER BY id, hops DESC
)
UPDATE customers c SET merged_into = e.target
FROM ends e
WHERE c.id = e.id AND c.merged_into IS DISTINCT FROM e.target;
