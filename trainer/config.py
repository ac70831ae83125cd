"""Compose and resolve the experiment's config exactly once, the same way for the trainer and the service.

The trainer does not use ``@hydra.main``: it composes with Hydra's compose API through this module, so that
the service's validation and the trainer's run see the very same config, and so that a bad override is
reported before any run directory exists. Light on purpose (hydra + omegaconf): the service imports it.

Hydra keeps global state that is not thread-safe; every compose here runs under ``_HYDRA_LOCK``.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainer import naming, resolvers
from trainer import overrides as overrides_parser

DEFAULT_CONFIG_NAME = "neuraloperator"
_HYDRA_LOCK = threading.RLock()


class ConfigError(ValueError):
    """An override list that does not make a valid run config. The message names the key and the fix."""


def conf_dir() -> Path:
    """``conf/`` of this checkout or image; ``LABRUN_CONF_DIR`` points elsewhere (tests, deployments)."""
    configured = os.environ.get("LABRUN_CONF_DIR")
    return Path(configured).resolve() if configured else Path(__file__).resolve().parent.parent / "conf"


def config_names(directory: Path | None = None) -> list[str]:
    """Top-level configs a request may name (``neuraloperator``, ...)."""
    directory = directory or conf_dir()
    return sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "globals")


def compose_config(
    overrides: Sequence[str], config_name: str = DEFAULT_CONFIG_NAME, directory: Path | None = None
) -> DictConfig:
    """Hydra's compose, with the hydra node (``cfg.hydra.runtime.choices`` names the groups chosen)."""
    resolvers.register()
    directory = directory or conf_dir()
    with _HYDRA_LOCK:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(directory), version_base="1.3", job_name="train"):
                return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as exc:
            raise ConfigError(_clean(str(exc))) from exc
        finally:
            GlobalHydra.instance().clear()


def compose_checked(
    overrides: Sequence[str],
    config_name: str = DEFAULT_CONFIG_NAME,
    compose: Callable[[Sequence[str], str], DictConfig] = compose_config,
    base: Callable[[Sequence[str], str], DictConfig] | None = None,
) -> DictConfig:
    """``compose`` plus ``check_value_types`` against the defaults of the same group choices: what the
    trainer runs before it creates anything (two real composes, ~0.3 s). The service passes the cached
    versions from ``trainer/config_cache.py`` (same results, ~100x less time); ``base`` must not be changed
    by the caller."""
    cfg = compose(overrides, config_name)
    groups = set(cfg.hydra.runtime.choices)
    choices = [o.input_line for o in overrides_parser.parse(overrides) if o.key_or_group in groups]
    check_value_types((base or compose)(choices, config_name), overrides)
    return cfg


def assign_run_name(cfg: DictConfig, overrides: Sequence[str], **name_args: Any) -> str:
    """Fix ``cfg.run_name``: keep a caller's name (checked to be one safe file name) or make one."""
    if cfg.get("run_name"):
        try:
            name = naming.check_run_name(str(cfg.run_name))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    else:
        choices = cfg.hydra.runtime.choices
        name = naming.make_run_name(str(choices.model), str(choices.data), overrides, **name_args)
    with _open(cfg):
        cfg.run_name = name
    return name


def job_config(cfg: DictConfig, in_place: bool = False) -> DictConfig:
    """The run's config without the hydra node, every interpolation resolved (no side effects: labrun's
    conf/ uses no resolver that touches the disk). Errors name the key that failed to resolve.
    ``in_place`` skips a copy (~1.5 ms) when the caller owns ``cfg`` and no longer needs its hydra node."""
    job = cfg if in_place else copy.deepcopy(cfg)
    with _open(job):
        job.pop("hydra", None)
    try:
        OmegaConf.resolve(job)
        _check_missing(job)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        where = f"{key}: " if key else ""
        raise ConfigError(f"{where}{_clean(str(exc))}") from exc
    return job


def check_value_types(base: DictConfig, overrides: Sequence[str]) -> None:
    """Refuse ``training.lr=abc`` where the config has a number: OmegaConf has no schema for plain YAML, so
    an override's value is checked against the type of the value it replaces in ``base`` (the config
    composed with the same group choices). Additions (``+key=``) and null defaults accept any type."""
    for override in overrides_parser.parse(overrides):
        if override.is_delete() or override.is_add() or "/" in override.key_or_group:
            continue
        key = override.key_or_group
        try:
            old = OmegaConf.select(base, key, default=None, throw_on_missing=False)
        except OmegaConfBaseException:
            continue  # a default that cannot resolve yet (e.g. it needs run_name): nothing to compare with
        if old is None or _is_group(base, key) or key in _ANY_TYPE_KEYS:
            continue
        new = override.value()
        if not _same_kind(old, new):
            raise ConfigError(
                f"{override.input_line!r}: {key} expects {_kind(old)} (default {_show(old)}), "
                f"got {_show(new)}; write e.g. {key}={_show(old)}"
            )


MAX_NUM_WORKERS = 64  # a bound on processes per run: num_workers=10**6 would be a fork bomb on a shared box

# Lightning takes more than one type for these: devices=1 / devices=[0,1] / devices=auto,
# precision=32 / precision=bf16-mixed.
_ANY_TYPE_KEYS = frozenset({"devices", "precision", "strategy", "accelerator"})


def check_job(job: DictConfig) -> None:
    """Checks of the resolved job config that YAML cannot express; each names its key. The trainer and the
    service's validation both run them."""
    try:
        _check_values(job)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{exc} (check data.dims, data.num_examples, num_workers)") from exc


def _check_values(job: DictConfig) -> None:
    if not 0 <= int(job.num_workers) <= MAX_NUM_WORKERS:
        raise ConfigError(
            f"num_workers must lie between 0 and {MAX_NUM_WORKERS}, got {job.num_workers} "
            "(each worker is a process; the data are in memory, so 0 is the fastest)"
        )
    dims = list(job.data.dims)
    if len(dims) != 2 or any(int(d) < 4 for d in dims):
        raise ConfigError(f"data.dims must be [nlat, nlon] with both >= 4, got {dims}")
    if int(job.data.num_examples) < 2:
        raise ConfigError(f"data.num_examples must be >= 2, got {job.data.num_examples}")
    if not 0 < float(job.data.train_val_split) < 1:
        raise ConfigError(
            f"data.train_val_split must lie strictly between 0 and 1, got {job.data.train_val_split}"
        )
    n_train = int(int(job.data.num_examples) * float(job.data.train_val_split))  # as trainer/data.py splits
    if not 0 < n_train < int(job.data.num_examples):
        raise ConfigError(
            f"data.train_val_split={job.data.train_val_split} leaves no training or no validation samples "
            f"out of data.num_examples={job.data.num_examples}"
        )
    if str(job.model.name) not in ("fno", "sfno"):
        raise ConfigError(f"model.name must be fno or sfno, got {job.model.name!r}")
    if int(job.training.max_epochs) < 1:  # Lightning reads -1 as "forever": a GPU held until cancelled
        raise ConfigError(f"training.max_epochs must be >= 1, got {job.training.max_epochs}")
    if not 0 <= int(job.seed) < 2**32:  # Lightning silently replaces an out-of-range seed with 0
        raise ConfigError(f"seed must lie between 0 and 2**32-1, got {job.seed}")
    ids = list(job.devices) if OmegaConf.is_list(job.devices) else None
    if str(job.accelerator).lower() == "cpu" and ids and all(type(d) is int for d in ids):
        raise ConfigError(
            f"devices={ids} lists device ids, which the CPU does not have; "
            f"write devices={len(ids)} for that many CPU processes"
        )


def _is_group(base: DictConfig, key: str) -> bool:
    choices = base.hydra.runtime.choices if "hydra" in base else {}
    return key in choices


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | ListConfig):
        return "a list"
    return "a mapping"


def _same_kind(old: Any, new: Any) -> bool:
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, int):  # epochs, sizes, counts: 1e12 or 2.5 would fail later, inside Lightning
        return isinstance(new, int)
    if isinstance(old, float):
        return isinstance(new, int | float)
    if isinstance(old, str):
        return isinstance(new, str | int | float)  # strings may look like numbers ("64x128", "001")
    if isinstance(old, list | ListConfig):
        return isinstance(new, list)
    if isinstance(old, dict | DictConfig):
        return isinstance(new, dict)
    return True


def _show(value: Any) -> str:
    if isinstance(value, ListConfig | DictConfig):
        value = OmegaConf.to_container(value)
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value).replace(" ", "")


def _check_missing(job: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(job))
    if missing:
        raise ConfigError(
            f"missing mandatory value: {', '.join(missing)}; set it with an override, e.g. {missing[0]}=<value>"
        )


class _open:
    """Temporarily lift struct mode (Hydra composes in struct mode)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def __enter__(self) -> DictConfig:
        self.flag = OmegaConf.is_struct(self.cfg)
        OmegaConf.set_struct(self.cfg, False)
        return self.cfg

    def __exit__(self, *exc: object) -> None:
        OmegaConf.set_struct(self.cfg, self.flag)


def _clean(message: str) -> str:
    """Hydra's messages, minus the pointer to HYDRA_FULL_ERROR that means nothing to an API client."""
    # Also drop Hydra's "Config search path" listing: it names server paths, and says nothing to fix.
    message = message.split("Config search path")[0]
    # And the seed's shared files (model/model_globals.yaml, ...) from "Available options": they sit in the
    # group folders for the seed's layout, but are building blocks, not options anyone should pick.
    lines = [
        ln
        for ln in message.splitlines()
        if "HYDRA_FULL_ERROR" not in ln and not (ln.startswith("\t") and ln.strip().endswith("_globals"))
    ]
    return "\n".join(lines).strip()
