#!/usr/bin/env bash
# What the whole suite needs from the machine besides the venv and the data, set up the way `make run`
# sets up its Docker engine: as root on Debian it installs what is missing (chromium and chromium-driver
# for the browser tests and the stack's screenshots, postgresql for the stack on PostgreSQL,
# docker-registry for the team stack's image registry) and starts the Docker engine. Otherwise it says in
# one message what to install, or which MLOPS_TEST_WITHOUT_* skips the tests that need it, and fails.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[test-requirements] $*" >&2; }

# package, a command it brings, the variable that skips the tests needing it (tests/conftest.py OPT_OUTS)
REQUIREMENTS="chromium:chromium:MLOPS_TEST_WITHOUT_CHROMIUM
chromium-driver:chromedriver:MLOPS_TEST_WITHOUT_CHROMIUM
postgresql:pg_ctlcluster:MLOPS_TEST_WITHOUT_POSTGRES
docker-registry:docker-registry:MLOPS_TEST_WITHOUT_DOCKER"

missing=() skips=()
while IFS=: read -r package command variable; do
  [ "${!variable:-}" = 1 ] && continue
  command -v "$command" >/dev/null && continue
  missing+=("$package"); skips+=("$variable=1")
done <<<"$REQUIREMENTS"

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "the suite needs Debian's ${missing[*]}: run \`sudo apt-get install ${missing[*]}\` (or \`sudo make test\`" \
      "once), or skip the tests that need them with $(printf '%s\n' "${skips[@]}" | sort -u | tr '\n' ' ')"
    exit 1
  fi
fi
log "chromium, chromium-driver, postgresql and docker-registry ready"

if [ "${MLOPS_TEST_WITHOUT_DOCKER:-}" != 1 ]; then
  scripts/docker-engine.sh ensure || { log "or skip the container tests with MLOPS_TEST_WITHOUT_DOCKER=1"; exit 1; }
fi
