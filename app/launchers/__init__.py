"""Launchers: one class per engine behind the interface in ``base.py``, chosen through ``registry.py``."""

from __future__ import annotations

from app.launchers.base import EngineUnavailable, Launcher, LaunchError, LaunchSpec, Outcome
from app.launchers.registry import LAUNCHERS, build_launcher, launcher_class

__all__ = [
    "LAUNCHERS",
    "EngineUnavailable",
    "LaunchError",
    "LaunchSpec",
    "Launcher",
    "Outcome",
    "build_launcher",
    "launcher_class",
]
