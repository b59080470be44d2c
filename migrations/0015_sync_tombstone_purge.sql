-- 0015: the purge of old tombstones from the customer feed.
--
-- A customer that is deleted, erased or merged stays in the customer feed
-- as a tombstone at the place of that change. Housekeeping purges those
-- older than the retention (CRMD_SYNC_RETENTION_DAYS, plus a day): it moves
-- them to the place (0, 0), before every cursor, so no page returns them
-- again. Since a signed sync cursor says when its reader last caught up, a
-- reader that may still hold such a customer gets 410 and resyncs in full.
--
-- Only the purge moves a row to (0, 0); the trigger lets it. Any later
-- change gives the row a new place, as before.
CREATE OR REPLACE FUNCTION crm_note_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.change_xid = '0'::xid8 AND OLD.change_xid <> '0'::xid8 THEN
        RETURN NEW;
    END IF;
    NEW.change_xid := pg_current_xact_id();
    NEW.change_seq := nextval('crm_change_seq');
    RETURN NEW;
END
$$;

-- The tombstones not purged yet, oldest first.
CREATE INDEX customers_tombstones_idx ON customers (updated_at)
    WHERE status <> 'active' AND change_xid <> '0'::xid8;
