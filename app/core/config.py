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

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Where runs write (<output_dir>/<YYYY-MM-DD>/<name>) and where the store lives (.labrun/).
    output_dir: Path = Path("./outputs")
    launcher: str = "local"
    # Host GPU indices labrun may hand out, e.g. "0,1,2,3". Unset: detected with nvidia-smi. "": none.
    gpus: Annotated[tuple[int, ...] | None, NoDecode] = None
    max_cpu_runs: int = Field(1, ge=1, le=1024)  # concurrent CPU-only runs
    cancel_grace_s: float = Field(10.0, ge=0, le=3600)  # SIGTERM -> SIGKILL
    # The trainer's command line, before its overrides: a JSON list or a shell-quoted string.
    trainer_command: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [sys.executable, "-m", "trainer"]
    )
    max_overrides: int = Field(64, ge=1, le=10_000)
    max_override_chars: int = Field(512, ge=1, le=100_000)
    max_overrides_bytes: int = Field(8192, ge=1, le=10_000_000)
    log_tail_lines: int = Field(50, ge=0, le=10_000)  # lines of the log kept with a failed run
    log_tail_bytes: int = Field(4096, ge=256, le=1 << 20)  # ... and at most this many bytes of them
    # The most a run's log file keeps: its beginning and its end, with a marker line where the middle was
    # cut (trainer/logbound.py); 0: no bound.
    max_log_bytes: int = Field(1 << 30, ge=0)
    # Users and tokens: "auto" is on as soon as a user exists; "on" always; "off" never (loopback only,
    # unless allow_no_auth). Runs from before users existed belong to legacy_owner.
    auth: Literal["auto", "on", "off"] = "auto"
    allow_no_auth: bool = False
    # Wrong or missing tokens one client address may send per minute before it gets 429 (a valid token is
    # never throttled); behind a reverse proxy, the proxies whose X-Forwarded-For names the client.
    login_failures_per_minute: int = Field(30, ge=1, le=1_000_000)
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    legacy_owner: str = Field("local", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    # Fair share: the next run comes from the user with the least recent use (GPU-seconds, or run-seconds
    # for CPU runs), decayed with this half-life. Per-user limits (0 or unset: none); users may have their own.
    fair_share_half_life_s: float = Field(7 * 24 * 3600.0, gt=0)
    max_gpus_per_user: int | None = Field(None, ge=0)
    max_queued_per_user: int | None = Field(512, ge=0)  # room for two sweeps of the largest size
    max_sweep_runs: int = Field(256, ge=1, le=100_000)  # runs one sweep may expand into (POST /sweeps)
    max_run_s: float | None = Field(None, gt=0)
    # Runs start only while the output directory's disk has at least this much free (both must hold).
    min_free_bytes: int = Field(1 << 30, ge=0)
    min_free_percent: float = Field(1.0, ge=0, le=100)
    # Resource bounds of one run, checked at submission from the config alone (trainer/estimate.py): the
    # data a run holds in memory, and its model's parameters.
    max_data_bytes: int = Field(8 * 2**30, ge=1)
    max_params: int = Field(500_000_000, ge=1)
    # The WandB entity (team or user) every run logs to; a request may name its project, not its entity.
    wandb_entity: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,128}$")
    access_log: bool = False  # uvicorn's per-request log line (costs throughput under heavy polling)
    # Seconds a client has to send a whole request (head and body) once the server waits for it; slower
    # connections are closed (app/serving.py). Idle keep-alive connections close after 5 s regardless.
    request_read_timeout_s: float = Field(10.0, gt=0, le=3600)
    # Stalled runs (app/lifecycle/stalls.py): a running run whose progress.json has not moved and whose log
    # has not grown for stall_after_s is stalled; stall_grace_s later it is cancelled (0: never stalled).
    # A request may ask for its own limit (stall_after_s), up to max_stall_after_s.
    stall_after_s: float = Field(45 * 60.0, ge=0)
    stall_grace_s: float = Field(15 * 60.0, ge=0)
    max_stall_after_s: float = Field(7 * 24 * 3600.0, gt=0)
    # Overrides applied before each request's own (app/defaults.py): e.g. "accelerator=gpu devices=1";
    # "auto": that when the service has GPUs, nothing otherwise; "" (the default): none.
    default_overrides: str = ""

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
