#!/bin/bash
# Runs once, when the TimescaleDB container initialises an empty data
# directory (/docker-entrypoint-initdb.d; the image's own scripts have already
# created the timescaledb extension in the "ems" database by then).
#
# Roles:
#   postgres    superuser, for maintenance only (pg_superuser_password)
#   ems         owns the database and its schema; the DB writer and emsctl
#               log in as ems and run the migrations (pg_ems_password)
#   ems_reader  read-only on everything ems creates, for Grafana
#               (pg_reader_password)
# Passwords come from the secret files, never from the environment.
set -euo pipefail

secrets=${EMS_SECRETS_DIR:-/run/secrets}
ems_pw=$(< "$secrets/pg_ems_password")
reader_pw=$(< "$secrets/pg_reader_password")

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v ems_pw="$ems_pw" -v reader_pw="$reader_pw" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE ems LOGIN PASSWORD :'ems_pw';
CREATE ROLE ems_reader LOGIN PASSWORD :'reader_pw';
ALTER DATABASE :"db" OWNER TO ems;
ALTER SCHEMA public OWNER TO ems;
GRANT CONNECT ON DATABASE :"db" TO ems_reader;
GRANT USAGE ON SCHEMA public TO ems_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE ems IN SCHEMA public GRANT SELECT ON TABLES TO ems_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE ems IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO ems_reader;
SQL
echo "10-ems-roles: roles ems and ems_reader created"
