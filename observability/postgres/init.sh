#!/bin/sh
# One database and one login role per tienda service; each role owns its database only and
# cannot connect to the others'. Runs once, when the postgres volume is first initialised
# (mounted into /docker-entrypoint-initdb.d by docker-compose.yml). The passwords come from the
# environment (.env) and reach SQL as psql variables, so they are quoted, never spliced in.
set -eu

create_service_database() {
    name="$1"
    password="$2"
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
        -v name="$name" -v password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
GRANT ALL ON DATABASE :"name" TO :"name";
SQL
    # Since PostgreSQL 15 only the database owner may create in `public`; make that explicit.
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$name" -v name="$name" <<'SQL'
ALTER SCHEMA public OWNER TO :"name";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SQL
}

create_service_database tienda_auth "$AUTH_DB_PASSWORD"
create_service_database tienda_product "$PRODUCT_DB_PASSWORD"
create_service_database tienda_order "$ORDER_DB_PASSWORD"
