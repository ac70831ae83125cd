"""Which launcher class serves each ``LABRUN_LAUNCHER`` value. Imports nothing: settings validation reads
the names, and an engine's module (with its SDK) is imported only when that launcher is chosen."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.launchers.base import Launcher

# name -> "module:class". A new engine is one new file in app/launchers/ and one line here.
LAUNCHERS: dict[str, str] = {
    "local": "app.launchers.local:LocalLauncher",
    "docker": "app.launchers.docker:DockerLauncher",
    "slurm": "app.launchers.slurm:SlurmLauncher",
}


def launcher_class(name: str) -> type[Launcher]:
    try:
        module, _, cls = LAUNCHERS[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown launcher {name!r}; choose one of: {', '.join(LAUNCHERS)}") from None
    return getattr(importlib.import_module(module), cls)
