#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL cluster for the store tests:
#   scripts/with_postgres.sh pytest
# When MEDRET_TEST_POSTGRES_URL is already set, that database is used and nothing is
# started. When PostgreSQL 15 is not installed, the command runs without it (the
# Postgres store tests then skip, or fail under CI=true).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ -n "${MEDRET_TEST_POSTGRES_URL:-}" ]]; then
    exec "$@"
fi
if [[ ! -x "${PG_BIN:-/usr/lib/postgresql/15/bin}/initdb" ]]; then
    echo "with_postgres: PostgreSQL 15 is not installed; running without it" >&2
    exec "$@"
fi
pg_dir="$(mktemp -d /tmp/medret-pg.XXXXXX)"
port="${MEDRET_TEST_PG_PORT:-$((54330 + RANDOM % 500))}"
cleanup() { "$here/pg_throwaway.sh" stop "$pg_dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT
MEDRET_TEST_POSTGRES_URL="$("$here/pg_throwaway.sh" start "$pg_dir" "$port")"
export MEDRET_TEST_POSTGRES_URL
echo "with_postgres: store tests use $MEDRET_TEST_POSTGRES_URL" >&2
"$@"
