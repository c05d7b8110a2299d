#!/usr/bin/env bash
# Docker engine for machines like CI's (Debian, root, no container registry).
#
#   scripts/docker-engine.sh up     install docker.io + debootstrap if missing, start dockerd if no
#                                   engine answers, make sure the base image exists (pull, else build
#                                   a local stand-in for python:3.11-slim from Debian packages)
#   scripts/docker-engine.sh ensure what `make run` calls: ready when an engine answers and the base
#                                   image exists; else `up` where it can (root with apt-get), else
#                                   one message saying what to run, and exit status 1
#   scripts/docker-engine.sh down   stop dockerd, only if `up` started it
#   scripts/docker-engine.sh base   (re)build the local base image
#   scripts/docker-engine.sh swarm  `up`, then make this engine a single-node swarm manager on
#                                   ${SWARM_ADDR:-127.0.0.1} (the `swarm` deploy target); it prints how
#                                   more nodes join (advertise a routable address for that)
#
# Air-gapped users: run `up` once on a machine that reaches Debian's mirror, or `docker load` a base.
set -euo pipefail

BASE_IMAGE=${MLOPS_BASE_IMAGE:-python:3.11-slim}
STATE_DIR=${DOCKER_ENGINE_STATE_DIR:-/tmp/clothes-docker-engine}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export DOCKER_BUILDKIT=0  # the classic builder needs no buildx plugin and pulls no frontend image

log() { echo "[docker-engine] $*" >&2; }

install_packages() {
  if command -v dockerd >/dev/null && command -v debootstrap >/dev/null; then return; fi
  log "installing docker.io and debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
}

start_daemon() {
  if docker info >/dev/null 2>&1; then log "engine already running"; return; fi
  mkdir -p "$STATE_DIR"
  log "starting dockerd"
  setsid nohup dockerd --host unix:///var/run/docker.sock >"$STATE_DIR/dockerd.log" 2>&1 < /dev/null &
  echo $! >"$STATE_DIR/started-by-us"
  for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then log "engine up"; return; fi
    sleep 0.5
  done
  log "dockerd did not come up; its log:"; tail -n 30 "$STATE_DIR/dockerd.log" >&2; exit 1
}

build_base() {
  local rootfs
  rootfs=$(mktemp -d /tmp/clothes-rootfs.XXXXXX)
  log "debootstrap bookworm (minbase) into $rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$STATE_DIR/debootstrap.log" 2>&1 \
    || { tail -n 20 "$STATE_DIR/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - local/debian:bookworm-slim >/dev/null
  rm -rf "$rootfs"
  log "adding Python 3.11 and tagging $BASE_IMAGE"
  docker build -q -t "$BASE_IMAGE" - >/dev/null <<'DOCKERFILE'
FROM local/debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python-is-python3 ca-certificates netbase tzdata \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/lib/python3.11/EXTERNALLY-MANAGED
ENV LANG=C.UTF-8
CMD ["python3"]
DOCKERFILE
}

ensure_base() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then log "base image $BASE_IMAGE present"; return; fi
  if timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then log "pulled $BASE_IMAGE"; return; fi
  log "cannot pull $BASE_IMAGE: building a local stand-in"
  build_base
}

stop_daemon() {
  if [ ! -f "$STATE_DIR/started-by-us" ]; then log "engine not started by this script: left running"; return; fi
  if [ -f /var/run/docker.pid ]; then
    kill -TERM "$(cat /var/run/docker.pid)" 2>/dev/null || true
    for _ in $(seq 1 60); do [ -f /var/run/docker.pid ] || break; sleep 0.5; done
  fi
  rm -f "$STATE_DIR/started-by-us"
  log "engine stopped"
}

ensure() {
  if docker info >/dev/null 2>&1 && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "engine ready"; return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    mkdir -p "$STATE_DIR"; install_packages; start_daemon; ensure_base; return
  fi
  log "no Docker engine answers here and only root on Debian can start one from this script."
  log "Start one (\`sudo make docker-up\`, or your own Docker), or run without the container stage:"
  log "  make run ARGS=--container.no-enabled"
  exit 1
}

init_swarm() {
  if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = active ]; then log "swarm already active"; return; fi
  log "initialising a single-node swarm on ${SWARM_ADDR:-127.0.0.1}"
  docker swarm init --advertise-addr "${SWARM_ADDR:-127.0.0.1}" >&2
}

case "${1:-}" in
  up) mkdir -p "$STATE_DIR"; install_packages; start_daemon; ensure_base ;;
  ensure) ensure ;;
  down) stop_daemon ;;
  base) mkdir -p "$STATE_DIR"; build_base ;;
  swarm) mkdir -p "$STATE_DIR"; install_packages; start_daemon; ensure_base; init_swarm ;;
  *) echo "usage: $0 up|ensure|down|base|swarm" >&2; exit 2 ;;
esac
