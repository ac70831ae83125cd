"""The compose cache must give exactly what a real Hydra compose gives: same job config, same errors."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from trainer import config
from trainer.config_cache import ConfigCache

NAME = "run_name=2026-01-01_00-00-00_fixed"

CORPUS = [
    [],
    ["model=fno"],
    ["model=fno", "data=32x64"],
    ["data=32x64", "model=fno"],
    ["training.lr=0.01", "model=sfno"],
    ["model.hidden_channels=64", "model=fno", "training.max_epochs=3"],
    ["batch_size=8", "training.effective_batch_size=16", "devices=1"],
    ["accelerator=cpu", "debug=true"],
    ["++training.lr=0.5"],
    ["model.n_modes=[16,32]", "model=sfno", "data=32x64"],
    ["training={max_epochs: 2}"],
    ["seed=7", "deterministic=false"],
    # errors: each must raise the same ConfigError as the real compose
    ["+device=gpu", "accelerator=cpu", "debug=true"],  # keys the schema does not know
    ["+model.extra=[1,2,3]"],
    ["+training={a: 1}"],
    ["+trainer.plugins=x", "model=fno"],
    ["~model.n_layers"],  # a schema key cannot be removed
    ["training.lr=abc"],  # wrong types
    ["model=fno", "data.dims=[a,64]"],
    ["seed=1e3"],
    ["model=nope"],
    ["data=32x64", "nope=1"],
    ["+batch_size=3"],
    ["~nope"],
    ["batch_size=48"],
    ["model=fno", "model.hidden_channels=${oc.env:HOME}"],
    ["model=fno,sfno"],
    ["training.lr=range(1,3)"],
    ["model@foo=fno"],
    ["==bad"],
]


def _outcome(compose, overrides):
    try:
        cfg = compose([*overrides, NAME])
        config.assign_run_name(cfg, overrides)
        return ("ok", OmegaConf.to_container(config.job_config(cfg)), cfg.hydra.runtime.choices)
    except config.ConfigError as exc:
        return ("error", str(exc), None)


@pytest.mark.parametrize("overrides", CORPUS, ids=lambda o: " ".join(o) or "<none>")
def test_cache_matches_real_compose(overrides, monkeypatch):
    monkeypatch.setenv("HOME", "/nonexistent-home")
    cache = ConfigCache()
    real = _outcome(config.compose_config, overrides)
    for _ in range(2):  # first call builds the base, second call is served from it
        cached = _outcome(cache.compose, overrides)
        assert cached[:2] == real[:2]
        if real[0] == "ok":
            assert dict(cached[2]) == dict(real[2])


def test_same_groups_different_values_never_share_a_result():
    cache = ConfigCache()
    a = config.job_config(cache.compose(["model=fno", "training.lr=0.1", NAME]))
    b = config.job_config(cache.compose(["model=fno", "training.lr=0.2", NAME]))
    assert (a.training.lr, b.training.lr) == (0.1, 0.2)
    # and the shared base was not changed by either request
    c = config.job_config(cache.compose(["model=fno", NAME]))
    assert c.training.lr == 0.001


def test_edited_yaml_invalidates_the_cache(tmp_path):
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(config.conf_dir(), conf)
    cache = ConfigCache(conf)
    assert config.job_config(cache.compose(["model=fno", NAME])).model.n_layers == 5
    fno = conf / "model" / "fno.yaml"
    fno.write_text(fno.read_text().replace("n_layers: 5", "n_layers: 7"))
    assert config.job_config(cache.compose(["model=fno", NAME])).model.n_layers == 7
