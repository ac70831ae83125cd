"""The trainer's phase in progress.json (trainer/heartbeat.py): a long data cache build beats once per
solved chunk, and through a real service (``python -m trainer`` as the run) a first run that builds its
cache for longer than the stall limit is never called stalled."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from tiny_run import tiny_run

from trainer import data, swe
from trainer.heartbeat import PhaseReporter


def test_a_cache_build_beats_once_per_solved_chunk(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    path.write_text(json.dumps({"global_step": 12, "epoch": 1}))  # a resumed run's last figures
    phases = PhaseReporter(path, every_s=0.0, enabled=True)
    seen: list[tuple[str, int, int, int]] = []

    def beat(done: int, total: int) -> None:
        phases.beat("data", done, total)
        written = json.loads(path.read_text())
        seen.append((written["phase"], written["phase_done"], written["phase_total"], written["global_step"]))

    spec = swe.SolverSpec(nlat=32, nlon=64, num_examples=swe.CHUNK * 2 + 3, seed=0)
    data.load_or_generate(spec, tmp_path / "cache", write=False, on_chunk=beat)
    total = spec.num_examples
    assert seen == [("data", 64, total, 12), ("data", 128, total, 12), ("data", total, total, 12)]


@pytest.mark.slow  # the real trainer through the service: ~30 s on a quiet machine
def test_a_first_run_building_its_cache_longer_than_the_stall_limit_is_not_stalled(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.main import create_app

    settings = Settings(
        output_dir=tmp_path / "outputs",
        gpus=(),
        trainer_command=[sys.executable, "-m", "trainer"],
        stall_after_s=6.0,
        stall_grace_s=600.0,
    )
    with TestClient(create_app(settings)) as client:
        # ~10 s of imports, then ~10 s solving 1024 samples: each longer than the 6 s limit, each reported.
        lines = [o for o in tiny_run(examples=1024) if "batch_size" not in o]
        lines += ["batch_size=64", "training.effective_batch_size=64"]  # few steps: the build is the point
        run = client.post("/runs", json={"overrides": lines}).json()
        phases, stalled = set(), []
        deadline = time.monotonic() + 400
        while (now := client.get(f"/runs/{run['name']}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, now
            phases.add((now.get("progress") or {}).get("phase"))
            if now["stalled"]:
                stalled.append(now["stall"])
            time.sleep(0.1)
    assert now["status"] == "succeeded", now.get("log_tail")
    assert not stalled
    assert {"starting", "data"} <= phases
