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


EPOCH_LOSS_KEY = "train_loss_epoch_sum"  # the checkpoint's entry for the epoch's train loss so far


class EpochMean:
    """The batch-size-weighted mean of a loss over an epoch, kept by the module rather than by Lightning's
    logger so that a checkpoint written in the middle of an epoch carries the sum so far (Lightning's
    running sums are not saved) and the resumed epoch's mean is the uninterrupted one, bit for bit. The
    arithmetic is Lightning's own mean reduction: ``sum + value * n`` in the default float dtype, then
    ``sum / total``, so a run that is never stopped logs the numbers it logged before."""

    def __init__(self, total: torch.Tensor | None = None, count: int = 0) -> None:
        self.total, self.count = total, count

    def add(self, loss: torch.Tensor, n: int) -> None:
        value = loss.detach()
        if value.dtype not in (torch.float32, torch.float64):
            value = value.to(torch.get_default_dtype())
        if self.total is None:
            self.total = torch.zeros((), dtype=torch.get_default_dtype(), device=value.device)
        elif self.total.device != value.device:  # restored from a checkpoint, which holds it on the CPU
            self.total = self.total.to(value.device)
        self.total = self.total + value * n
        self.count += n

    def mean(self) -> torch.Tensor:
        assert self.total is not None, "add() first"
        return self.total / torch.tensor(self.count, device=self.total.device)

    def state_dict(self) -> dict[str, Any]:
        return {"total": None if self.total is None else self.total.cpu(), "count": self.count}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> EpochMean:
        if not state:
            return cls()
        return cls(state.get("total"), int(state.get("count", 0)))


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
        self._epoch_loss = EpochMean()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        loss = self.loss(self(batch["x"]), batch["y"])
        n = len(batch["x"])
        if name == "train_loss":
            # The seed's name for the per-step curve; the epoch mean is logged at the epoch's end.
            self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
            self._epoch_loss.add(loss, n)
        else:
            self.log(name, loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        return loss

    @override
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train_loss")

    @override
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val_loss")

    @override
    def on_train_epoch_start(self) -> None:
        self._epoch_loss = EpochMean()  # not called for an epoch resumed in its middle: its sum is kept

    @override
    def on_train_epoch_end(self) -> None:
        if self._epoch_loss.count:
            mean = self._epoch_loss.mean()
            self.log("train_loss_epoch", mean, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # neuraloperator's models add their constructor arguments (gelu, a function) to every state_dict
        # under "_metadata", which torch.load(weights_only=True), the default since torch 2.6, refuses.
        # The model is rebuilt from the hyperparameters, so the checkpoint does without it.
        checkpoint["state_dict"].pop("_metadata", None)
        checkpoint[EPOCH_LOSS_KEY] = self._epoch_loss.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._epoch_loss = EpochMean.from_state(checkpoint.get(EPOCH_LOSS_KEY))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)
