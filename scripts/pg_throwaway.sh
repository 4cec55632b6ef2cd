#!/usr/bin/env bash
# Start and stop a throwaway PostgreSQL 15 cluster for the store tests and CI.
#
#   scripts/pg_throwaway.sh start DIR PORT   # initdb into DIR, start on 127.0.0.1:PORT,
#                                            # create database medret_test, print its URL
#   scripts/pg_throwaway.sh stop DIR         # stop the cluster (fast) and remove DIR
#
# Typical use:
#   export MEDRET_TEST_POSTGRES_URL=$(scripts/pg_throwaway.sh start /tmp/medret-pg 54329)
#   pytest tests/indexer
#   scripts/pg_throwaway.sh stop /tmp/medret-pg
#
# The cluster listens on 127.0.0.1 only (no Unix socket), trusts every local TCP
# connection and has a superuser named `postgres`: it is for tests, never for data.
# Run as root (as CI does), the cluster belongs to the `postgres` OS user, because
# PostgreSQL refuses to run as root; DIR's parent folders must then be reachable by
# that user (a folder under /tmp is). Run as a normal user, it belongs to that user.
# Only the URL goes to stdout; progress and errors go to stderr.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
DB_NAME=medret_test
MARKER=.pg_throwaway   # written into DIR so that `stop` never removes a folder it did not make

die() { echo "pg_throwaway: $*" >&2; exit 1; }
say() { echo "pg_throwaway: $*" >&2; }

usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# Run a PostgreSQL binary as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

start() {
    local dir=$1 port=$2
    [[ $port =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || die "PORT must be 1-65535, got '$port'"
    [[ -x $PG_BIN/initdb ]] || die "no PostgreSQL binaries in $PG_BIN (install postgresql-15 or set PG_BIN)"
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        die "running as root needs the 'postgres' OS user (the postgresql-15 package creates it)"
    fi
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        die "something already answers on 127.0.0.1:$port; pick another PORT"
    fi
    [[ -e $dir/data ]] && die "$dir/data already exists; run '$0 stop $dir' first"

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    touch "$dir/$MARKER"
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres: "$dir"
        as_owner test -w "$dir" \
            || die "the postgres user cannot write to $dir (are its parent folders private?); use a folder under /tmp"
    fi

    say "initdb into $dir/data"
    as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 \
        --no-locale >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }

    say "starting on 127.0.0.1:$port"
    # No Unix socket (unix_socket_directories=''): nothing to collide with and no path-length limit.
    as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c fsync=off" \
        start >&2 || { cat "$dir/server.log" >&2; die "the server did not start"; }

    local tries=0
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; do
        ((++tries > 60)) && { cat "$dir/server.log" >&2; die "the server is not ready after 30 s"; }
        sleep 0.5
    done

    "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB_NAME" \
        || die "createdb failed; the server is still running: '$0 stop $dir' stops it"
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/$DB_NAME"
}

stop() {
    local dir=$1
    [[ -d $dir ]] || { say "$dir does not exist; nothing to stop"; return 0; }
    [[ -e $dir/$MARKER ]] || die "$dir was not made by this script (no $MARKER); not touching it"
    if [[ -f $dir/data/postmaster.pid ]]; then
        say "stopping the cluster in $dir/data"
        as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2 \
            || say "pg_ctl stop failed; removing $dir anyway"
    fi
    rm -rf -- "$dir"
    say "removed $dir"
}

case ${1:-} in
    start) [[ $# -eq 3 ]] || usage; start "$2" "$3" ;;
    stop) [[ $# -eq 2 ]] || usage; stop "$2" ;;
    *) usage ;;
esac
