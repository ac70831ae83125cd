"""A fast path to the same composed config as ``trainer.config.compose_config``.

Why: a real Hydra compose costs ~100 ms on this config, nearly all of it building the defaults tree and
OmegaConf objects for the *group choices* (``model=``, ``data=``). Value overrides (``training.lr=0.01``)
are applied by Hydra afterwards, one by one, onto the merged config. So we compose once per distinct list
of group choices, keep that base, and for each request apply the request's value overrides to a copy of it
with Hydra's own routine (``ConfigLoaderImpl._apply_overrides_to_config``, the very code compose runs).

Exactness: the base is keyed by config name, config directory, a fingerprint of every file under it (an
edited YAML invalidates the cache) and the exact ordered input lines of the group overrides. Anything this
module cannot prove it handles exactly like compose (package overrides ``@``, deletions of groups, sweeps,
``hydra`` keys, dict-valued group overrides) goes through the real compose instead, which also produces
every error message, so errors are Hydra's own. ``tests/perf/test_config_cache.py`` checks equality of the
resolved job configs and of the errors against the real compose over a corpus of override lists.

The returned config carries only the part of the hydra node labrun reads (``runtime.choices``): the
request's own entries (``overrides.task``, ``job.override_dirname``) cost a third of a compose to write per
request and nothing read them (run names are made by ``trainer/naming.py``). The trainer itself always uses
the real compose.
"""

from __future__ import annotations

import functools
import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl  # private: pinned hydra-core==1.3.8
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf import base as omegaconf_base
from omegaconf.errors import OmegaConfBaseException

from trainer import config, schema
from trainer import overrides as overrides_parser

_MAX_BASES = 64

# (folder, file name, mtime in ns, size) of every file under conf/, sorted
_Fingerprint = tuple[tuple[str, str, int, int], ...]


def _memoize_interpolation_parsing() -> None:
    """Resolving a job parses each interpolation string (``${abspath:${log_dir}/...}``) with OmegaConf's
    ANTLR grammar, about ten per run, and they are the same strings for every request (a 256-run sweep
    parses them 2,560 times). Parsing is a pure function of its arguments, the trees are only read by the
    resolver, and an error is raised, never cached: memoizing it is exact. Only the service imports this
    module; the trainer resolves with OmegaConf as it comes."""
    namespace = vars(omegaconf_base)  # base.py calls parse() through its module globals, imported there
    if getattr(namespace["parse"], "cache_info", None) is None:
        namespace["parse"] = functools.lru_cache(maxsize=4096)(namespace["parse"])


_memoize_interpolation_parsing()


class ConfigCache:
    def __init__(self, directory: Path | None = None, max_bases: int = _MAX_BASES) -> None:
        self.directory = (directory or config.conf_dir()).resolve()
        self._bases: OrderedDict[tuple[str, tuple[str, ...]], bytes] = OrderedDict()
        self._max_bases = max_bases
        self._lock = threading.Lock()
        self._fingerprint: _Fingerprint = ()
        self._groups: frozenset[str] = frozenset()

    def compose(self, overrides: Sequence[str], config_name: str = config.DEFAULT_CONFIG_NAME) -> DictConfig:
        overrides = list(overrides)
        try:
            parsed = overrides_parser.parse(overrides)
        except HydraException:  # a parse error: the real compose words it
            return config.compose_config(overrides, config_name, self.directory)
        with self._lock:
            self._refresh()
            groups = self._groups
        split = _split(parsed, groups)
        if split is None:
            return config.compose_config(overrides, config_name, self.directory)
        group_lines, value_overrides = split
        # A deep copy of the base, 5x faster than copy.deepcopy (OmegaConf's own __deepcopy__ is Python).
        cfg: DictConfig = pickle.loads(self._pickled_base(config_name, group_lines))
        try:
            ConfigLoaderImpl._apply_overrides_to_config(value_overrides, cfg)
        except (HydraException, OmegaConfBaseException):
            # Hydra raised while applying a value: let the real compose raise the very same error.
            return config.compose_config(overrides, config_name, self.directory)
        schema.unknown_keys(cfg)  # as compose_config does after a compose: same check, same message
        return cfg

    def _pickled_base(self, config_name: str, group_lines: tuple[str, ...]) -> bytes:
        """The base of these group choices, pickled: unpickling makes each request's own deep copy of it."""
        key = (config_name, group_lines)
        with self._lock:
            hit = self._bases.get(key)
            if hit is not None:
                self._bases.move_to_end(key)
                return hit
        full = config.compose_config(list(group_lines), config_name, self.directory)
        entry = pickle.dumps(_slim(full), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._bases[key] = entry
            while len(self._bases) > self._max_bases:
                self._bases.popitem(last=False)
        return entry

    def _refresh(self) -> None:
        """Drop every base when any file under conf/ changed (a few stat calls per request)."""
        fingerprint, groups = _scan(self.directory)
        if fingerprint != self._fingerprint:
            self._bases.clear()
            self._fingerprint, self._groups = fingerprint, groups


def _scan(directory: Path) -> tuple[_Fingerprint, frozenset[str]]:
    files: list[tuple[str, str, int, int]] = []
    groups: set[str] = set()
    for root, dirs, names in os.walk(directory):
        rel = os.path.relpath(root, directory)
        if rel != ".":
            groups.add(rel.replace(os.sep, "/"))
        for name in names:
            st = os.stat(os.path.join(root, name))
            files.append((rel, name, st.st_mtime_ns, st.st_size))
        dirs.sort()
    return tuple(sorted(files)), frozenset(groups)


def _split(parsed: list[Override], groups: frozenset[str]) -> tuple[tuple[str, ...], list[Override]] | None:
    """(group override lines, value overrides), or None when only the real compose is exact."""
    group_lines: list[str] = []
    values: list[Override] = []
    for o in parsed:
        key = o.key_or_group
        if o.is_sweep_override() or o.package is not None or key.startswith("hydra"):
            return None
        if key in groups:
            line = o.input_line
            if o.is_delete() or o.is_force_add() or not isinstance(o.value(), str) or line is None:
                return None
            group_lines.append(line)
        else:
            values.append(o)
    return tuple(group_lines), values


def _slim(full: DictConfig) -> DictConfig:
    """The composed config with a hydra node cut to what labrun reads; copying it is then cheap."""
    slim_hydra = {"runtime": {"choices": OmegaConf.to_container(full.hydra.runtime.choices)}}
    with open_dict(full):
        full.hydra = slim_hydra
    return full


_default: ConfigCache | None = None
_default_lock = threading.Lock()


def _cache() -> ConfigCache:
    global _default
    with _default_lock:
        if _default is None or _default.directory != config.conf_dir().resolve():
            _default = ConfigCache()
        return _default


def compose_cached(overrides: Sequence[str], config_name: str = config.DEFAULT_CONFIG_NAME) -> DictConfig:
    """Module-level cache over ``conf_dir()``: same result as ``config.compose_config``, much faster."""
    return _cache().compose(overrides, config_name)
