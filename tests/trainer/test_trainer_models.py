"""Both models at both resolutions with the config's default modes (FACTS: neuraloperator 2.0's SFNO needs
n_modes [24, 48]). Width and depth are shrunk: they do not affect whether the modes fit the grid."""

import pytest
import torch
from omegaconf import OmegaConf

from trainer import config
from trainer.model import OperatorModule


@pytest.mark.parametrize("model", ["fno", "sfno"])
@pytest.mark.parametrize("data", ["32x64", "64x128"])
def test_default_modes_run_forward_and_backward(model, data):
    cfg = config.compose_config([f"model={model}", f"data={data}", "run_name=t"])
    job = config.job_config(cfg)
    params = {**OmegaConf.to_container(job.model), "hidden_channels": 4, "n_layers": 1}
    module = OperatorModule(params, lr=1e-3)
    x = torch.randn(2, 3, *job.data.dims)
    y = module(x)
    assert y.shape == x.shape
    y.square().mean().backward()
