#!/bin/sh
# The medret container's entrypoint (installed as /usr/local/bin/medret-entrypoint).
#
#   api [SERVE-OPTIONS]   (default) migrate the schema, build the demo collection when
#                         nothing would be served, then exec `medret serve`
#   serve [OPTIONS]       exec `medret serve` alone (replicas whose schema is migrated)
#   migrate [OPTIONS]     create or upgrade the schema, then exit
#   index|follow|train|evaluate|ablate|inspect|demo [ARGS]   exec that `medret` command
#   sh|bash [ARGS]        a shell, for debugging
#
# Variables read here besides the service's MEDRET_* settings:
#   MEDRET_DB_WAIT_S      seconds to keep retrying `medret migrate` while a PostgreSQL
#                         database is still starting (default 60)
#   POSTGRES_PASSWORD     when set, checked like the password in MEDRET_DATABASE_URL:
#                         a medret command refuses to run with a placeholder password
#                         (CHANGE_ME, password, postgres, ...) or one under 16 characters
set -eu

PROG=medret-entrypoint
RETRY_INTERVAL_S=1
MIN_PASSWORD_LENGTH=16
PLACEHOLDER_PASSWORDS="change_me change-me changeme password postgres medret secret admin"
DEMO_CONFIG=/opt/medret/configs/cpu_recipe.yaml  # copied into the images

usage() {
    cat >&2 <<USAGE
usage: $PROG [COMMAND [ARGS...]]

commands:
  api [SERVE-OPTIONS]   (default) migrate the database, build the demo collection
                        when no collection has an active index and MEDRET_COLLECTIONS
                        is empty, then run 'medret serve'
  serve [OPTIONS]       run 'medret serve' only
  migrate [OPTIONS]     create or upgrade the database schema, then exit
  index ARGS...         run 'medret index' (e.g. index --list)
  follow ARGS...        run 'medret follow' (keep a collection up to date with a PACS)
  train ARGS...         run 'medret train'
  evaluate|ablate|inspect|demo ARGS...   run that medret command
  sh|bash [ARGS...]     run a shell

'medret COMMAND --help' describes each command's options.
USAGE
}

fail() {
    echo "$PROG: $*" >&2
    exit 1
}

# Refuse to run with a database password anyone could guess: a placeholder of an example
# file, a default, or a short one. Never prints the password.
check_password() {  # $1: where it comes from, $2: the password
    lowered=$(printf '%s' "$2" | tr '[:upper:]' '[:lower:]')
    for placeholder in $PLACEHOLDER_PASSWORDS; do
        if [ "$lowered" = "$placeholder" ]; then
            fail "$1 is a placeholder ('$placeholder'); set POSTGRES_PASSWORD in .env to a" \
                "random one: python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
        fi
    done
    if [ "${#2}" -lt "$MIN_PASSWORD_LENGTH" ]; then
        fail "$1 is shorter than $MIN_PASSWORD_LENGTH characters; set POSTGRES_PASSWORD in" \
            ".env to a random one: python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
    fi
}

# The password in MEDRET_DATABASE_URL (if it has one) and POSTGRES_PASSWORD (if set).
check_database_passwords() {
    if [ -n "${POSTGRES_PASSWORD+set}" ]; then
        check_password "POSTGRES_PASSWORD" "$POSTGRES_PASSWORD"
    fi
    if uses_postgres; then
        url_password=$(python -c '
import os, urllib.parse
print(urllib.parse.unquote(urllib.parse.urlsplit(os.environ["MEDRET_DATABASE_URL"]).password or ""))
') || fail "MEDRET_DATABASE_URL is not a URL"
        if [ -n "$url_password" ]; then
            check_password "the password in MEDRET_DATABASE_URL" "$url_password"
        fi
    fi
}

uses_postgres() {
    case "${MEDRET_DATABASE_URL:-}" in
        postgres*) return 0 ;;
        *) return 1 ;;
    esac
}

# `medret migrate`, retried for up to MEDRET_DB_WAIT_S seconds when the database is
# PostgreSQL (it may still be starting). SQLite gets one attempt.
migrate() {
    if ! uses_postgres; then
        medret migrate "$@" || fail "'medret migrate' failed; not starting the service"
        return 0
    fi
    wait_s="${MEDRET_DB_WAIT_S:-60}"
    case "$wait_s" in
        '' | *[!0-9]*) fail "MEDRET_DB_WAIT_S must be a whole number of seconds, not '$wait_s'" ;;
    esac
    started=$(date +%s)
    while ! medret migrate "$@"; do
        waited=$(($(date +%s) - started))
        if [ "$waited" -ge "$wait_s" ]; then
            fail "the PostgreSQL database (MEDRET_DATABASE_URL) could not be migrated" \
                "within MEDRET_DB_WAIT_S=${wait_s}s; is it running and are the" \
                "credentials right? The error is above."
        fi
        echo "$PROG: database not ready after ${waited}s; retrying in ${RETRY_INTERVAL_S}s" >&2
        sleep "$RETRY_INTERVAL_S"
    done
}

# How many collections have an active index version, from `medret index --list`.
active_collection_count() {
    listing=$(medret index --list) || fail "'medret index --list' failed"
    printf '%s' "$listing" | python -c '
import json, sys
listing = json.load(sys.stdin)
print(sum(any(v.get("active") for v in c.get("versions", [])) for c in listing))
' || fail "could not read the output of 'medret index --list'"
}

run_api() {
    migrate
    if [ -z "${MEDRET_COLLECTIONS:-}" ]; then
        count=$(active_collection_count)
        if [ "$count" -eq 0 ]; then
            echo "$PROG: no collection has an active index; building the demo collection" >&2
            if [ -f "$DEMO_CONFIG" ]; then
                medret demo --no-serve --config "$DEMO_CONFIG" \
                    || fail "'medret demo --no-serve' failed"
            else
                medret demo --no-serve || fail "'medret demo --no-serve' failed"
            fi
        fi
    fi
    exec medret serve "$@"
}

if [ "$#" -eq 0 ]; then
    set -- api
fi
command=$1
shift

case "$command" in
    api | migrate | serve | index | follow | train | evaluate | ablate | inspect | demo)
        check_database_passwords ;;
esac

case "$command" in
    api) run_api "$@" ;;
    migrate) migrate "$@" ;;
    serve | index | follow | train | evaluate | ablate | inspect | demo)
        exec medret "$command" "$@" ;;
    sh | bash) exec "$command" "$@" ;;
    help) usage; exit 0 ;;
    *)
        echo "$PROG: unknown command '$command'" >&2
        usage
        exit 2
        ;;
esac
