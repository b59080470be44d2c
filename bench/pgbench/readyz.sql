-- GET /readyz: the statement migrate_state in lib/migrate.c, verbatim.
SELECT count(*), coalesce(max(version), 0) FROM crm_schema_migrations;
