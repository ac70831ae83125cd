"""A partial curve of a big metrics.csv, answered at once while the reader process reads the whole file:
the rows of ``blocks`` evenly spaced pieces of ``block_bytes`` (2 MiB in all, whatever the file's size, so
it costs some tens of milliseconds), each cut to whole lines, parsed and downsampled as a full read is.

Its curves span the run (the first piece starts at the first row, the last ends at the file's end) with the file's trend and noise, on fewer
points. ``rows`` and each curve's ``points`` count what was sampled; ``estimated_rows`` is the file's rows
as the sampled bytes per row make them.
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO

from app.metricsfile import MAX_LINE_BYTES, FileCurves, curves_answer, feed_rows
from app.runpaths import open_run_file

SAMPLE_BLOCKS = 64
SAMPLE_BLOCK_BYTES = 32 * 1024


def sample_curves(
    path: str, max_points: int, blocks: int = SAMPLE_BLOCKS, block_bytes: int = SAMPLE_BLOCK_BYTES
) -> dict[str, Any]:
    """The partial answer: ``curves_answer``'s fields, with ``partial`` true and ``estimated_rows``."""
    try:
        with open_run_file(path) as f:
            header = f.readline(MAX_LINE_BYTES)
            size = os.fstat(f.fileno()).st_size
            pieces = _pieces(f, len(header), size, blocks, block_bytes) if header.endswith(b"\n") else []
    except OSError:
        pieces = []
    if not pieces:
        return {**curves_answer(None, max_points), "partial": True, "estimated_rows": 0}
    state = FileCurves(max_points)
    state.restart(header)
    bytes_per_row = sum(len(data) for _, data in pieces) / max(
        1, sum(data.count(b"\n") for _, data in pieces)
    )
    sampled = 0
    for at, data in pieces:
        # A row's number is its place when the file has no step column: estimated from its byte offset.
        state.rows = max(state.rows, round((at - len(header)) / bytes_per_row))
        before = state.rows
        feed_rows(state, data)
        sampled += state.rows - before
    answer = curves_answer(state, max_points)
    answer["rows"] = sampled
    return {**answer, "partial": True, "estimated_rows": round((size - len(header)) / bytes_per_row)}


def _pieces(f: BinaryIO, start: int, size: int, blocks: int, block_bytes: int) -> list[tuple[int, bytes]]:
    """(offset, whole lines) of each piece, in order and not overlapping."""
    pieces: list[tuple[int, bytes]] = []
    end = start  # where the last piece's lines ended: a row's start
    span = max(0, size - block_bytes - start)  # the last piece ends at the file's end: the latest rows
    for i in range(blocks):
        at = max(end, start + span * i // max(1, blocks - 1))
        if at >= size:
            break
        f.seek(at)
        data = f.read(block_bytes)
        if at != end:  # mid-row: the piece starts at the next row
            first = data.find(b"\n") + 1
            at, data = at + first, data[first:] if first else b""
        cut = data.rfind(b"\n") + 1
        if cut:
            pieces.append((at, data[:cut]))
            end = at + cut
    return pieces
