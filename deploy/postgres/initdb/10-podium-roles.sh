#!/usr/bin/env bash
# Runs once, when the postgres container initialises an empty data directory.
#
# Roles, one per owner of data:
#   temporal  may create databases: the temporal-schema job creates `temporal` and
#             `temporal_visibility` with `temporal-sql-tool create-database` and owns them.
#   podium    owns the `podium` database, Podium's systems-of-record store.
# Passwords come from the container environment (see docker-compose.yml); psql quotes them.
# No `set -u`: should the file lose its executable bit, the entrypoint sources it instead.
set -eo pipefail

psql --no-psqlrc -v ON_ERROR_STOP=1 \
    --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
    --set temporal_password="$TEMPORAL_DB_PASSWORD" \
    --set podium_password="$PODIUM_DB_PASSWORD" <<'SQL'
CREATE ROLE temporal LOGIN CREATEDB PASSWORD :'temporal_password';
CREATE ROLE podium LOGIN PASSWORD :'podium_password';
CREATE DATABASE podium OWNER podium;
SQL
