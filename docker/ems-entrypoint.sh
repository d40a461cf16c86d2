#!/bin/sh
# Entry point of the ems images: turns *_FILE secrets into the environment the
# programs read, then runs the command (so `docker compose run dbwriter emsctl
# ...` gets the same database login as the DB writer itself).
#
#   EMS_PG_PASSWORD_FILE  -> PGPASSWORD (libpq reads it; the DSN carries no
#                            password, so it never shows in `ps` or in logs)
set -eu
if [ -n "${EMS_PG_PASSWORD_FILE:-}" ]; then
    if [ ! -r "$EMS_PG_PASSWORD_FILE" ]; then
        echo "ems-entrypoint: cannot read EMS_PG_PASSWORD_FILE=$EMS_PG_PASSWORD_FILE" >&2
        exit 1
    fi
    PGPASSWORD=$(cat "$EMS_PG_PASSWORD_FILE")
    export PGPASSWORD
fi
exec "$@"
