"""Overrides as (key, value) pairs compared as values: what ``GET /runs?override=KEY=VALUE`` matches.

Lines are read by the validator's own parser (Hydra's override grammar, ``trainer/overrides.py``), so
``training.lr=1e-4`` and ``training.lr=0.0001`` are the same float and find each other. A value is kept as
canonical JSON (``value_norm``): numbers as numbers (``1`` and ``1.0`` are one value; a quoted ``'1'`` is a
string, another one), strings unquoted by the grammar (``fno`` and ``'fno'`` are one), lists and dicts with
their parts normalised (dict keys sorted). The key is the line's key or group without ``+``/``++``.

What a run "was asked" is its recorded server defaults followed by its own lines (the request wins for a key
it sets, as when it ran). A line that removes a key (``~key``) removes an earlier default of it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from hydra.errors import HydraException

from app.errors import InvalidRun
from trainer import overrides as overrides_parser

EXACT_INTS = 2**53  # floats hold every whole number up to here: 1.0 and 1 are one value below it
# The commonest lines, read without Hydra's parser (~0.1 ms a line: 100,000 runs' distinct seed=N lines took
# most of a backfill's 30 s): key=int and key=plain-word, exactly as the grammar reads them (its INT has no
# leading zeros; true/false/null/inf/nan are not strings). Anything else goes to the parser.
_PLAIN = re.compile(
    r"\+{0,2}([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)=(-?(?:0|[1-9][0-9]*)|[A-Za-z_][A-Za-z0-9_]*)"
)
_NOT_WORDS = frozenset({"true", "false", "null", "inf", "nan"})


def normal_value(value: Any) -> str:
    """A parsed override value as canonical JSON."""
    return json.dumps(_normal(value), sort_keys=True, separators=(",", ":"), allow_nan=True)


def _normal(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < EXACT_INTS:
            return int(value)
        return value
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    return str(value)


def asked(overrides: Sequence[str], defaults: Sequence[str] | None) -> list[tuple[str, str]]:
    """A run's (key, value_norm) pairs: its defaults, then its own lines (the later line wins a key). Lines
    that cannot be read (none can: they were validated) or that sweep are left out."""
    pairs: dict[str, str] = {}
    for line in [*(defaults or []), *overrides]:
        plain = _plain(line)
        if plain is not None:
            pairs[plain[0]] = plain[1]
            continue
        try:
            o = overrides_parser.parse_one(line)
        except HydraException:
            continue
        if o.is_delete():
            pairs.pop(o.key_or_group, None)
        elif not o.is_sweep_override():
            pairs[o.key_or_group] = normal_value(o.value())
    return sorted(pairs.items())


def _plain(line: str) -> tuple[str, str] | None:
    """(key, value_norm) of a plain ``key=int`` or ``key=word`` line; None for anything else."""
    m = _PLAIN.fullmatch(line)
    if m is None:
        return None
    key, text = m.groups()
    if text[0] in "-0123456789":
        return key, normal_value(int(text))
    if text.lower() in _NOT_WORDS:
        return None
    return key, normal_value(text)


def filters(lines: Iterable[str]) -> list[tuple[str, str]]:
    """``override=`` query values as (key, value_norm); InvalidRun naming a line that is not KEY=VALUE."""
    found = []
    for line in lines:
        text = line.strip()
        try:
            o = overrides_parser.parse_one(text)
        except HydraException as exc:
            raise InvalidRun(
                f"override filter {line!r} cannot be parsed ({exc}); write KEY=VALUE, e.g. model=fno"
            ) from None
        if o.is_delete() or o.is_sweep_override() or o.package is not None:
            raise InvalidRun(
                f"override filter {line!r} is not one KEY=VALUE; give one value per filter, e.g. "
                "override=training.lr=1e-4 (repeat override= for more keys: a run must match them all)"
            )
        found.append((o.key_or_group, normal_value(o.value())))
    return found
