"""The FastAPI application: ``create_app(settings)`` wires store, launcher, validator and RunManager.

Start-up order matters: every unfinished run is reconciled (re-attached, or given its real outcome) and
the dispatcher started *before* the server accepts a request (uvicorn binds its socket only after the
lifespan's start-up completes). One process, one worker: the store has a single writer path.
"""

from __future__ import annotations

import fcntl
import gc
import ipaddress
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from app.api.auth import AuthPolicy, LoginThrottle
from app.api.body import RequestBodyGuard
from app.api.errors import install_error_handlers
from app.api.polls import FastPolls
from app.api.queue_view import QueueView
from app.api.router import mount_routes
from app.api.view import RunView
from app.core.config import Settings, SettingsError, load_settings
from app.defaults import default_lines
from app.errors import LabrunError
from app.launchers import Launcher, build_launcher
from app.lifecycle import RunManager
from app.notify.service import Notifications
from app.runfiles import RunFiles
from app.statedir import StateDir
from app.store import StoreDamaged, StoreVersionError
from app.store.startup import open_store
from app.validation import RunValidator
from trainer.config_cache import compose_cached
from trainer.plan import DeviceLimits

log = logging.getLogger("labrun")


class ServiceLock:
    """One service per output directory: two would dispatch the same queue, and runs would start twice.
    A flock dies with its process (kill -9 included); run processes never inherit it (close_fds)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise SettingsError(
                f"another labrun service (pid {holder}) already serves the output directory of {path}; "
                "stop it, or set LABRUN_OUTPUT_DIR to another directory"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _unusable(path: Path, exc: BaseException) -> SettingsError:
    return SettingsError(f"invalid labrun settings:\n  LABRUN_OUTPUT_DIR: cannot use {path}: {exc}")


def build_manager(
    settings: Settings, state: StateDir | None = None, launcher: Launcher | None = None
) -> RunManager:
    """``launcher``: the one LABRUN_LAUNCHER names unless one is given (tests give their own engine)."""
    state = state or StateDir(settings.output_dir)
    try:  # e.g. another user's output directory, or a read-only store
        store, took = open_store(state.db, state.run("-").parent)
    except (StoreDamaged, StoreVersionError) as exc:
        raise SettingsError(f"invalid labrun settings:\n  LABRUN_OUTPUT_DIR: {exc}") from None
    except (OSError, sqlite3.Error) as exc:
        raise _unusable(state.db, exc) from None
    log.info("store %s checked in %.0f ms", state.db, took * 1000)
    launcher = launcher or build_launcher(settings, state)
    gpus = () if launcher.places_runs else settings.gpu_inventory()
    # What one run may ask for here: the service's GPUs (none to count when the engine places runs) and,
    # on the CPU, one training process per core.
    limits = DeviceLimits(
        gpus=None if launcher.places_runs else len(gpus),
        cpu_processes=os.cpu_count() or 1,
        max_data_bytes=settings.max_data_bytes,
        max_params=settings.max_params,
    )
    # One real Hydra compose per distinct list of group choices, value overrides applied with Hydra's own
    # routine (trainer/config_cache.py, tested equal to a fresh compose): ~10 ms instead of ~110 ms.
    validator = RunValidator(settings, limits, compose=compose_cached)
    try:
        take_defaults(validator, settings, gpus)
    except SettingsError:
        launcher.close()
        store.close()
        raise
    return RunManager(
        settings=settings,
        store=store,
        launcher=launcher,
        validator=validator,
        state=state,
        gpus=gpus,
    )


def take_defaults(validator: RunValidator, settings: Settings, gpus: tuple[int, ...]) -> None:
    """The server's default overrides (app/defaults.py), checked as a request's lines and planned alone:
    a bad one stops the start with a message naming it."""
    try:
        validator.set_defaults(default_lines(settings.default_overrides, gpus))
    except (ValueError, LabrunError) as exc:
        detail = exc.detail if isinstance(exc, LabrunError) else str(exc)
        raise SettingsError(
            f"invalid labrun settings:\n  LABRUN_DEFAULT_OVERRIDES: {detail} (got {settings.default_overrides!r})"
        ) from None


def _check_no_runs_elsewhere(manager: RunManager) -> None:
    """Runs going under another launcher (LABRUN_LAUNCHER changed while they ran) cannot be followed by
    this one: it would misread their handles, or call them lost while they run on and reuse their GPUs."""
    elsewhere = manager.store.running_elsewhere(manager.launcher.name)
    if elsewhere:
        others = sorted({launcher for _, launcher in elsewhere})
        names = ", ".join(name for name, _ in elsewhere[:3]) + (", ..." if len(elsewhere) > 3 else "")
        raise SettingsError(
            f"invalid labrun settings:\n  LABRUN_LAUNCHER: {len(elsewhere)} run(s) are still running under "
            f"the {' and '.join(others)} launcher ({names}); set LABRUN_LAUNCHER={others[0]} until they "
            "have ended (or cancel them there)"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_exposure(settings: Settings, auth: AuthPolicy) -> None:
    """Whatever is reachable beyond loopback is authenticated, unless the operator says otherwise."""
    if is_loopback(settings.host) or auth.required() or settings.allow_no_auth:
        return
    why = "LABRUN_AUTH=off" if settings.auth == "off" else "there have been no users yet"
    raise SettingsError(
        f"invalid labrun settings:\n  LABRUN_HOST: serving on {settings.host} without auth ({why}) would let "
        "anyone who reaches the port start and cancel runs. Create a user first (python -m app users add "
        "NAME --admin) or set LABRUN_AUTH=on; or, on a network you trust, LABRUN_ALLOW_NO_AUTH=true"
    )


def create_app(settings: Settings | None = None, launcher: Launcher | None = None) -> FastAPI:
    """Raises SettingsError at once (not at first request) when the settings cannot work. ``launcher``:
    an engine of the caller's instead of the one the settings name (tests inject one this way)."""
    settings = settings or load_settings()
    state = StateDir(settings.output_dir)
    try:
        state.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            f"invalid labrun settings:\n  LABRUN_OUTPUT_DIR: cannot create it: {exc}"
        ) from None
    try:
        lock = ServiceLock(state.lock)
    except OSError as exc:
        raise _unusable(state.lock, exc) from None
    try:
        manager = build_manager(settings, state, launcher)
        _check_no_runs_elsewhere(manager)
        throttle = LoginThrottle(settings.login_failures_per_minute, settings.trusted_proxies)
        auth = AuthPolicy(settings.auth, manager.users, throttle)
        _check_exposure(settings, auth)
        notify = Notifications.watching(manager, RunFiles(state))  # the server's own events too
    except BaseException:
        lock.release()
        raise

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager.reconcile()
        manager.start()
        app.state.manager = manager
        notify.start()
        # What start-up built (Hydra, OmegaConf, FastAPI, pydantic: ~10^5 objects) lives as long as the
        # process. Freezing it keeps it out of every later full garbage collection, whose pauses otherwise
        # dominate the p99 latency of polling (bench/service_bench.py).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            notify.stop()
            manager.stop()
            manager.launcher.close()
            manager.store.close()
            lock.release()

    app = FastAPI(
        title="labrun",
        summary="Share one GPU training server: submit Hydra override lists, queue, run, poll.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.manager = manager
    app.state.files = RunFiles(state)
    app.state.view = RunView(app.state.files, manager)
    app.state.queue_view = QueueView(manager)
    app.state.auth = auth
    app.state.notify = notify
    app.state.fast_polls = True  # the polls answered before routing (app/api/polls.py); tests compare both
    install_error_handlers(app)
    app.add_middleware(RequestBodyGuard)
    app.add_middleware(FastPolls, state=app.state)  # the outermost of ours: a poll skips the rest
    mount_routes(app)
    return app
