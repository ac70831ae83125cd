"""`labrun --help` is fast: it imports neither torch, Hydra, omegaconf, the service nor the trainer, and not
even httpx or rich (they load when a command talks to the server or draws)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from cli_helpers import cli_env, run_cli
from service_process import ROOT

HEAVY = ("torch", "hydra", "omegaconf", "app", "trainer", "lightning", "numpy", "httpx", "rich")
CONSOLE_SCRIPT = Path(sys.executable).with_name("labrun")


def test_help_imports_nothing_heavy():
    probe = (
        "import json, sys\n"
        "from labrun.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=cli_env(None), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stderr) == []
    assert "exit status:" in result.stdout
    assert "130" in result.stdout


def test_help_starts_within_budget():
    """The issue's budget is 0.3 s on this machine; the best of five leaves out a busy moment."""
    command = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "labrun"]
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([*command, "--help"], env=cli_env(None), capture_output=True, check=True, timeout=60)
        times.append(time.perf_counter() - start)
    assert min(times) <= 0.3, times


def test_every_command_has_help():
    for command in ("submit", "ls", "show", "logs", "cancel", "rerun", "rm", "gpus", "usage"):
        result = run_cli(None, command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.startswith(f"usage: labrun {command}")
    assert "0 succeeded, 1 failed, 130 cancelled" in run_cli(None, "submit", "--help").stdout


def test_bad_arguments_exit_2():
    assert run_cli(None, "frobnicate").returncode == 2
    assert run_cli(None, "ls", "--limit", "x").returncode == 2
    assert run_cli(None, "ls", "--bogus").returncode == 2
