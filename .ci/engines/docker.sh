#!/usr/bin/env bash
# Docker Engine for the tests in tests/docker/: installs Debian's docker.io (and docker-compose 1.29, to
# validate compose.yaml; debootstrap, to make the local test base image) when missing, starts dockerd as
# root in the background when no engine answers, and waits until `docker info` does. Idempotent: a no-op
# when an engine is already running and the tools are there.
set -euo pipefail

log=/var/log/labrun-dockerd.log

# shellcheck source=../lib/install-missing.sh
source "$(dirname "$0")/../lib/install-missing.sh"
install_missing dockerd=docker.io docker-compose=docker-compose debootstrap=debootstrap

if docker info >/dev/null 2>&1; then
  echo "docker engine already running: $(docker version --format '{{.Server.Version}}')"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "no Docker Engine answers and this is not root: cannot start dockerd" >&2
  exit 1
fi

# A dockerd (and its containerd) killed without a chance to clean up, as at the end of a session, leaves
# pid files behind; the next start can then fail once ("pid file found", "timeout waiting for
# containerd"). Stale pid files are removed, and a start that fails is tried again.
remove_stale() {  # remove_stale PIDFILE NAME: when it does not name a live NAME process
  local file="$1" name="$2" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file" 2>/dev/null || true)"
  if [ -z "$pid" ] || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$name"; then
    echo "removing stale $file"
    rm -f "$file"
  fi
}

for attempt in 1 2 3; do
  remove_stale /var/run/docker.pid dockerd
  remove_stale /var/run/docker/containerd/containerd.pid containerd
  echo "starting dockerd (attempt $attempt, log: $log)"
  # setsid: dockerd outlives this script and is not tied to the caller's terminal or process group.
  setsid dockerd --storage-driver=overlay2 >>"$log" 2>&1 </dev/null &
  daemon=$!
  for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then
      echo "docker engine up: $(docker version --format '{{.Server.Version}}')"
      exit 0
    fi
    kill -0 "$daemon" 2>/dev/null || break  # it gave up
    sleep 0.5
  done
  echo "dockerd did not come up; last lines of $log:" >&2
  tail -n 5 "$log" >&2
  kill "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  sleep 1
done
echo "dockerd did not start after 3 attempts" >&2
exit 1
