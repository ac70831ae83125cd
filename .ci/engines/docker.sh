#!/usr/bin/env bash
# Docker Engine for the tests in tests/docker/: installs Debian's docker.io (and docker-compose 1.29, to
# validate compose.yaml; debootstrap, to make the local test base image) when missing, starts dockerd as
# root in the background when no engine answers, and waits until `docker info` does. Idempotent: a no-op
# when an engine is already running and the tools are there.
set -euo pipefail

log=/var/log/labrun-dockerd.log

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
  echo "docker engine already running: $(docker version --format '{{.Server.Version}}')"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "no Docker Engine answers and this is not root: cannot start dockerd" >&2
  exit 1
fi

echo "starting dockerd (log: $log)"
# setsid: dockerd outlives this script and is not tied to the caller's terminal or process group.
setsid dockerd --storage-driver=overlay2 >>"$log" 2>&1 </dev/null &

for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then
    echo "docker engine up: $(docker version --format '{{.Server.Version}}')"
    exit 0
  fi
  sleep 0.5
done
echo "dockerd did not answer within 60 s; last lines of $log:" >&2
tail -n 30 "$log" >&2
exit 1
