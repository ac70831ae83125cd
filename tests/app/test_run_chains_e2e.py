"""Run chains through a real service process (docs/run-chains.md): runs that wait survive a kill -9 of the
service (nothing lost, nothing started early), and the real trainer starts a run from another run's
checkpoint, waiting for that run to succeed first."""

from __future__ import annotations

import json
import time

import pytest
from service_helpers import service_processes, starts, wait_for
from tiny_run import tiny_run


@pytest.fixture
def service(output_dir):
    yield from service_processes(output_dir)


def post(client, overrides: list[str], after: list[dict] | None = None) -> dict:
    response = client.post("/runs", json={"overrides": overrides, "after": after})
    assert response.status_code == 201, response.text
    return response.json()


def test_runs_that_wait_survive_a_kill_9_and_start_only_when_their_dependency_is_done(service, output_dir):
    svc = service(LABRUN_MAX_CPU_RUNS="3")
    with svc.client() as client:
        a = post(client, ["+extra.fake_sleep=4"])
        b = post(client, ["+extra.fake_i=1"], after=[{"run": a["name"]}])
        c = post(client, ["+extra.fake_i=2"], after=[{"run": b["name"], "when": "ended"}])
        wait_for(client, a["name"], {"running"})
    svc.kill9()
    time.sleep(0.5)
    assert starts(output_dir) == [a["name"]]
    svc = service(LABRUN_MAX_CPU_RUNS="3")
    with svc.client() as client:
        shown = client.get(f"/runs/{b['name']}").json()
        assert shown["status"] == "queued"
        assert shown["waiting_reason"] == f"waiting for run {a['name']} to succeed (it is running)"
        assert [d["run"] for d in client.get(f"/runs/{c['name']}").json()["after"]] == [b["name"]]
        runs = {n: wait_for(client, n, timeout=60) for n in (a["name"], b["name"], c["name"])}
    assert {r["status"] for r in runs.values()} == {"succeeded"}
    assert starts(output_dir) == [a["name"], b["name"], c["name"]]  # each once, in the chain's order
    assert runs[b["name"]]["started_at"] >= runs[a["name"]]["finished_at"]
    assert runs[c["name"]]["started_at"] >= runs[b["name"]]["finished_at"]


@pytest.mark.slow
def test_the_real_trainer_starts_from_the_weights_of_the_run_it_waited_for(service, output_dir):
    torch = pytest.importorskip("torch")
    svc = service(trainer_command=None, LABRUN_MAX_CPU_RUNS="2")  # the real `python -m trainer`
    source = svc.submit(tiny_run(epochs=1))
    # Submitted at once: it waits for the source to succeed; its checkpoint is looked for then. A learning
    # rate of 1e-12 leaves the weights it starts from as they are, to a few ulps: its validation loss and
    # its own checkpoint must be the source's. Started from scratch (init_from ignored), both would be
    # those of fresh weights.
    quoted = f"init_from='{source['name']}'"
    dest = post(svc.http, [*tiny_run(epochs=1), quoted, "training.lr=1e-12"], after=[{"run": source["name"]}])
    assert dest["init_from"] == source["name"]
    assert svc.http.get(f"/runs/{dest['name']}").json()["status"] == "queued"
    src_done = svc.wait_for(source["name"], timeout=600)
    assert src_done["status"] == "succeeded", svc.log(4000)
    done = svc.wait_for(dest["name"], timeout=600)
    log = svc.http.get(f"/runs/{dest['name']}/logs", params={"tail": 60}).text
    assert done["status"] == "succeeded", log
    assert f"init_from={source['name']}: started from the model weights of its checkpoint" in log
    assert done["started_at"] >= src_done["finished_at"]
    assert done["metrics"]["val_loss"] == pytest.approx(src_done["metrics"]["val_loss"], rel=1e-6)
    src_ckpt = output_dir / source["run_dir"] / "ckpt" / "last.ckpt"
    record = json.loads((output_dir / dest["run_dir"] / "run.json").read_text())
    assert record["init_from"] == {
        "run": source["name"],
        "checkpoint": str(src_ckpt.resolve()),
        "epoch": 0,
        "global_step": 4,
    }
    before = torch.load(src_ckpt, weights_only=True)["state_dict"]
    after = torch.load(output_dir / dest["run_dir"] / "ckpt" / "last.ckpt", weights_only=True)
    assert after["epoch"] == 0  # epochs and the optimizer start afresh
    assert before.keys() == after["state_dict"].keys()
    for key, tensor in before.items():
        assert torch.allclose(tensor, after["state_dict"][key], atol=1e-6), key
    fresh = svc.submit([*tiny_run(epochs=1), "training.lr=1e-12", "+extra.control=1"])  # no init_from
    control = svc.wait_for(fresh["name"], timeout=600)
    assert control["metrics"]["val_loss"] != pytest.approx(src_done["metrics"]["val_loss"], rel=1e-3)
