"""Run names: the seed's scheme ``<YYYY-MM-DD_HH-MM-SS>_<model><data>[_<override_dirname>]``, made safe.

A name is a run directory's name and its WandB run name, so it must always be one valid file name:
- characters outside a small safe set (``/`` above all) are replaced by ``-``;
- a name longer than 255 bytes is cut, deterministically;
- whenever the override part had to be changed (replaced characters or a cut), a short hash of the
  original override list is appended, so two different override lists never end up with the same name.

Light on purpose (hydra's override parser and the standard library only): the service imports it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Sequence

from trainer import overrides as overrides_parser

NAME_MAX_BYTES = 255
HASH_CHARS = 10
TIMESTAMP_FORMAT = "%Y-%m-%d_%H-%M-%S"
DEBUG_DIR = "debug"
# Keys that say where or under which name a run is filed, not what it computes: they never appear in a
# name. Keep in sync with hydra.job.config.override_dirname.exclude_keys in conf/globals.yaml.
BOOKKEEPING_KEYS = frozenset({"run_name", "log_dir"})


class NameInUse(FileExistsError):
    """A run of that name (or its directory) exists already."""


_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._=,+-]+$")
_DATED = re.compile(r"^(\d{4}-\d{2}-\d{2})_")


def override_dirname(overrides: Sequence[str], exclude: frozenset[str] = BOOKKEEPING_KEYS) -> str:
    """Hydra's ``job.override_dirname`` with ``item_sep: _``: sorted input lines, bookkeeping keys left out."""
    parsed = overrides_parser.parse(overrides)
    # input_line is Optional in Hydra's type but set on every override parsed from a line
    lines = [o.input_line for o in parsed if o.input_line is not None and o.key_or_group not in exclude]
    return "_".join(sorted(lines))


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def make_run_name(
    model: str,
    data: str,
    overrides: Sequence[str],
    when: dt.datetime | None = None,
    suffix: str = "",
) -> str:
    """The name of a new run. ``suffix`` (e.g. ``r2``) lets a caller make two same-second names distinct."""
    when = when or dt.datetime.now()
    raw_overrides = override_dirname(overrides)
    head = _UNSAFE.sub("-", f"{when.strftime(TIMESTAMP_FORMAT)}_{model}{data}")
    tail = _UNSAFE.sub("-", raw_overrides)
    end = f"_{suffix}" if suffix else ""
    name = head + (f"_{tail}" if tail else "") + end
    if tail != raw_overrides or len(name.encode()) > NAME_MAX_BYTES:
        digest = f"_{_short_hash(raw_overrides)}{end}"
        name = (head + f"_{tail}")[: NAME_MAX_BYTES - len(digest)] + digest
    return name


def check_run_name(name: str) -> str:
    """Refuse a name that is not one plain, safe file name; returns it unchanged otherwise."""
    if not isinstance(name, str) or not name:
        raise ValueError("run_name must be a non-empty string")
    if len(name.encode()) > NAME_MAX_BYTES:
        raise ValueError(f"run_name is longer than {NAME_MAX_BYTES} bytes")
    if not _SAFE_NAME.match(name) or name in {".", "..", DEBUG_DIR} or name.startswith("."):
        raise ValueError(
            f"run_name {name!r} is not a safe directory name: use letters, digits and . _ = , + - only"
        )
    return name


def run_subdir(name: str) -> str:
    """``<YYYY-MM-DD>/<name>``; the date comes from the name itself when it starts with one, so a run named
    at 23:59:59 and started after midnight is still filed where its name says."""
    check_run_name(name)
    match = _DATED.match(name)
    day = match.group(1) if match else dt.date.today().isoformat()
    return f"{day}/{name}"
