"""Launchers: one class per engine behind the interface in ``base.py``; ``build_launcher`` picks one."""

from __future__ import annotations

from pydantic import ValidationError

from app.core.config import Settings, settings_error
from app.launchers.base import EngineUnavailable, Launcher, LaunchError, LaunchSpec, Outcome

__all__ = ["EngineUnavailable", "LaunchError", "LaunchSpec", "Launcher", "Outcome", "build_launcher"]


def build_launcher(settings: Settings) -> Launcher:
    """The launcher LABRUN_LAUNCHER names. Engine modules are imported only when chosen (the docker SDK
    stays out of a local service)."""
    if settings.launcher == "local":
        from app.launchers.local import LocalLauncher

        return LocalLauncher.from_settings(settings)
    if settings.launcher == "docker":
        from app.launchers.docker import DockerLauncher

        try:
            return DockerLauncher.from_env(settings)
        except ValidationError as exc:  # its own LABRUN_DOCKER_* settings
            raise settings_error(exc, "LABRUN_DOCKER_") from None
    raise ValueError(f"unknown launcher {settings.launcher!r}")  # Settings already refuses it
