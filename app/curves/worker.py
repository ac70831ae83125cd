"""The reader process: ``python -m app.curves.worker PARENT_PID``, started by ``reader.ReaderProcess``.

It reads jobs (``ReadJob``) from its stdin and writes each one's result on what was its stdout, one at a
time, in frames of an 8-byte length and a pickle: ``("ok", state)`` or ``("error", message)``. It runs the
very parsing of ``app/metricsfile.py`` (so it imports that module and the standard library only: never the
web framework, the store, or torch), with its own core and its own GIL, so the service's requests are
answered meanwhile. It ends at the end of its stdin, and with the service if the service dies first.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import sys
from typing import IO, Any

from app.metricsfile import ReadJob, read_job

# Bigger blocks than the service's own reads: here no event loop waits for the GIL between two of them.
WORKER_CHUNK_BYTES = 1 << 20
_LENGTH = struct.Struct(">Q")


def send(out: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LENGTH.pack(len(data)) + data)
    out.flush()


def receive(inp: IO[bytes]) -> Any | None:
    """The next message, or None at the end of the stream (the other side closed or died)."""
    head = _read_exact(inp, _LENGTH.size)
    if head is None:
        return None
    data = _read_exact(inp, _LENGTH.unpack(head)[0])
    return None if data is None else pickle.loads(data)  # our own process wrote it


def _read_exact(inp: IO[bytes], n: int) -> bytes | None:
    data = inp.read(n)
    return data if len(data) == n else None


def _die_with_parent(parent: int) -> None:
    """A service killed with SIGKILL cannot stop its reader: the kernel does (Linux), or the reader finds
    itself orphaned at its next job's end (its stdin closes)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the service died before the line above
        sys.exit(0)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the service's terminal: the service stops us
    _die_with_parent(int(argv[0]))
    # The service's requests come first: on a busy machine the reader takes the CPU time they leave.
    with contextlib.suppress(OSError):
        os.nice(10)
    # The protocol gets stdout's descriptor; anything else printed (a warning) goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    with out:
        while (job := receive(inp)) is not None:
            if not isinstance(job, ReadJob):
                send(out, ("error", f"not a read job: {type(job).__name__}"))
                continue
            try:
                send(out, ("ok", read_job(job, WORKER_CHUNK_BYTES)))
            except Exception as exc:  # a bug, not the file (a file that cannot be read reads as no rows)
                send(out, ("error", f"{type(exc).__name__}: {exc}"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
