"""Hydra's override parser, memoized per line.

One request's overrides are read by several checks (safety, compose, type check, naming) and Hydra's ANTLR
parser costs ~0.1 ms a line each time; in the service the same lines (``model=fno``, ``data=32x64``) also
recur across requests. Parsing a line is a pure function of its text, and ``Override`` objects are only read
(``value()`` builds a fresh value each call), so one parse per distinct line is exact. Errors are not cached
and read exactly as Hydra's ``parse_overrides`` words them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override

_parser = OverridesParser.create()


@functools.lru_cache(maxsize=8192)
def parse_one(line: str) -> Override:
    return _parser.parse_overrides([line])[0]


def parse(lines: Iterable[str]) -> list[Override]:
    return [parse_one(line) for line in lines]
