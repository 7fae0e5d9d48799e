#!/bin/sh
# One-shot job (temporalio/admin-tools): create Temporal's persistence and visibility databases
# on PostgreSQL and migrate both to the schema version that this admin-tools image ships. The
# admin-tools tag must equal the temporalio/server tag, so schema and server always match.
#
# Safe to run on every `docker compose up`: create-database ignores an existing database,
# setup-schema only creates the version tables if missing, and update-schema applies only
# the versions not yet recorded.
#
# Environment: POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, and SQL_PASSWORD (read by
# temporal-sql-tool itself, so the password never appears in the process list).
set -eu

schema_dir=/etc/temporal/schema/postgresql/v12

sql_tool() {
    temporal-sql-tool --plugin postgres12 \
        --ep "$POSTGRES_HOST" -p "$POSTGRES_PORT" -u "$POSTGRES_USER" "$@"
}

echo "temporal-schema: persistence database"
sql_tool --db temporal create-database
sql_tool --db temporal setup-schema -v 0.0
sql_tool --db temporal update-schema -d "$schema_dir/temporal/versioned"

echo "temporal-schema: visibility database"
sql_tool --db temporal_visibility create-database
sql_tool --db temporal_visibility setup-schema -v 0.0
sql_tool --db temporal_visibility update-schema -d "$schema_dir/visibility/versioned"

echo "temporal-schema: done"
