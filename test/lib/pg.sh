#!/usr/bin/env bash
# test/lib/pg.sh: a private PostgreSQL 15 cluster in a temporary directory,
# for any test suite that needs a real database.
#
# As a library (bash):
#     . "$EMS_ROOT/test/lib/pg.sh"
#     ems_pg_start            # exports EMS_PG_DIR EMS_PG_PORT EMS_PG_SOCKDIR EMS_PG_DSN
#     psql "$EMS_PG_DSN" -c 'select 1'
#     ems_pg_kill             # pg_ctl stop -m immediate (a crash, for fault tests)
#     ems_pg_start_again      # start the same cluster again (same port and data)
#     ems_pg_stop             # fast shutdown and remove the directory
#   ems_pg_start installs an EXIT trap that calls ems_pg_stop unless
#   EMS_PG_NO_TRAP=1 (then the caller must stop it).
#
# As a command (for Python or C test drivers):
#     test/lib/pg.sh start        # prints "DIR PORT DSN" on one line
#     test/lib/pg.sh emu-tsdb OUT # builds the TimescaleDB emulation (below), prints its bin dir
#     test/lib/pg.sh kill DIR     # immediate stop
#     test/lib/pg.sh restart DIR  # start again after kill/stop
#     test/lib/pg.sh stop DIR     # stop and remove
#
# Why it looks like this: initdb and pg_ctl refuse to run as root, so when
# run as root the server runs as the "postgres" user (runuser) in a
# directory it owns; clients connect as the database user "postgres" over
# the Unix socket in the cluster's own directory, so parallel runs never
# share a socket. The server also listens on 127.0.0.1 at a free port
# (some tests want TCP); if the port is taken between choosing and binding,
# another one is tried. fsync is off by default (tests only, the kernel
# keeps the data when the server is killed); EMS_PG_FSYNC=on for benchmarks.
# EMS_PG_PRELOAD=timescaledb sets shared_preload_libraries (TimescaleDB runs).
# EMS_PG_BIN selects the PostgreSQL binaries (default Debian's).
#
# The TimescaleDB emulation (ems_pg_emu_tsdb OUT): PostgreSQL finds its
# share/ and lib/ directories relative to its own executable, so a copy of
# the installation under OUT (same layout: OUT/usr/lib/postgresql/15/bin,
# .../lib, OUT/usr/share/postgresql/15) is a complete server whose
# extension directory we may change. Into it go test/lib/tsdb-emu: a
# `timescaledb` extension that is an EMULATION, not TimescaleDB: its
# library raises FATAL "extension "timescaledb" must be preloaded" when it
# is loaded without shared_preload_libraries (the real condition of a
# machine with the package installed but not preloaded), and when
# preloaded it provides stand-ins of timescaledb_information.jobs and
# job_stats. Building it needs postgresql-server-dev-15 (scripts/deps.sh).
# Start a cluster from it with EMS_PG_BIN=<the printed bin dir>.

EMS_PG_BIN=${EMS_PG_BIN:-/usr/lib/postgresql/15/bin}

ems_pg__as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd /tmp && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

ems_pg__free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

ems_pg__ctl_start() {
    local dir=$1 port=$2
    ems_pg__as_owner "$EMS_PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
}

ems_pg_start() {
    local dir port tries=0
    dir=$(mktemp -d /tmp/ems-pg.XXXXXX) || return 1
    chmod 755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$dir"; fi
    if ! ems_pg__as_owner "$EMS_PG_BIN/initdb" -D "$dir/data" -A trust -U postgres \
        --no-sync -E UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
        echo "# initdb failed:" >&2
        sed 's/^/#   /' "$dir/initdb.log" >&2
        return 1
    fi
    cat >>"$dir/data/postgresql.conf" <<EOF
fsync = ${EMS_PG_FSYNC:-off}
full_page_writes = ${EMS_PG_FSYNC:-off}
synchronous_commit = on
shared_buffers = 128MB
max_connections = 50
timezone = 'UTC'
log_min_messages = warning
log_timezone = 'UTC'
EOF
    if [ -n "${EMS_PG_PRELOAD:-}" ]; then
        echo "shared_preload_libraries = '$EMS_PG_PRELOAD'" >>"$dir/data/postgresql.conf"
    fi
    while :; do
        port=$(ems_pg__free_port)
        if ems_pg__ctl_start "$dir" "$port"; then
            break
        fi
        tries=$((tries + 1))
        if [ $tries -ge 5 ]; then
            echo "# postgres would not start:" >&2
            tail -n 20 "$dir/server.log" | sed 's/^/#   /' >&2
            return 1
        fi
    done
    echo "$port" >"$dir/port"
    export EMS_PG_DIR=$dir EMS_PG_PORT=$port EMS_PG_SOCKDIR=$dir
    export EMS_PG_DSN="host=$dir port=$port user=postgres dbname=postgres"
    if [ "${EMS_PG_NO_TRAP:-0}" != 1 ]; then
        trap 'ems_pg_stop' EXIT
    fi
}

# Immediate stop: the server dies without a checkpoint, like a crash.
ems_pg_kill() {
    local dir=${1:-$EMS_PG_DIR}
    ems_pg__as_owner "$EMS_PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1
}

ems_pg_start_again() {
    local dir=${1:-$EMS_PG_DIR}
    ems_pg__ctl_start "$dir" "$(cat "$dir/port")"
}

ems_pg_stop() {
    local dir=${1:-${EMS_PG_DIR:-}}
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    ems_pg__as_owner "$EMS_PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
    rm -rf "$dir"
}

ems_pg_emu_tsdb() {
    local out=$1 here src_bin src_lib src_share inc
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    src_bin=$EMS_PG_BIN
    src_lib=$("$src_bin/pg_config" --pkglibdir) || return 1
    src_share=$("$src_bin/pg_config" --sharedir) || return 1
    inc=$("$src_bin/pg_config" --includedir-server) || return 1
    if [ ! -f "$inc/postgres.h" ]; then
        echo "# emu-tsdb: no server headers in $inc (install postgresql-server-dev-15: scripts/deps.sh)" >&2
        return 1
    fi
    mkdir -p "$out$(dirname "$src_bin")" "$out$(dirname "$src_lib")" "$out$(dirname "$src_share")" || return 1
    cp -a "$src_bin" "$out$src_bin" && cp -a "$src_lib" "$out$src_lib" &&
        cp -a "$src_share" "$out$src_share" || return 1
    cc -std=gnu11 -O1 -fPIC -shared -Wall -Werror -I"$inc" -o "$out$src_lib/timescaledb.so" \
        "$here/tsdb-emu/timescaledb_emu.c" || return 1
    cp "$here/tsdb-emu/timescaledb.control" "$here/tsdb-emu/timescaledb--0.0.0.emu.sql" \
        "$out$src_share/extension/" || return 1
    chmod -R a+rX "$out"
    # The copy must resolve its own directories, not the originals.
    if [ "$("$out$src_bin/pg_config" --sharedir)" != "$out$src_share" ] ||
        [ "$("$out$src_bin/pg_config" --pkglibdir)" != "$out$src_lib" ]; then
        echo "# emu-tsdb: the copied PostgreSQL does not resolve its directories relative to itself" >&2
        return 1
    fi
    echo "$out$src_bin"
}

# Run as a command rather than sourced.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -u
    case "${1:-}" in
    start)
        EMS_PG_NO_TRAP=1 ems_pg_start || exit 1
        echo "$EMS_PG_DIR $EMS_PG_PORT $EMS_PG_DSN"
        ;;
    kill) ems_pg_kill "$2" ;;
    restart) ems_pg_start_again "$2" ;;
    stop) ems_pg_stop "$2" ;;
    emu-tsdb) ems_pg_emu_tsdb "$2" || exit 1 ;;
    *)
        echo "usage: $0 start | kill DIR | restart DIR | stop DIR | emu-tsdb OUT" >&2
        exit 2
        ;;
    esac
fi
