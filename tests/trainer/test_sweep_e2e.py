"""A sweep of 2 tiny CPU runs of the real trainer through a real service (issue 12): both run directories
lie in the sweep's folder, and both offline WandB runs carry the sweep's name as their group."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from service_process import ServiceProcess
from trainer_helpers import TINY, wandb_records


@pytest.mark.slow
def test_a_real_sweep_of_two_tiny_runs_files_them_together_and_groups_them_in_wandb(tmp_path):
    output_dir = tmp_path / "outputs"
    output_dir.mkdir()
    svc = ServiceProcess(
        output_dir,
        None,  # the real `python -m trainer`
        LABRUN_MAX_CPU_RUNS="2",
        WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
        WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
        WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
    ).start()
    try:
        response = svc.http.post("/sweeps", json={"overrides": [*TINY, "training.max_epochs=1", "seed=1,2"]})
        assert response.status_code == 201, response.text
        sweep = response.json()
        deadline = time.monotonic() + 600
        while not (state := svc.http.get(f"/sweeps/{sweep['name']}").json())["finished"]:
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
    finally:
        svc.stop()
    assert state["counts"]["succeeded"] == 2, f"{state}\n{svc.log(4000)}"
    assert state["best"] is not None
    assert state["best"]["val_loss"] is not None
    folder = output_dir / sweep["run_dir"]
    assert sorted(p.name for p in folder.iterdir()) == [r["name"] for r in state["runs"]]
    for index, run in enumerate(state["runs"]):
        run_dir = folder / run["name"]
        assert run["name"].startswith(f"{index}_")
        assert (run_dir / "run.json").is_file()
        (log,) = Path(run_dir / "wandb").glob("offline-run-*/run-*.wandb")
        (record,) = [r.run for r in wandb_records(log) if r.WhichOneof("record_type") == "run"][:1]
        assert record.run_group == sweep["name"]
        assert record.display_name == run["name"]
