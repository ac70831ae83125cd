"""Sweeps: Hydra's multirun syntax expanded into the runs it stands for, and where a sweep's runs live.

    model=fno,sfno training.lr=1e-3,1e-4 data=32x64 ──expand──> 4 override lists, in Hydra's order

``expand`` is Hydra's own basic sweeper (``BasicSweeper.split_arguments``: comma lists, ``range()``,
``choice()``, ``glob()``, the cartesian product in the order of the keys as first given, a key given twice
keeps its first place and its last value, ``x=[1,2]`` one list value), parsed by Hydra's own parser. The one
difference: ``glob()`` matches a config group's *options*, as the rest of labrun names them: the seed's
``*_globals`` building blocks in the group folders are not options (Hydra's glob would list them).

The count is checked before anything is listed (``range(0, 10**9)`` is refused with its size, not expanded).

``SweepSlot`` files one run of a sweep: it is named ``<index>_<run name>`` (the index zero-padded to the
sweep's size, so the folder lists in order) and lives in ``<YYYY-MM-DD>/<sweep name>/<that name>``.
``plan_run(..., sweep=slot)`` applies it; the trainer is handed the same place as ``output_dir_scheme=``.

Light on purpose (hydra + omegaconf): the service imports it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl  # private: pinned hydra-core==1.3.8
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import create_config_search_path
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, RangeSweep
from hydra.errors import HydraException
from omegaconf import DictConfig

from trainer import config, naming

__all__ = ["SweepError", "SweepSlot", "expand", "parse", "sweep_name", "swept_keys"]


class SweepError(ValueError):
    """The sweep cannot be expanded (a parse error, an unsupported sweep type, too many runs)."""


class _Options:
    """The part of Hydra's ConfigLoader that ``glob()`` asks: a group's options, ``*_globals`` left out."""

    def __init__(self, directory: Path) -> None:
        self._loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(directory)))

    def get_group_options(
        self,
        group_name: str,
        results_filter: ObjectType | None = ObjectType.CONFIG,
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        found = self._loader.get_group_options(group_name, results_filter, config_name, overrides)
        return [o for o in found if not o.endswith("_globals")]


@functools.lru_cache(maxsize=4)
def _parser(directory: Path) -> OverridesParser:
    return OverridesParser.create(config_loader=_Options(directory))  # type: ignore[arg-type]


def parse(lines: Sequence[str], directory: Path | None = None) -> list[Override]:
    """Hydra's parse of a sweep's lines, with ``glob()`` able to list group options."""
    try:
        return _parser((directory or config.conf_dir()).resolve()).parse_overrides(list(lines))
    except HydraException as exc:
        raise SweepError(f"cannot parse the sweep: {exc}; write key=value or key=a,b,c") from None


def count(overrides: Sequence[Override], limit: int) -> tuple[int, bool]:
    """How many runs the sweep makes, as Hydra would make them, and whether that is exact: a key's values
    are counted only up to a hundred times ``limit`` (a range of a billion values is not listed to find out
    that it is too big)."""
    cap = 100 * limit + 1
    per_key: dict[str, int] = {}
    for o in overrides:
        key = o.get_key_element()
        if not o.is_sweep_override():
            per_key[key] = 1
        elif o.is_discrete_sweep():
            value = o.value()  # a shuffled range is listed whole by sweep_iterator: count the range itself
            values = value.range() if isinstance(value, RangeSweep) else o.sweep_iterator()
            per_key[key] = sum(1 for _ in itertools.islice(values, cap))
        else:
            kind = o.value_type.name if o.value_type is not None else "these"  # set on every sweep override
            raise SweepError(
                f"override {o.input_line!r}: Hydra's basic sweeper does not support {kind} "
                "sweeps; list the values (a,b,c), or use range(...), choice(...) or glob(...)"
            )
    return math.prod(per_key.values()), all(n < cap for n in per_key.values())


def expand(overrides: Sequence[Override], limit: int) -> list[list[str]]:
    """Each run's override lines, in Hydra's order. Raises ``SweepError`` past ``limit`` runs (naming the
    count) or for a sweep that makes no run."""
    n, exact = count(overrides, limit)
    if n > limit:
        size = f"{n}" if exact else f"more than {limit}"
        raise SweepError(
            f"the sweep makes {size} runs; at most {limit} per sweep (LABRUN_MAX_SWEEP_RUNS): split it"
        )
    if n == 0:
        raise SweepError("the sweep makes no runs (a glob(...) that matches no option, or an empty range)")
    try:
        (runs,) = BasicSweeper.split_arguments(list(overrides), None)
    except HydraException as exc:
        raise SweepError(str(exc)) from None
    return runs


def swept_keys(overrides: Sequence[Override]) -> list[str]:
    """The keys the sweep varies (their lines are what tells its runs apart), in Hydra's order."""
    keys: dict[str, bool] = {}
    for o in overrides:
        keys[o.get_key_element()] = o.is_sweep_override()
    return [k for k, swept in keys.items() if swept]


def sweep_name(
    choices: Sequence[dict[str, str]], lines: Sequence[str], when: dt.datetime | None, suffix: str = ""
) -> str:
    """A sweep's name, in a run's style: ``<date>_<time>_<models><datas>_<the sweep's lines>``; where
    runs differ in model or data, their options are joined with ``+`` (``fno+sfno32x64``)."""

    def options(group: str) -> str:
        return "+".join(dict.fromkeys(c.get(group, "") for c in choices))

    return naming.make_run_name(options("model"), options("data"), lines, when=when, suffix=suffix)


@dataclass(frozen=True)
class SweepSlot:
    """Run ``index`` of a sweep of ``size`` runs named ``sweep``."""

    sweep: str
    index: int
    size: int

    def name(self, run_name: str) -> str:
        """``<index>_<run name>``, one safe file name of at most 255 bytes (a long one cut, with a hash)."""
        prefix = f"{self.index:0{len(str(max(self.size - 1, 0)))}d}_"
        name = prefix + run_name
        if len(name.encode()) > naming.NAME_MAX_BYTES:
            digest = "_" + hashlib.sha256(run_name.encode()).hexdigest()[: naming.HASH_CHARS]
            name = name[: naming.NAME_MAX_BYTES - len(digest)] + digest
        return naming.check_run_name(name)

    def run_dir(self, name: str) -> str:
        """``<YYYY-MM-DD>/<sweep name>/<name>``, relative to the log dir."""
        return f"{naming.run_subdir(self.sweep)}/{name}"

    def place(self, cfg: DictConfig, run_name: str) -> str:
        """Rename the composed run as this slot's and file it under the sweep's folder; the new name."""
        name = self.name(run_name)
        cfg.run_name = name
        cfg.output_dir_scheme = self.run_dir(name)
        return name
