"""The server's default overrides (``LABRUN_DEFAULT_OVERRIDES``): lines applied before each request's own.

On a GPU box the experiment's own default is ``accelerator: cpu``, so ``{"overrides": []}`` would start a
100-epoch run on the CPU. The operator says what a plain request means here:

- ``""`` (the default): nothing;
- ``auto``: ``accelerator=gpu devices=1`` when the service has GPUs to hand out (``LABRUN_GPUS``, or what
  ``nvidia-smi`` lists), nothing otherwise (a cluster launcher places runs itself: set the lines there);
- anything else: the lines themselves, shell-quoted, e.g. ``accelerator=gpu devices=1 precision=16-mixed``.

They are the server's, not the request's: a request still wins for every key it sets (a default line whose
key the request sets is left out, so ``accelerator=cpu`` asks for the CPU), they never appear in run
names, and an Idempotency-Key compares what the request itself sent. Each run records the lines it got
(``RunRecord.default_overrides``): a rerun or a resume uses those, not the server's current ones.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from hydra.core.override_parser.types import Override

AUTO = "auto"
AUTO_GPU = ("accelerator=gpu", "devices=1")


def default_lines(setting: str, gpus: Sequence[int]) -> list[str]:
    """The lines ``LABRUN_DEFAULT_OVERRIDES`` stands for on a service with ``gpus``; ValueError naming
    what cannot be read."""
    text = setting.strip()
    if text.lower() == AUTO:
        return list(AUTO_GPU) if gpus else []
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ValueError(
            f"cannot split {text!r} into override lines ({exc}); quote each line whole"
        ) from None


def merged(
    defaults: Sequence[str], parsed_defaults: Sequence[Override], request: Sequence[Override]
) -> list[str]:
    """The default lines a request gets: those whose key (or group) the request does not set itself."""
    asked = {o.key_or_group for o in request}
    return [line for line, o in zip(defaults, parsed_defaults, strict=True) if o.key_or_group not in asked]
