"""``init_from``: a run that starts from another run's last checkpoint (docs/run-chains.md).

Only the model's weights are taken: the optimizer, the epoch and step counters and the random generators
start afresh, as for a new run (evaluation or fine-tuning). The run's config names the other run
(``init_from``); the service resolves that name to the checkpoint and hands its path over as
``LABRUN_INIT_FROM_CKPT`` (``trainer/runenv.py``). The file is read with ``weights_only=True``: a checkpoint
is data, never code that runs.

``check`` is light (no torch): ``python -m trainer`` calls it before it creates anything.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trainer.runenv import INIT_FROM_CKPT, RunEnv

log = logging.getLogger(__name__)


def check(source: str | None, env: RunEnv) -> str | None:
    """Why a run with ``init_from=source`` cannot start (None: it can): the checkpoint must be handed over.
    A resumed attempt continues from its own checkpoint and needs none."""
    if not source or env.resume:
        return None
    path = env.init_from_ckpt
    if path is None:
        return (
            f"init_from={source} needs the checkpoint to start from: the service hands it over; outside "
            f"the service, set {INIT_FROM_CKPT} to that run's ckpt/last.ckpt"
        )
    if not path.is_file():
        return f"init_from={source}: {INIT_FROM_CKPT}={path} is not a file"
    return None


def describe(source: str, path: Path | None) -> dict[str, Any]:
    """What run.json says of where the run started: the run, and its checkpoint's epoch and step (read
    from the mapped file, not loaded)."""
    import torch

    found: dict[str, Any] = {"run": source}
    if path is None:
        return found
    found["checkpoint"] = str(path)
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        found.update(epoch=int(ckpt["epoch"]), global_step=int(ckpt["global_step"]))
    except Exception:  # the load itself says what is wrong (load_weights)
        log.warning("could not read the epoch and step of %s", path, exc_info=True)
    return found


def load_weights(model: Any, source: str, path: Path) -> None:
    """Put the checkpoint's model weights into ``model`` (a LightningModule); every tensor must fit, or
    the run fails naming what does not (a different model config)."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = dict(ckpt["state_dict"])
    state.pop("_metadata", None)  # neuraloperator's constructor arguments (trainer/model.py)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RuntimeError(
            f"init_from={source}: its checkpoint's weights do not fit this run's model (the model's config "
            f"must be the same as that run's): {exc}"
        ) from None
    log.info(
        "init_from=%s: started from the model weights of its checkpoint %s (epoch %s, step %s); the "
        "optimizer, the epochs and the steps start afresh",
        source,
        path,
        ckpt.get("epoch"),
        ckpt.get("global_step"),
    )
