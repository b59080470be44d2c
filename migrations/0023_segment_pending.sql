-- 0023: the batches whose touchpoints the segments have yet to judge
-- (lib/segments/live.c, "the queue of batches").
--
-- A batch of touchpoints (POST /v1/touchpoints/batch) does not judge the
-- live segments in its own transaction: it writes one row here, in that
-- transaction, with the ids of the touchpoints it stored. The segments'
-- upkeep (every crmd process, rows claimed with FOR UPDATE SKIP LOCKED)
-- judges their customers and deletes the row in one transaction, so a batch
-- is judged once, after it committed, even across a crash. A single
-- touchpoint, and every other write, is still judged in its own transaction.
--
-- The row holds touchpoint ids, not customer ids: the upkeep reads each
-- touchpoint's customer when it judges (after a merge, the survivor).
--
-- The metrics' follower queues the customers whose metrics it replaced
-- (customers, with reads the CRM_RULE_READS_* bits it changed and the
-- cause): its transaction is REPEATABLE READ, so it cannot judge them
-- itself without risking a snapshot older than a segment's build that
-- finished while it waited for the build's lock.

CREATE TABLE segment_pending (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    touchpoints bigint[] NOT NULL DEFAULT '{}',
    customers   bigint[] NOT NULL DEFAULT '{}',
    reads       int NOT NULL DEFAULT 0,
    cause       text NOT NULL DEFAULT 'touchpoints',
    queued_at   timestamptz NOT NULL DEFAULT now()
);
