"""Turn a request's override list into a validated run, or refuse it with a message that says how to fix it.

Two stages, both before anything is stored:
1. Safety (``check_overrides``): a request can never reach beyond its run. Parsed with Hydra's own parser;
   refused: sweeps, interpolations anywhere (resolvers read the environment and files), Hydra's own keys,
   instantiate-style ``_keys_``, keys that place or name the run, package overrides, group values that are
   not plain option names, and oversized lists.
2. Planning (``RunValidator.plan``): the trainer's own run plan (``trainer/plan.py``: compose, check, name,
   resolve, GPU need), with the service's output directory and devices; its errors become 422s.
Validation is free of side effects: it creates no directory and writes no file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig

from app import defaults as server_defaults
from app.core.config import Settings
from app.errors import InvalidRun
from trainer import config as trainer_config
from trainer import overrides as overrides_parser
from trainer.plan import DeviceLimits, RunPlan, plan_run

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
SERVER_KEYS = frozenset({"wandb_entity"})  # the server decides; a request may not
_RESERVED_KEY = re.compile(r"^_.*_$")  # _target_, _partial_, _args_, _recursive_, _convert_, _self_, ...
_OPTION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_overrides(
    overrides: Sequence[str], settings: Settings, checked: dict[str, Override] | None = None
) -> list[Override]:
    """Refuse whatever could reach beyond the run; returns the parsed overrides. ``checked``: the lines of
    the same request already found safe (each line's checks depend on the line alone), filled in here."""
    _check_request(overrides, settings)
    parsed = []
    for line in overrides:
        known = checked.get(line) if checked is not None else None
        if known is None:
            known = _check_line(line, settings)
            if checked is not None:
                checked[line] = known
        parsed.append(known)
    return parsed


def _check_request(overrides: Sequence[str], settings: Settings) -> None:
    """The request's own bounds: how many lines, valid text, how many bytes in all."""
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


def _check_line(line: str, settings: Settings) -> Override:
    """One line, parsed and found safe (or refused, naming it and the fix)."""
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
    _check_one(override, line)
    return override


def _check_one(o: Override, line: str) -> None:
    """``line``: what ``o`` was parsed from (its ``input_line``, which Hydra types as optional)."""
    key = o.key_or_group
    if o.is_sweep_override():
        raise InvalidRun(
            f"override {line!r} is a sweep; a run is one run: submit the sweep to POST /sweeps "
            "(labrun sweep ...), which queues one run per combination"
        )
    if o.package is not None:
        raise InvalidRun(
            f"override {line!r} sets a package (@); package overrides are not allowed: drop the @ part"
        )
    _check_key_path(key, line)
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


def _check_key_path(key: str, line: str) -> None:
    """The key's segments: no Hydra key, no key that is the server's choice, each segment a plain name."""
    segments = re.split(r"[./]", key)
    if "" in segments:
        raise InvalidRun(f"override {line!r}: {key!r} is not a valid key; write e.g. training.lr=0.01")
    if segments[0].lower().startswith("hydra"):
        raise InvalidRun(f"override {line!r} changes Hydra itself; hydra.* keys and groups are not allowed")
    if segments[0] in SERVER_KEYS:
        raise InvalidRun(
            f"override {line!r} sets {key!r}, which is the server's choice (LABRUN_WANDB_ENTITY); a run may "
            "choose its WandB project (wandb_project=...): remove it"
        )
    if segments[0] in PLACEMENT_KEYS or (len(segments) > 1 and segments[-1] in PLACEMENT_KEYS):
        raise InvalidRun(
            f"override {line!r} sets {key!r}, which places or names the run; the service sets it: remove it"
        )
    for segment in segments:
        _check_key(segment, line)


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


def _refusal(plan: Callable[[], RunPlan]) -> str | None:
    """Why ``plan`` is refused (None: it is not)."""
    try:
        plan()
    except InvalidRun as exc:
        return exc.detail
    return None


class RunValidator:
    """Plans requests the way the trainer will; one instance per service."""

    def __init__(
        self,
        settings: Settings,
        limits: DeviceLimits,
        compose: Callable[[Sequence[str], str], DictConfig] = trainer_config.compose_config,
    ) -> None:
        """``limits``: what a run may ask for on this server; ``compose``: a fresh Hydra compose by
        default; the service passes the cached one (``trainer/config_cache.py``), tested to give the same
        answers."""
        self.settings = settings
        self.limits = limits
        self._compose = compose
        self.defaults: list[str] = []  # the server's default overrides (set_defaults)
        self._parsed_defaults: list[Override] = []

    def set_defaults(self, lines: Sequence[str]) -> None:
        """Take the server's default overrides (``app/defaults.py``) after checking them as a request's
        lines and planning a run with them alone; InvalidRun naming what is wrong."""
        lines = list(lines)
        parsed = check_overrides(lines, self.settings)
        if lines:
            try:  # they compose, type-check and fit this server's devices
                self.plan([], None, defaults=lines)
            except InvalidRun as exc:
                if exc.detail != _refusal(lambda: self.plan([], None, defaults=[])):
                    raise  # theirs, not the experiment's own default (e.g. a model too big for this server)
        self.defaults, self._parsed_defaults = lines, parsed

    def plan(
        self,
        overrides: Sequence[str],
        config_name: str | None,
        defaults: Sequence[str] | None = None,
        **placement: Any,
    ) -> RunPlan:
        """``placement``: ``when``/``suffix``/``sweep`` for ``plan_run`` (a sweep's runs, app/sweeps.py).
        ``defaults``: the default overrides to apply (None: the server's; a rerun passes the original's)."""
        return self.planner(config_name, defaults)(overrides, **placement)

    def planner(
        self, config_name: str | None, defaults: Sequence[str] | None = None
    ) -> Callable[..., RunPlan]:
        """``plan`` for the many runs of one request (a sweep's): every run is checked and planned whole,
        with ``plan``'s errors, but what the runs share is checked once: the config name (a directory
        listing; refused on the first run, as ``plan`` would) and each distinct override line (a sweep's
        runs share all their lines but the swept ones)."""
        config_name = config_name or trainer_config.DEFAULT_CONFIG_NAME
        name_known = False
        checked: dict[str, Override] = {}
        if defaults is None:
            default_lines, parsed_defaults = self.defaults, self._parsed_defaults
        else:  # recorded with an earlier run: checked then, parsed again here (a few lines)
            default_lines, parsed_defaults = list(defaults), overrides_parser.parse(defaults)

        def plan(overrides: Sequence[str], **placement: Any) -> RunPlan:
            nonlocal name_known
            if not name_known:
                names = trainer_config.config_names()
                if config_name not in names:
                    raise InvalidRun(f"unknown config_name {config_name!r}; available: {', '.join(names)}")
                name_known = True
            overrides = list(overrides)
            parsed = check_overrides(overrides, self.settings, checked)
            try:
                return plan_run(
                    overrides,
                    config_name,
                    log_dir=self.settings.output_dir,
                    limits=self.limits,
                    compose=self._compose,
                    defaults=server_defaults.merged(default_lines, parsed_defaults, parsed),
                    **placement,
                )
            except trainer_config.ConfigError as exc:
                raise InvalidRun(str(exc)) from None

        return plan
