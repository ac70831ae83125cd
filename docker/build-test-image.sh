#!/usr/bin/env bash
# Build the trainer image for the tests (tests/docker), also where no image registry is reachable (CI, this
# lab's dev machines):
#   1. a base image with Python 3 (+ venv) of the host venv's minor version (the wheels' ABI), the first of:
#      - one made or pulled before (cached on this machine);
#      - a Debian bookworm minbase root file system (Python 3.11) made with debootstrap (as root) and
#        `docker import`ed as labrun-test-base:bookworm (only for a Python 3.11 host);
#      - the public python:<X.Y>-slim-bookworm, pulled (where a registry is reachable);
#      if none works, it exits 3 with one line saying what to install or allow (as it does without a
#      BuildKit-capable docker client);
#   2. a wheelhouse from the host's package index (docker/build-wheelhouse.sh);
#   3. docker/trainer.Dockerfile on that base, installing from that wheelhouse only.
#
#   docker/build-test-image.sh [trainer|api|base] [TAG]   (default: trainer, TAG labrun-<image>:test)
#
# prints the image's tag last. `api` builds docker/api.Dockerfile the same way (same base and wheelhouse);
# `base` only makes sure of the base image and prints its name.
# LABRUN_TEST_BASE (default labrun-test-base:bookworm) and LABRUN_TEST_BASE_PULL (default
# python:<X.Y>-slim-bookworm) name the two kinds of base; PYTHON the host's Python (default python3).
#
# Cached on this machine, each step runs only when its output is missing: the base image; the wheelhouse
# (keyed by pyproject.toml + constraints.txt) under $LABRUN_BUILD_CACHE (default /var/cache/labrun, or
# ~/.cache/labrun for a user who may not write there); and the
# image itself, tagged by a hash of everything it is built from (the base image's id included), so a
# rebuild happens exactly when the base, the Dockerfile, the dependencies, conf/ or trainer/ changed. TAG
# is then pointed at that image.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# The cache: /var/cache/labrun where this user may write there (root, CI), else the user's own cache.
cache="${LABRUN_BUILD_CACHE:-}"
if [ -z "$cache" ]; then
  cache=/var/cache/labrun
  if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then cache="${XDG_CACHE_HOME:-$HOME/.cache}/labrun"; fi
fi
python="${PYTHON:-python3}"
py_minor="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
made_base="${LABRUN_TEST_BASE:-labrun-test-base:bookworm}"
pulled_base="${LABRUN_TEST_BASE_PULL:-python:$py_minor-slim-bookworm}"
which="${1:-trainer}"
case "$which" in
  trainer) inputs=(docker/trainer.Dockerfile conf trainer) ;;
  api) inputs=(docker/api.Dockerfile conf trainer app labrun) ;;
  base) inputs=() ;;
  *) echo "usage: $0 [trainer|api|base] [TAG]" >&2; exit 2 ;;
esac
tag="${2:-labrun-$which:test}"
mkdir -p "$cache"
# One build at a time on this machine (two test sessions share the cache).
exec 9>"$cache/.lock"
flock 9

hash_of() { (cd "$root" && find "$@" -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16; }

# 1. Base image: $base is set to the image the Dockerfile builds FROM.
have() { docker image inspect "$1" >/dev/null 2>&1; }
tried=()
base=
if [ "$py_minor" = 3.11 ] && have "$made_base"; then
  base="$made_base"
elif have "$pulled_base"; then
  base="$pulled_base"
fi
if [ -z "$base" ] && [ "$py_minor" = 3.11 ] && command -v debootstrap >/dev/null 2>&1; then
  echo "== base image $made_base: debootstrap bookworm (minbase, python3, python3-venv)"
  rootfs="$cache/rootfs"
  rm -rf "$rootfs"
  if debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" >"$cache/debootstrap.log" 2>&1; then
    tar -C "$rootfs" -c . | docker import --change 'CMD ["/bin/bash"]' - "$made_base" >/dev/null
    base="$made_base"
  else
    tail -n 20 "$cache/debootstrap.log" >&2
    tried+=("debootstrap failed (as root? see $cache/debootstrap.log)")
  fi
  rm -rf "$rootfs"
elif [ -z "$base" ] && [ "$py_minor" != 3.11 ]; then
  tried+=("debootstrap not used: its bookworm base has Python 3.11, the host $python has $py_minor")
elif [ -z "$base" ]; then
  tried+=("no debootstrap on PATH")
fi
if [ -z "$base" ]; then
  echo "== base image $pulled_base: docker pull"
  if pulled="$(docker pull "$pulled_base" 2>&1)"; then
    base="$pulled_base"
  else
    tried+=("docker pull $pulled_base failed: $(printf '%s\n' "$pulled" | tail -n 1)")
  fi
fi
if [ -z "$base" ]; then
  # One line, the last on stderr, exit status 3: the tests report it as the reason (tests/docker/conftest.py).
  reason="$(IFS=';'; echo "${tried[*]}" | sed 's/;/; /g')"
  echo "cannot make the test base image: install debootstrap (apt-get install debootstrap, and build as root) or allow pulling $pulled_base ($reason)" >&2
  exit 3
fi
if [ "$which" = base ]; then
  echo "$base"
  exit 0
fi

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
  echo "no BuildKit-capable docker client: install the docker buildx plugin (docker-buildx-plugin, or Debian's docker-buildx)" >&2
  exit 3
fi

# 2. Wheelhouse, keyed by what it is made from.
wheels="$cache/wheelhouse"
wheels_key="$(hash_of pyproject.toml constraints.txt docker/requirements.py)"
if [ "$(cat "$wheels/.key" 2>/dev/null || true)" != "$wheels_key" ]; then
  echo "== wheelhouse $wheels"
  rm -rf "$wheels"
  PYTHON="$python" bash "$root/docker/build-wheelhouse.sh" "$wheels"
  echo "$wheels_key" >"$wheels/.key"
fi

# 3. The image, tagged by its inputs.
image_key="$( { hash_of "${inputs[@]}" docker/requirements.py pyproject.toml constraints.txt
  docker image inspect --format '{{.Id}}' "$base"; } | sha256sum | cut -c1-16)"
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
