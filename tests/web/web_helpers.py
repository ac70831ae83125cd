"""What the web tests share by name (a module called ``conftest`` would clash with the other test folders')."""

from __future__ import annotations

import sys
from pathlib import Path

from web_trainer import EPOCH_S

WEB_TRAINER = [sys.executable, str(Path(__file__).with_name("web_trainer.py"))]
LONG_S = 600.0  # "runs until cancelled"


def run_for(seconds: float, *more: str) -> list[str]:
    """The overrides of a run that lasts about ``seconds`` (its train_loss: a row per step, 4 steps)."""
    return [f"training.max_epochs={max(1, round(seconds / EPOCH_S))}", *more]
