#!/bin/sh
# The official postgres image's contract, as far as the chart and compose files use it:
#   POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER (postgres),
#   POSTGRES_DB (the user's name), PGDATA (/var/lib/postgresql/data). An empty PGDATA is
#   initialised (initdb, password auth from anywhere, the database created), then `postgres`
#   runs in the foreground as PID 1 listening on every address. Other arguments run as given.
set -eu
[ "${1:-postgres}" = postgres ] || exec "$@"
[ $# -gt 0 ] && shift
for arg in "$@"; do  # postgres --version, --help, -C: nothing to initialise
  case "$arg" in -V|--version|-'?'|--help|-C|--describe-config) exec postgres "$@" ;; esac
done

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
AUTH=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
export PGDATA

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$AUTH" != trust ]; then
    echo "postgres-standin: POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust)" >&2
    exit 1
  fi
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  pwfile=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
    --auth-host="$AUTH" --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  printf 'host all all all %s\n' "$AUTH" >>"$PGDATA/pg_hba.conf"
  # Create the database on a socket-only server, as the official entrypoint does.
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" \
    start >/dev/null
  if [ "$POSTGRES_DB" != postgres ]; then
    psql -v ON_ERROR_STOP=1 -h /var/run/postgresql -U "$POSTGRES_USER" -d postgres -q \
      -c "CREATE DATABASE \"$POSTGRES_DB\"" >/dev/null
  fi
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "postgres-standin: initialised $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
fi

exec postgres -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
