"""``read_tail``: the last N lines of a log within a byte window, read in one linear pass. Checked against a
plain statement of what it must return (every line start in the file, pick the right one), over logs with
short lines, empty lines, lines longer than the window, with and without a final newline."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from app.runfiles import read_tail


def expected(content: bytes, lines: int | None, max_bytes: int, end: int | None) -> tuple[bytes, int, bool]:
    """(text, start, cut) by definition: lines start at 0 and after each ``\\n`` that is not the last byte."""
    end = len(content) if end is None else min(end, len(content))
    if (lines is not None and lines <= 0) or end == 0:
        return b"", end, False
    starts = [0] + [i + 1 for i in range(end - 1) if content[i : i + 1] == b"\n"]
    window = max(0, end - max_bytes)
    wanted = starts[-lines:] if lines is not None and lines < len(starts) else starts
    inside = [s for s in wanted if s >= window]
    if inside:
        start, cut = inside[0], False
    else:  # no line starts in the window: one line longer than it, cut at its start
        start, cut = window, True
    return content[start:end], start, cut


def random_log(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(0, 40)):
        length = rng.choice([0, 1, 3, 10, 50, 200, 5000])
        parts.append(bytes(rng.choice(b"ab\r\x0c") for _ in range(length)))
    text = b"\n".join(parts)
    return text + b"\n" if rng.random() < 0.5 else text


def test_read_tail_matches_its_definition(tmp_path: Path):
    rng = random.Random(7)
    path = tmp_path / "log"
    for case in range(600):
        content = random_log(rng)
        path.write_bytes(content)
        lines = rng.choice([None, 0, 1, 2, 3, 5, 10, 100, 100_000])
        max_bytes = rng.choice([1, 7, 64, 300, 4096, 70_000, 1 << 22])
        end = rng.choice([None, None, rng.randint(0, len(content) + 1)])
        part = read_tail(path, lines, max_bytes, end)
        text, start, cut = expected(content, lines, max_bytes, end)
        assert (part.data, part.start, part.cut) == (text, start, cut), (case, lines, max_bytes, end)
        assert part.end == (len(content) if end is None else min(end, len(content)))
        assert part.size == len(content)


@pytest.mark.parametrize("lines", [1, 1000, 100_000, None])
def test_read_tail_of_a_log_bigger_than_the_window_starts_at_a_line(tmp_path: Path, lines: int):
    """A 6 MiB log read through 64 KiB blocks: the answer starts on a line and holds at most 4 MiB."""
    path = tmp_path / "log"
    line = b"y" * 99 + b"\n"
    path.write_bytes(line * 60_000)
    part = read_tail(path, lines, 4 << 20)
    assert part.data == line * min(lines or 60_000, (4 << 20) // 100)
    assert part.start == len(line) * 60_000 - len(part.data)
    assert part.truncated


def test_read_tail_of_a_missing_file_is_empty(tmp_path: Path):
    part = read_tail(tmp_path / "nothing", 10)
    assert (part.data, part.start, part.end, part.size) == (b"", 0, 0, 0)
