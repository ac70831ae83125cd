"""Turn a request's override list into a validated run, or refuse it with a message that says how to fix it.

Two stages, both before anything is stored:
1. Safety (``check_overrides``): a request can never reach beyond its run. Parsed with Hydra's own parser;
   refused: sweeps, interpolations anywhere (resolvers read the environment and files), Hydra's own keys,
   instantiate-style ``_keys_``, keys that place or name the run, package overrides, group values that are
   not plain option names, and oversized lists.
2. Composition (``RunValidator.validate``): compose and resolve exactly as the trainer will (same
   ``trainer.config`` functions), check value types, fix the run's name, derive the GPU need.
Validation is free of side effects: it creates no directory and writes no file.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig

from app.core.config import Settings
from app.errors import InvalidRun
from trainer import config as trainer_config
from trainer import naming
from trainer import overrides as overrides_parser

# Keys that decide where a run writes or what it is called: the service sets them, a request may not.
PLACEMENT_KEYS = frozenset(
    {
        "run_name",
        "log_dir",
        "output_dir",
        "output_dir_scheme",
        "ckpt_dir",
        "wandb_dir",
        "wandb_run_name",
        "paths",
        "data_root",
    }
)
_RESERVED_KEY = re.compile(r"^_.*_$")  # _target_, _partial_, _args_, _recursive_, _convert_, _self_, ...
_OPTION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ValidatedRun:
    config_name: str
    overrides: list[str]  # as the client sent them
    name: str
    run_dir: str  # relative to the output dir
    gpu_need: int
    seed: Any
    model: str
    data: str
    when: dt.datetime
    debug: bool = False

    def renamed(self, suffix: str) -> ValidatedRun:
        """The same run under a distinct name (``..._r2``): identical requests in the same second."""
        name = naming.make_run_name(self.model, self.data, self.overrides, when=self.when, suffix=suffix)
        return replace(self, name=name, run_dir=_run_dir(name, self.debug))


def check_overrides(overrides: Sequence[str], settings: Settings) -> list[Override]:
    """Refuse whatever could reach beyond the run; returns the parsed overrides."""
    if len(overrides) > settings.max_overrides:
        raise InvalidRun(f"too many overrides ({len(overrides)}); at most {settings.max_overrides} per run")
    for line in overrides:
        if not line.isascii():
            try:
                line.encode()
            except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800"): no file or log could hold it
                raise InvalidRun(
                    f"override {line!r} is not valid text (unpaired surrogate); send UTF-8"
                ) from None
    total = sum(len(o.encode()) for o in overrides)
    if total > settings.max_overrides_bytes:
        raise InvalidRun(f"overrides total {total} bytes; at most {settings.max_overrides_bytes} per run")
    parsed = []
    for line in overrides:
        if len(line) > settings.max_override_chars:
            raise InvalidRun(
                f"override {line[:40]!r}... is {len(line)} characters; at most {settings.max_override_chars}"
            )
        if _CONTROL.search(line):
            raise InvalidRun(f"override {line!r} contains control characters; remove them")
        if "${" in line:
            raise _interpolation(line)
        try:
            override = overrides_parser.parse_one(line)
        except HydraException as exc:
            raise InvalidRun(f"override {line!r} cannot be parsed: {exc}; write key=value") from None
        _check_one(override)
        parsed.append(override)
    return parsed


def _check_one(o: Override) -> None:
    line, key = o.input_line, o.key_or_group
    if o.is_sweep_override():
        raise InvalidRun(f"override {line!r} is a sweep; a request is one run: submit one request per value")
    if o.package is not None:
        raise InvalidRun(
            f"override {line!r} sets a package (@); package overrides are not allowed: drop the @ part"
        )
    segments = re.split(r"[./]", key)
    if "" in segments:
        raise InvalidRun(f"override {line!r}: {key!r} is not a valid key; write e.g. training.lr=0.01")
    if segments[0].lower().startswith("hydra"):
        raise InvalidRun(f"override {line!r} changes Hydra itself; hydra.* keys and groups are not allowed")
    if segments[0] in PLACEMENT_KEYS or (len(segments) > 1 and segments[-1] in PLACEMENT_KEYS):
        raise InvalidRun(
            f"override {line!r} sets {key!r}, which places or names the run; the service sets it: remove it"
        )
    for segment in segments:
        _check_key(segment, line)
    is_group = (trainer_config.conf_dir() / key).is_dir()
    if o.is_delete():
        if is_group:  # the run's name and the trainer need one option of every group
            raise InvalidRun(
                f"override {line!r} removes the config group {key!r}; a run needs one of its options: "
                f"choose one instead, e.g. {key}=<option>"
            )
        return
    value = o.value()
    _check_value(value, line)
    if "/" in key and not is_group:
        raise InvalidRun(f"override {line!r}: {key!r} is not a config group of this experiment")
    # Checked before composing: Hydra would look a group option up as a file path (data=../../x).
    if is_group and not (isinstance(value, str) and _OPTION_NAME.match(value) and ".." not in value):
        raise InvalidRun(f"override {line!r}: a config group takes the plain name of one of its options")


def _check_key(key: Any, line: str) -> None:
    text = str(key)
    if _RESERVED_KEY.match(text):
        raise InvalidRun(
            f"override {line!r} uses the reserved key {text!r} (object instantiation); such keys are not allowed"
        )
    if "${" in text:
        raise _interpolation(line)


def _check_value(value: Any, line: str) -> None:
    if isinstance(value, str):
        if "${" in value:
            raise _interpolation(line)
    elif isinstance(value, dict | DictConfig):
        for k, v in value.items():
            _check_key(k, line)
            _check_value(v, line)
    elif isinstance(value, list | tuple | ListConfig):
        for v in value:
            _check_value(v, line)


def _interpolation(line: str) -> InvalidRun:
    return InvalidRun(
        f"override {line!r} contains an interpolation (${{...}}); interpolations and resolvers are not "
        "allowed in requests: write the literal value"
    )


def _run_dir(name: str, debug: bool) -> str:
    return naming.DEBUG_DIR if debug else naming.run_subdir(name)


class RunValidator:
    """Composes requests the way the trainer will; one instance per service."""

    def __init__(
        self,
        settings: Settings,
        gpu_inventory: Sequence[int],
        compose: Callable[[Sequence[str], str], DictConfig] = trainer_config.compose_config,
        base: Callable[[Sequence[str], str], DictConfig] | None = None,
    ) -> None:
        """``compose``/``base``: a fresh Hydra compose by default; the service passes the cached ones
        (``trainer/config_cache.py``), tested to give the same answers."""
        self.settings = settings
        self.gpu_count = len(gpu_inventory)
        self._compose = compose
        self._base = base or compose

    def validate(self, overrides: Sequence[str], config_name: str | None) -> ValidatedRun:
        config_name = config_name or trainer_config.DEFAULT_CONFIG_NAME
        names = trainer_config.config_names()
        if config_name not in names:
            raise InvalidRun(f"unknown config_name {config_name!r}; available: {', '.join(names)}")
        overrides = list(overrides)
        check_overrides(overrides, self.settings)
        log_dir = f"log_dir={hydra_quote(str(self.settings.output_dir))}"
        try:
            cfg = trainer_config.compose_checked(
                [*overrides, log_dir], config_name, compose=self._compose, base=self._base
            )
            when = dt.datetime.now()
            name = trainer_config.assign_run_name(cfg, overrides, when=when)
            choices = cfg.hydra.runtime.choices
            model, data = str(choices.model), str(choices.data)
            job = trainer_config.job_config(cfg, in_place=True)  # cfg is this request's own copy
            trainer_config.check_job(job)  # the trainer's own checks of the resolved config
        except trainer_config.ConfigError as exc:
            raise InvalidRun(str(exc)) from None
        output_dir = Path(str(job.output_dir))
        if not output_dir.is_relative_to(
            self.settings.output_dir
        ):  # cannot happen with the keys refused above
            raise InvalidRun("the run's directory would lie outside the output directory")
        debug = job.get("debug") is True
        return ValidatedRun(
            config_name=config_name,
            overrides=overrides,
            name=name,
            run_dir=_run_dir(name, debug),
            gpu_need=self._gpu_need(job),
            seed=_plain(job.get("seed")),
            model=model,
            data=data,
            when=when,
            debug=debug,
        )

    def _gpu_need(self, job: DictConfig) -> int:
        accelerator = str(job.get("accelerator", "cpu")).lower()
        devices = job.get("devices", 1)
        if accelerator not in ("cpu", "gpu", "cuda", "auto"):
            raise InvalidRun(f"accelerator={accelerator} is not available here; use cpu, gpu, cuda or auto")
        if isinstance(devices, ListConfig | list):
            count = len(devices)
            if not all(isinstance(d, int) and not isinstance(d, bool) for d in devices):
                raise InvalidRun(
                    f"devices={list(devices)}: device ids are integers; ask for a count instead, e.g. "
                    f"devices={count}"
                )
            ids = list(devices)
            if accelerator != "cpu" and sorted(ids) != list(range(count)):
                raise InvalidRun(
                    f"devices={ids}: device ids index the GPUs the service assigns to the run (0..n-1); "
                    f"ask for a count instead, e.g. devices={count}"
                )
        elif isinstance(devices, str) and devices.strip().lower() == "auto":
            count = 1
        else:
            try:
                if isinstance(devices, float | bool):
                    raise TypeError(devices)  # int() would quietly turn 1.5 into 1; Lightning refuses it
                count = int(devices)
            except (TypeError, ValueError):
                raise InvalidRun(
                    f"devices={devices!r} is not a number of devices; write e.g. devices=1"
                ) from None
        if count < 1:
            raise InvalidRun(
                f"devices={count}: ask for a positive number of devices (all GPUs is not allowed)"
            )
        wants_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and self.gpu_count > 0)
        if not wants_gpu:
            cores = os.cpu_count() or 1
            if count > cores:  # each CPU "device" is a training process of its own
                raise InvalidRun(
                    f"devices={count} on the CPU starts {count} training processes, but this server has "
                    f"{cores} cores; ask for at most devices={cores}"
                )
            return 0
        if count > self.gpu_count:
            raise InvalidRun(
                f"the run needs {count} GPU(s) (accelerator={accelerator}, devices={count}) but this server has "
                f"{self.gpu_count}; ask for at most {self.gpu_count}"
                + (" or use accelerator=cpu" if not self.gpu_count else "")
            )
        return count


def hydra_quote(value: str) -> str:
    """A path as one Hydra override value, whatever characters it holds."""
    if re.fullmatch(r"[A-Za-z0-9_./-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _plain(value: Any) -> Any:
    return value if isinstance(value, int | float | str | bool) or value is None else str(value)
