#!/usr/bin/env bash
# Build the trainer image where no image registry is reachable (CI, this lab's dev machines):
#   1. a base image: a Debian bookworm minbase root file system with Python 3.11 (the host venv's ABI),
#      made with debootstrap and `docker import`ed as labrun-test-base:bookworm;
#   2. a wheelhouse from the host's package index (docker/build-wheelhouse.sh);
#   3. docker/trainer.Dockerfile on that base, installing from that wheelhouse only.
#
#   docker/build-test-image.sh [trainer|api] [TAG]   (default: trainer, TAG labrun-<image>:test)
#
# prints the image's tag last. `api` builds docker/api.Dockerfile the same way (same base and wheelhouse).
#
# Cached on this machine, each step runs only when its output is missing: the base image; the wheelhouse
# (keyed by pyproject.toml + constraints.txt) under $LABRUN_BUILD_CACHE (default /var/cache/labrun); and the
# image itself, tagged by a hash of everything it is built from, so a rebuild happens exactly when the
# Dockerfile, the dependencies, conf/ or trainer/ changed. TAG is then pointed at that image.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${LABRUN_BUILD_CACHE:-/var/cache/labrun}"
base=labrun-test-base:bookworm
which="${1:-trainer}"
case "$which" in
  trainer) inputs=(docker/trainer.Dockerfile conf trainer) ;;
  api) inputs=(docker/api.Dockerfile conf trainer app) ;;
  *) echo "usage: $0 [trainer|api] [TAG]" >&2; exit 2 ;;
esac
tag="${2:-labrun-$which:test}"
mkdir -p "$cache"
# One build at a time on this machine (two test sessions share the cache).
exec 9>"$cache/.lock"
flock 9

# A client that builds with BuildKit: `docker buildx`, or Docker 20.10's own client (Debian's docker.io).
build=()
if docker buildx version >/dev/null 2>&1; then
  build=(docker buildx build --load)
else
  for client in $(which -a docker); do
    case "$("$client" version --format '{{.Client.Version}}' 2>/dev/null || true)" in
      20.10.*|19.03.*) build=(env DOCKER_BUILDKIT=1 "$client" build); break ;;
    esac
  done
fi
if [ "${#build[@]}" -eq 0 ]; then
  echo "no BuildKit-capable docker client (docker buildx, or Docker 20.10's client)" >&2
  exit 1
fi

hash_of() { (cd "$root" && find "$@" -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16; }

# 1. Base image.
if ! docker image inspect "$base" >/dev/null 2>&1; then
  echo "== base image $base: debootstrap bookworm (minbase, python3, python3-venv)"
  rootfs="$cache/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
  tar -C "$rootfs" -c . | docker import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
  rm -rf "$rootfs"
fi

# 2. Wheelhouse, keyed by what it is made from.
wheels="$cache/wheelhouse"
wheels_key="$(hash_of pyproject.toml constraints.txt docker/requirements.py)"
if [ "$(cat "$wheels/.key" 2>/dev/null || true)" != "$wheels_key" ]; then
  echo "== wheelhouse $wheels"
  rm -rf "$wheels"
  PYTHON="${PYTHON:-python3}" bash "$root/docker/build-wheelhouse.sh" "$wheels"
  echo "$wheels_key" >"$wheels/.key"
fi

# 3. The image, tagged by its inputs.
image_key="$(hash_of "${inputs[@]}" docker/requirements.py pyproject.toml constraints.txt)"
keyed="labrun-$which:test-$image_key"
if ! docker image inspect "$keyed" >/dev/null 2>&1; then
  echo "== image $keyed"
  # A context of its own: the repo's files the Dockerfile copies plus the wheelhouse (hard links when on
  # the same file system), so the repo's checkout never holds the wheels.
  context="$cache/context-$which"
  rm -rf "$context"
  mkdir -p "$context/docker"
  cp -r "$root/pyproject.toml" "$root/constraints.txt" "$root/.dockerignore" "$context/"
  for dir in "${inputs[@]:1}"; do cp -r "$root/$dir" "$context/"; done
  cp "$root/docker/requirements.py" "$context/docker/"
  cp -al "$wheels" "$context/docker/wheelhouse" 2>/dev/null || cp -r "$wheels" "$context/docker/wheelhouse"
  commit="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
  if [ -n "$(git -C "$root" status --porcelain --untracked-files=no -- "${inputs[@]}" 2>/dev/null)" ]; then
    commit="$commit-dirty"
  fi
  "${build[@]}" --network none --progress plain \
    --build-arg BASE_IMAGE="$base" --build-arg GIT_COMMIT="$commit" \
    -f "$root/${inputs[0]}" -t "$keyed" "$context"
  rm -rf "$context"
fi
docker tag "$keyed" "$tag"
# Untag this image's older builds (their layers go unless shared); one still in use stays.
docker images --format '{{.Repository}}:{{.Tag}}' "labrun-$which" | grep ":test-" | grep -vx "$keyed" \
  | xargs -r docker rmi >/dev/null 2>&1 || true
echo "$tag"
