"""Launchers: one class per engine behind the interface in ``base.py``, chosen through ``registry.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.launchers.base import EngineUnavailable, Launcher, LaunchError, LaunchSpec, Outcome
from app.launchers.registry import LAUNCHERS, launcher_class

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.statedir import StateDir

__all__ = [
    "LAUNCHERS",
    "EngineUnavailable",
    "LaunchError",
    "LaunchSpec",
    "Launcher",
    "Outcome",
    "build_launcher",
]


def build_launcher(settings: Settings, state: StateDir) -> Launcher:
    """The launcher LABRUN_LAUNCHER names, built from the settings by its own constructor."""
    return launcher_class(settings.launcher).from_settings(settings, state)
