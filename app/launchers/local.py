"""LocalLauncher: each run is the trainer as a local process, supervised by a tiny wrapper.

    service ──Popen(new session)──> run_wrapper.py ──Popen(new session)──> trainer (+ its workers)

- The wrapper records the trainer's exit code in ``RunFiles.exit_code``, so an outcome is known even
  when the service was down when the run ended; ``pid``/``child_pid`` hold "pid start-time" so a reused
  pid is never mistaken for the run.
- The handle is "wrapper-pid:start-time". Waiting is event-driven: a pidfd (``os.pidfd_open``) becomes
  readable the moment the wrapper exits, whether or not it is our child (after a restart it is not).
- Cancel (``Launcher.cancel``): the signals go to the trainer's process group; the wrapper survives to
  record the exit code.
- cwd is the output directory (the trainer creates ``<date>/<name>`` itself and refuses an existing one);
  CUDA_VISIBLE_DEVICES is the assigned GPUs, empty for a CPU run.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from typing_extensions import override

from app.launchers.base import LOST, Launcher, LaunchError, LaunchSpec, Outcome
from app.launchers.run_wrapper import proc_stat, start_time
from trainer.atomic import write_atomic

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.statedir import StateDir

WRAPPER = Path(__file__).with_name("run_wrapper.py")
TRAINER_START_S = 5.0  # how long a cancel just after a start waits for the wrapper to start the trainer
SUPERVISOR_KILLED = "the run's supervisor process was killed (not by labrun); its trainer was stopped"


class LocalLauncher(Launcher):
    name = "local"

    def __init__(self, trainer_command: list[str], state: StateDir) -> None:
        super().__init__(state)
        self.trainer_command = list(trainer_command)
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # runs this process started, until reaped
        self._seen_running: set[str] = set()  # runs this service saw alive: a later vanishing is not "lost"
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, state: StateDir) -> LocalLauncher:
        return cls(settings.trainer_command, state)  # LABRUN_TRAINER_COMMAND: the local launcher has no other

    # --- Launcher ------------------------------------------------------------------------------------------

    def start(self, spec: LaunchSpec) -> str:
        files = self.files(spec.name)
        files.dir.mkdir(parents=True, exist_ok=True)
        if files.pid.exists():
            raise LaunchError(f"run {spec.name!r} was already started once (found {files.pid})")
        env = {**os.environ, **spec.env, "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in spec.gpus)}
        # CUDA numbers GPUs fastest first unless told otherwise; labrun's ids are NVML's and nvidia-smi's
        # (PCI bus order): on a box with mixed models "1" would otherwise be another GPU than the guard
        # checked (app/gpus/).
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        # -S: the wrapper needs only the standard library and the project's own modules (it puts the project
        # on its path itself); without site's start-up it costs a third less CPU, taken from the service's
        # requests on a small machine while runs start (bench/hot_paths_bench.py).
        argv = [
            sys.executable,
            "-S",
            str(WRAPPER),
            str(files.dir),
            "--",
            *self.trainer_command,
            *spec.trainer_args,
        ]
        try:
            with open(spec.log_path, "ab") as log:
                proc = subprocess.Popen(
                    argv,
                    cwd=spec.output_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            raise LaunchError(f"could not start the run's process: {exc}") from None
        started = start_time(proc.pid)
        # The wrapper writes the same file as its first act; writing it here too closes the window in
        # which a kill -9 of the service would leave a started run without a trace. Not fsynced: a kill -9
        # loses no page cache, and a power loss that would lose the file takes the run's processes with it.
        write_atomic(files.pid, f"{proc.pid} {started}\n", durable=False)
        with self._lock:
            self._children[spec.name] = proc
        return f"{proc.pid}:{started}"

    def poll(self, name: str, handle: str) -> Outcome | None:
        code = self.files(name).read_exit_code()
        if code is not None:
            self._reap(name)
            return self.outcome(
                name, code
            )  # oom=None: a SIGKILL not from the cancel is most likely the OOM killer
        pid, started = _parse(handle)
        if self._running(name, pid, started):
            with self._lock:
                self._seen_running.add(name)
            return None
        code = self.files(name).read_exit_code()  # it may have ended between the two checks
        if code is not None:
            return self.outcome(name, code)
        self._kill_group(name, signal.SIGKILL)  # the supervisor died; do not leave its trainer behind
        with self._lock:
            seen = name in self._children or name in self._seen_running
        return Outcome(None, SUPERVISOR_KILLED if seen else LOST)

    def _block(self, name: str, handle: str, seconds: float | None) -> None:
        """Until the wrapper exits: its pidfd becomes readable then, whoever its parent is."""
        pid, started = _parse(handle)
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            if not self._running(name, pid, started):  # the pid could have been reused before the open
                return
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if not poller.poll(None if seconds is None else max(0, int(seconds * 1000))):
                return
        finally:
            os.close(fd)
        self._reap(name)

    def _terminate(self, name: str, handle: str) -> None:
        # Just after a start the trainer may not exist yet: give the wrapper a moment to start it, so the
        # SIGTERM reaches the trainer (and the wrapper stays alive to record the exit code).
        pid, started = _parse(handle)
        deadline = time.monotonic() + TRAINER_START_S
        while not self._kill_group(name, signal.SIGTERM):
            if not self._running(name, pid, started):
                return
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)  # the wrapper forwards it once the trainer exists
                return
            time.sleep(0.01)

    @override
    def _kill(self, name: str, handle: str) -> None:
        self._kill_group(name, signal.SIGKILL)

    def _kill_harder(self, name: str, handle: str) -> None:
        pid, started = _parse(handle)
        if self._running(name, pid, started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.wait(name, handle, timeout=5)

    def reattach(self, name: str) -> str | None:
        try:
            pid, started = self.files(name).pid.read_text().split()
        except (OSError, ValueError):
            return None
        return f"{pid}:{started}"

    @override
    def release(self, name: str, handle: str) -> None:
        self._reap(name)
        with self._lock:
            self._seen_running.discard(name)

    def health(self) -> tuple[bool, str]:
        program = self.trainer_command[0]
        if shutil.which(program) is None and not Path(program).is_file():
            return False, f"trainer command not found: {program}"
        return True, "local launcher ready"

    # --- helpers -------------------------------------------------------------------------------------------

    def _running(self, name: str, pid: int, started: str) -> bool:
        with self._lock:
            proc = self._children.get(name)
        if proc is not None and proc.pid == pid:
            return proc.poll() is None
        return _alive(pid, started)

    def _reap(self, name: str) -> None:
        with self._lock:
            proc = self._children.pop(name, None)
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with self._lock:
                    self._children.setdefault(name, proc)

    def _kill_group(self, name: str, sig: signal.Signals) -> bool:
        """Signal the trainer's process group; False if there is no live trainer to signal."""
        try:
            pid, started = self.files(name).child_pid.read_text().split()
        except (OSError, ValueError):
            return False
        if not _alive(int(pid), started):  # never signal a group whose leader's pid was reused
            return False
        try:
            os.killpg(int(pid), sig)  # the trainer leads its own group (its workers are in it too)
        except (ProcessLookupError, PermissionError):
            return False
        return True


def _parse(handle: str) -> tuple[int, str]:
    pid, _, started = handle.partition(":")
    return int(pid), started


def _alive(pid: int, started: str) -> bool:
    """The process exists, is not a zombie, and is the one that started at ``started``."""
    try:
        fields = proc_stat(pid)
    except (OSError, IndexError):
        return False
    return fields[0] not in ("Z", "X") and fields[19] == started
