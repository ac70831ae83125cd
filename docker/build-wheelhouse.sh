#!/usr/bin/env bash
# Prepare a wheelhouse for the images, on a machine that can reach the package index, so the images build
# without one (air-gapped labs; CI, where a build container cannot reach the index).
#
#   docker/build-wheelhouse.sh [DIR] [extra pip options...]
#
# DIR defaults to docker/wheelhouse, which the Dockerfiles use when it holds wheels. The wheels are for the
# Python that runs this script (default: .venv/bin/python, else python3), so it must have the same minor
# version as the image's Python: 3.11 for a Debian bookworm base. To target another one, pass pip's
# `--python-version 3.12 --only-binary=:all:` options (sdist-only packages then need a 3.12 host).
# Packages are what pyproject.toml asks for (the service's deps and the `trainer` extra), pinned by
# constraints.txt. `pip wheel` (not `pip download`) turns sdist-only packages (antlr4-python3-runtime)
# into wheels, so the image build needs no build tools. Idempotent: wheels already there are reused.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/docker/wheelhouse}"
shift || true
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
mkdir -p "$dest"
reqs="$(mktemp)"
trap 'rm -f "$reqs"' EXIT
"$python" "$root/docker/requirements.py" all "$root/pyproject.toml" >"$reqs"
"$python" -m pip wheel --quiet --wheel-dir "$dest" --find-links "$dest" \
  --constraint "$root/constraints.txt" --requirement "$reqs" "$@"
echo "wheelhouse: $dest ($(ls "$dest"/*.whl | wc -l) wheels, $(du -sh "$dest" | cut -f1))"
