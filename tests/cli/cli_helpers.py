"""Helpers for the command-line tests (imported by name: ``from cli_helpers import ...``).

The CLI always runs as a real process (``python -m labrun``) against a real service process that runs the
fake trainer (tests/app/fake_trainer.py) instead of ``python -m trainer``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from service_process import ROOT

FAKE_TRAINER = [sys.executable, str(ROOT / "tests" / "app" / "fake_trainer.py")]


def fake(
    sleep: float | None = None, exit: int | None = None, lines: int | None = None, on_term: str | None = None
) -> list[str]:
    """The overrides that steer the fake trainer. The one place that spells them: if the config schema
    renames them, this function is the one edit."""
    steering = {"sleep": sleep, "exit": exit, "lines": lines, "on_term": on_term}
    return [f"+extra.fake_{key}={value}" for key, value in steering.items() if value is not None]


def cli_env(url: str | None, **extra: str) -> dict[str, str]:
    """This process's environment without a developer's own LABRUN_* settings, pointed at ``url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABRUN_")}
    # Nor a developer's own `labrun login`: a config folder that does not exist, unless a test gives one.
    env["XDG_CONFIG_HOME"] = str(Path(tempfile.gettempdir()) / f"labrun-tests-no-config-{os.getpid()}")
    if url is not None:
        env["LABRUN_URL"] = url
    env.update(extra)
    return env


def labrun_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "labrun", *args]


def run_cli(url: str | None, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """``labrun ARGS...`` as a process against ``url``; its exit status, stdout and stderr."""
    return subprocess.run(
        labrun_command(*args),
        cwd=ROOT,
        env=cli_env(url, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_line(stderr: str) -> str:
    """An error is one line on stderr, never a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]
