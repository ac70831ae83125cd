"""Shared by the tests in tests/docker/ (this directory is on sys.path when pytest collects them): the tiny
run, the CI rule, and building the test images (docker/build-test-image.sh)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_run import tiny_run

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "docker" / "build-test-image.sh"
BUILD_TIMEOUT_S = 1800
MISSING = 3  # the script's exit status when this machine lacks what a build needs (it says what, in one line)

# A run of a few seconds on CPU: FNO at 32x64, 16 samples, one epoch, a tiny network.
TINY = tiny_run()  # one epoch of the smallest real run


def in_ci() -> bool:
    """In CI a missing Engine (or docker-compose, or what the test images need) is a failure, never a skip."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def build_test_image(which: str, log_path: Path, env: dict[str, str] | None = None) -> str:
    """``docker/build-test-image.sh which``: the image's tag (``base``: the base image's name).

    What the machine lacks (no debootstrap and no pull, no BuildKit client) is one line naming what to
    install: a skip, or a failure in CI. Any other build failure fails, with the build's output in
    ``log_path`` and its last lines on stderr."""
    tag = f"labrun-{which}:test"
    started = time.monotonic()
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable), **(env or {})}
    try:
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT), which, tag],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"building the {which} test image took over {BUILD_TIMEOUT_S} s", pytrace=False)
    log_path.write_text(f"{done.stdout}\n--- stderr ---\n{done.stderr}")
    lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
    if done.returncode == MISSING:
        reason = lines[-1]  # "cannot make the test base image: install debootstrap (...) or ..."
        if in_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    if done.returncode != 0:
        sys.stderr.write("\n".join([*done.stdout.splitlines()[-20:], *lines[-20:]]) + "\n")
        pytest.fail(
            f"building the {which} test image failed (exit {done.returncode}): {lines[-1]} "
            f"(the build's output: {log_path})",
            pytrace=False,
        )
    sys.stderr.write(f"\n[docker] {which} test image ready in {time.monotonic() - started:.1f} s\n")
    return done.stdout.strip().splitlines()[-1]
