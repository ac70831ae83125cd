"""``init_from`` in the trainer (trainer/init_from.py): a run refuses to start without the checkpoint the
service hands over, loads exactly the checkpoint's weights, and fails naming init_from when they do not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer import init_from
from trainer.model import OperatorModule
from trainer.runenv import RunEnv

MODEL = {
    "name": "fno",
    "n_modes": [8, 8],
    "in_channels": 3,
    "out_channels": 3,
    "hidden_channels": 8,
    "n_layers": 1,
}


def save(module: OperatorModule, path: Path) -> Path:
    """What Lightning's checkpoint holds of it (trainer/model.py drops neuraloperator's _metadata)."""
    state = module.state_dict()
    state.pop("_metadata", None)
    torch.save({"state_dict": state, "epoch": 3, "global_step": 40, "optimizer_states": []}, path)
    return path


def test_a_run_with_init_from_needs_the_checkpoint_handed_over(tmp_path):
    assert init_from.check(None, RunEnv()) is None
    assert "set LABRUN_INIT_FROM_CKPT" in (init_from.check("src", RunEnv()) or "")
    assert "is not a file" in (init_from.check("src", RunEnv(init_from_ckpt=tmp_path / "none")) or "")
    assert init_from.check("src", RunEnv(resume=True)) is None  # a resumed attempt has its own


def test_the_weights_are_the_checkpoints_and_a_model_that_does_not_fit_is_named(tmp_path):
    torch.manual_seed(1)
    source = OperatorModule(MODEL, lr=1e-3)
    path = save(source, tmp_path / "last.ckpt")
    torch.manual_seed(2)
    fresh = OperatorModule(MODEL, lr=1e-3)
    assert any(not torch.equal(a, b) for a, b in zip(fresh.parameters(), source.parameters(), strict=True))
    init_from.load_weights(fresh, "src", path)
    for (name, a), b in zip(fresh.named_parameters(), source.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert init_from.describe("src", path) == {
        "run": "src",
        "checkpoint": str(path),
        "epoch": 3,
        "global_step": 40,
    }
    wider = OperatorModule({**MODEL, "hidden_channels": 16}, lr=1e-3)
    with pytest.raises(
        RuntimeError, match="init_from=src: its checkpoint's weights do not fit this run's model"
    ):
        init_from.load_weights(wider, "src", path)
