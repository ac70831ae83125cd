"""The fake trainer (tests/app/fake_trainer.py) for the dashboard tests, steered by an ordinary override:
``training.max_epochs=N`` makes it run for ``N * EPOCH_S`` seconds. So these tests submit exactly what a user
types in the form, and do not depend on how the fake trainer's own ``+fake.*`` overrides are spelled; the
one place that knows that spelling is ``fake_args`` below."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))

import fake_trainer  # tests/app is not on sys.path otherwise

EPOCH_S = 0.5


def fake_args(argv: list[str]) -> list[str]:
    epochs = next((float(a.split("=", 1)[1]) for a in argv if a.startswith("training.max_epochs=")), 1.0)
    seconds = epochs * EPOCH_S
    return [*argv, f"extra.fake_sleep={seconds}"]


if __name__ == "__main__":
    sys.exit(fake_trainer.main(fake_args(sys.argv[1:])))
