"""The experiment config's schema: types, allowed values and descriptions of every key, declared once.

The dataclasses below are Hydra Structured Configs, registered in Hydra's ConfigStore by ``register()``
and named at the head of the YAML defaults lists (``conf/neuraloperator.yaml``: ``- experiment_schema``;
each group's ``*_globals.yaml``: ``- /schema/<group>@_here_``). Composing therefore already refuses a wrong
type (``training.lr=abc``), a key the schema does not know (``model.nokey=1``) and the removal of a key
(``~model.n_layers``). The YAML files keep every default value; the schema says what a value may be.

What a type cannot say lives in each field's metadata, read by one generic function (``check``):
``ge``/``gt``/``le``/``lt`` (numbers), ``choices``, ``pattern`` (strings), ``length`` and ``items`` (lists),
or ``rule`` (a function for the few keys that take more than one type: ``devices``, ``val_check_interval``).
Rules that tie several keys together (``n_modes`` against the resolution, ...) are the ``CROSS_RULES``.
Every message names the key, the value and what is allowed. ``trainer/schema_docs.py`` turns the same
declarations into the documentation (``GET /config/schema``, docs/reference/experiment-keys.md).

Light on purpose (omegaconf + hydra's ConfigStore): the service imports it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Union, cast, get_args, get_origin, get_type_hints  # noqa: UP035

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

MODEL_NAMES = ("fno", "sfno")  # the models trainer/model.py builds; conf/model/<name>.yaml for each
ACCELERATORS = ("cpu", "gpu", "cuda", "auto")  # Lightning's names; the only list of them
GPU_ACCELERATORS = ("gpu", "cuda")  # always on a GPU ("auto" takes one where there is one)
# What a service that starts each run as a process can run: Lightning's ddp_spawn/ddp_notebook fork from an
# interactive session, fsdp/deepspeed need set-ups this experiment does not have.
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")
# Tried with both models on CPU (Lightning 2.6, neuraloperator 2.0): 16-true/bf16-true fail in the FFTs,
# 64 fails for FNO (complex64 weights), mixed precision fails for SFNO on CPU (see CROSS_RULES).
PRECISIONS = (32, "32", "32-true", 64, "64", "64-true", "16-mixed", "bf16-mixed")
METRICS = ("val_loss", "train_loss", "train_loss_epoch")  # what trainer/model.py logs
SWE_CHANNELS = 3  # the shallow-water fields: geopotential height, vorticity, divergence
MAX_DIM = 2048
MAX_NUM_WORKERS = 64  # each worker is a process: num_workers=10**6 would be a fork bomb on a shared box
WANDB_NAME = r"^[A-Za-z0-9._-]{1,128}$"
RUN_NAME = r"^[A-Za-z0-9_=,+-][A-Za-z0-9._=,+-]{0,254}$"  # a run's name (trainer/naming.py): never a path


class ConfigError(ValueError):
    """An override list that does not make a valid run config. The message names the key and the fix."""


def key(description: str, default: Any = MISSING, **rules: Any) -> Any:
    """A schema field: its description and its value rules (see the module docstring)."""
    return field(default=default, metadata={"help": description, **rules})


def _devices(value: Any) -> str | None:
    if isinstance(value, str):
        return None if value == "auto" else "a number of devices, a list of device ids or 'auto'"
    if isinstance(value, list | ListConfig):
        ids = list(value)
        if ids and all(type(d) is int and 0 <= d < 64 for d in ids) and len(set(ids)) == len(ids):
            return None
        return "a list of device ids: distinct integers between 0 and 63"
    if type(value) is int and 1 <= value <= 64:
        return None
    return "a number of devices between 1 and 64, a list of device ids or 'auto'"


def _val_check_interval(value: Any) -> str | None:
    if type(value) is float and 0 < value <= 1:
        return None
    if type(value) is int and value >= 1:
        return None
    return "a fraction of an epoch in (0, 1] (e.g. 0.5) or a number of training batches >= 1 (e.g. 100)"


@dataclass
class DataConfig:
    dims: list[int] = key(
        "grid of the shallow-water samples: [nlat, nlon]", length=2, items={"ge": 4, "le": MAX_DIM}
    )
    num_examples: int = key("samples generated (then split into training and validation)", ge=2, le=10**6)
    train_val_split: float = key("fraction of the samples used for training", gt=0, lt=1)


@dataclass
class ModelConfig:
    name: str = key("the neural operator: one option of the model group", choices=MODEL_NAMES)
    n_modes: list[int] = key(
        "spectral modes kept [latitude, longitude]; limits depend on the model and data.dims",
        length=2,
        items={"ge": 1, "le": MAX_DIM},
    )
    in_channels: int = key("input channels: the shallow-water fields", choices=(SWE_CHANNELS,))
    out_channels: int = key("output channels: the shallow-water fields", choices=(SWE_CHANNELS,))
    hidden_channels: int = key("width of the operator's hidden layers", ge=2, le=4096)
    n_layers: int = key("number of Fourier/spherical layers", ge=1, le=64)


@dataclass
class TrainingConfig:
    max_epochs: int = key("epochs to train", ge=1, le=100_000)
    val_check_interval: Any = key(
        "validate every fraction of an epoch (float) or every N training batches (int)",
        rule=_val_check_interval,
        type="float | int",
    )
    lr: float = key("Adam's learning rate", gt=0, le=1)
    effective_batch_size: int = key(
        "samples per optimizer step, over all devices and accumulated batches", ge=1, le=65536
    )
    ckpt_monitor_val: str = key("metric that picks the best checkpoint", choices=METRICS)
    batch_size: int = key("derived: the top-level batch_size", ge=1, derived=True)
    accumulate_grad_batches: int = key(
        "derived: effective_batch_size / (num_devices * batch_size)", ge=1, derived=True
    )


@dataclass
class PathsConfig:
    data_root: str = key("where the generated data are cached (one per machine)")


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    wandb_entity: Optional[str] = key(  # noqa: UP045 - OmegaConf 2.3 reads Optional, not X | None
        "WandB entity (team or user) the run logs to; null: the API key's default entity",
        None,
        pattern=WANDB_NAME,
    )
    wandb_project: str = key("WandB project the run logs to", pattern=WANDB_NAME)
    accelerator: str = key("device type", choices=ACCELERATORS)
    strategy: str = key("Lightning's distribution strategy", choices=STRATEGIES)
    devices: Any = key(
        "number of devices, a list of device ids, or 'auto'", rule=_devices, type="int | list[int] | str"
    )
    batch_size: int = key("samples per batch and device", ge=1, le=4096)
    precision: Any = key("Lightning's numeric precision", choices=PRECISIONS, type="int | str")
    debug: bool = key("one short epoch of debug_batches batches, filed under <log_dir>/debug")
    debug_batches: int = key("train and val batches of a debug run", ge=1, le=10_000)
    num_sanity_val_steps: int = key("validation batches before training; -1: all", ge=-1, le=10_000)
    log_every_n_steps: int = key("how often (in steps) metrics are logged", ge=1, le=100_000)
    num_workers: int = key(
        "DataLoader worker processes (the data are in memory: 0 is fastest)", ge=0, le=MAX_NUM_WORKERS
    )
    seed: int = key("seeds the data, the initial weights and the shuffling", ge=0, le=2**32 - 1)
    deterministic: bool = key("deterministic algorithms (bit-identical metrics on CPU)")
    # The one place for keys of a user's own: recorded with the run (.hydra/config.yaml, run.json, WandB's
    # config), read by nothing else. A key added anywhere else would look as if it did something.
    extra: Dict[str, Any] = field(  # noqa: UP006 - OmegaConf 2.3 reads typing.Dict
        default_factory=dict,
        metadata={
            "help": "free-form values of your own (+extra.note=baseline): recorded, read by nothing",
            "type": "mapping",
        },
    )
    run_name: Optional[str] = key("the run's name; set by the service, else generated", None)  # noqa: UP045
    init_from: Optional[str] = key(  # noqa: UP045
        "a run's name: start from its last checkpoint's model weights (the optimizer and the epochs start "
        "afresh); the service hands the trainer the checkpoint (docs/run-chains.md). null: from scratch",
        None,
        pattern=RUN_NAME,
    )
    log_dir: str = key("root of the run directories; set by the service")
    output_dir_scheme: str = key("derived: <YYYY-MM-DD>/<run_name>", derived=True)
    output_dir: str = key("derived: the run directory", derived=True)
    wandb_dir: str = key("derived: the run directory", derived=True)
    wandb_run_name: Optional[str] = key("derived: run_name", derived=True)  # noqa: UP045
    ckpt_dir: str = key("derived: <output_dir>/ckpt", derived=True)
    num_devices: int = key("derived: how many devices 'devices' names", ge=1, derived=True)
    distributed: bool = key("derived: num_devices > 1", derived=True)


SCHEMA = ExperimentConfig
GROUPS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
    "paths": PathsConfig,
}


def register() -> None:
    """Put the schema into Hydra's ConfigStore (idempotent): ``experiment_schema`` for the top config,
    ``schema/<group>`` for each group's options."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="experiment_schema", node=ExperimentConfig)
    for group, node in GROUPS.items():
        store.store(group="schema", name=group, node=node)


# --- checking values -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    key: str  # dotted
    type: Any
    metadata: Mapping[str, Any]


def _fields(cls: type = SCHEMA, prefix: str = "") -> Iterator[Field]:
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            yield from _fields(hint, f"{prefix}{f.name}.")
        else:
            yield Field(prefix + f.name, hint, f.metadata)


FIELDS: tuple[Field, ...] = tuple(_fields())
_RULED = tuple(f for f in FIELDS if f.metadata.keys() - {"help", "type", "derived"})
_BY_KEY = {f.key: f for f in FIELDS}
_SECTIONS = {"": SCHEMA, **{f"{g}.": cls for g, cls in GROUPS.items()}}


def field_of(dotted: str) -> Field | None:
    return _BY_KEY.get(re.sub(r"\[\d+\]$", "", dotted))


def allowed(meta: Mapping[str, Any]) -> str | None:
    """What the rules allow, in words: ``between 0 and 64``, ``one of cpu, gpu``, ``> 0 and <= 1``."""
    parts = []
    if "choices" in meta:
        parts.append("one of " + ", ".join(show(c) for c in meta["choices"]))
    if "pattern" in meta:
        parts.append(f"a string matching {meta['pattern']}")
    lo, hi = (meta.get("ge"), ">="), (meta.get("le"), "<=")
    if meta.get("gt") is not None:
        lo = (meta["gt"], ">")
    if meta.get("lt") is not None:
        hi = (meta["lt"], "<")
    if lo[0] is not None and hi[0] is not None and (lo[1], hi[1]) == (">=", "<="):
        parts.append(f"between {lo[0]} and {hi[0]}")
    elif lo[0] is not None and hi[0] is not None and (lo[1], hi[1]) == (">", "<"):
        parts.append(f"strictly between {lo[0]} and {hi[0]}")
    else:
        parts.append(" and ".join(f"{op} {v}" for v, op in (lo, hi) if v is not None))
    if "length" in meta:
        items = allowed(meta.get("items", {}))
        parts.append(f"{meta['length']} items" + (f", each {items}" if items else ""))
    if "rule" in meta:
        parts.append(meta["rule"](None) or "")
    return "; ".join(p for p in parts if p) or None


def _violation(value: Any, meta: Mapping[str, Any]) -> bool:
    """True when ``value`` breaks a rule of ``meta`` (NaN breaks every bound)."""
    if value is None:
        return False  # only Optional fields can hold null: the type said it may
    if "rule" in meta:
        return meta["rule"](value) is not None
    if "choices" in meta and not any(value == c and type(value) is type(c) for c in meta["choices"]):
        return True
    if "pattern" in meta and not re.fullmatch(meta["pattern"], str(value)):
        return True
    if "length" in meta:
        items = list(value)
        return len(items) != meta["length"] or any(_violation(v, meta.get("items", {})) for v in items)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and math.isnan(value):
            return any(b in meta for b in ("ge", "gt", "le", "lt"))
        return not (
            ("ge" not in meta or value >= meta["ge"])
            and ("gt" not in meta or value > meta["gt"])
            and ("le" not in meta or value <= meta["le"])
            and ("lt" not in meta or value < meta["lt"])
        )
    return False


def show(value: Any) -> str:
    """A value as an override would write it: ``true``, ``null``, ``[64,128]``, ``'fno'``."""
    if isinstance(value, ListConfig | DictConfig):
        value = OmegaConf.to_container(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(show(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value).replace(" ", "")


def check(job: DictConfig | Mapping[str, Any]) -> None:
    """Every field rule, then every cross rule, on the resolved job config; the first violation raises a
    ConfigError naming the key, the value and what is allowed."""
    # plain: ~10x faster reads; a DictConfig converts to a dict with string keys
    values = cast(Mapping[str, Any], OmegaConf.to_container(job)) if isinstance(job, DictConfig) else job
    for f in _RULED:
        value = _select(values, f.key)
        if _violation(value, f.metadata):
            rule = f.metadata.get("rule")
            must = rule(value) if rule else allowed(f.metadata)
            raise ConfigError(f"{f.key}={show(value)} is not allowed: {f.key} must be {must}")
    for cross_rule in CROSS_RULES:
        problem = cross_rule(values)
        if problem:
            raise ConfigError(problem)


def _select(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def unknown_keys(cfg: DictConfig) -> None:
    """Refuse keys the schema has no place for: Hydra lets ``+key=value`` add one anywhere, even under a
    structured config, and nothing would ever read it."""
    for prefix, cls in _SECTIONS.items():
        node = cfg if not prefix else cfg.get(prefix[:-1])
        if not isinstance(node, DictConfig):
            continue
        names = {f.name for f in dataclasses.fields(cls)}
        for name in node:
            if name not in names and not (not prefix and name == "hydra"):
                raise ConfigError(unknown_key_message(prefix + str(name)))


def unknown_key_message(dotted: str) -> str:
    """``dotted`` is not in the schema: say so, with the closest key and the keys that exist there."""
    head, _, name = dotted.rpartition(".")
    cls = _SECTIONS.get(f"{head}." if head else "")
    if head == "extra":
        return f"{dotted} is a new key of your own: add it with +{dotted}=<value>"
    if cls is None:
        return f"{dotted} is not a key of this config: nothing would read it; remove it"
    names = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("derived")]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {head + '.' if head else ''}{close[0]}?)" if close else ""
    where = f"the keys of {head}" if head else "the top-level keys"
    return (
        f"{dotted} is not a key of this config{hint}: nothing would read it, so it cannot be set or added "
        f"(+); {where}: {', '.join(names)}"
    )


def kind(hint: Any, meta: Mapping[str, Any] | None = None) -> str:
    """A field's type in words, for messages."""
    return spell_type(hint, meta, _IN_WORDS)


def spell_type(hint: Any, meta: Mapping[str, Any] | None, words: TypeWords) -> str:
    """A field's type spelled with ``words`` (in a message, in the documentation's table): its metadata's
    own ``type`` if it has one, else read off the hint (``X | None``, ``list[X]``, a plain type)."""
    if meta and "type" in meta:
        return str(meta["type"])
    if get_origin(hint) is Union:
        inner = [a for a in get_args(hint) if a is not type(None)]
        return words.optional(spell_type(inner[0], None, words))
    if get_origin(hint) is list:
        return words.list_of(spell_type(get_args(hint)[0], None, words))
    return words.plain(hint)


@dataclass(frozen=True)
class TypeWords:
    """How ``spell_type`` writes an optional type, a list, and a plain type."""

    optional: Callable[[str], str]
    list_of: Callable[[str], str]
    plain: Callable[[Any], str]


_IN_WORDS = TypeWords(
    optional=lambda inner: f"{inner} or null",
    list_of=lambda inner: f"a list of {inner.replace('an ', '').replace('a ', '')}s",
    plain=lambda hint: {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, "a value"
    ),
)


# --- rules over several keys -----------------------------------------------------------------------------


def split_problem(num_examples: int, train_val_split: float) -> str | None:
    """Why this split cannot train (no training or no validation samples), or None. trainer/data.py splits
    with ``train_size``; the service and the trainer refuse such a config with this message first."""
    n_train = train_size(num_examples, train_val_split)
    if 0 < n_train < num_examples:
        return None
    return (
        f"data.train_val_split={train_val_split} leaves {n_train} training and {num_examples - n_train} "
        f"validation samples out of data.num_examples={num_examples}; both must be at least 1"
    )


def train_size(num_examples: int, train_val_split: float) -> int:
    """Training samples of a split: the first ``train_size`` samples train, the rest validate."""
    return int(num_examples * train_val_split)


def _split_leaves_both(job: Mapping[str, Any]) -> str | None:
    return split_problem(int(job["data"]["num_examples"]), float(job["data"]["train_val_split"]))


def n_modes_limits(model: str, dims: list[int]) -> str:
    """What ``model.n_modes`` may be at this resolution (tried with neuraloperator 2.0 at 32x64, 64x128)."""
    nlat, nlon = dims
    if model == "sfno":
        # SFNO keeps n_modes[0] spherical-harmonic degrees and n_modes[1] // 2 orders, and needs at least
        # as many orders as degrees (fewer fail in forward).
        return f"[l, m] with 1 <= l <= {nlat}, m <= {nlon} and m // 2 >= l (SFNO at {nlat}x{nlon})"
    return f"[a, b] with 1 <= a <= {nlat} and 1 <= b <= {nlon} (FNO at {nlat}x{nlon}; more modes than grid points only add unused weights)"


def _n_modes_fit(job: Mapping[str, Any]) -> str | None:
    (m0, m1), (nlat, nlon), name = job["model"]["n_modes"], job["data"]["dims"], job["model"]["name"]
    fits = m0 <= nlat and m1 <= nlon and (name != "sfno" or m1 // 2 >= m0)
    if fits:
        return None
    return (
        f"model.n_modes={[m0, m1]} does not fit data.dims={[nlat, nlon]}: model.n_modes must be "
        f"{n_modes_limits(name, [nlat, nlon])}"
    )


def _precision_runs(job: Mapping[str, Any]) -> str | None:
    precision, model, accelerator = job["precision"], job["model"]["name"], job["accelerator"]
    if str(precision).startswith("64") and model != "sfno":
        return f"precision={precision} is not allowed with model.name={model} (complex64 weights): use 32"
    if accelerator == "cpu" and precision == "16-mixed":
        return "precision=16-mixed is not available on the CPU (no fp16 autocast): use bf16-mixed or 32"
    if accelerator == "cpu" and precision == "bf16-mixed" and model == "sfno":
        return "precision=bf16-mixed is not allowed with model.name=sfno on the CPU (the SHT has no bf16): use 32"
    return None


def _device_ids_need_a_device(job: Mapping[str, Any]) -> str | None:
    ids = job["devices"] if isinstance(job["devices"], list) else None
    if job["accelerator"] == "cpu" and ids:
        return (
            f"devices={ids} lists device ids, which the CPU does not have; "
            f"write devices={len(ids)} for that many CPU processes"
        )
    return None


def _val_check_within_epoch(job: Mapping[str, Any]) -> str | None:
    interval, data = job["training"]["val_check_interval"], job["data"]
    if type(interval) is not int:
        return None
    per_device = math.ceil(train_size(data["num_examples"], data["train_val_split"]) / job["num_devices"])
    batches = math.ceil(per_device / job["batch_size"])
    if job["debug"]:
        batches = min(batches, job["debug_batches"])
    if interval > batches:
        return (
            f"training.val_check_interval={interval} is more than the {batches} training batches of an epoch: "
            f"training.val_check_interval must be <= {batches} (or a fraction such as 0.5)"
        )
    return None


CROSS_RULES: tuple[Callable[[Mapping[str, Any]], str | None], ...] = (
    _split_leaves_both,
    _n_modes_fit,
    _precision_runs,
    _device_ids_need_a_device,
    _val_check_within_epoch,
)
