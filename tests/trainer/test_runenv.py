"""The service-to-run contract (trainer/runenv.py): what the service writes is what the trainer reads, and a
value the trainer cannot read is refused by name before a run starts."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from trainer_helpers import REPO, TINY, trainer_env

from trainer.runenv import RunEnv, RunEnvError

EVERY_FIELD_SET = RunEnv(
    owner="alice",
    sweep="2026-01-01_00-00-00_fno_sweep",
    resume=True,
    attempt=3,
    preemptible=True,
    cancel_marker=Path("/state/run/cancel_requested"),
    image_id="sha256:abc",
    code_version="1a2b3c",
    log_path=Path("/out/.labrun/run/run.log"),
    max_log_bytes=1 << 30,
    run_dir=Path("/out/2026-01-01/run"),
    run_name="run",
    preempt_after_epochs=2,
    preempt_in_validation=0,
    preempt_at_step=5,
    kill_at_step=7,
    init_from_ckpt=Path("/out/2026-01-01/source/ckpt/last.ckpt"),
)


def test_what_the_service_writes_the_trainer_reads_back():
    env = EVERY_FIELD_SET.to_env()
    assert all(v is not None for v in dataclasses.astuple(EVERY_FIELD_SET))  # the case covers every field
    assert len(env) == len(dataclasses.fields(RunEnv))
    assert all(k.startswith("LABRUN_") for k in env)
    assert env["LABRUN_RESUME"] == "1"
    assert env["LABRUN_ATTEMPT"] == "3"
    assert RunEnv.from_env(env) == EVERY_FIELD_SET


def test_only_what_is_set_is_written_and_unset_reads_as_the_defaults():
    assert RunEnv().to_env() == {}
    assert RunEnv(owner="bob", resume=False).to_env() == {"LABRUN_RUN_OWNER": "bob"}
    assert RunEnv.from_env({}) == RunEnv()
    # Empty is unset (the service wrote LABRUN_RUN_OWNER="" for a run without an owner); other variables
    # of the environment are none of its business.
    assert RunEnv.from_env({"LABRUN_RUN_OWNER": "", "LABRUN_RESUME": "0", "PATH": "/bin"}) == RunEnv()


@pytest.mark.parametrize(
    ("environ", "named", "expected"),
    [
        ({"LABRUN_RESUME": "yes"}, "LABRUN_RESUME='yes'", "1 or 0"),
        ({"LABRUN_ATTEMPT": "0"}, "LABRUN_ATTEMPT='0'", "an integer >= 1"),
        ({"LABRUN_ATTEMPT": "two"}, "LABRUN_ATTEMPT='two'", "an integer >= 1"),
        ({"LABRUN_PREEMPT_IN_VALIDATION": "-1"}, "LABRUN_PREEMPT_IN_VALIDATION='-1'", "an integer >= 0"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(environ, named, expected):
    with pytest.raises(RunEnvError, match=f"{named}: expected {expected}"):
        RunEnv.from_env(environ)


def test_every_bad_variable_is_named_at_once():
    with pytest.raises(RunEnvError) as bad:
        RunEnv.from_env({"LABRUN_PREEMPTIBLE": "true", "LABRUN_ATTEMPT": "1.5", "LABRUN_SWEEP": "s"})
    assert "LABRUN_PREEMPTIBLE" in str(bad.value)
    assert "LABRUN_ATTEMPT" in str(bad.value)


def test_the_trainer_refuses_a_bad_run_environment_before_it_creates_anything(tmp_path):

    result = subprocess.run(
        [sys.executable, "-m", "trainer", *TINY, f"log_dir={tmp_path / 'out'}"],
        cwd=tmp_path,
        env={**trainer_env(tmp_path), "LABRUN_ATTEMPT": "first"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "LABRUN_ATTEMPT='first': expected an integer >= 1" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_contract_imports_only_the_standard_library():
    """The Slurm job wrapper imports it on the compute nodes, where only the standard library is sure."""
    probe = (
        "import sys, trainer.runenv\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('omegaconf', 'hydra', 'torch')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
