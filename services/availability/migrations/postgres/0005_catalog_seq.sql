-- Counts changes to what a resource's slots are computed on besides its
-- claims (which ledger_seq counts): its hours and time zone, appointment
-- types, date overrides, calendars and busy times. Together the two
-- counters tell a replica whether the slot inputs it cached are still
-- current. Triggers keep it, so no write path can forget; the ledger's own
-- updates of the row (fence, ledger_seq) do not fire them.
ALTER TABLE resources ADD COLUMN catalog_seq bigint NOT NULL DEFAULT 0;

CREATE FUNCTION bump_catalog_seq_of_resource() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.catalog_seq := OLD.catalog_seq + 1;
    RETURN NEW;
END $$;

-- Fires only for UPDATEs that set these columns, never for the ledger's.
CREATE TRIGGER resources_catalog_seq
    BEFORE UPDATE OF weekly, time_zone ON resources
    FOR EACH ROW EXECUTE FUNCTION bump_catalog_seq_of_resource();

-- One update per resource per statement, however many rows changed (a
-- calendar refresh replaces all its busy times at once). The branch not
-- taken is never planned, so each trigger names only its own tables.
CREATE FUNCTION bump_catalog_seq_of_rows() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE resources SET catalog_seq = catalog_seq + 1
        WHERE id IN (SELECT resource_id FROM new_rows);
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE resources SET catalog_seq = catalog_seq + 1
        WHERE id IN (SELECT resource_id FROM old_rows);
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['appointment_types', 'date_overrides', 'calendars', 'busy_times']
    LOOP
        EXECUTE format(
            'CREATE TRIGGER %1$s_catalog_seq_insert AFTER INSERT ON %1$I '
            'REFERENCING NEW TABLE AS new_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_seq_of_rows()', t);
        EXECUTE format(
            'CREATE TRIGGER %1$s_catalog_seq_update AFTER UPDATE ON %1$I '
            'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_seq_of_rows()', t);
        EXECUTE format(
            'CREATE TRIGGER %1$s_catalog_seq_delete AFTER DELETE ON %1$I '
            'REFERENCING OLD TABLE AS old_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_seq_of_rows()', t);
    END LOOP;
END $$;
