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

A new engine is one new file: a subclass with a ``name``, a ``from_settings`` constructor and the methods
below, plus one line in ``app/launchers/registry.py``.
"""

from __future__ import annotations

import abc
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from app.errors import EngineUnavailable, LaunchError

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.statedir import StateDir

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


@dataclass(frozen=True)
class Outcome:
    """How a run ended. ``reason`` is None exactly when it succeeded."""

    exit_code: int | None
    reason: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.reason is None and self.exit_code == 0

    @classmethod
    def from_exit_code(cls, code: int, oom: bool = False, shell: bool = False) -> Outcome:
        """``code``: negative for a signal (as Python reports a child's end). ``shell``: the engine reports
        a signal as 128+N, as a shell does (Docker); other codes above 128 are plain exit codes."""
        if oom:
            return cls(code, "killed: out of memory")
        if code == 0:
            return cls(0)
        if code < 0:
            return cls(code, _killed(-code, code))
        if shell and 128 < code <= 128 + _MAX_SIGNAL:
            return cls(code, _killed(code - 128, code))
        return cls(code, f"exited with code {code}")


_MAX_SIGNAL = 64


def _killed(number: int, code: int) -> str:
    try:
        return f"killed by {signal.Signals(number).name} (signal {number}, exit code {code})"
    except ValueError:
        return f"killed by signal {number} (exit code {code})"


LOST = "lost while the service was down: no trace of the process or its exit status"


class Launcher(abc.ABC):
    name: ClassVar[str]
    places_runs: ClassVar[bool] = False
    batch_polling: ClassVar[bool] = False
    poll_interval_s: ClassVar[float] = 5.0  # between two poll_many queries, when batch_polling

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Settings, state: StateDir) -> Launcher:
        """The launcher for the service. Its own settings (LABRUN_<NAME>_*) are read here; bad ones raise
        SettingsError naming each variable."""

    @abc.abstractmethod
    def start(self, spec: LaunchSpec) -> str:
        """Start the run and return a handle (pid, container id, ...) to store with it.
        Raises LaunchError if it cannot start, EngineUnavailable if the engine is down."""

    @abc.abstractmethod
    def poll(self, name: str, handle: str) -> Outcome | None:
        """None while the run is still going; its Outcome once ended (Outcome(None, LOST) if it vanished)."""

    def poll_many(self, runs: Mapping[str, str]) -> dict[str, Outcome | None]:
        """``poll`` for many runs (name -> handle) at once; a cluster launcher answers with one query."""
        return {name: self.poll(name, handle) for name, handle in runs.items()}

    @abc.abstractmethod
    def wait(self, name: str, handle: str, timeout: float | None = None) -> Outcome | None:
        """Block until the run ends (its Outcome) or the timeout passes (None). Runs in a watcher thread."""

    @abc.abstractmethod
    def cancel(self, name: str, handle: str, grace_s: float) -> None:
        """Ask the run to stop (SIGTERM), then kill it after ``grace_s`` seconds. Returns once it is gone."""

    @abc.abstractmethod
    def reattach(self, name: str) -> str | None:
        """The handle of a run started under this name, if the engine knows of one (after a restart)."""

    def attempts(self, name: str) -> tuple[int, bool]:
        """(attempts the engine has started for the run, whether it waits to run again after a requeue):
        a cluster requeues a preempted job by itself. (0, False): the engine does not requeue."""
        return 0, False

    def forget(self, name: str) -> None:  # noqa: B027 - optional hook
        """Drop what the engine keeps of a run's last attempt (its exit code, its pid), so that the run can
        start again as its next attempt (POST /runs/{name}/resume). Its log is kept and appended to."""

    def release(self, name: str, handle: str) -> None:  # noqa: B027 - optional hook
        """Free what the engine keeps for an ended run (a container), once its outcome is recorded."""

    def leftovers(self) -> dict[str, str]:
        """Runs the engine still keeps something for (name -> handle), whatever their state. At start-up the
        service releases those whose outcome is already recorded: it died between recording and releasing."""
        return {}

    def health(self) -> tuple[bool, str]:
        """(ok, detail) for /healthz."""
        return True, f"{self.name} launcher ready"
