"""Fixtures for the tests against a real Docker Engine (no mocks): the Engine, the test images, and the
shared ``output_dir`` (tests/conftest.py).

Outside CI, these tests skip, saying why, when no Engine answers. In CI (CI=true) a missing Engine is a
failure: .ci/engines/docker.sh must have started one.

The images are built here by docker/build-test-image.sh on a base image it makes with debootstrap or
pulls (python:<X.Y>-slim-bookworm), with a host wheelhouse: no registry need be reachable. The script
caches every step on this machine and tags the image by a hash of what it is built from, so only the first
session on a machine (or after a change to the base, the Dockerfile, the dependencies, conf/ or trainer/)
pays for a build. The base comes first, once per session: a machine that can neither debootstrap nor pull
gets one line saying what to install, the same for every test that needs an image (a skip; in CI a
failure), instead of one build failure per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_helpers import build_test_image, in_ci


def _engine_or_skip():
    import docker

    try:
        client = docker.from_env(version="auto", timeout=30)
        client.ping()
        return client
    except Exception as exc:
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
def build_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docker-builds")


@pytest.fixture(scope="session")
def base_image(engine, build_logs) -> str:
    """The base the test images build on, made or found once per session. Its failure is kept by pytest
    (a session fixture's error is not retried): every test that needs an image reports the same line."""
    del engine  # asked for only so that no Engine is a skip (or, in CI, a failure) before any build
    return build_test_image("base", build_logs / "base.log")


@pytest.fixture(scope="session")
def trainer_image(base_image, build_logs) -> str:
    """The trainer image's tag, built (or found in the cache) once per test session."""
    del base_image  # built first: the base's failure is reported once, not per image
    return build_test_image("trainer", build_logs / "trainer.log")


@pytest.fixture(scope="session")
def api_image(base_image, build_logs) -> str:
    """The service image's tag (docker/api.Dockerfile on the same base and wheelhouse)."""
    del base_image  # built first, as for the trainer image
    return build_test_image("api", build_logs / "api.log")
