"""The LightningModule: SFNO or FNO from neuraloperator, Adam, MSE, as in the seed."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from typing_extensions import override

from trainer.schema import MODEL_NAMES


def build_operator(
    name: str, n_modes: list[int], in_channels: int, out_channels: int, hidden_channels: int, n_layers: int
) -> nn.Module:
    from neuralop.models import FNO, SFNO  # imported here: neuralop alone costs seconds

    classes = {"fno": FNO, "sfno": SFNO}
    if name not in classes:
        raise ValueError(f"model.name={name!r} is not one of {', '.join(MODEL_NAMES)}")
    return classes[name](
        n_modes=tuple(n_modes),
        in_channels=in_channels,
        out_channels=out_channels,
        hidden_channels=hidden_channels,
        n_layers=n_layers,
    )


class OperatorModule(L.LightningModule):
    """``model`` holds the keys of conf/model/*.yaml; ``lr`` is training.lr."""

    def __init__(self, model: dict[str, Any], lr: float) -> None:
        super().__init__()
        # Stored in the checkpoint (load_from_checkpoint rebuilds the model), not logged: the loggers get
        # the whole resolved config instead.
        self.save_hyperparameters(logger=False)
        self.net = build_operator(
            model["name"],
            model["n_modes"],
            model["in_channels"],
            model["out_channels"],
            model["hidden_channels"],
            model["n_layers"],
        )
        self.lr = lr
        self.loss = nn.MSELoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        loss = self.loss(self(batch["x"]), batch["y"])
        n = len(batch["x"])
        if name == "train_loss":
            # The seed's name for the per-step curve, plus the epoch mean under a name of its own.
            self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
            self.log("train_loss_epoch", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        else:
            self.log(name, loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        return loss

    @override
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train_loss")

    @override
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val_loss")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # neuraloperator's models add their constructor arguments (gelu, a function) to every state_dict
        # under "_metadata", which torch.load(weights_only=True), the default since torch 2.6, refuses.
        # The model is rebuilt from the hyperparameters, so the checkpoint does without it.
        checkpoint["state_dict"].pop("_metadata", None)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)
