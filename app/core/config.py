"""The service's settings: environment variables with the prefix ``LABRUN_``, read once at start-up.

Bad settings fail loudly before the service accepts anything (``python -m app`` prints what is wrong and
exits with status 2), never at first use.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.engines import LAUNCHERS, unknown_launcher
from trainer.logbound import MIN_BOUND as MIN_LOG_BOUND


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABRUN_", extra="ignore", validate_default=True)

    host: str = Field("127.0.0.1", description="address to serve on (beyond loopback, auth must be on)")
    port: int = Field(8000, ge=1, le=65535, description="port to serve on")
    output_dir: Path = Field(
        Path("./outputs"),
        description="where runs write (<output dir>/<YYYY-MM-DD>/<name>) and where the store lives (.labrun/)",
    )
    launcher: str = Field(
        "local",
        description="the engine that starts runs: local (child processes), docker (a container per run, "
        "LABRUN_DOCKER_*) or slurm (a batch job per run, LABRUN_SLURM_*)",
    )
    gpus: Annotated[tuple[int, ...] | None, NoDecode] = Field(
        None,
        description="host GPU indices labrun may hand out, e.g. 0,1,2,3; unset: detected with nvidia-smi; "
        "empty: none (CPU only)",
    )
    max_cpu_runs: int = Field(1, ge=1, le=1024, description="CPU-only runs at once")
    cancel_grace_s: float = Field(
        10.0, ge=0, le=3600, description="seconds between SIGTERM and SIGKILL when a run is stopped"
    )
    trainer_command: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [sys.executable, "-m", "trainer"],
        description="the trainer's command line, before its overrides: a JSON list or shell words",
    )
    max_overrides: int = Field(64, ge=1, le=10_000, description="override lines one request may hold")
    max_override_chars: int = Field(
        512, ge=1, le=100_000, description="characters one override line may hold"
    )
    max_overrides_bytes: int = Field(
        8192, ge=1, le=10_000_000, description="bytes all override lines of one request may hold together"
    )
    log_tail_lines: int = Field(50, ge=0, le=10_000, description="lines of the log kept with a failed run")
    log_tail_bytes: int = Field(
        4096, ge=256, le=1 << 20, description="... and at most this many bytes of them"
    )
    # The bound is kept by the process that owns the trainer's output (trainer/logbound.py).
    max_log_bytes: int = Field(
        1 << 30,
        ge=0,
        description="the most a run's log file keeps: its beginning and its end, with a marker line where "
        f"the middle was cut (0: no bound; else at least {MIN_LOG_BOUND})",
    )
    auth: Literal["auto", "on", "off"] = Field(
        "auto",
        description="tokens: auto is on as soon as the store has had a user; on: always; off: never "
        "(beyond loopback only with LABRUN_ALLOW_NO_AUTH)",
    )
    allow_no_auth: bool = Field(
        False, description="serve beyond loopback with auth off (else refused at start-up)"
    )
    login_failures_per_minute: int = Field(
        30,
        ge=1,
        le=1_000_000,
        description="wrong or missing tokens one client address may send per minute before it gets 429 "
        "(a valid token is never throttled)",
    )
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="reverse proxies (addresses or networks, comma-separated) whose X-Forwarded-For names "
        "the client",
    )
    legacy_owner: str = Field(
        "local", pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="the owner of runs from before users existed"
    )
    # Per-user limits (0 or unset: none); an admin may give a user their own (users limits).
    fair_share_half_life_s: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="fair share: the next run comes from the user with the least recent use (GPU-seconds, "
        "or run-seconds for CPU runs), each second's weight halving after this many seconds",
    )
    max_gpus_per_user: int | None = Field(
        None, ge=0, description="GPUs one user's runs may hold at once (a run over it waits); 0: no limit"
    )
    max_queued_per_user: int | None = Field(  # room for two sweeps of the largest size
        512, ge=0, description="queued runs one user may have (one more is a 429); 0: no limit"
    )
    max_sweep_runs: int = Field(
        256, ge=1, le=100_000, description="runs one sweep may expand into (POST /sweeps)"
    )
    max_run_s: float | None = Field(
        None,
        gt=0,
        description="the longest time limit a user may give a run (seconds of running time left at any "
        "moment: at submission, resume or extension); unset: no maximum (docs/time-limits.md)",
    )
    # Time limits (docs/time-limits.md).
    default_time_limit_s: float | None = Field(
        None,
        gt=0,
        description="the time limit of a run that asks for none (seconds of running time over all its "
        "attempts; at most the user's maximum); unset: no limit, or the user's maximum where there is one",
    )
    time_limit_warn_s: float = Field(
        600.0,
        ge=0,
        description="how long before its time limit a run's owner is told the limit is near "
        "(the time_limit_near notification); 0: not told",
    )
    time_limit_save_s: float = Field(
        60.0,
        ge=0,
        le=86_400,
        description="how long before its time limit a run is asked to save a checkpoint and stop; at the "
        "limit it is killed",
    )
    # GPU-hour budgets (docs/budgets-and-estimates.md): a user over theirs still queues, but runs as low.
    budget_gpu_hours: float = Field(
        0.0,
        ge=0,
        description="GPU-hours each user may use per budget window (a 2-GPU run counts twice) before their "
        "runs start as low (preemptible) unless an admin gave them their own (users limits --gpu-hours); 0: none",
    )
    budget_cpu_hours: float = Field(
        0.0,
        ge=0,
        description="the same for CPU-only runs, counted in run-hours (users limits --cpu-hours); 0: none",
    )
    budget_window_days: float = Field(
        30.0, gt=0, le=366, description="the rolling window budgets count over, in days (the last N days)"
    )
    # Priority classes and preemption (docs/priorities.md).
    high_priority_gpus: int = Field(
        0,
        ge=0,
        description="GPUs one user's high-priority runs may hold at once unless an admin gave them their own "
        "allowance (users limits --high-gpus); 0: only admins may submit high-priority runs",
    )
    preempt_normal: bool = Field(
        False, description="whether a high-priority run may preempt normal runs too (low ones always may be)"
    )
    preempt_grace_s: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="seconds a preempted run has to write its checkpoint and exit before it is killed",
    )
    preempt_min_run_s: float = Field(
        120.0, ge=0, description="seconds a run runs before it may be preempted (its start-up is not wasted)"
    )
    preempt_max_per_hour: int = Field(
        3, ge=0, description="times one run may be preempted in an hour; past it, it is not chosen (0: never)"
    )
    # Reservations (docs/reservations.md): a user's grant unless an admin set their own; admins have no bound.
    reserve_gpu_hours: float = Field(
        96.0, ge=0, description="GPU-hours one reservation of a user may hold (0: only admins may reserve)"
    )
    reserve_max_window_s: float = Field(
        24 * 3600.0, gt=0, description="seconds the longest window a user may reserve lasts"
    )
    reserve_ahead_s: float = Field(
        14 * 24 * 3600.0, gt=0, description="seconds ahead a user's reserved window may start at the latest"
    )
    reserve_notice_s: float = Field(
        900.0, ge=0, description="seconds before a reservation's start that its users are told it starts soon"
    )
    min_free_bytes: int = Field(
        1 << 30,
        ge=0,
        description="runs start only while the output directory's disk has this many bytes free ...",
    )
    min_free_percent: float = Field(
        1.0, ge=0, le=100, description="... and this percentage of the disk free (both must hold)"
    )
    # Checked at submission from the config alone (trainer/estimate.py).
    max_data_bytes: int = Field(
        8 * 2**30, ge=1, description="bytes of data one run may hold in memory, estimated at submission"
    )
    max_params: int = Field(
        500_000_000, ge=1, description="model parameters one run may have, estimated at submission"
    )
    wandb_entity: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,128}$",
        description="the WandB entity (team or user) every run logs to; a request may choose its project, "
        "not its entity",
    )
    access_log: bool = Field(
        False, description="uvicorn's per-request log lines (they cost throughput under heavy polling)"
    )
    # app/serving.py. Idle keep-alive connections close after 5 s regardless.
    request_read_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="seconds a client has to send a whole request (head and body) once the server waits "
        "for it; slower connections are closed",
    )
    # The GPU guard (app/gpus/, docs/gpu-guard.md): looked at through NVML once per interval; off without
    # NVML, or when the launcher places runs itself (a cluster).
    gpu_guard: bool = Field(
        True, description="set GPUs aside that a process no run of labrun started is using (needs NVML)"
    )
    foreign_gpu_min_mb: int = Field(
        100,
        ge=0,
        description="GPU memory (MiB) a process outside labrun must hold to make its GPU busy outside labrun",
    )
    gpu_guard_interval_s: float = Field(
        2.0, ge=0.1, le=3600, description="seconds between two NVML passes of the GPU guard"
    )
    # Stalled runs (app/lifecycle/stalls.py). A request may ask for its own limit, up to max_stall_after_s.
    stall_after_s: float = Field(
        45 * 60.0,
        ge=0,
        description="seconds a running run may go without progress (progress.json) and without output (its "
        "log) before it is stalled; 0: never",
    )
    stall_grace_s: float = Field(
        15 * 60.0, ge=0, description="seconds a stalled run is left before it is cancelled for it"
    )
    max_stall_after_s: float = Field(
        7 * 24 * 3600.0, gt=0, description="the longest stall limit a request or a user may ask for"
    )
    default_overrides: str = Field(
        "",
        description='overrides applied before each request\'s own (e.g. "accelerator=gpu devices=1"); '
        '"auto": that when the service has GPUs, nothing otherwise; "": none',
    )
    # Notifications (app/notify/, docs/notifications.md): an outbox in the store, sent by a worker thread.
    public_url: str | None = Field(
        None,
        description="the server's address as users reach it, for links in notifications (e.g. "
        "https://gpu1.lab.example:8000); unset: messages carry no links",
    )
    secret_key_file: Path = Field(
        Path("~/.config/labrun/secret.key"),
        description="the key that encrypts notification destinations in the store; kept outside the output "
        "directory, created (mode 0600) on first use",
    )
    notify: bool = Field(True, description="send notifications (false: events are kept, nothing is sent)")
    notify_schemes: Annotated[tuple[str, ...], NoDecode] = Field(
        (
            "mailto",
            "mailtos",
            "slack",
            "msteams",
            "discord",
            "matrixs",
            "ntfys",
            "tgram",
            "jsons",
            "labrun+https",
        ),
        description="destination URL schemes users may add, comma-separated (labrun+https: the signed "
        "JSON webhook; add http ones such as json or labrun+http only for a trusted network)",
    )
    notify_allow_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="hosts or networks a destination may reach although they are loopback, private or "
        "link-local, comma-separated (e.g. mail.lab.internal,10.1.2.0/24)",
    )
    notify_timeout_s: float = Field(10.0, gt=0, le=300, description="seconds one delivery may take")
    notify_retry_base_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="seconds before the first retry of a failed delivery (doubles each time)",
    )
    notify_retry_max_s: float = Field(600.0, gt=0, le=86_400, description="the longest wait between retries")
    notify_max_tries: int = Field(
        12, ge=1, le=1000, description="tries of one delivery before it is given up (kept, marked failed)"
    )
    notify_pause_after: int = Field(
        20, ge=1, le=100_000, description="failed tries in a row after which a destination is paused"
    )
    notify_poll_s: float = Field(
        0.2, gt=0, le=60, description="seconds between two looks of the delivery worker at the outbox"
    )
    notify_server_event_min_s: float = Field(
        900.0,
        ge=0,
        le=7 * 86_400,
        description="the server's events (a GPU busy outside labrun, the disk low, the engine down): the "
        "least seconds between two messages about one condition (a change sooner is told when they pass)",
    )
    notify_server_check_s: float = Field(
        30.0, gt=0, le=3600, description="seconds between two looks at the engine's health and the disk"
    )

    @field_validator("output_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        path = value.expanduser().resolve()
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} exists and is not a directory")
        return path

    @field_validator("max_log_bytes")
    @classmethod
    def _log_bound(cls, value: int) -> int:
        if 0 < value < MIN_LOG_BOUND:
            raise ValueError(f"must be 0 (no bound) or at least {MIN_LOG_BOUND}")
        return value

    @field_validator("launcher")
    @classmethod
    def _known_launcher(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in LAUNCHERS:
            raise ValueError(unknown_launcher(value))
        return value

    @field_validator("gpus", mode="before")
    @classmethod
    def _parse_gpus(cls, value: Any) -> Any:
        if value is None or isinstance(value, tuple | list):
            return value
        text = str(value).strip()
        if not text or text.lower() == "none":
            return ()
        try:
            indices = [int(part) for part in text.replace(" ", "").split(",")]
        except ValueError:
            raise ValueError(
                f"expected GPU indices such as 0,1,2,3 (or empty for none), got {text!r}"
            ) from None
        if any(i < 0 for i in indices) or len(set(indices)) != len(indices):
            raise ValueError(f"GPU indices must be distinct and non-negative, got {text!r}")
        return tuple(indices)

    @field_validator("notify_schemes", "notify_allow_hosts", mode="before")
    @classmethod
    def _parse_words(cls, value: Any) -> Any:
        parts = value if isinstance(value, tuple | list) else str(value or "").replace(" ", "").split(",")
        return tuple(str(p).lower() for p in parts if p)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: Any) -> Any:
        parts = value if isinstance(value, tuple | list) else str(value or "").replace(" ", "").split(",")
        proxies = tuple(str(p) for p in parts if p)
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"expected IP addresses or networks such as 10.0.0.5,192.168.1.0/24, got {proxy!r}"
                ) from None
        return proxies

    @field_validator("trainer_command", mode="before")
    @classmethod
    def _parse_command(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else shlex.split(text)
        if not value or not all(isinstance(part, str) and part for part in value):
            raise ValueError("must be a non-empty list of non-empty strings")
        return value

    def gpu_inventory(self) -> tuple[int, ...]:
        """The GPUs labrun may use: LABRUN_GPUS, else what nvidia-smi lists, else none."""
        if self.gpus is not None:
            return self.gpus
        return detect_gpus()


def detect_gpus() -> tuple[int, ...]:
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(int(line) for line in out.split() if line.strip().isdigit())


class SettingsError(RuntimeError):
    """Settings that cannot work; the message lists every bad variable."""


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise settings_error(exc, "LABRUN_") from None


EngineSettings = TypeVar("EngineSettings", bound=BaseSettings)


def load_engine_settings(kind: type[EngineSettings]) -> EngineSettings:
    """An engine's own settings (``LABRUN_<ENGINE>_*``, its class's env_prefix), read once at start-up;
    bad ones raise SettingsError naming each variable."""
    try:
        return kind()
    except ValidationError as exc:
        raise settings_error(exc, str(kind.model_config.get("env_prefix", ""))) from None


def settings_error(exc: ValidationError, prefix: str) -> SettingsError:
    """One line per bad variable, named as the user set it (e.g. LABRUN_PORT); launchers reuse it."""
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "?"
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"  {prefix}{field.upper()}: {message} (got {err.get('input')!r})")
    return SettingsError("invalid labrun settings:\n" + "\n".join(problems))
