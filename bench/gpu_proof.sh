#!/usr/bin/env bash
# The GPU proof kit: one command on a CUDA machine without internet access (docs/gpu-proof.md).
#
#   bash bench/gpu_proof.sh          # GPU machine: install bench/gpu-kit/*.whl into a temporary target, then
#                                    # bench/gpu_proof.py (trainer on CUDA, throughput, NVML, determinism)
#   bash bench/gpu_proof.sh --cpu    # the rehearsal here: accelerator=cpu, tiny sizes, this venv, no install
#
# Other arguments go to bench/gpu_proof.py (--budget-s, --keep DIR). Figures: $OUT/gpu_proof.json and the
# whole output in $OUT/gpu_proof.log; $OUT is any folder (default: bench/out/gpu-proof). The wheels come
# from `make gpu-kit` (bench/gpu-kit/, or $LABRUN_GPU_KIT): copy that folder to the GPU machine with the
# checkout. Python: $PYTHON, else python3 (GPU) or .venv/bin/python (--cpu).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${OUT:-$root/bench/out/gpu-proof}"
mkdir -p "$out"
log="$out/gpu_proof.log"
: >"$log"

cpu=0
for arg in "$@"; do [ "$arg" = --cpu ] && cpu=1; done
driver=("$root/bench/gpu_proof.py" --out "$out")
if [ "$cpu" = 1 ]; then
  python="${PYTHON:-$root/.venv/bin/python}"
  [ -x "$python" ] || python=python3
else
  python="${PYTHON:-python3}"
  kit="${LABRUN_GPU_KIT:-$root/bench/gpu-kit}"
  if ! compgen -G "$kit/*.whl" >/dev/null; then
    echo "gpu_proof: no wheels in $kit: run 'make gpu-kit' first and copy bench/gpu-kit/ to this machine with the checkout" | tee -a "$log"
    exit 2
  fi
  site="$(mktemp -d "${TMPDIR:-/tmp}/labrun-gpu-kit.XXXXXX")"
  trap 'rm -rf "$site"' EXIT
  start=$EPOCHREALTIME
  # --no-deps: the kit's closure is checked instead (bench/gpu_kit.py); pip would look for torch among the
  # wheels, since a --target install ignores what the interpreter already has.
  if ! "$python" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-compile \
    --no-cache-dir --find-links "$kit" --target "$site" "$kit"/*.whl >>"$log" 2>&1; then
    echo "gpu_proof: installing the kit failed:" && tail -20 "$log"
    exit 3
  fi
  install_s=$(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $start }")
  echo "gpu_proof: $(ls "$kit"/*.whl | wc -l) wheels installed into $site in ${install_s} s" | tee -a "$log"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  driver+=(--kit "$kit" --install-s "$install_s")
fi
"$python" "${driver[@]}" "$@" 2>&1 | tee -a "$log"
exit "${PIPESTATUS[0]}"
