-- 0028: the audience of an execution, taken in chunks (lib/campaigns/execute.c).
--
-- Until 0027 an execution took its audience into campaign_targets as
-- 'pending' rows and then updated each one with its decision: every target
-- was written twice, with its two index entries. Now the audience is taken
-- as it is at that moment into campaign_audience, the customers' ids in
-- ascending order, 2,000 to a row; the decision of a chunk inserts
-- its targets, decided, and deletes the chunk, in the transaction that
-- writes their touchpoints. So a target is written once, what is still to
-- be decided is exactly the ids of the chunks left, and a chunk is decided
-- once: it is taken FOR UPDATE SKIP LOCKED (two executors, in one process
-- or several, share the chunks and never meet on one), and whichever
-- transaction deletes it is the only one that writes its targets. A job
-- killed midway leaves its chunk in place, and the job that takes over
-- decides it.
--
-- Who was targeted keeps its exact answer: the chunks' ids and the
-- targets, which together are the audience as taken (audience_size).

CREATE TABLE campaign_audience (
    campaign_id  bigint NOT NULL,
    chunk        integer NOT NULL,
    -- ascending, distinct, at most 2,000
    customer_ids bigint[] NOT NULL CHECK (cardinality(customer_ids) BETWEEN 1 AND 2000),
    PRIMARY KEY (campaign_id, chunk)
);

-- The executions under way when this migration runs go on from chunks:
-- their pending targets become chunks of their campaign, in customer
-- order, and leave campaign_targets, where a row is now always decided.
INSERT INTO campaign_audience (campaign_id, chunk, customer_ids)
SELECT campaign_id, (n - 1) / 2000, array_agg(customer_id ORDER BY customer_id)
  FROM (SELECT campaign_id, customer_id,
               row_number() OVER (PARTITION BY campaign_id ORDER BY customer_id) AS n
          FROM campaign_targets WHERE state = 'pending') p
 GROUP BY campaign_id, (n - 1) / 2000;
DELETE FROM campaign_targets WHERE state = 'pending';
ALTER TABLE campaign_targets ADD CONSTRAINT campaign_targets_decided CHECK (state <> 'pending');

-- A target is no longer updated after it is written: no room to keep on
-- its pages for HOT updates.
ALTER TABLE campaign_targets SET (fillfactor = 100);
