"""Which launcher class serves each ``LABRUN_LAUNCHER`` value (the table is ``app/core/engines.py``), and
the one constructor the service calls. An engine's module (with its SDK) is imported only when chosen."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

from app.core.engines import LAUNCHERS, unknown_launcher

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.launchers.base import Launcher
    from app.statedir import StateDir

__all__ = ["LAUNCHERS", "build_launcher", "launcher_class"]


def launcher_class(name: str) -> type[Launcher]:
    try:
        module, _, cls = LAUNCHERS[name].partition(":")
    except KeyError:
        raise ValueError(unknown_launcher(name)) from None
    return cast("type[Launcher]", getattr(importlib.import_module(module), cls))


def build_launcher(settings: Settings, state: StateDir) -> Launcher:
    """The launcher LABRUN_LAUNCHER names, built from the settings by its own constructor (which reads its
    own LABRUN_<ENGINE>_* settings and raises SettingsError for bad ones)."""
    return launcher_class(settings.launcher).from_settings(settings, state)
