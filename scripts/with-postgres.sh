#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL cluster, then removes the cluster.
#
#   scripts/with-postgres.sh CMD [ARGS...]
#
# The cluster lives in a fresh temporary directory and listens on 127.0.0.1 only, on port
# $PGPORT when set, else on the first free port from 15432 (below the kernel's ephemeral ports:
# a client reconnecting to a stopped server on an ephemeral port can connect to itself and hold
# the port, and the next server there fails to bind). The command sees
#   CITYPAY_TEST_PG=postgres://postgres@127.0.0.1:PORT/postgres
# and its exit status is the script's. The cluster is stopped and deleted on any exit.
#
# Durability: the server runs with PostgreSQL's durable defaults (for benchmarks) unless
# CITYPAY_PG_FAST=1 is set in the script's own environment (for tests), which turns off
# fsync, synchronous_commit and full_page_writes:
#   CITYPAY_PG_FAST=1 scripts/with-postgres.sh cargo test -p citypay-store-postgres
#
# PostgreSQL comes from Debian's packages (installed with apt-get when missing). Run as root
# the server runs as the `postgres` user; run as another user it runs as that user.
set -euo pipefail

die() { echo "with-postgres: $*" >&2; exit 1; }

[ $# -gt 0 ] || die "usage: $0 CMD [ARGS...]"

find_pgbin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

PGBIN=$(find_pgbin)
if [ -z "$PGBIN" ]; then
    [ "$(id -u)" -eq 0 ] || die "PostgreSQL is not installed and installing it needs root"
    echo "with-postgres: installing PostgreSQL (apt-get install postgresql)..." >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } >/dev/null 2>&1; then
        die "could not install PostgreSQL with apt-get; install the postgresql package and retry"
    fi
    PGBIN=$(find_pgbin)
    [ -n "$PGBIN" ] || die "apt-get installed postgresql but no /usr/lib/postgresql/*/bin exists"
fi

# Runs a server binary as the postgres user when we are root (the server refuses root).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

if [ -n "${PGPORT:-}" ]; then
    PORT=$PGPORT
    port_in_use "$PORT" && die "port $PORT (from PGPORT) is already in use"
else
    PORT=15432
    while port_in_use "$PORT"; do
        PORT=$((PORT + 1))
        [ "$PORT" -lt 15532 ] || die "no free port in 15432..15531; set PGPORT"
    done
fi

PGDATA=$(mktemp -d -t citypay-pgdata.XXXXXX)
STARTED=0
cleanup() {
    if [ "$STARTED" -eq 1 ]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PGDATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$PGDATA"
    # The postgres user must be able to reach the directory through its parents.
    runuser -u postgres -- test -w "$PGDATA" \
        || die "user postgres cannot write $PGDATA; point TMPDIR at a world-searchable directory such as /tmp"
fi

as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --no-sync >"$PGDATA.initdb.log" 2>&1 \
    || { cat "$PGDATA.initdb.log" >&2; rm -f "$PGDATA.initdb.log"; die "initdb failed"; }
rm -f "$PGDATA.initdb.log"

OPTIONS="-c listen_addresses=127.0.0.1 -p $PORT -k $PGDATA -c max_connections=200"
if [ "${CITYPAY_PG_FAST:-}" = 1 ]; then
    OPTIONS="$OPTIONS -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
fi

STARTED=1
if ! as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -w -t 30 -o "$OPTIONS" start >/dev/null; then
    tail -n 20 "$PGDATA/log" >&2 || true
    die "the PostgreSQL server did not start"
fi

export CITYPAY_TEST_PG="postgres://postgres@127.0.0.1:$PORT/postgres"
echo "with-postgres: $("$PGBIN/postgres" --version) on port $PORT ($([ "${CITYPAY_PG_FAST:-}" = 1 ] && echo fast, not durable || echo durable))" >&2

set +e
"$@"
status=$?
set -e
exit "$status"
