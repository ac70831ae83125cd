"""The engines ``LABRUN_LAUNCHER`` may name, each with its launcher class as "module:class". Data only,
importing nothing: the settings check a name against it without importing a launcher (which imports the
settings), and ``app/launchers/registry.py`` imports the class of the one chosen, so that an engine's SDK is
loaded only when it is used. A new engine is one new file in ``app/launchers/`` and one line here.
"""

from __future__ import annotations

LAUNCHERS: dict[str, str] = {
    "local": "app.launchers.local:LocalLauncher",
    "docker": "app.launchers.docker:DockerLauncher",
    "slurm": "app.launchers.slurm:SlurmLauncher",
}


def unknown_launcher(name: str) -> str:
    """The message for a name that is not in the table (the settings and the registry say the same)."""
    return f"unknown launcher {name!r}; choose one of: {', '.join(LAUNCHERS)}"
