"""The config's schema (trainer/schema.py): every option composes typed, every bad value is refused with a
message naming the key, the value and what is allowed, the n_modes limits are the real models' limits, and
schema_docs.describe() documents every key."""

from __future__ import annotations

import itertools
import warnings

import pytest
from omegaconf import OmegaConf

from trainer import config, schema, schema_docs
from trainer.config_cache import compose_cached


def job_of(overrides: list[str]):
    # The service's compose (tests/perf/test_config_cache.py: equal to a fresh one, errors included): fast.
    cfg = compose_cached([*overrides, "run_name=2026-01-01_00-00-00_t"])
    job = config.job_config(cfg)
    config.check_job(job)
    return cfg, job


def _options(group: str) -> list[str]:
    return sorted(
        p.stem for p in (config.conf_dir() / group).glob("*.yaml") if not p.stem.endswith("_globals")
    )


@pytest.mark.parametrize(
    ("model", "data", "paths"),
    list(itertools.product(_options("model"), _options("data"), _options("paths"))),
)
def test_every_option_of_every_group_composes_typed_and_checks(model, data, paths, monkeypatch):
    monkeypatch.setenv("USER", "tester")
    cfg, job = job_of([f"model={model}", f"data={data}", f"paths={paths}"])
    assert OmegaConf.get_type(cfg) is schema.ExperimentConfig
    for group, cls in schema.GROUPS.items():
        assert OmegaConf.get_type(cfg[group]) is cls, group
    assert job.model.name == model


def test_model_names_are_the_model_groups_options():
    assert sorted(schema.MODEL_NAMES) == _options("model")


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=sfno", "data=64x128", "training.lr=0.01"],
        ["data=32x64", "model=fno", "model.hidden_channels=64", "training.max_epochs=3"],
        ["precision=32-true"],
        ["precision=16-mixed", "accelerator=gpu"],
        ["precision=bf16-mixed", "model=fno"],
        ["precision=64"],
        ["devices=auto"],
        ["devices=2", "batch_size=8"],
        ["strategy=ddp", "devices=2", "batch_size=8"],
        ["accelerator=auto"],
        ["training.val_check_interval=0.5"],
        ["training.val_check_interval=10"],
        ["num_sanity_val_steps=-1"],
        ["num_workers=0"],
        ["seed=0"],
        ["seed=4294967295"],
        ["wandb_project=my-project.v2"],
        ["model=fno", "data=32x64", "model.n_modes=[32,64]"],
        ["model=sfno", "data=32x64", "model.n_modes=[32,64]"],
        ["model=sfno", "data=32x64", "model.n_modes=[16,32]"],
        ["debug=1"],  # OmegaConf's bool: 1, true, yes
    ],
)
def test_good_values_are_accepted(overrides):
    job_of(overrides)


# (overrides, key named, further words the message must hold: the value and what is allowed)
BAD = [
    # issue 9's list: each was accepted and queued
    (["precision=banana"], "precision", ["'banana'", "one of 32"]),
    (["strategy=ddp_spawn"], "strategy", ["'ddp_spawn'", "'auto', 'ddp'"]),
    (["model.hidden_channels=0"], "model.hidden_channels", ["=0", "between 2 and 4096"]),
    (["model.n_modes=[0,0]"], "model.n_modes", ["[0,0]", "each between 1 and"]),
    (["debug_batches=-5"], "debug_batches", ["-5", "between 1 and"]),
    (["training.val_check_interval=0"], "training.val_check_interval", ["=0", "(0, 1]"]),
    (["log_every_n_steps=0"], "log_every_n_steps", ["=0", "between 1 and"]),
    (["num_sanity_val_steps=-5"], "num_sanity_val_steps", ["-5", "between -1 and"]),
    (["training.lr=-1"], "training.lr", ["-1", "> 0 and <= 1"]),
    (["data.dims=[100000,100000]"], "data.dims", ["[100000,100000]", "between 4 and 2048"]),
    (["+trainer.plugins=x"], "trainer", ["not a key", "did you mean training"]),
    # more per key: types
    (["training.lr=abc"], "training.lr", ["expects a number", "abc"]),
    (["training.max_epochs=1e12"], "training.max_epochs", ["expects an integer"]),
    (["seed=1.5"], "seed", ["expects an integer"]),
    (["model.n_modes=3"], "model.n_modes", ["expects a list of integers"]),
    (["model.n_modes=[a,b]"], "model.n_modes", ["expects a list of integers"]),
    (["data.dims=[32]"], "data.dims", ["2 items"]),
    (["debug=maybe"], "debug", ["expects true or false"]),
    (["model.name=null"], "model.name", ["expects a string"]),
    # unknown and removed keys
    (["+device=gpu"], "device", ["did you mean devices"]),
    (["training.foo=1"], "training.foo", ["not a key", "max_epochs"]),
    (["+model.extra=[1,2,3]"], "model.extra", ["not a key"]),
    (["+required=???"], "required", ["not a key"]),
    (["+extra.note=???"], "extra.note", ["missing"]),
    (["~model.n_layers"], "model.n_layers", ["cannot be removed"]),
    # ranges, choices, patterns
    (["model.n_layers=0"], "model.n_layers", ["between 1 and 64"]),
    (["model.in_channels=4"], "model.in_channels", ["one of 3"]),
    (["model.name=unet"], "model.name", ["'unet'", "one of 'fno', 'sfno'"]),
    (["batch_size=0"], "batch_size", []),
    (["training.effective_batch_size=0"], "training.effective_batch_size", []),
    (["training.max_epochs=-1"], "training.max_epochs", ["between 1 and"]),
    (["training.max_epochs=0"], "training.max_epochs", []),
    (["training.lr=nan"], "training.lr", ["nan"]),
    (["training.lr=inf"], "training.lr", ["inf"]),
    (["training.lr=2"], "training.lr", ["<= 1"]),
    (["training.val_check_interval=1.5"], "training.val_check_interval", ["1.5"]),
    (["training.val_check_interval=100000"], "training.val_check_interval", ["training batches of an epoch"]),
    (["training.ckpt_monitor_val=loss"], "training.ckpt_monitor_val", ["'val_loss'"]),
    (["data.train_val_split=1.5"], "data.train_val_split", ["strictly between 0 and 1"]),
    (["data.train_val_split=0"], "data.train_val_split", []),
    (["data.num_examples=20", "data.train_val_split=0.01"], "data.train_val_split", ["0 training"]),
    (["data.num_examples=1"], "data.num_examples", ["between 2 and"]),
    (["data.dims=[2,4]"], "data.dims", ["between 4 and"]),
    (["num_workers=1000000"], "num_workers", ["between 0 and 64"]),
    (["num_workers=-1"], "num_workers", []),
    (["seed=-1"], "seed", ["between 0 and 4294967295"]),
    (["seed=" + "9" * 100], "seed", []),
    (["accelerator=tpu"], "accelerator", ["'cpu', 'gpu', 'cuda', 'auto'"]),
    (["strategy=ddp_notebook"], "strategy", []),
    (["strategy=fsdp"], "strategy", []),
    (["precision=16-true"], "precision", []),
    (["precision=64", "model=fno"], "precision", ["model.name=fno"]),
    (["precision=16-mixed"], "precision", ["CPU"]),
    (["precision=bf16-mixed", "model=sfno"], "precision", ["sfno"]),
    (["devices=0"], "num_devices", []),
    (["devices=1.5"], "devices", ["a number of devices"]),
    (["devices=[a]"], "devices", ["device ids"]),
    (["devices=[0,0]", "accelerator=gpu"], "devices", ["distinct"]),
    (["devices=100", "batch_size=1", "training.effective_batch_size=100"], "devices", ["between 1 and 64"]),
    (["accelerator=cpu", "devices=[0,1]", "batch_size=8"], "devices", ["device ids, which the CPU"]),
    (["wandb_project=a/b"], "wandb_project", ["a string matching"]),
    (["wandb_project=" + "a" * 129], "wandb_project", []),
    (["wandb_entity=x y"], "wandb_entity", []),
    # n_modes against the resolution
    (["model=sfno", "model.n_modes=[24,24]"], "model.n_modes", ["m // 2 >= l", "64x128"]),
    (["model=sfno", "data=32x64", "model.n_modes=[33,66]"], "model.n_modes", ["l <= 32"]),
    (["model=fno", "data=32x64", "model.n_modes=[64,64]"], "model.n_modes", ["a <= 32"]),
]


@pytest.mark.parametrize(("overrides", "key", "words"), BAD, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_values_are_refused_naming_key_value_and_range(overrides, key, words):
    with pytest.raises(config.ConfigError) as caught:
        job_of(overrides)
    message = str(caught.value)
    assert key in message, message
    for word in words:
        assert word in message, message


def test_issue_9s_list_is_refused_by_the_schema_itself_not_by_hand():
    # The hand-written checks are gone: the rules are the fields' metadata plus CROSS_RULES.
    assert not hasattr(config, "check_value_types")
    assert not hasattr(config, "_check_values")
    ruled = {f.key for f in schema.FIELDS if f.metadata.keys() - {"help", "type", "derived"}}
    assert {"precision", "strategy", "model.hidden_channels", "model.n_modes", "debug_batches"} <= ruled
    assert {
        "training.val_check_interval",
        "log_every_n_steps",
        "num_sanity_val_steps",
        "training.lr",
    } <= ruled
    assert {"data.dims", "num_workers", "seed", "training.max_epochs", "wandb_project"} <= ruled


def _forward_works(name: str, n_modes: list[int], dims: list[int]) -> bool:
    import torch

    from trainer.model import build_operator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = build_operator(name, n_modes, 3, 3, 4, 1)
            out = model(torch.randn(1, 3, *dims))
        except (RuntimeError, ValueError):
            return False
    return tuple(out.shape) == (1, 3, *dims)


def _accepted(name: str, n_modes: list[int], dims: list[int]) -> bool:
    overrides = [
        f"model={name}",
        f"model.n_modes=[{n_modes[0]},{n_modes[1]}]",
        f"data.dims=[{dims[0]},{dims[1]}]",
    ]
    try:
        job_of(overrides)
    except config.ConfigError:
        return False
    return True


@pytest.mark.parametrize("dims", [[32, 64], [64, 128]], ids=lambda d: f"{d[0]}x{d[1]}")
def test_n_modes_limits_are_the_real_models_limits(dims):
    nlat, nlon = dims
    lats, lons = [1, 2, nlat - 1, nlat, nlat + 1], [1, 3, nlon // 2, nlon - 1, nlon, nlon + 2]
    for m0, m1 in itertools.product(lats, lons):
        # SFNO: accepted exactly when it runs (within the grid; past it, see below).
        if m0 <= nlat and m1 <= nlon:
            assert _accepted("sfno", [m0, m1], dims) == _forward_works("sfno", [m0, m1], dims), (m0, m1)
        # Both: whatever is accepted runs. (FNO also runs past the grid, with weights that never meet data.)
        if _accepted("fno", [m0, m1], dims):
            assert _forward_works("fno", [m0, m1], dims), (m0, m1)
    assert not _accepted("fno", [nlat + 1, nlon], dims)
    assert not _accepted("sfno", [nlat + 1, 2 * nlat + 2], dims)


def test_describe_documents_every_key_of_the_config():
    rows = schema_docs.describe()
    by_key = {r["key"]: r for r in rows}
    _, job = job_of([])
    flat = _flatten(OmegaConf.to_container(job))
    assert set(flat) == {k for k in by_key if by_key[k]["type"] != "group"}
    for row in rows:
        assert row["description"], row["key"]
        assert set(row) == {"key", "type", "default", "allowed", "description", "derived"}
    assert by_key["model"] == {
        "key": "model",
        "type": "group",
        "default": "sfno",
        "allowed": "one of fno, sfno",
        "description": by_key["model"]["description"],
        "derived": False,
    }
    assert by_key["training.lr"]["type"] == "float"
    assert by_key["training.lr"]["default"] == 0.001
    assert by_key["training.lr"]["allowed"] == "> 0 and <= 1"
    assert by_key["precision"]["allowed"].startswith("one of 32, '32', '32-true'")
    assert by_key["data.dims"]["type"] == "list[int]"
    assert by_key["data.dims"]["default"] == [64, 128]
    assert by_key["wandb_project"]["allowed"] == f"a string matching {schema.WANDB_NAME}"
    assert by_key["output_dir"]["derived"]
    assert not by_key["seed"]["derived"]
    assert by_key["output_dir"]["default"].startswith("${")  # interpolations are shown, not resolved


def test_markdown_table_has_a_row_per_settable_key():
    table = schema_docs.markdown_table(schema_docs.describe())
    lines = table.splitlines()
    assert lines[0] == "| key | type | default | allowed | description |"
    assert "| `training.lr` | float | `0.001` | > 0 and <= 1 | Adam's learning rate |" in lines
    assert "| `model` | group | `'sfno'` | one of fno, sfno |" in table
    assert "`output_dir`" not in table  # derived: nobody sets it
    assert "\\|" not in table or "matching" in table


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out
