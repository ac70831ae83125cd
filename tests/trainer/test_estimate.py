"""The resource estimate (trainer/estimate.py, no torch): the parameter formula equals the real models'
count, the data estimate equals the cached file's arrays, and runs over the limits are refused."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from trainer import config, data, estimate, swe
from trainer.config_cache import compose_cached


def job_of(overrides: list[str]):
    cfg = compose_cached([*overrides, "run_name=2026-01-01_00-00-00_t"])
    return config.job_config(cfg)


@pytest.mark.parametrize("model", ["fno", "sfno"])
@pytest.mark.parametrize("resolution", ["32x64", "64x128"])
@pytest.mark.parametrize(("width", "layers"), [(2, 1), (8, 2), (33, 3), (64, 4)])
def test_param_formula_equals_the_real_models_count(model, resolution, width, layers):
    from trainer.model import build_operator

    job = job_of(
        [f"model={model}", f"data={resolution}", f"model.hidden_channels={width}", f"model.n_layers={layers}"]
    )
    m = job.model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # neuraloperator's zero-width channel MLP at width 2 is a no-op init
        net = build_operator(
            m.name, list(m.n_modes), m.in_channels, m.out_channels, m.hidden_channels, m.n_layers
        )
    params = list(net.parameters())
    est = estimate.estimate(job)
    assert est["param_count"] == sum(p.numel() for p in params)
    assert est["param_bytes"] == sum(p.numel() * p.element_size() for p in params)
    assert est["training_state_bytes"] == 4 * est["param_bytes"]


@pytest.mark.parametrize(("dims", "n"), [([32, 64], 3), ([64, 128], 2)])
def test_data_estimate_equals_the_cached_files_arrays(tmp_path, dims, n):
    spec = swe.SolverSpec(nlat=dims[0], nlon=dims[1], num_examples=n, seed=1)
    data.load_or_generate(spec, tmp_path)
    blob = torch.load(data.cache_path(spec, tmp_path), weights_only=True)
    cached = sum(t.numel() * t.element_size() for t in (blob["x"], blob["y"]))
    job = job_of([f"data.dims=[{dims[0]},{dims[1]}]", f"data.num_examples={n}", "data.train_val_split=0.5"])
    assert estimate.estimate(job)["data_bytes"] == cached


def test_the_default_runs_fit_the_default_limits():
    for model in ("fno", "sfno"):
        for res in ("32x64", "64x128"):
            est = estimate.check_resources(job_of([f"model={model}", f"data={res}"]))
            assert est["param_count"] < estimate.DEFAULT_MAX_PARAMS
            assert est["data_bytes"] < estimate.DEFAULT_MAX_DATA_BYTES


def test_huge_data_is_refused_with_estimate_and_limit():
    job = job_of(["data.dims=[100000,100000]"])  # composes; check_job refuses it too (data.dims bounds)
    with pytest.raises(config.ConfigError) as caught:
        estimate.check_resources(job)
    message = str(caught.value)
    assert "data.dims=[100000, 100000]" in message
    assert "data.num_examples=1000" in message
    assert "218.3 TiB" in message
    assert "at most 8.0 GiB" in message
    with pytest.raises(config.ConfigError, match="at most 1.0 KiB"):
        estimate.check_resources(job_of([]), max_data_bytes=1024)


def test_huge_model_is_refused_with_count_and_limit():
    job = job_of(["model=fno", "model.hidden_channels=2048"])
    with pytest.raises(config.ConfigError) as caught:
        estimate.check_resources(job)
    message = str(caught.value)
    assert "hidden_channels=2048" in message
    assert "at most 500,000,000" in message
    assert f"{estimate.estimate(job)['param_count']:,} parameters" in message
    assert estimate.check_resources(job, max_params=10**12)["param_count"] > 10**10


def test_estimate_takes_plain_dicts_too():
    job = {
        "data": {"dims": [32, 64], "num_examples": 10},
        "model": {
            "name": "sfno",
            "n_modes": [16, 32],
            "in_channels": 3,
            "out_channels": 3,
            "hidden_channels": 8,
            "n_layers": 2,
        },
    }
    assert estimate.estimate(job)["data_bytes"] == 2 * 10 * 3 * 32 * 64 * 4


def test_estimate_imports_no_torch():
    code = "import sys, trainer.estimate, trainer.schema; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
