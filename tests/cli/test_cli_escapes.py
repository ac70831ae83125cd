"""A run's text (its log tail, reason, overrides) is anyone's bytes: ``labrun show`` and ``labrun submit
--wait`` show its control characters instead of sending them to the user's terminal; ``labrun logs`` stays
raw, as ``cat`` is."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import run_cli
from service_process import ServiceProcess, wait_for

from labrun import render

# A window title (OSC ... BEL), a cleared screen, colours, and a one-byte C1 CSI.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\x1b[0m \x9b31mc1\n"
RAW = ("\x1b", "\x07", "\x9b")


def assert_harmless(text: str) -> None:
    assert not any(c in text for c in RAW), repr(text)
    assert "^[]0;pwned^G^[[2J^[[31mred^[[0m \\x9bc1" not in text  # (the C1 CSI eats no digits)
    assert "^[]0;pwned^G^[[2J^[[31mred^[[0m \\x9b31mc1" in text, repr(text)


def test_safe_shows_controls_but_newlines_and_tabs() -> None:
    assert render.safe("a\tb\nc\x00\x1b\x7f\x85\x9b\x9fé") == "a\tb\nc^@^[^?\\x85\\x9b\\x9fé"


def test_show_draws_a_run_harmlessly(capsys: pytest.CaptureFixture[str]) -> None:
    run = {
        "name": "r1",
        "status": "failed",
        "overrides": ["seed=1", "+note=" + HOSTILE.strip()],
        "reason": "exit code 1: " + HOSTILE.strip(),
        "log_tail": "epoch 0\n" + HOSTILE,
    }
    render.run_details(run)
    out = capsys.readouterr().out
    assert_harmless(out)
    assert out.count("^[]0;pwned") == 3  # overrides, reason, log tail
    assert_harmless(render.outcome(run))
    assert_harmless(render.sweep_run_line({**run, "index": 0}, 1))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """Its trainer prints the escapes and fails."""
    output_dir: Path = tmp_path_factory.mktemp("escapes") / "outputs"
    output_dir.mkdir()
    script = f"printf '%s' '{HOSTILE}'; exit 1"
    svc = ServiceProcess(output_dir, ["sh", "-c", script, "sh"]).start()
    yield svc
    with contextlib.suppress(Exception):
        svc.stop()


def test_show_and_wait_print_a_failed_runs_log_harmlessly(service: ServiceProcess) -> None:
    submitted = run_cli(service.url, "submit", "--wait", "seed=1")
    assert submitted.returncode != 0
    assert_harmless(submitted.stderr)  # the outcome line and the log tail
    name = submitted.stdout.strip()
    run = wait_for(service.http, name)
    assert run["status"] == "failed"
    assert "\x1b]0;pwned" in run["log_tail"]

    shown = run_cli(service.url, "show", name)
    assert shown.returncode == 0, shown.stderr
    assert "log tail" in shown.stdout
    assert_harmless(shown.stdout)

    raw = run_cli(service.url, "logs", name)  # as `cat` would
    assert raw.returncode == 0
    assert HOSTILE in raw.stdout


def test_progress_lines_are_harmless() -> None:
    stream = io.StringIO()
    view = render.ProgressView("r1", stream)
    view.update({"status": "queued", "queue_position": 1, "waiting_reason": HOSTILE.strip()})
    assert_harmless(stream.getvalue())
