"""SIGTERM (the service's cancel) -> stop promptly, clean up, exit 143.

Lightning 2.6 handles SIGTERM itself while ``trainer.fit`` runs: its handler only sets
``trainer.received_sigterm``; the loops then raise ``SIGTERMException`` (a ``SystemExit`` whose code is
``None``, i.e. exit status 0) at the next batch boundary. It also chains to a handler that was installed
before ``fit``. So:

- outside ``fit`` (imports, data generation, cleanup) our handler raises :class:`RunCancelled` at once;
- inside ``fit`` (:meth:`CancelGuard.deferred`) it only records the signal, so the run stops at the next
  batch boundary: Lightning's own check raises ``SIGTERMException``, and ``callbacks.StopOnCancel`` covers
  a signal that came before Lightning installed its handler (which resets its flag). Either way callbacks
  and loggers see a clean interrupt, and :meth:`CancelGuard.deferred` turns it into :class:`RunCancelled`.

A second SIGTERM during cleanup is logged and ignored, and a dying DataLoader worker's SIGCHLD no longer
raises, so the run still finishes its records. SIGINT
(Ctrl-C at a terminal) is handled the same way and exits 130: Lightning would otherwise turn it into a
plain ``SystemExit(1)``, which reads as a failure.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from trainer import resume

log = logging.getLogger(__name__)
EXIT_CANCELLED = 128 + signal.SIGTERM  # 143, what a shell reports for a process ended by SIGTERM
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)  # SIGUSR1: a preemption (trainer/resume.py)


class RunCancelled(BaseException):  # BaseException like KeyboardInterrupt: not an error
    """The run was cancelled with SIGTERM (or SIGINT)."""


class CancelGuard:
    def __init__(self) -> None:
        self.received = False
        self.preempted = False  # the stop is a scheduler's preemption: checkpoint, exit EXIT_REQUEUE
        self.signum = signal.SIGTERM
        self._defer = False
        self._cleaning_up = False
        self._previous: dict[int, object] = {}

    @property
    def exit_code(self) -> int:
        return resume.EXIT_REQUEUE if self.preempted else 128 + int(self.signum)

    @property
    def reason(self) -> str:
        if self.preempted:
            return f"preempted by {signal.Signals(self.signum).name}: checkpointed, to be resumed"
        return f"cancelled by {signal.Signals(self.signum).name}"

    def install(self) -> CancelGuard:
        for signum in SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous = {}

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The guard's signal handler, for a handler that stands in front of it (trainer/preempt.py)."""
        self._handle(signum, frame)

    def finished_anyway(self) -> None:
        """A preemption that came too late to stop the run (it completed first): the run simply succeeded."""
        if self.preempted:
            log.warning("the preemption came as the run completed: nothing left to resume")
            self.received = self.preempted = False

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received or self._cleaning_up:
            log.warning("%s again: already stopping", name)
            return
        self.received, self.signum = True, signum
        self.preempted = resume.is_preemption(signum)
        log.warning(
            "%s: %s", name, "preempted: checkpointing, then exit" if self.preempted else "cancelling the run"
        )
        if not self._defer:
            raise RunCancelled(self.reason)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within: record SIGTERM only (Lightning stops at the next batch); on exit, raise if one came."""
        self._defer = True
        try:
            yield
        except SystemExit:
            if self.received:  # Lightning's SIGTERMException
                raise RunCancelled(self.reason) from None
            raise
        except Exception as exc:
            # A process-group SIGTERM also ends the DataLoader workers, and torch's SIGCHLD handler can raise
            # "worker ... killed by signal: Terminated" before our handler has seen the SIGTERM (it may even
            # interrupt Lightning's own SIGTERM handler, which runs before ours). That is the cancel too.
            if self.received or _worker_terminated(exc):
                self.received = True
                raise RunCancelled(self.reason) from exc
            raise
        finally:
            self._defer = False
        if self.received:
            raise RunCancelled(self.reason)

    def cleaning_up(self) -> None:
        """From now on SIGTERM no longer interrupts: the run is writing its final records. Nor does SIGCHLD:
        torch's DataLoader raises from its SIGCHLD handler once a worker has died (a process-group SIGTERM
        ends the workers too), which broke off finishing the WandB run or writing run.json."""
        self._cleaning_up = True
        if threading.current_thread() is threading.main_thread():  # where signal handlers can be set
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # not restored: no DataLoader runs after this


def _worker_terminated(exc: BaseException) -> bool:
    """torch's error for a DataLoader worker that died of SIGTERM (see torch/utils/data/_utils/signal_handling)."""
    return isinstance(exc, RuntimeError) and "killed by signal: Terminated" in str(exc)
