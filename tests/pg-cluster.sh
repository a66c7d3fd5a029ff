# Sourced by tests/pg-suites.sh and tests/bench/postgres.sh: a throwaway PostgreSQL 15
# cluster (Debian's packages) in a temporary folder on a free port, run by the postgres
# user when we are root (PostgreSQL refuses root), stopped by pg_cluster_stop.
#   pg_cluster_start WORKDIR [server options]  -> sets PG_URL=postgres://postgres@127.0.0.1:PORT
#   pg_cluster_stop WORKDIR
pgbin=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
pg_cluster_start() {
  local work=$1; shift
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  chmod 755 "$work"
  mkdir "$work/pg"
  if [ "$(id -u)" = 0 ]; then chown postgres "$work/pg"; fi
  as_pg "$pgbin/initdb -D $work/pg -A trust -U postgres -E UTF8" >/dev/null
  as_pg "$pgbin/pg_ctl -D $work/pg -l $work/pg/log -w -o '-p $port -k $work/pg -c listen_addresses=127.0.0.1 $*' start" >/dev/null
  PG_URL="postgres://postgres@127.0.0.1:$port"
}
pg_cluster_stop() {
  if [ -f "$1/pg/postmaster.pid" ]; then
    as_pg "$pgbin/pg_ctl -D $1/pg -m fast -w stop" >/dev/null 2>&1 || true
  fi
}
