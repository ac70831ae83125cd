"""Sweeps (issue 12): Hydra's multirun syntax over HTTP. The expansion against Hydra's own basic sweeper,
all-or-nothing validation and queueing (also across a kill -9 inside the store's transaction), the real
dispatcher packing a sweep onto 2 slots with the fake trainer, counts, best run, cancel and rerun."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import create_config_search_path
from hydra.core.override_parser.overrides_parser import OverridesParser
from service_helpers import ROOT, queued_record, starts

from app.statedir import StateDir
from app.store import NameTaken, RunStore
from app.users import Users
from trainer import config as trainer_config
from trainer import sweep as hydra_sweep

CASES = [
    ["model=fno,sfno", "training.lr=1e-3,1e-4"],  # the cartesian product, in Hydra's order
    ["data=32x64", "model=fno,sfno", "seed=1,2,3"],  # plain overrides shared by all
    ["seed=range(1,5)", "training.max_epochs=range(10,2,-3)"],  # ranges, also counting down
    ["training.lr=range(0.1,0.4,0.1)"],  # a float range
    ["model=choice(sfno,fno)", "+extra.x=choice(a,b,c)"],
    ["model=glob(*fno)"],  # glob over a group's options
    ["model=glob(*,exclude=*_globals)", "data=glob(32*)"],
    ["+extra.note='a,b',c", '+extra.other="q r"'],  # quoted values: a comma inside quotes is no sweep
    ["+extra.pair=[1,2]", "seed=1,2"],  # a list value stays one value
    ["+extra.pair=[1,2],[3]"],  # ... and a sweep over list values
    ["+extra.m={a:1,b:2}", "seed=3"],  # a dict value
    ["seed=1", "training.lr=0.1", "seed=2,3"],  # a key given twice: its first place, its last value
    ["seed=5"],  # no sweep at all: one run
]


def hydra_expansion(lines: list[str]) -> list[list[str]]:
    """What Hydra's basic sweeper itself makes of the lines (its parser with a real config loader)."""
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(trainer_config.conf_dir())))
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(lines)
    (jobs,) = BasicSweeper.split_arguments(parsed, None)
    return jobs


@pytest.mark.parametrize("lines", CASES, ids=[" ".join(c) for c in CASES])
def test_expansion_equals_hydras_basic_sweeper(lines):
    assert hydra_sweep.expand(hydra_sweep.parse(lines), 256) == hydra_expansion(lines)


def test_glob_matches_options_not_the_seeds_building_blocks():
    # Hydra's glob(*) also lists model_globals.yaml; labrun's options leave the *_globals files out.
    assert hydra_sweep.expand(hydra_sweep.parse(["model=glob(*)"]), 256) == [["model=fno"], ["model=sfno"]]
    assert ["model=model_globals"] in hydra_expansion(["model=glob(*)"])


def test_size_is_counted_before_anything_is_listed():
    started = time.monotonic()
    with pytest.raises(hydra_sweep.SweepError, match="more than 256"):
        hydra_sweep.expand(hydra_sweep.parse(["seed=range(0,1000000000)"]), 256)
    with pytest.raises(hydra_sweep.SweepError, match="makes 300 runs; at most 256"):
        hydra_sweep.expand(hydra_sweep.parse(["seed=range(0,100)", "model=fno,sfno,fno"]), 256)
    assert time.monotonic() - started < 1
    with pytest.raises(hydra_sweep.SweepError, match="does not support INTERVAL"):
        hydra_sweep.expand(hydra_sweep.parse(["training.lr=interval(0,1)"]), 256)
    with pytest.raises(hydra_sweep.SweepError, match="no runs"):
        hydra_sweep.expand(hydra_sweep.parse(["model=glob(nothing*)"]), 256)


def wait_sweep(client, name: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not (sweep := client.get(f"/sweeps/{name}").json())["finished"]:
        assert time.monotonic() < deadline, sweep
        time.sleep(0.05)
    return sweep


def test_one_invalid_combination_queues_nothing(client, output_dir):
    response = client.post("/sweeps", json={"overrides": ["model=fno,sfno", "training.lr=0.1,5"]})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "run 1 of the sweep (model=fno training.lr=5)" in detail
    assert "nothing was queued" in detail
    assert "training.lr must be > 0 and <= 1" in detail  # the single run's own message
    for unsafe in (["run_name=a,b"], ["hydra.job.name=a,b"], ["seed=1,2", "+extra.x=${oc.env:HOME}"]):
        response = client.post("/sweeps", json={"overrides": unsafe})
        assert response.status_code == 422, (unsafe, response.text)
    assert client.get("/runs").json()["count"] == 0
    assert client.get("/sweeps").json()["data"] == []
    assert [p.name for p in output_dir.iterdir()] == [".labrun"]  # no folder either


def test_an_oversize_sweep_or_one_past_the_queued_limit_is_refused(make_client):
    client = make_client(max_sweep_runs=10, max_queued_per_user=12)
    response = client.post("/sweeps", json={"overrides": ["seed=range(0,11)"]})
    assert response.status_code == 422
    assert "makes 11 runs; at most 10" in response.json()["detail"]
    assert client.post("/sweeps", json={"overrides": ["seed=range(0,10**9)"]}).status_code == 422
    first = client.post("/sweeps", json={"overrides": ["seed=range(0,8)", "+extra.fake_sleep=30"]})
    assert first.status_code == 201, first.text
    response = client.post("/sweeps", json={"overrides": ["seed=range(0,6)"]})
    assert response.status_code == 429
    assert "a sweep of 6 runs would make" in response.json()["detail"]
    assert "12" in response.json()["detail"]
    assert client.get("/runs").json()["count"] == 8


def test_a_sweep_on_two_slots_packs_two_at_a_time_and_one_failure_stops_nothing(make_client, output_dir):
    client = make_client(max_cpu_runs=2)
    overrides = [
        "+extra.fake_val_loss=0.3,0.1,0.25,0.2,0.5,0.6",
        "+extra.fake_sleep=0.4",
        "data=32x64",
    ]
    # the fake trainer fails the run whose val_loss would be 0.1: the best must come from the others
    overrides.append("+extra.fake_exit_if_val_loss=0.1")
    response = client.post("/sweeps", json={"overrides": overrides})
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == f"/sweeps/{response.json()['name']}"
    sweep = response.json()
    assert sweep["size"] == 6
    assert sweep["counts"]["queued"] == 6
    assert sweep["swept"] == ["+extra.fake_val_loss"]
    assert sweep["name"].endswith("+extra.fake_val_loss=0.3,0.1,0.25,0.2,0.5,0.6_data=32x64")
    assert sweep["run_dir"] == f"{sweep['name'][:10]}/{sweep['name']}"
    done = wait_sweep(client, sweep["name"])
    assert done["counts"] == {"queued": 0, "running": 0, "succeeded": 5, "failed": 1, "cancelled": 0}
    runs = done["runs"]
    assert [r["index"] for r in runs] == list(range(6))
    assert [r["overrides"] for r in runs] == [
        [f"+extra.fake_val_loss={v}"] for v in (0.3, 0.1, 0.25, 0.2, 0.5, 0.6)
    ]
    assert runs[1]["status"] == "failed"
    assert "exited with code 3" in runs[1]["reason"]
    assert [r["val_loss"] for r in runs if r["status"] == "succeeded"] == [0.3, 0.25, 0.2, 0.5, 0.6]
    assert done["best"]["index"] == 3
    assert done["best"]["val_loss"] == 0.2
    details = [client.get(f"/runs/{r['name']}").json() for r in runs]
    for i, run in enumerate(details):
        assert run["sweep"] == sweep["name"]
        assert run["sweep_index"] == i
        assert run["owner"] == "local"
        assert run["name"].startswith(f"{i}_{sweep['name'][:19]}_sfno32x64_")  # the default model
        assert run["run_dir"] == f"{sweep['run_dir']}/{run['name']}"
        assert (output_dir / run["run_dir"] / "progress.json").is_file()  # the run wrote where it is filed
    # two at a time: never more than two ran at once, and two did
    spans = [(r["started_at"], r["finished_at"]) for r in details]
    overlaps = [sum(1 for s, f in spans if s <= start < f) for start, _ in spans]
    assert max(overlaps) == 2, spans
    assert sorted(starts(output_dir)) == sorted(r["name"] for r in runs)  # each started once
    listed = client.get("/sweeps").json()["data"]
    assert [s["name"] for s in listed] == [sweep["name"]]
    assert listed[0]["counts"]["succeeded"] == 5
    assert listed[0]["finished"] is True


def test_the_trainer_is_told_the_sweeps_folder_and_group(client):
    sweep = client.post("/sweeps", json={"overrides": ["seed=1,2", "+extra.fake_sleep=30"]}).json()
    manager = client.app.state.manager
    record = manager.store.get(sweep["runs"][1]["name"])
    spec = manager.dispatcher.spec(record, [])
    assert spec.env["LABRUN_SWEEP"] == sweep["name"]
    assert f"output_dir_scheme={sweep['run_dir']}/{record.name}" in " ".join(spec.trainer_args).replace(
        "'", ""
    )
    single = client.post("/runs", json={"overrides": ["seed=3"]}).json()
    plain = manager.dispatcher.spec(manager.store.get(single["name"]), [])
    assert "LABRUN_SWEEP" not in plain.env
    assert not any("output_dir_scheme" in a for a in plain.trainer_args)


def test_cancel_a_sweep_then_rerun_what_was_cancelled(client, output_dir):
    sweep = client.post("/sweeps", json={"overrides": ["seed=1,2,3,4", "+extra.fake_sleep=30"]}).json()
    name = sweep["name"]
    deadline = time.monotonic() + 30
    while client.get(f"/sweeps/{name}").json()["counts"]["running"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelled = client.post(f"/sweeps/{name}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["counts"] == {
        "queued": 0,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 4,
    }
    for run in cancelled.json()["runs"]:
        assert client.get(f"/runs/{run['name']}").json()["cancelled_by"] == "local"
    assert len(starts(output_dir)) <= 1  # the queued ones never started
    rerun = client.post(f"/sweeps/{name}/rerun", headers={"Idempotency-Key": "again"})
    assert rerun.status_code == 201, rerun.text
    runs = rerun.json()["runs"]
    assert [r["index"] for r in runs] == [0, 1, 2, 3]
    assert [r["rerun_of"] for r in runs] == [r["name"] for r in cancelled.json()["runs"]]
    assert all(r["status"] in ("queued", "running") for r in runs)
    replay = client.post(f"/sweeps/{name}/rerun", headers={"Idempotency-Key": "again"})
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert client.get("/runs").json()["count"] == 8  # the replay queued nothing
    new = client.get(f"/runs/{runs[2]['name']}").json()
    assert new["sweep"] == name
    assert new["run_dir"].startswith(sweep["run_dir"] + "/2_")
    client.post(f"/sweeps/{name}/cancel")
    assert client.post(f"/sweeps/{name}/cancel").json()["finished"] is True  # again: nothing left
    assert client.get("/sweeps/nope").status_code == 404


def test_idempotency_key_replays_the_sweep(client):
    body = {"overrides": ["seed=1,2", "+extra.fake_sleep=30"]}
    first = client.post("/sweeps", json=body, headers={"Idempotency-Key": "k1"})
    again = client.post("/sweeps", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["name"] == first.json()["name"]
    other = client.post("/sweeps", json={"overrides": ["seed=3,4"]}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 409
    assert client.get("/runs").json()["count"] == 2


def test_only_the_owner_or_an_admin_changes_a_sweep(output_dir, make_client):
    store = RunStore(StateDir(output_dir).db)
    tokens = {n: Users(store).add(n, admin=n == "root") for n in ("alice", "bob", "root")}
    store.close()
    client = make_client()
    alice, bob, root = ({"Authorization": f"Bearer {tokens[n]}"} for n in ("alice", "bob", "root"))
    sweep = client.post("/sweeps", json={"overrides": ["seed=1,2", "+extra.fake_sleep=30"]}, headers=alice)
    assert sweep.status_code == 201
    assert sweep.json()["owner"] == "alice"
    name = sweep.json()["name"]
    assert client.get(f"/sweeps/{name}").status_code == 401
    assert client.get(f"/sweeps/{name}", headers=bob).status_code == 200  # anyone may read it
    assert client.post(f"/sweeps/{name}/cancel", headers=bob).status_code == 403
    assert client.get("/sweeps?owner=me", headers=bob).json()["data"] == []
    assert client.post(f"/sweeps/{name}/cancel", headers=root).json()["counts"]["cancelled"] == 2


KILLED_MID_TRANSACTION = """
import os, signal, sys
sys.path[:0] = [{tests!r}, {helpers!r}]
from pathlib import Path
from dataclasses import asdict
from service_helpers import queued_record
from app.models import RunRecord, SweepRecord
from app.store import RunStore

class KillsWhenRead(RunRecord):
    # a record whose fields kill the process (SIGKILL, as a kill -9 of the service) when the store reads them
    def __getattribute__(self, name):
        if name == "owner":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getattribute__(name)

store = RunStore(Path({db!r}))
records = [queued_record(f"run-{{i}}", sweep="s", sweep_index=i) for i in range(200)]
bomb = KillsWhenRead(**asdict(queued_record("bomb")))
sweep = SweepRecord(0, "s", "alice", "c", [], [], 201, "d/s", 0.0)
store.insert_runs(records[:100] + [bomb] + records[100:], sweep)
"""


def test_a_kill_9_in_the_middle_of_queueing_a_sweep_leaves_none_of_it(output_dir):
    db = StateDir(output_dir).db
    here = Path(__file__).parent
    script = KILLED_MID_TRANSACTION.format(tests=str(here), helpers=str(here.parent / "helpers"), db=str(db))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]  # killed after 100 of the 201 inserts
    store = RunStore(db)
    try:
        assert store.count() == 0
        assert store.sweeps.list() == []
        # the same batch without the kill is stored whole; one name taken refuses all of it
        store.insert_runs([queued_record(f"run-{i}", sweep="s", sweep_index=i) for i in range(200)])
        assert store.count() == 200
        with pytest.raises(NameTaken):
            store.insert_runs([queued_record("fresh-1"), queued_record("run-7"), queued_record("fresh-2")])
        assert store.get("fresh-1") is None
        assert store.count() == 200
    finally:
        store.close()


def test_the_dashboard_has_a_sweep_page(client):
    page = client.get("/").text
    assert 'id="view-sweep"' in page
    assert 'id="sweep-rows"' in page
    script = client.get("/web/sweep.js")
    assert script.status_code == 200
    assert "/sweeps/" in script.text
    assert 'from "./sweep.js"' in client.get("/web/app.js").text
