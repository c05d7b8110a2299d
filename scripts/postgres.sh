#!/usr/bin/env bash
# PostgreSQL for the stack's MLflow and Prefect servers (MLOPS_STACK_DB=postgres), on machines like CI's
# (Debian, root, the `postgresql` package; no systemd).
#
#   scripts/postgres.sh up [PREFIX]    start Debian's cluster if it is down (creating one if there is none),
#                                      then a role named after the calling user and the databases
#                                      PREFIXmlflow and PREFIXprefect (default prefix clothes_) it owns.
#                                      Clients connect over the Unix socket in /var/run/postgresql with
#                                      peer authentication: no password anywhere.
#   scripts/postgres.sh drop PREFIX    drop those two databases (the tests' cleanup)
#   scripts/postgres.sh down           stop the cluster, only if `up` started it
set -euo pipefail

VERSION=${PG_VERSION:-15}
CLUSTER=${PG_CLUSTER:-main}
STATE_DIR=${POSTGRES_STATE_DIR:-/tmp/clothes-postgres}
ROLE=${PG_ROLE:-$(id -un)}
PREFIX=${2:-clothes_}

log() { echo "[postgres] $*" >&2; }
as_postgres() { runuser -u postgres -- "$@"; }
psql_admin() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -tA "$@"; }

require_root() {
  if [ "$(id -u)" != 0 ]; then
    log "only root can start Debian's cluster; start PostgreSQL yourself and create the role '$ROLE'"
    log "and the databases ${PREFIX}mlflow and ${PREFIX}prefect it owns"; exit 1
  fi
  if ! command -v pg_ctlcluster >/dev/null; then
    log "installing postgresql"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
}

start() {
  mkdir -p "$STATE_DIR"
  if ! pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c {found=1} END {exit !found}'; then
    log "creating cluster $VERSION/$CLUSTER"; pg_createcluster "$VERSION" "$CLUSTER" >/dev/null
  fi
  if pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c && $4 == "online" {found=1} END {exit !found}'; then
    log "cluster $VERSION/$CLUSTER already running"
  else
    log "starting cluster $VERSION/$CLUSTER"
    pg_ctlcluster "$VERSION" "$CLUSTER" start
    touch "$STATE_DIR/started-by-us"
  fi
  for _ in $(seq 1 60); do pg_isready -q -h /var/run/postgresql && return; sleep 0.5; done
  log "PostgreSQL did not come up"; exit 1
}

databases() {
  if [ -z "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" ]; then
    log "creating role $ROLE"; as_postgres createuser "$ROLE"
  fi
  for db in "${PREFIX}mlflow" "${PREFIX}prefect"; do
    if [ -z "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
      log "creating database $db"; as_postgres createdb -O "$ROLE" "$db"
    fi
  done
}

case "${1:-}" in
  up) require_root; start; databases ;;
  drop) require_root; for db in "${PREFIX}mlflow" "${PREFIX}prefect"; do as_postgres dropdb --if-exists --force "$db"; done ;;
  down)
    if [ -f "$STATE_DIR/started-by-us" ]; then pg_ctlcluster "$VERSION" "$CLUSTER" stop; rm -f "$STATE_DIR/started-by-us"; log "stopped"
    else log "cluster not started by this script: left running"; fi ;;
  *) echo "usage: $0 up [PREFIX]|drop PREFIX|down" >&2; exit 2 ;;
esac
