"""The service side of the config schema: GET /config/schema, the resource estimate in a run's record and
against the server's limits, and the WandB entity as the server's choice."""

from __future__ import annotations

from service_helpers import submit


def test_the_schema_is_served_from_the_same_source(client):
    from trainer import schema_docs

    keys = client.get("/config/schema").json()["keys"]
    assert keys == schema_docs.describe()
    lr = next(k for k in keys if k["key"] == "training.lr")
    assert lr["type"]
    assert lr["description"]
    assert "> 0" in (lr["allowed"] or "")


def test_a_runs_estimate_is_recorded_and_checked_against_the_servers_limits(make_client):
    client = make_client(max_params=10_000_000)
    run = submit(client, "model=fno", "data=32x64", "model.hidden_channels=8", "+extra.fake_sleep=0")
    assert run["resources"]["param_count"] > 0
    assert run["resources"]["data_bytes"] == 2 * 1000 * 3 * 32 * 64 * 4
    big = client.post("/runs", json={"overrides": ["model=fno", "data=32x64"]})  # the default width: ~179 M
    assert big.status_code == 422
    assert "this server allows at most 10,000,000" in big.json()["detail"]
    huge = client.post("/runs", json={"overrides": ["data.dims=[2048,2048]", "data.num_examples=100000"]})
    assert huge.status_code == 422, huge.text
    assert "of data" in huge.json()["detail"], huge.text


def test_the_wandb_entity_is_the_servers_choice(make_client):
    client = make_client(wandb_entity="the-lab")
    refused = client.post("/runs", json={"overrides": ["wandb_entity=someone-else"]})
    assert refused.status_code == 422
    assert "LABRUN_WANDB_ENTITY" in refused.json()["detail"]
    assert (
        client.post(
            "/runs", json={"overrides": ["wandb_project=my-project", "+extra.fake_sleep=0"]}
        ).status_code
        == 201
    )
    bad = client.post("/runs", json={"overrides": ["wandb_project=no/slashes"]})
    assert bad.status_code == 422
    assert "wandb_project" in bad.json()["detail"]
    from trainer.plan import trainer_args

    assert "wandb_entity=the-lab" in trainer_args("n", [], "neuraloperator", "/out", wandb_entity="the-lab")
