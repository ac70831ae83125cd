"""The config's custom resolvers (the seed's set, plus ``isdist`` and ``run_subdir``, minus the seed's
``mkdirs``: resolving a config must never touch the disk, and the service resolves configs to validate them).

This module imports nothing heavier than omegaconf: the service imports it to validate configs without
importing torch. ``register()`` is idempotent, so both the trainer and the service may call it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import OmegaConf

from trainer.naming import DEBUG_DIR, run_subdir


def output_dir(scheme: str, debug: Any) -> str:
    """The seed's switch: real runs follow the scheme (``<date>/<name>``); a debug run goes to
    ``debug/<name>`` (the seed's single ``debug`` folder, shared and wiped by every debug run, let two debug
    runs at once destroy each other's files)."""
    if not isinstance(debug, bool):
        raise ValueError(f"debug must be true or false, got {debug!r}")
    return f"{DEBUG_DIR}/{scheme.rsplit('/', 1)[-1]}" if debug else scheme


def int_divide(numerator: Any, denominator: Any) -> int:
    """Exact integer division; a split that does not divide is an error, as in the seed."""
    a, b = int(numerator), int(denominator)
    if b <= 0:
        raise ValueError(f"cannot divide by {b}: num_devices * batch_size must be positive")
    if a % b:
        raise ValueError(
            f"training.effective_batch_size={a} is not divisible by num_devices*batch_size={b}; "
            f"choose batch_size and devices so that their product divides {a}"
        )
    return a // b


def length(value: Any) -> int:
    """``devices: 2`` means two devices, ``devices: [0, 3]`` means those two."""
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        if isinstance(value, str) and value == "auto":
            return 1
        return int(value)
    if isinstance(value, Sequence) or OmegaConf.is_list(value):
        return len(value)
    raise ValueError(f"devices must be a number or a list of device ids, got {value!r}")


def mult(a: float, b: float) -> float:
    return a * b


def abspath(path: str) -> str:
    return os.path.abspath(path)


def prepend_underscore(text: str) -> str:
    return "" if len(text) == 0 else "_" + text


def isdist(devices: Any) -> bool:
    return length(devices) > 1


RESOLVERS: dict[str, Callable[..., Any]] = {
    "output_dir": output_dir,
    "int_divide": int_divide,
    "len": length,
    "mult": mult,
    "abspath": abspath,
    "prepend_underscore": prepend_underscore,
    "isdist": isdist,
    "run_subdir": run_subdir,
}


def register() -> None:
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
