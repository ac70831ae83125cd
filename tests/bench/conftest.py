"""tests/bench: the GPU proof kit (bench/gpu_kit.py, bench/gpu_proof.sh). bench/ is not an installed package:
the checkout's root goes on sys.path."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
