"""Runs side by side (``GET /runs/compare``, ``labrun diff``): only what differs between them.

- overrides: what each run was asked (its recorded server defaults, then its own lines), compared as values
  (``app/override_values.py``: ``1e-4`` and ``0.0001`` are no difference);
- config: the resolved config each run ran with (``<run dir>/.hydra/config.yaml``, written by the trainer),
  flattened to dotted keys (``training.lr``); a run without that file (it never started, its files were
  deleted) has none, and is left out of this comparison;
- metrics (the last of each, from progress.json) and durations are given for every run, differing or not.

Pure: the caller reads the records and the files; ``differences`` takes plain dicts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.override_values import asked
from app.runpaths import open_run_file

MAX_CONFIG_BYTES = 1 << 20  # a resolved config is a few KiB; a bigger file is not one
MIN_RUNS, MAX_RUNS = 2, 20


@dataclass(frozen=True)
class Difference:
    key: str
    values: list[Any]  # one per run, in the order asked; None where ``present`` is False
    present: list[bool]


def differences(per_run: Sequence[Mapping[str, Any]]) -> list[Difference]:
    """The keys whose values are not the same in every run (absent counts as a value), sorted by key."""
    keys = sorted({k for values in per_run for k in values})
    found = []
    for key in keys:
        present = [key in values for values in per_run]
        values = [values.get(key) for values in per_run]
        if not all(present) or any(_canonical(v) != _canonical(values[0]) for v in values[1:]):
            found.append(Difference(key, values, present))
    return found


def asked_values(overrides: Sequence[str], defaults: Sequence[str] | None) -> dict[str, Any]:
    """A run's overrides as {key: value}, values as the grammar reads them."""
    return {key: json.loads(value) for key, value in asked(overrides, defaults)}


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {"training.lr": 0.001, ...}; lists are leaves (compared whole)."""
    if not isinstance(config, Mapping):
        return {prefix: config} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def read_config(output_dir: str | os.PathLike[str], run_dir: str) -> dict[str, Any] | None:
    """The resolved config a run ran with, flattened; None when the run has none (or it cannot be read)."""
    import yaml  # type: ignore[import-untyped]  # (omegaconf's dependency) only when a comparison asks

    path = os.path.join(output_dir, run_dir, ".hydra", "config.yaml")
    try:
        with open_run_file(path) as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            return None
        config = yaml.safe_load(data)
    except (OSError, yaml.YAMLError):
        return None
    return flatten(config) if isinstance(config, Mapping) else None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
