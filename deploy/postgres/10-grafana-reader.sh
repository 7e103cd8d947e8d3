#!/bin/sh
# Runs once, when the PostgreSQL volume is first initialised (docker-entrypoint-initdb.d):
# a read-only role for Grafana.  Interlock's migrations create the tables later as
# $POSTGRES_USER, so SELECT is granted through default privileges.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<EOSQL
CREATE ROLE grafana_reader LOGIN PASSWORD '${GRAFANA_READER_PASSWORD:-grafana_reader}';
GRANT CONNECT ON DATABASE "$POSTGRES_DB" TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE "$POSTGRES_USER" IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
EOSQL
