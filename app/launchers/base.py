"""The launcher interface: how a run's trainer process is started, watched, stopped and found again.

One class per engine (``local.py``, ``docker.py``, ...), each mostly glue. The run lifecycle
(``app/lifecycle.py``) is the only caller; it never looks inside a handle.

A launcher must make every run findable again *by its name alone* (a state file, a container name, a job
name): the service may be killed between starting a run and recording its handle, and after a restart
``reattach(name)`` is how it learns that the run exists. Exit codes must outlive the service: a run that
ends while the service is down still reports its true outcome on the next ``poll``.

A launcher declares two things about its engine:
- ``places_runs``: False (local, Docker) when the service hands it host GPU ids (``LaunchSpec.gpus``) from
  its own inventory; True (a cluster scheduler) when the engine picks nodes and GPUs itself: the service
  then keeps no GPU inventory for it, and passes only how many GPUs a run needs (``LaunchSpec.gpu_need``).
- ``batch_polling``: False when ``wait`` blocks cheaply on one run (a pidfd, the Engine's wait API), so the
  service follows each run with a thread; True when the engine is best asked about all runs in one query
  per interval (``poll_many``), as a cluster wants.

What every engine does the same is done here, once (submitit's ``InfoWatcher`` split): the cancel
(``cancel``: mark, SIGTERM, the grace period, mark, SIGKILL), the wait loop (``wait``, over ``poll``), how
an exit code becomes an ``Outcome`` (``outcome``: one message for each way a run ends, whatever the
engine), and forgetting an ended attempt (``forget``). The state files they use are named in
``app/statedir.py`` (``RunFiles``). An engine's file supplies only its commands and how to read their
answers: ``start``, ``poll``, ``reattach``, the two signals (``_terminate``, ``_kill``) and, where it has
one, a cheap blocking wait (``_block``).

A new engine is one new file: a subclass with a ``name``, a ``from_settings`` constructor and the abstract
methods below, plus one line in ``app/core/engines.py``.
"""

from __future__ import annotations

import abc
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, final

from app.errors import EngineUnavailable, LaunchError
from app.statedir import RunFiles, StateDir

if TYPE_CHECKING:
    from app.core.config import Settings

__all__ = ["LOST", "EngineUnavailable", "LaunchError", "LaunchSpec", "Launcher", "Outcome"]


@dataclass(frozen=True)
class LaunchSpec:
    name: str  # the run's name: its directory name and WandB run name
    trainer_args: list[str]  # arguments after `python -m trainer` (overrides, run_name=, log_dir=)
    gpus: tuple[int, ...]  # host GPU indices assigned to this run; empty for a CPU run
    output_dir: Path  # absolute LABRUN_OUTPUT_DIR; the trainer writes <output_dir>/<date>/<name>
    state_dir: Path  # StateDir.run(name): the launcher's own files for this run
    log_path: Path  # where the run's stdout and stderr go (inside state_dir)
    env: dict[str, str] = field(default_factory=dict)  # set by the service, never taken from a request
    gpu_need: int = 0  # how many GPUs the run needs (== len(gpus) unless the launcher places runs)
    # <output_dir>/<its run_dir>: the one run directory a Docker run may see and write (None: not known)
    run_dir: Path | None = None
    priority: str = "normal"  # its class (docs/priorities.md): a cluster maps it to a partition or QOS
    # What is left of its time limit when it starts (None: none): a cluster is asked for that much time
    time_limit_s: float | None = None


LOST = "lost while the service was down: no trace of the process or its exit status"
OUT_OF_MEMORY = "killed: out of memory"
_MAX_SIGNAL = 64


@dataclass(frozen=True)
class Outcome:
    """How a run ended. ``reason`` is None exactly when it succeeded."""

    exit_code: int | None
    reason: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.reason is None and self.exit_code == 0

    @classmethod
    def from_exit_code(
        cls, code: int, oom: bool | None = False, shell: bool = False, grace_kill: str | None = None
    ) -> Outcome:
        """The one mapping from an exit code to an outcome, whatever the engine.

        ``code``: negative for a signal (as Python reports a child's end). ``shell``: the engine reports a
        signal as 128+N, as a shell does (Docker); other codes above 128 are plain exit codes. ``oom``: the
        engine saw the run killed for memory (True), saw that it was not (False), or cannot tell (None:
        a SIGKILL that labrun did not send then comes, most likely, from the kernel's out-of-memory killer).
        ``grace_kill``: the grace period of a cancel that went on to SIGKILL the run (``RunFiles``)."""
        if oom:
            return cls(code, OUT_OF_MEMORY)
        if code == 0:
            return cls(0)
        number = -code if code < 0 else code - 128 if shell and 128 < code <= 128 + _MAX_SIGNAL else None
        if number is None:
            return cls(code, f"exited with code {code}")
        if number == signal.SIGKILL and grace_kill is not None:
            return cls(
                code,
                f"killed by SIGKILL after the cancel's grace period ({grace_kill} s): it did not stop on SIGTERM",
            )
        if number == signal.SIGKILL and oom is None:
            return cls(
                code,
                f"killed by SIGKILL (signal 9, exit code {code}), not by labrun: the kernel's out-of-memory "
                "killer does this when the machine runs out of memory",
            )
        return cls(code, _killed(number, code))


def _killed(number: int, code: int) -> str:
    try:
        return f"killed by {signal.Signals(number).name} (signal {number}, exit code {code})"
    except ValueError:
        return f"killed by signal {number} (exit code {code})"


KILL_SETTLE_S = 10.0  # a SIGKILLed run is gone within this, or the engine is asked once more (_kill_harder)


class Launcher(abc.ABC):
    name: ClassVar[str]
    places_runs: ClassVar[bool] = False
    batch_polling: ClassVar[bool] = False
    poll_interval_s: float = 5.0  # between two poll_many queries, when batch_polling
    wait_step_s: float = 0.5  # between two polls of ``wait``, for an engine without ``_block``
    # While the engine cannot be reached, ``wait`` asks again after this long (until its timeout) instead of
    # raising EngineUnavailable: for an engine whose runs go on without it (a restarting Docker Engine).
    outage_retry_s: ClassVar[float | None] = None

    def __init__(self, state: StateDir) -> None:
        self.state = state

    def files(self, name: str) -> RunFiles:
        """The run's state files (``app/statedir.py``): every engine keeps its own there."""
        return self.state.files(name)

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Settings, state: StateDir) -> Launcher:
        """The launcher for the service. Its own settings (LABRUN_<NAME>_*) are read here; bad ones raise
        SettingsError naming each variable."""

    # --- what each engine supplies ---------------------------------------------------------------------

    @abc.abstractmethod
    def start(self, spec: LaunchSpec) -> str:
        """Start the run and return a handle (pid, container id, ...) to store with it.
        Raises LaunchError if it cannot start, EngineUnavailable if the engine is down."""

    @abc.abstractmethod
    def poll(self, name: str, handle: str) -> Outcome | None:
        """None while the run is still going; its Outcome once ended (Outcome(None, LOST) if it vanished).
        An ended run's Outcome comes from ``outcome``."""

    @abc.abstractmethod
    def reattach(self, name: str) -> str | None:
        """The handle of a run started under this name, if the engine knows of one (after a restart)."""

    @abc.abstractmethod
    def _terminate(self, name: str, handle: str) -> None:
        """Send SIGTERM to the run's trainer (and its workers), without waiting."""

    @abc.abstractmethod
    def _kill(self, name: str, handle: str) -> None:
        """Send SIGKILL to the run's trainer (and its workers), without waiting."""

    def _kill_harder(self, name: str, handle: str) -> None:  # noqa: B027 - optional step
        """The run outlived its SIGKILL by KILL_SETTLE_S: the engine's last resort (then wait for it)."""

    def _block(self, name: str, handle: str, seconds: float | None) -> None:  # noqa: ARG002 - a hook
        """Return when the run may have ended, or after at most ``seconds`` (None: no bound). Without a
        blocking wait in the engine, a short sleep: ``wait`` polls again."""
        time.sleep(self.wait_step_s if seconds is None else min(self.wait_step_s, seconds))

    def _drop(self, name: str) -> None:  # noqa: B027 - optional step
        """What ``forget`` removes in the engine itself, besides the run's state files (a container)."""

    # --- what every engine does the same -----------------------------------------------------------------

    def outcome(self, name: str, code: int, *, oom: bool | None = None, shell: bool = False) -> Outcome:
        """How the run ended with ``code``: ``Outcome.from_exit_code`` told whether labrun's cancel killed it."""
        return Outcome.from_exit_code(code, oom=oom, shell=shell, grace_kill=self.files(name).grace_kill())

    def poll_many(self, runs: Mapping[str, str]) -> dict[str, Outcome | None]:
        """``poll`` for many runs (name -> handle) at once; a cluster launcher answers with one query."""
        return {name: self.poll(name, handle) for name, handle in runs.items()}

    def wait(self, name: str, handle: str, timeout: float | None = None) -> Outcome | None:
        """Block until the run ends (its Outcome) or the timeout passes (None). Runs in a watcher thread."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                outcome = self.poll(name, handle)
                if outcome is not None:
                    return outcome
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._block(name, handle, left)
            except EngineUnavailable:
                if self.outage_retry_s is None:
                    raise
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                time.sleep(self.outage_retry_s if left is None else min(self.outage_retry_s, left))

    @final
    def cancel(self, name: str, handle: str, grace_s: float) -> None:
        """Ask the run to stop (SIGTERM), then kill it after ``grace_s`` seconds. Returns once it is gone.
        Each step leaves a mark first: ``cancel_marker`` (the run's trainer and its Slurm job do not take
        the SIGTERM for a preemption) and ``killed_after_grace`` (its outcome says who killed it)."""
        files = self.files(name)
        files.mark_cancel_requested()
        self._terminate(name, handle)
        if self.wait(name, handle, timeout=grace_s) is not None:
            return
        files.mark_killed_after_grace(grace_s)
        self._kill(name, handle)
        if self.wait(name, handle, timeout=KILL_SETTLE_S) is None:
            self._kill_harder(name, handle)

    @final
    def preempt(self, name: str, handle: str, grace_s: float) -> None:
        """Stop the run for a preemption (app/lifecycle/preemption.py): SIGTERM without the cancel marker, so
        that a preemptible run's trainer writes ``ckpt/last.ckpt`` at its next safe point and exits; killed
        after ``grace_s`` seconds if it has not (its outcome says so). Returns once it is gone."""
        self._terminate(name, handle)
        if self.wait(name, handle, timeout=grace_s) is not None:
            return
        self.files(name).mark_killed_after_grace(grace_s)
        self._kill(name, handle)
        if self.wait(name, handle, timeout=KILL_SETTLE_S) is None:
            self._kill_harder(name, handle)

    @final
    def forget(self, name: str) -> None:
        """Drop what is kept of a run's last attempt (its exit code, pid, job id, cancel marks, container),
        so that the run can start again as its next attempt (POST /runs/{name}/resume). Its log is kept and
        appended to."""
        self._drop(name)
        self.files(name).forget_attempt()

    # --- optional -----------------------------------------------------------------------------------------

    def attempts(self, name: str) -> tuple[int, bool]:  # noqa: ARG002 - a hook
        """(attempts the engine has started for the run, whether it waits to run again after a requeue):
        a cluster requeues a preempted job by itself. (0, False): the engine does not requeue."""
        return 0, False

    def release(self, name: str, handle: str) -> None:  # noqa: B027 - optional hook
        """Free what the engine keeps for an ended run (a container), once its outcome is recorded."""

    def leftovers(self) -> dict[str, str]:
        """Runs the engine still keeps something for (name -> handle), whatever their state. At start-up the
        service releases those whose outcome is already recorded: it died between recording and releasing."""
        return {}

    def health(self) -> tuple[bool, str]:
        """(ok, detail) for /healthz."""
        return True, f"{self.name} launcher ready"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Let go of the engine (its client's connections) when the service stops; the runs carry on."""
