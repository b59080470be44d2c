-- 0021: the full recompute fills metrics_staging without its indexes and
-- builds them afterwards (a million rows go in about half the time), and
-- its publication gives the indexes their tables' names again after the
-- two tables swapped names. The indexes' definitions live here, in
-- crm_metrics_staging_build_indexes: a later migration that changes
-- customer_metrics's indexes redefines that function too.

-- Gives each index of tbl the name prefix_pkey (its primary key) or
-- prefix_COLUMN_idx (after its first column). A name already taken by
-- another relation is left alone: an index keeps the name it has (only a
-- crmd older than this migration, swapping the tables alone, leaves names
-- crossed; the next publication puts them right). The tables are named by
-- text and looked up at each call: the swap renames them between calls.
CREATE FUNCTION crm_metrics_name_indexes(tbl text, prefix text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    wanted text;
BEGIN
    FOR r IN SELECT i.indexrelid, c.relname, i.indisprimary, a.attname
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE i.indrelid = to_regclass(tbl)
    LOOP
        wanted := CASE WHEN r.indisprimary THEN prefix || '_pkey'
                       ELSE prefix || '_' || r.attname || '_idx' END;
        IF r.relname <> wanted AND to_regclass(quote_ident(wanted)) IS NULL THEN
            EXECUTE format('ALTER INDEX %I RENAME TO %I', r.relname, wanted);
        END IF;
    END LOOP;
END
$$;

-- Drops every index of metrics_staging, whatever its name (its primary key
-- as the constraint it is).
CREATE FUNCTION crm_metrics_staging_drop_indexes() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.relname, k.conname
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indexrelid
             LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                                      AND k.contype IN ('p', 'u', 'x')
             WHERE i.indrelid = to_regclass('metrics_staging')
    LOOP
        IF r.conname IS NOT NULL THEN
            EXECUTE format('ALTER TABLE metrics_staging DROP CONSTRAINT %I', r.conname);
        ELSE
            EXECUTE format('DROP INDEX %I', r.relname);
        END IF;
    END LOOP;
END
$$;

-- customer_metrics's indexes, built on metrics_staging once it is full.
CREATE FUNCTION crm_metrics_staging_build_indexes() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    ALTER TABLE metrics_staging ADD PRIMARY KEY (customer_id);
    CREATE INDEX ON metrics_staging (lifecycle_stage);
    PERFORM crm_metrics_name_indexes('metrics_staging', 'metrics_staging');
END
$$;

-- The publication: metrics_staging becomes customer_metrics and the old
-- customer_metrics the next metrics_staging; then the indexes take their
-- new tables' names (by way of a third name, since each wants the other's).
CREATE FUNCTION crm_metrics_swap() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    ALTER TABLE customer_metrics RENAME TO metrics_swap;
    ALTER TABLE metrics_staging RENAME TO customer_metrics;
    ALTER TABLE metrics_swap RENAME TO metrics_staging;
    PERFORM crm_metrics_name_indexes('customer_metrics', 'metrics_swap');
    PERFORM crm_metrics_name_indexes('metrics_staging', 'metrics_staging');
    PERFORM crm_metrics_name_indexes('customer_metrics', 'customer_metrics');
END
$$;

-- Until now the names followed the tables' swaps: put them right.
SELECT crm_metrics_name_indexes('customer_metrics', 'metrics_swap');
SELECT crm_metrics_name_indexes('metrics_staging', 'metrics_staging');
SELECT crm_metrics_name_indexes('customer_metrics', 'customer_metrics');
