"""``GET /runs/compare`` (app/compare.py): runs side by side, only what differs in their overrides (compared
as values) and resolved configs, every final metric and each duration; names never split on commas; bad
requests refused with the fix. The fake trainer writes no ``.hydra/config.yaml``: the test writes one per
run, as the real trainer does (trainer/rundir.py)."""

from __future__ import annotations

from pathlib import Path

import yaml
from service_helpers import submit, wait_for

from app.compare import differences, flatten


def write_config(output_dir: Path, run: dict, config: dict) -> None:
    target = output_dir / run["run_dir"] / ".hydra"
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.yaml").write_text(yaml.safe_dump(config))


def test_differences_keep_only_what_differs_and_absent_counts():
    a = flatten({"training": {"lr": 0.001, "max_epochs": 5}, "model": {"n_modes": [32, 32]}, "seed": 1})
    b = flatten({"training": {"lr": 0.0001, "max_epochs": 5}, "model": {"n_modes": [32, 32]}})
    found = {d.key: (d.values, d.present) for d in differences([a, b])}
    assert found == {"training.lr": ([0.001, 0.0001], [True, True]), "seed": ([1, None], [True, False])}


def test_compare_two_runs(client, output_dir):
    a = wait_for(client, submit(client, "model=fno", "training.lr=1e-4", "+extra.fake_val_loss=0.25")["name"])
    b = wait_for(
        client, submit(client, "model=sfno", "training.lr=0.0001", "+extra.fake_val_loss=0.5")["name"]
    )
    write_config(output_dir, a, {"model": {"name": "fno", "n_modes": [32, 32]}, "training": {"lr": 0.0001}})
    write_config(output_dir, b, {"model": {"name": "sfno", "n_modes": [24, 48]}, "training": {"lr": 0.0001}})

    answer = client.get("/runs/compare", params=[("name", a["name"]), ("name", b["name"])])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["names"] == [a["name"], b["name"]]
    overrides = {d["key"]: d["values"] for d in body["overrides"]}
    assert overrides == {"model": ["fno", "sfno"], "extra.fake_val_loss": [0.25, 0.5]}  # lr: 1e-4 == 0.0001
    config = {d["key"]: d["values"] for d in body["config"]}
    assert config == {"model.name": ["fno", "sfno"], "model.n_modes": [[32, 32], [24, 48]]}
    metrics = {d["key"]: d["values"] for d in body["metrics"]}
    assert metrics["val_loss"] == [0.25, 0.5]
    for run in body["runs"]:
        assert run["config_found"] is True
        assert run["duration_s"] >= 0
        assert run["run"]["status"] == "succeeded"


def test_compare_without_a_config_and_bad_requests(client):
    a = wait_for(client, submit(client, "seed=1")["name"])
    b = wait_for(client, submit(client, "seed=2")["name"])
    body = client.get("/runs/compare", params=[("name", a["name"]), ("name", b["name"])]).json()
    assert [r["config_found"] for r in body["runs"]] == [False, False]
    assert body["config"] == []
    assert {d["key"]: d["values"] for d in body["overrides"]} == {"seed": [1, 2]}

    one = client.get("/runs/compare", params={"name": a["name"]})
    assert one.status_code == 422
    assert "repeat name=" in one.json()["detail"]
    same = client.get("/runs/compare", params=[("name", a["name"]), ("name", a["name"])])
    assert same.status_code == 422  # the same run twice is one run
    comma = client.get("/runs/compare", params=[("name", a["name"]), ("name", f"{a['name']},{b['name']}")])
    assert comma.status_code == 404  # a name with a comma is one name, never two
    assert f"{a['name']},{b['name']}" in comma.json()["detail"]
