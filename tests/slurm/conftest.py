"""Fixtures for the tests against a real Slurm (no mocks): .ci/engines/slurm.sh starts a one-node cluster.

Outside CI these tests skip, saying why, when no Slurm node takes jobs; in CI (CI=true) that is a failure.
The output directory is the test's tmp directory: on this one-node cluster it is the nodes' filesystem too.
"""

from __future__ import annotations

import pytest
from slurm_helpers import slurm_or_skip


@pytest.fixture(scope="session")
def slurm() -> str:
    return slurm_or_skip()
