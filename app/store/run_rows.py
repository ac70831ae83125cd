"""A run's row in the ``runs`` table <-> its ``RunRecord``.

The table's columns are the fields of ``RunRecord``, in order (``COLUMNS``): a column is written once, as a
field. Lists and dicts are kept as JSON, the status as its value, ``cancel_requested`` as 0/1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from app.models import Priority, RunRecord, RunStatus

COLUMNS = tuple(f.name for f in fields(RunRecord))
SELECT = ", ".join(COLUMNS)
_NEW = [c for c in COLUMNS if c != "seq"]  # a new row's seq is SQLite's to choose
INSERT = f"INSERT INTO runs ({', '.join(_NEW)}) VALUES ({','.join('?' * len(_NEW))})"
# How a field is kept in its column, where that is not the value itself.
_JSON = frozenset({"overrides", "seed", "gpus", "resources", "default_overrides", "after"})


def encode(column: str, value: Any) -> Any:
    """A field's value as its column keeps it."""
    if column == "after" and not value:
        return None  # SQL NULL, not "null": the index of waiting runs holds only runs that wait
    if column in _JSON:
        return json.dumps(value)
    if column == "status":
        return RunStatus(value).value
    if column == "priority":
        return Priority(value).value
    if column == "cancel_requested":
        return int(value)
    return value


def new_row(record: RunRecord) -> list[Any]:
    """The values of ``INSERT``: the record as a new queued run."""
    return [encode(c, RunStatus.QUEUED if c == "status" else getattr(record, c)) for c in _NEW]


def _json(value: Any) -> Any:
    return json.loads(value) if value else None


def _gpus(value: Any) -> list[int]:
    return json.loads(value) if value else []


# Column position -> how its value becomes the field's (the others are the value itself). Polling reads
# dozens of rows per request: converting only these columns keeps a row at a few microseconds.
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "gpus": _gpus,
    "status": RunStatus,
    "priority": Priority,
    "cancel_requested": bool,
}
_DECODERS = tuple((i, _CONVERT.get(c, _json)) for i, c in enumerate(COLUMNS) if c in _JSON or c in _CONVERT)


def decode(row: tuple[Any, ...]) -> RunRecord:
    """The record of a row read as ``SELECT {SELECT} FROM runs``."""
    values = list(row)
    for i, convert in _DECODERS:
        values[i] = convert(values[i])
    return RunRecord(*values)
