"""Fixtures for the tests against a real Docker Engine (no mocks): the Engine, the trainer test image.

Outside CI, these tests skip, saying why, when no Engine answers. In CI (CI=true) a missing Engine is a
failure: .ci/engines/docker.sh must have started one.

The trainer image is built here by docker/build-test-image.sh (a debootstrapped Debian base and a host
wheelhouse: no registry is reachable). The script caches every step on this machine and tags the image by
a hash of what it is built from, so only the first session on a machine (or after a change to the
Dockerfile, the dependencies, conf/ or trainer/) pays for a build.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_docker_helpers import in_ci

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 1800


def _engine_or_skip():
    import docker

    try:
        client = docker.from_env(version="auto", timeout=30)
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable Engine
        reason = f"no Docker Engine reachable ({exc.__class__.__name__}: {str(exc)[:200]}); start one with .ci/engines/docker.sh"
        if in_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def engine() -> Iterator:
    client = _engine_or_skip()
    yield client
    client.close()


@pytest.fixture(scope="session")
def trainer_image(engine) -> str:
    """The trainer image's tag, built (or found in the cache) once per test session."""
    return build_test_image("trainer")


@pytest.fixture(scope="session")
def api_image(engine) -> str:
    """The service image's tag (docker/api.Dockerfile on the same base and wheelhouse)."""
    return build_test_image("api")


def build_test_image(which: str) -> str:
    tag = f"labrun-{which}:test"
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(ROOT / "docker" / "build-test-image.sh"), which, tag],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        env={**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)},
    )
    if done.returncode != 0:
        pytest.fail(
            f"building the {which} test image failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}",
            pytrace=False,
        )
    took = time.monotonic() - started
    sys.stderr.write(f"\n[docker] {which} test image {tag} ready in {took:.1f} s\n")
    return tag
