"""One run plan: the steps that turn an override list into a run, for the service and the CLI alike.

    overrides ──compose + type check──> config ──fix the name──> run_name ──resolve──> job ──check──> RunPlan

``plan_run`` is the only place these steps are written; ``python -m trainer`` calls it before it creates
anything, and the service calls it (with the cached compose of ``trainer/config_cache.py``) to validate a
request. ``claim`` takes the plan's name, or the next free one (``<name>_r2``, ...) when the name was
generated and another run of the same second has it. ``trainer_args`` is the trainer's command line for a
planned run, so the service never spells out the trainer's flags.

Light on purpose (hydra + omegaconf): the service imports it.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from trainer import config, estimate
from trainer.naming import NameInUse
from trainer.resolvers import length as device_count
from trainer.schema import GPU_ACCELERATORS
from trainer.sweep import SweepSlot

__all__ = [
    "DeviceLimits",
    "NameInUse",
    "RunPlan",
    "claim",
    "first_free",
    "plan_run",
    "rename_suffix",
    "trainer_args",
]

T = TypeVar("T")
MAX_RENAMES = 10_000
ComposeFn = Callable[[Sequence[str], str], DictConfig]


@dataclass(frozen=True)
class DeviceLimits:
    """What the machine that will run the plan offers. ``gpus=None``: the engine places runs itself (a
    cluster), so the GPU count is not checked here. ``cpu_processes``: most CPU "devices" (each a training
    process) one run may ask for. ``max_data_bytes``/``max_params``: the most data (in memory) and model
    parameters one run may have (``trainer/estimate.py``)."""

    gpus: int | None
    cpu_processes: int | None = None
    max_data_bytes: int = estimate.DEFAULT_MAX_DATA_BYTES
    max_params: int = estimate.DEFAULT_MAX_PARAMS


@dataclass(frozen=True)
class RunPlan:
    config_name: str
    overrides: list[str]  # as given (without log_dir=/run_name= added by the caller)
    name: str  # the run's name: its directory name and WandB run name
    run_dir: str  # relative to the log dir: <YYYY-MM-DD>/<name>, or debug/<name>
    job: DictConfig  # the resolved config the trainer runs
    hydra: DictConfig  # Hydra's node (slim when composed by the service's cache)
    choices: dict[str, str]  # config group -> option (model, data, training, paths)
    gpu_need: int  # GPUs the run needs (0: a CPU run)
    resources: dict[str, int]  # the estimate: data_bytes, param_count, ... (trainer/estimate.py)
    seed: Any
    when: dt.datetime  # the time in the generated name
    named_by_caller: bool  # run_name was given: never renamed
    config: DictConfig | None = field(default=None, repr=False)  # the unresolved compose, if kept
    # A server's default overrides, composed before ``overrides`` but not part of the name (app/defaults.py)
    defaults: list[str] = field(default_factory=list)
    _replan: Callable[[str], RunPlan] | None = field(default=None, repr=False, compare=False)

    @property
    def debug(self) -> bool:
        return self.job.get("debug") is True

    @property
    def output_dir(self) -> Path:
        return Path(str(self.job.output_dir))

    def renamed(self, attempt: int) -> RunPlan:
        """The same run under the name ``<name>_r<attempt>`` (same second, same overrides)."""
        if self.named_by_caller or self._replan is None:
            raise NameInUse(f"run name {self.name!r} is taken: pick another run_name")
        return self._replan(rename_suffix(attempt))


def plan_run(
    overrides: Sequence[str],
    config_name: str = config.DEFAULT_CONFIG_NAME,
    *,
    log_dir: str | os.PathLike[str] | None = None,
    run_name: str | None = None,
    limits: DeviceLimits | None = None,
    compose: ComposeFn = config.compose_config,
    keep_config: bool = False,
    when: dt.datetime | None = None,
    suffix: str = "",
    sweep: SweepSlot | None = None,
    defaults: Sequence[str] = (),
) -> RunPlan:
    """Compose, check, name, resolve and check again; raises ``config.ConfigError`` naming the key.

    ``log_dir``/``run_name``: set by the caller (the service), appended to the overrides given.
    ``limits``: check the device request against a machine (None: only its form is checked).
    ``compose``: a fresh Hydra compose by default; the service passes the cached one
    (``trainer.config_cache.compose_cached``: the same results, ~100x faster).
    ``keep_config``: keep the unresolved compose in ``plan.config`` (``--cfg hydra|all`` prints it).
    ``sweep``: a run of a sweep: named ``<index>_<name>`` and filed in the sweep's folder (``trainer/sweep.py``).
    ``defaults``: a server's lines composed before ``overrides``; the name is made from ``overrides`` alone.
    """
    overrides, defaults = list(overrides), list(defaults)
    when = when or dt.datetime.now()
    extra = [f"log_dir={hydra_quote(str(log_dir))}"] if log_dir is not None else []
    cfg = compose([*defaults, *overrides, *extra], config_name)
    name, named_by_caller = _name(cfg, overrides, run_name, when, suffix, sweep)
    kept = copy.deepcopy(cfg) if keep_config else None
    with open_dict(cfg):
        hydra = cfg.pop("hydra")
    job, values = config.resolve_job(cfg, in_place=True)  # cfg is this plan's own copy
    config.check_job(values)  # plain values: the same rules, read ~10x faster than from the config
    bounds = limits or DeviceLimits(gpus=None)
    # The same request under the next name, should this one be taken (``RunPlan.renamed``).
    again = functools.partial(
        plan_run,
        overrides,
        config_name,
        log_dir=log_dir,
        run_name=run_name,
        limits=limits,
        compose=compose,
        keep_config=keep_config,
        when=when,
        sweep=sweep,
        defaults=defaults,
    )
    return RunPlan(
        config_name=config_name,
        overrides=overrides,
        name=name,
        run_dir=_run_dir(job),
        job=job,
        hydra=hydra,
        choices={str(k): str(v) for k, v in hydra.runtime.choices.items() if not str(k).startswith("hydra")},
        gpu_need=gpu_need(job, limits),
        resources=estimate.check_resources(values, bounds.max_data_bytes, bounds.max_params),
        seed=_plain(job.get("seed")),
        when=when,
        named_by_caller=named_by_caller,
        config=kept,
        defaults=defaults,
        _replan=lambda next_suffix: again(suffix=next_suffix),
    )


def _name(
    cfg: DictConfig,
    overrides: list[str],
    run_name: str | None,
    when: dt.datetime,
    suffix: str,
    sweep: SweepSlot | None,
) -> tuple[str, bool]:
    """The run's name (the caller's, else generated; a sweep's run: ``<index>_<name>``), and whether the
    caller chose it (then it is never changed)."""
    if run_name is not None:
        with open_dict(cfg):
            cfg.run_name = run_name
    named_by_caller = bool(cfg.get("run_name"))
    name = config.assign_run_name(cfg, overrides, when=when, suffix=suffix)
    if sweep is not None:
        name = sweep.place(cfg, name)
    return name, named_by_caller


def _run_dir(job: DictConfig) -> str:
    """The run's directory, relative to its log_dir (never outside it)."""
    log_root = os.path.abspath(str(job.log_dir))
    run_dir = os.path.relpath(str(job.output_dir), log_root)
    if run_dir.startswith(".."):  # cannot happen with conf/'s layout; a plan never points outside log_dir
        raise config.ConfigError(f"the run directory {job.output_dir} lies outside log_dir {log_root}")
    return run_dir


def rename_suffix(attempt: int) -> str:
    """The suffix of a name's ``attempt``-th try: none for the first, then ``r2``, ``r3``, ..."""
    return f"r{attempt}" if attempt > 1 else ""


def first_free(take: Callable[[int], T], what: str, attempts: int = MAX_RENAMES) -> T:
    """``take(attempt)`` for attempt 1, 2, ... until it does not raise ``NameInUse``; raises ``NameInUse``
    naming ``what`` when every try is taken. The one rename loop: the trainer's ``claim``, the service's
    runs and sweeps."""
    for attempt in range(1, attempts + 1):
        try:
            return take(attempt)
        except NameInUse:
            continue
    raise NameInUse(f"no free {what} after {attempts} tries; try again")


def claim(plan: RunPlan, take: Callable[[RunPlan], T], attempts: int = MAX_RENAMES) -> tuple[RunPlan, T]:
    """``take(plan)`` (create its directory, store it, ...), which raises ``NameInUse`` when the name is taken;
    a generated name is then retried as ``<name>_r2``, ``_r3``, ... Returns the plan taken and what ``take``
    returned. A name the caller chose is never changed: ``NameInUse`` propagates."""

    if plan.named_by_caller:
        return plan, take(plan)

    def attempt(n: int) -> tuple[RunPlan, T]:
        candidate = plan if n == 1 else plan.renamed(n)
        return candidate, take(candidate)

    return first_free(attempt, f"run name for {plan.name}", attempts)


def trainer_args(
    name: str,
    overrides: Sequence[str],
    config_name: str,
    log_dir: str | os.PathLike[str],
    wandb_entity: str | None = None,
    run_dir: str | None = None,
) -> list[str]:
    """The arguments after ``python -m trainer`` that run a planned run: its overrides, its fixed name, where
    it writes and (a server's choice) the WandB entity it logs to. ``run_dir`` (relative to ``log_dir``):
    a run filed elsewhere than ``<YYYY-MM-DD>/<name>`` (a sweep's run, ``trainer/sweep.py``)."""
    args = [*overrides, f"run_name={hydra_quote(name)}", f"log_dir={hydra_quote(str(log_dir))}"]
    if run_dir is not None:
        args.append(f"output_dir_scheme={hydra_quote(run_dir)}")
    if wandb_entity:
        args.append(f"wandb_entity={hydra_quote(wandb_entity)}")
    if config_name != config.DEFAULT_CONFIG_NAME:
        args = ["--config-name", config_name, *args]
    return args


def hydra_quote(value: str) -> str:
    """A path as one Hydra override value, whatever characters it holds."""
    if re.fullmatch(r"[A-Za-z0-9_./-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --- devices --------------------------------------------------------------------------------------------


def gpu_need(job: DictConfig, limits: DeviceLimits | None) -> int:
    """How many GPUs the run asks for (0: a CPU run), checked against ``limits`` when given. The accelerator
    is one of ``schema.ACCELERATORS``: ``check_job`` refused any other before."""
    accelerator = str(job.get("accelerator", "cpu"))
    devices = job.get("devices", 1)
    count = _count(devices)
    if count < 1:
        raise config.ConfigError(
            f"devices={count}: ask for a positive number of devices (all GPUs is not allowed)"
        )
    if limits is None:
        return count if accelerator in GPU_ACCELERATORS else 0
    if (
        isinstance(devices, ListConfig | list)
        and accelerator != "cpu"
        and sorted(devices) != list(range(count))
    ):
        raise config.ConfigError(
            f"devices={list(devices)}: device ids index the GPUs the service assigns to the run (0..n-1); "
            f"ask for a count instead, e.g. devices={count}"
        )
    gpus = limits.gpus
    wants_gpu = accelerator in GPU_ACCELERATORS or (accelerator == "auto" and (gpus is None or gpus > 0))
    if not wants_gpu:
        cores = limits.cpu_processes
        if cores is not None and count > cores:  # each CPU "device" is a training process of its own
            raise config.ConfigError(
                f"devices={count} on the CPU starts {count} training processes, but this server has "
                f"{cores} cores; ask for at most devices={cores}"
            )
        return 0
    if gpus is not None and count > gpus:
        raise config.ConfigError(
            f"the run needs {count} GPU(s) (accelerator={accelerator}, devices={count}) but this server has "
            f"{gpus}; ask for at most {gpus}" + (" or use accelerator=cpu" if not gpus else "")
        )
    return count


def _count(devices: Any) -> int:
    if isinstance(devices, ListConfig | list):
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in devices):
            raise config.ConfigError(
                f"devices={OmegaConf.to_container(devices) if OmegaConf.is_list(devices) else devices}: "
                f"device ids are integers; ask for a count instead, e.g. devices={len(devices)}"
            )
    elif isinstance(devices, float | bool):  # int() would quietly turn 1.5 into 1; Lightning refuses it
        raise config.ConfigError(f"devices={devices!r} is not a number of devices; write e.g. devices=1")
    try:
        return device_count(devices)
    except (TypeError, ValueError):
        raise config.ConfigError(
            f"devices={devices!r} is not a number of devices; write e.g. devices=1"
        ) from None


def _plain(value: Any) -> Any:
    return value if isinstance(value, int | float | str | bool) or value is None else str(value)
