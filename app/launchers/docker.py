"""The ``docker`` launcher: each run in its own container from the trainer image (docker/trainer.Dockerfile).

Finding a run again: the container's name is derived from the run's name alone (``container_name``) and
carries it in a label (``labrun.run``), so ``reattach(name)`` needs nothing the service may have lost.
The container stays until ``release()``: the Engine keeps its exit code and out-of-memory flag for as long
as it exists, so a run that ended while the service was down still reports its true outcome.

Logs: inside the container, ``python -m trainer.logbound`` runs the trainer and writes its stdout and
stderr to ``spec.log_path`` itself (the log file, and the file it notes its cuts in, are mounted at the
same paths inside), so the log keeps growing while the service is down, bounded by
``LABRUN_MAX_LOG_BYTES`` as for every launcher (the same writer as the local and Slurm wrappers'). Its own
messages (an image without it, say) are appended to the log by the shell that starts it. The image id goes
to the trainer as ``LABRUN_IMAGE_ID`` (run.json names it); the code version is
baked into the image (``LABRUN_CODE_VERSION``).

What a run sees of the output directory (``_mounts``): its own run directory and its log, read-write,
the data cache, read-only, and, for a run started from another's checkpoint, that one file, read-only;
nothing else, so not the store nor another run's other files.
The service makes the run directory before the container starts; the trainer takes it, empty, as made for
it (``LABRUN_RUN_DIR``). Every run has the same user (``user``): the mounts, not the uid, keep runs apart.

Hardening of every run container: a non-root user, ``no-new-privileges``, every capability dropped, a
read-only root file system with a tmpfs on /tmp (HOME and caches), pid and memory limits (no swap), a
large /dev/shm for DataLoader workers, no network unless WandB is online, and an environment that only
the service sets. GPUs are an Engine device request for exactly the assigned ids; a CPU run asks for none
and hides any GPU a default ``nvidia`` runtime would otherwise expose.

Engine errors map onto the interface's: connection failures become ``EngineUnavailable`` (the run stays
queued and is retried), anything the Engine refuses becomes ``LaunchError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.types import DeviceRequest, LogConfig, Mount
from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from typing_extensions import override

from app.core.config import Settings, load_engine_settings
from app.launchers.base import LOST, EngineUnavailable, Launcher, LaunchError, LaunchSpec, Outcome
from app.statedir import StateDir
from trainer import runenv
from trainer.logbound import cut_path
from trainer.runenv import RunEnv

LABEL_RUN = "labrun.run"
LABEL_OUTPUT_DIR = "labrun.output_dir"
IMAGE_USER = "10001:10001"  # the unprivileged user of docker/trainer.Dockerfile
DATA_CACHE_DIR = ".data_cache"  # the trainer's data_root: <log_dir>/.data_cache (conf/paths/local.yaml)
# The command runs under the bounded log writer (trainer/logbound.py), which copies its output to
# $LABRUN_LOG_PATH and passes on the signals docker-init forwards; the writer's own output (an image too old
# to have it: "No module named trainer.logbound") is appended to the log by the shell.
LOG_ENTRYPOINT = (
    "/bin/sh",
    "-c",
    f'exec python -m trainer.logbound -- "$@" >>"${runenv.LOG_PATH}" 2>&1',
    "labrun-run",
)
# Variables that describe the service's machine, not the run: never copied into a container.
HOST_ONLY_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
    }
)
_SIZE = re.compile(r"^\d+[bkmgBKMG]?$")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_RUNNING_STATES = frozenset({"created", "running", "paused", "restarting", "removing"})
_WANDB_LOCAL_MODES = frozenset({"offline", "disabled", "dryrun"})


class DockerSettings(BaseSettings):
    """``LABRUN_DOCKER_*``: read once at start-up; a bad value stops the service with a clear message."""

    model_config = SettingsConfigDict(env_prefix="LABRUN_DOCKER_", extra="ignore")

    image: str = "labrun-trainer:latest"  # the trainer image runs start from (compose.yaml builds this tag)
    host: str | None = None  # the Engine, e.g. unix:///var/run/docker.sock; default: DOCKER_HOST or local
    memory: str = "32g"  # memory limit per run (no swap on top)
    pids_limit: int = 4096  # processes and threads per run
    shm_size: str = "8g"  # /dev/shm per run: DataLoader workers pass batches through it
    tmp_size: str = "4g"  # the /tmp tmpfs per run (HOME, caches); counts against memory
    network: str = "auto"  # auto: none unless WandB is online (WANDB_API_KEY set); or none, bridge, a network
    data_cache: Path | None = (
        None  # host directory of the data cache, read-only in runs; default: <output_dir>/.data_cache
    )
    user: str | None = None  # uid:gid runs start as; default: the service's own, or 10001:10001 if root
    api_timeout_s: float = 30.0  # seconds to wait for an answer of the Engine

    @field_validator("memory", "shm_size", "tmp_size")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _SIZE.match(value):
            raise ValueError(f"{value!r} is not a size like 512m or 8g")
        return value.lower()

    @field_validator("pids_limit")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 64:
            raise ValueError("must be at least 64 (Python, torch and DataLoader workers need threads)")
        return value

    @field_validator("user")
    @classmethod
    def _uid_gid(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d+:\d+", value):
            raise ValueError(f"{value!r} is not numeric uid:gid")
        if value is not None and value.split(":")[0] == "0":
            raise ValueError("runs never run as root")
        return value

    @field_validator("data_cache")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("must be an absolute path on the Docker host")
        return value


def container_name(run_name: str) -> str:
    """A valid, unique container name made from the run's name alone (readable prefix + hash of the name)."""
    readable = _NAME_UNSAFE.sub("-", run_name)[:80].strip("-.")
    return f"labrun-{readable}-{hashlib.sha256(run_name.encode()).hexdigest()[:12]}"


class DockerLauncher(Launcher):
    name: ClassVar[str] = "docker"
    # A run goes on while the Engine restarts or its API is unreachable: wait asks again meanwhile.
    outage_retry_s: ClassVar[float | None] = 2.0

    def __init__(
        self,
        settings: DockerSettings,
        output_dir: Path,
        command: tuple[str, ...] = ("python", "-m", "trainer"),
    ) -> None:
        self.output_dir = Path(output_dir).resolve()
        super().__init__(StateDir(self.output_dir))
        self.settings = settings
        self.command = tuple(command)  # what the container runs before the spec's trainer_args
        self.user = settings.user or (f"{os.getuid()}:{os.getgid()}" if os.geteuid() != 0 else IMAGE_USER)
        self._client_lock = threading.Lock()
        self._docker: docker.DockerClient | None = None

    @classmethod
    @override
    def from_settings(cls, settings: Settings, state: StateDir) -> DockerLauncher:
        """The launcher for the service: LABRUN_DOCKER_* from the environment; bad values stop start-up."""
        return cls(load_engine_settings(DockerSettings), state.output_dir)

    # -- what the Engine is asked for -------------------------------------------------------------------

    def create_kwargs(self, spec: LaunchSpec, image_id: str) -> dict[str, Any]:
        """The arguments of ``containers.create`` for a run: everything a run container is, in one place."""
        s = self.settings
        output_dir = str(spec.output_dir)
        run_dir = self._run_dir(spec)
        network, wandb_key = self._network(spec)
        wandb_mode = self._wandb_mode(spec)
        env = {k: v for k, v in spec.env.items() if k not in HOST_ONLY_ENV and k != "WANDB_API_KEY"}
        env.update(HOME="/tmp", PYTHONUNBUFFERED="1")
        env.update(RunEnv(log_path=spec.log_path, image_id=image_id).to_env())
        env.update(RunEnv(run_dir=run_dir).to_env())  # made for the run: the trainer takes it (empty)
        if wandb_key:
            env["WANDB_API_KEY"] = wandb_key
        else:
            env["WANDB_MODE"] = wandb_mode or "offline"
        if not spec.gpus:
            # A GPU box whose default runtime is `nvidia` would otherwise expose the image's "all".
            env["NVIDIA_VISIBLE_DEVICES"] = "void"
        else:  # the Engine's device ids are nvidia-smi's (PCI bus order); CUDA inside numbers them alike
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        device_requests = (
            [DeviceRequest(driver="nvidia", device_ids=[str(g) for g in spec.gpus], capabilities=[["gpu"]])]
            if spec.gpus
            else []
        )
        return {
            "image": image_id,
            "name": container_name(spec.name),
            "labels": {LABEL_RUN: spec.name, LABEL_OUTPUT_DIR: output_dir},
            "entrypoint": list(LOG_ENTRYPOINT),
            "command": [*self.command, *spec.trainer_args],
            "environment": env,
            "user": self.user,
            "working_dir": "/tmp",
            "detach": True,
            "init": True,  # docker-init as pid 1: SIGTERM reaches the trainer, zombies are reaped
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={s.tmp_size},mode=1777"},
            "security_opt": ["no-new-privileges:true"],
            "cap_drop": ["ALL"],
            "pids_limit": s.pids_limit,
            "mem_limit": s.memory,
            "memswap_limit": s.memory,
            "shm_size": s.shm_size,
            "network_mode": network,
            "mounts": self._mounts(spec, run_dir),
            "device_requests": device_requests,
            "restart_policy": {"Name": "no"},
            # The trainer's output goes to the log file; the Engine keeps only what escapes it.
            "log_config": LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
        }

    def _mounts(self, spec: LaunchSpec, run_dir: Path) -> list[Mount]:
        """All a run sees of the output directory, each at its host path (so that the names in run.json
        are the host's): its own run directory and its log, read-write, and the data cache, read-only (a
        run that could write it could hand every later run of the same data config wrong samples). The
        store, the service's state and every other run's directory and log do not exist inside."""
        cache = _bind(self._data_cache(spec), spec.output_dir / DATA_CACHE_DIR, read_only=True)
        return [_bind(run_dir, run_dir), *self._log_mounts(spec), cache, *self._init_mounts(spec, run_dir)]

    def _init_mounts(self, spec: LaunchSpec, run_dir: Path) -> list[Mount]:
        """The one checkpoint a run started from another run's reads (``init_from``: the service resolved
        it, docs/run-chains.md), read-only at its host path: that file, not the other run's directory.
        LaunchError for a path that is not a plain file of another run inside the output directory."""
        path = RunEnv.from_env(spec.env).init_from_ckpt
        if path is None:
            return []
        output_dir = Path(os.path.realpath(spec.output_dir))  # the service hands over a real path
        reserved = (StateDir(output_dir).root, output_dir / DATA_CACHE_DIR, Path(os.path.realpath(run_dir)))
        inside = output_dir in path.parents and not any(p in path.parents for p in reserved)
        if not inside or Path(os.path.realpath(path)) != path or not path.is_file():
            raise LaunchError(f"{path} is not a checkpoint of a run inside {output_dir}")
        return [_bind(path, path, read_only=True)]

    @staticmethod
    def _log_mounts(spec: LaunchSpec) -> list[Mount]:
        """The log file alone, not its state folder: a run can write into it but cannot swap it for a
        link to a file of the service's, which the log API would then serve (a mount point cannot be
        renamed or removed from inside). ``_prepare_dirs`` creates it first: a bind mount's source must
        exist. The same for the file the log's writer notes its cuts in (``trainer/logbound.py``)."""
        cut = cut_path(spec.log_path)
        return [_bind(spec.log_path, spec.log_path), _bind(cut, cut)]

    def _data_cache(self, spec: LaunchSpec) -> Path:
        return self.settings.data_cache or spec.output_dir / DATA_CACHE_DIR

    @staticmethod
    def _run_dir(spec: LaunchSpec) -> Path:
        """The run's own directory, absolute as the trainer names it. LaunchError when the spec names none
        or one that is not a run's (the output directory itself, the service's state, the data cache):
        mounting it would show the run more than its own."""
        if spec.run_dir is None:
            raise LaunchError(f"no run directory for {spec.name}: a Docker run is shown its own only")
        output_dir = Path(os.path.abspath(spec.output_dir))
        run_dir = Path(os.path.abspath(spec.run_dir))
        reserved = (StateDir(output_dir).root, output_dir / DATA_CACHE_DIR)
        if output_dir not in run_dir.parents or any(p == run_dir or p in run_dir.parents for p in reserved):
            raise LaunchError(f"{run_dir} is not a run directory inside {output_dir}")
        return run_dir

    def _network(self, spec: LaunchSpec) -> tuple[str, str | None]:
        """(network mode, WandB key to pass): online only when the service has a key and the policy allows."""
        key = spec.env.get("WANDB_API_KEY") or os.environ.get("WANDB_API_KEY") or None
        if self._wandb_mode(spec):
            key = None  # the service says offline: a local run would be offline too (trainer/rundir.py)
        policy = self.settings.network
        if policy == "none" or (policy == "auto" and not key):
            return "none", None
        return ("bridge" if policy == "auto" else policy), key

    @staticmethod
    def _wandb_mode(spec: LaunchSpec) -> str | None:
        """The service's WANDB_MODE when it keeps WandB off the network (offline, disabled, dryrun): an
        explicit mode wins over a key, as the trainer's own rule says."""
        mode = (spec.env.get("WANDB_MODE") or os.environ.get("WANDB_MODE") or "").strip().lower()
        return mode if mode in _WANDB_LOCAL_MODES else None

    # -- the interface ----------------------------------------------------------------------------------

    def start(self, spec: LaunchSpec) -> str:
        client = self._client()
        with self._engine("start"):
            existing = self._find(client, spec.name)
            if existing is not None:
                # Started before the service could record it (killed in between): the same run, never twice.
                if existing.status == "created":
                    existing.start()
                found: str = existing.id
                return found
            try:
                image = client.images.get(self.settings.image)
            except ImageNotFound:
                raise LaunchError(
                    f"image {self.settings.image} not found: build it (docker compose build)"
                ) from None
            self._prepare_dirs(spec)
            try:
                container = client.containers.create(**self.create_kwargs(spec, image.id))
            except APIError as exc:
                raise LaunchError(f"docker refused to create the run's container: {_explain(exc)}") from None
            try:
                container.start()
            except APIError as exc:
                # It never ran (e.g. no NVIDIA runtime for a GPU request): nothing to record but this error.
                with contextlib.suppress(DockerException):
                    container.remove(force=True)
                raise LaunchError(f"docker could not start the run's container: {_explain(exc)}") from None
            started: str = container.id
            return started

    def poll(self, name: str, handle: str) -> Outcome | None:
        client = self._client()
        with self._engine("poll"):
            try:
                container = client.containers.get(handle)
            except NotFound:
                return Outcome(None, LOST)
            status = _exit_status(container)
        if status is None:
            return None
        code, oom = status
        return self.outcome(name, code, oom=oom, shell=True)

    @override
    def _block(self, name: str, handle: str, seconds: float | None) -> None:
        """The Engine's own wait: it answers when the container stops (asked in slices of at most 30 s)."""
        left = 30.0 if seconds is None else min(30.0, seconds)
        with contextlib.suppress(requests.exceptions.RequestException, NotFound):
            self._client().api.wait(handle, timeout=max(1, math.ceil(left)))

    @override
    def _terminate(self, name: str, handle: str) -> None:
        self._signal(handle, "SIGTERM")  # docker-init (pid 1) passes it on to the trainer

    @override
    def _kill(self, name: str, handle: str) -> None:
        self._signal(handle, "SIGKILL")

    def reattach(self, name: str) -> str | None:
        client = self._client()
        with self._engine("reattach"):
            container = self._find(client, name)
            if container is None:
                return None
            if container.status == "created":  # created but never started: it has not run yet
                container.start()
            handle: str = container.id
            return handle

    def _drop(self, name: str) -> None:
        """A resumed run starts a new container under the same name: the last attempt's must be gone."""
        client = self._client()
        with self._engine("forget"):
            container = self._find(client, name)
            if container is not None:
                with contextlib.suppress(NotFound):
                    container.remove(force=True)

    @override
    def release(self, name: str, handle: str) -> None:
        client = self._client()
        with self._engine("release"), contextlib.suppress(NotFound):
            client.api.remove_container(handle, force=True)

    def leftovers(self) -> dict[str, str]:
        """This service's run containers only: another labrun on the same Engine (a test instance beside
        the lab's) labels its own with its own output directory."""
        client = self._client()
        with self._engine("list"):
            # The low-level list: its rows carry the labels, without one inspect call per container.
            # Several label filters must all match.
            ours = [LABEL_RUN, f"{LABEL_OUTPUT_DIR}={self.output_dir}"]
            rows = client.api.containers(all=True, filters={"label": ours})
        return {row["Labels"][LABEL_RUN]: row["Id"] for row in rows}

    def health(self) -> tuple[bool, str]:
        try:
            client = self._client()
            with self._engine("health"):
                version = client.version().get("Version", "?")
                try:
                    image = client.images.get(self.settings.image)
                except ImageNotFound:
                    return (
                        False,
                        f"docker engine {version} up, image {self.settings.image} missing (build it)",
                    )
        except EngineUnavailable as exc:
            return False, f"docker engine down: {exc}"
        return True, f"docker engine {version}, image {self.settings.image} ({image.id[:19]})"

    @override
    def close(self) -> None:
        with self._client_lock:
            if self._docker is not None:
                self._docker.close()  # its pooled connections to the Engine
                self._docker = None

    # -- helpers ----------------------------------------------------------------------------------------

    def _client(self) -> docker.DockerClient:
        """The Engine client, made on first use (API version negotiated then); EngineUnavailable if down."""
        with self._client_lock:
            if self._docker is None:
                _check_socket(self.settings.host or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET)
                try:
                    kwargs: dict[str, Any] = {"version": "auto", "timeout": self.settings.api_timeout_s}
                    if self.settings.host:
                        self._docker = docker.DockerClient(base_url=self.settings.host, **kwargs)
                    else:
                        self._docker = docker.from_env(**kwargs)
                except DockerException as exc:
                    raise EngineUnavailable(_explain(exc)) from None
            return self._docker

    @contextlib.contextmanager
    def _engine(self, what: str) -> Iterator[None]:
        """Connection-level failures mean the Engine is unreachable, not that the run failed."""
        try:
            yield
        except requests.exceptions.RequestException as exc:
            raise EngineUnavailable(f"docker engine unreachable during {what}: {_explain(exc)}") from None
        except APIError as exc:
            if exc.status_code is not None and exc.status_code >= 500 and what != "start":
                raise EngineUnavailable(f"docker engine error during {what}: {_explain(exc)}") from None
            raise

    def _signal(self, handle: str, sig: str) -> None:
        """Send ``sig`` to the container's pid 1; one that is gone or has stopped already needs none."""
        client = self._client()
        with self._engine("cancel"):
            try:
                client.api.kill(handle, signal=sig)
            except NotFound:
                return
            except APIError as exc:
                if exc.status_code != 409:  # 409: the container is not running
                    raise

    def _find(self, client: docker.DockerClient, run_name: str) -> Container | None:
        """The container of a run of this service: by its derived name, checked against its labels. One of
        another labrun service on the same Engine (another output directory) is not ours: None (starting
        the run then fails on the name, as it must: that container is not ours to touch)."""
        try:
            container = client.containers.get(container_name(run_name))
        except NotFound:
            return None
        if container.labels.get(LABEL_RUN) != run_name:
            raise LaunchError(f"container {container.name} exists but belongs to another run")
        if container.labels.get(LABEL_OUTPUT_DIR) != str(self.output_dir):
            return None
        return container

    def _prepare_dirs(self, spec: LaunchSpec) -> None:
        """Make what is mounted (a bind mount's source must exist): the log file and the file the log's
        writer notes its cuts in, the run's directory (the trainer takes it while it is empty:
        ``LABRUN_RUN_DIR``) and the data cache. A root service hands the run's user its directory, its log
        and the cut file; the cache stays the service's (runs only read it)."""
        spec.state_dir.mkdir(parents=True, exist_ok=True)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        spec.log_path.touch(exist_ok=True)
        cut = cut_path(spec.log_path)  # the writer records its cuts there; it may not create files here
        cut.touch(exist_ok=True)
        run_dir = self._run_dir(spec)
        run_dir.mkdir(parents=True, exist_ok=True)
        self._data_cache(spec).mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        uid, gid = (int(part) for part in self.user.split(":"))
        for path in (run_dir, spec.log_path, cut):
            if path.stat().st_uid != uid:
                os.chown(path, uid, gid)


def _bind(source: Path, target: Path, read_only: bool = False) -> Mount:
    return Mount(target=str(target), source=str(source), type="bind", read_only=read_only)


def _exit_status(container: Container) -> tuple[int, bool] | None:
    """(exit code, killed for memory) of a container that has ended; None while it runs. The one place
    where an Engine container state is read."""
    state = container.attrs.get("State", {})
    if state.get("Status") in _RUNNING_STATES:
        return None
    code = int(state.get("ExitCode", -1))
    # The Engine flags OOMKilled when any process in the container was killed for memory; a trainer that
    # still exited 0 finished its run (and its run.json says so).
    return code, bool(state.get("OOMKilled")) and code != 0


DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def _check_socket(url: str) -> None:
    """EngineUnavailable when the Engine's Unix socket takes no connection. Asked with a socket of our own:
    the SDK's client, failing to connect there, leaves its socket open for the garbage collector."""
    if not url.startswith("unix://"):
        return  # a TCP Engine: the SDK's own connection error says what is wrong
    path = url.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        try:
            probe.connect(path)
        except OSError as exc:
            raise EngineUnavailable(
                f"cannot connect to the Docker Engine at {url}: {exc.strerror or exc}"
            ) from None


def _explain(exc: BaseException) -> str:
    if isinstance(exc, APIError):
        return str(exc.explanation or exc)
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
