"""Compose and resolve the experiment's config exactly once, the same way for the trainer and the service.

The trainer does not use ``@hydra.main``: it composes with Hydra's compose API through this module, so that
the service's validation and the trainer's run see the very same config, and so that a bad override is
reported before any run directory exists. Light on purpose (hydra + omegaconf): the service imports it.

The config's schema (types, allowed values, descriptions) is ``trainer/schema.py``: composing refuses wrong
types and unknown keys, ``check_job`` the values outside their range. ``ConfigError`` is defined there.

Hydra keeps global state that is not thread-safe; every compose here runs under ``_HYDRA_LOCK``.
"""

from __future__ import annotations

import copy
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    ConfigTypeError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from trainer import naming, resolvers, schema
from trainer.schema import ConfigError

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "ConfigError",
    "assign_run_name",
    "check_job",
    "compose_config",
    "conf_dir",
    "config_names",
    "job_config",
    "resolve_job",
]

DEFAULT_CONFIG_NAME = "neuraloperator"
# A deployment setting, read alike by the service (to validate requests) and by the trainer (to run them),
# never set per run: so not one of the run's variables (trainer/runenv.py). Both must see the same conf/.
CONF_DIR_ENV = "LABRUN_CONF_DIR"
_HYDRA_LOCK = threading.RLock()


def conf_dir() -> Path:
    """``conf/`` of this checkout or image; ``LABRUN_CONF_DIR`` points elsewhere (tests, deployments)."""
    configured = os.environ.get(CONF_DIR_ENV)
    return Path(configured).resolve() if configured else Path(__file__).resolve().parent.parent / "conf"


def config_names(directory: Path | None = None) -> list[str]:
    """Top-level configs a request may name (``neuraloperator``, ...)."""
    directory = directory or conf_dir()
    return sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "globals")


def group_options(group: str, directory: Path | None = None) -> list[str]:
    """The options a request may pick for a config group (the seed's ``*_globals`` building blocks left out)."""
    directory = directory or conf_dir()
    return sorted(p.stem for p in (directory / group).glob("*.yaml") if not p.stem.endswith("_globals"))


def compose_config(
    overrides: Sequence[str], config_name: str = DEFAULT_CONFIG_NAME, directory: Path | None = None
) -> DictConfig:
    """Hydra's compose, with the hydra node (``cfg.hydra.runtime.choices`` names the groups chosen).
    Refuses what the schema refuses: wrong types, unknown keys (also those added with ``+``), removals."""
    resolvers.register()
    schema.register()
    directory = directory or conf_dir()
    with _HYDRA_LOCK:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(directory), version_base="1.3", job_name="train"):
                cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as exc:
            raise ConfigError(explain(exc)) from exc
        finally:
            GlobalHydra.instance().clear()
    schema.unknown_keys(cfg)
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
    cfg.run_name = name  # a schema key: no need to lift struct mode
    return name


def job_config(cfg: DictConfig, in_place: bool = False) -> DictConfig:
    """The run's config without the hydra node, every interpolation resolved (no side effects: labrun's
    conf/ uses no resolver that touches the disk). Errors name the key that failed to resolve.
    ``in_place`` skips a copy (~1.5 ms) when the caller owns ``cfg`` and no longer needs its hydra node."""
    return resolve_job(cfg, in_place)[0]


def resolve_job(cfg: DictConfig, in_place: bool = False) -> tuple[DictConfig, dict[str, Any]]:
    """``job_config``, and the job as plain values: ``check_job`` and the estimate read those ~10x faster
    than the config, and making them is how a missing value is found (``plan_run`` takes both)."""
    job = cfg if in_place else copy.deepcopy(cfg)
    with open_dict(job):
        job.pop("hydra", None)
    try:
        OmegaConf.resolve(job)
        values = _plain_values(job)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        where = f"{key}: " if key else ""
        raise ConfigError(f"{where}{_clean(str(exc))}") from exc
    return job, values


def check_job(job: DictConfig | dict[str, Any]) -> None:
    """The schema's value rules (ranges, choices, patterns) and its rules over several keys, on the resolved
    job config or its plain values; each message names the key, the value and what is allowed. The trainer
    and the service's validation both run them."""
    schema.check(job)


def explain(exc: Exception) -> str:
    """Hydra's composition error as a message that names the override, the key and the fix. Hydra words
    the first line ("Error merging override training.lr=abc"); OmegaConf's cause knows the key."""
    cause = exc.__cause__
    key = getattr(cause, "full_key", None)
    message = _clean(str(exc))
    match = re.match(r"(?:Error merging override|Could not override) '?([^'\n]+)'?", message)
    if not key or not isinstance(cause, OmegaConfBaseException) or not match:
        return message
    line = match.group(1).rstrip(".")
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and "not in" in str(cause):
        return schema.unknown_key_message(key)
    if isinstance(cause, ConfigTypeError) and "deletion" in str(cause):
        return f"{line!r}: {key} cannot be removed: every run needs it; set it instead, e.g. {key}=<value>"
    spec = schema.field_of(key)
    if isinstance(cause, ValidationError) and spec is not None:
        value = line.split("=", 1)[1] if "=" in line else "?"
        limits = schema.allowed(spec.metadata)
        return (
            f"{line!r}: {key} expects {schema.kind(spec.type, spec.metadata)}"
            f"{f' ({limits})' if limits else ''}, got {value}"
        )
    return message


def _plain_values(job: DictConfig) -> dict[str, Any]:
    """The resolved job as plain values, or a ConfigError naming every missing mandatory value. One pass
    that stops at a missing value; only then are they all listed (``missing_keys`` costs 3x the pass)."""
    try:
        return OmegaConf.to_container(job, throw_on_missing=True)  # type: ignore[return-value]
    except MissingMandatoryValue:
        missing = sorted(OmegaConf.missing_keys(job))
        if not missing:  # pragma: no cover - to_container and missing_keys agree on what is missing
            raise
        raise ConfigError(
            f"missing mandatory value: {', '.join(missing)}; set it with an override, e.g. {missing[0]}=<value>"
        ) from None


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
