"""``python -m app`` (``make run``): serve labrun on LABRUN_HOST:LABRUN_PORT (default 127.0.0.1:8000).

python -m app                 serve
python -m app users ...       manage users and tokens (app/admin.py)
python -m app gpus ...        what the GPU guard lets be; Unix users as labrun users (app/gpus/cli.py)
python -m app backup PATH     a consistent copy of the run store into the new file PATH (app/store/backup.py)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from app.core.config import Settings, SettingsError, load_settings
from app.serving import protocol_with_timeout

if TYPE_CHECKING:
    from fastapi import FastAPI


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m app", description="Serve labrun (no command), or manage it.")
    sub = ap.add_subparsers(dest="command", metavar="{users,gpus,backup}")
    sub.add_parser("users", help="manage users and tokens (python -m app users --help)", add_help=False)
    sub.add_parser("gpus", help="processes the GPU guard lets be (python -m app gpus --help)", add_help=False)
    backup = sub.add_parser("backup", help="a consistent copy of the run store, while the service runs")
    backup.add_argument("path", type=Path, help="the new file to write (never overwritten)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["users"]:
        from app.admin import main as users

        return users(argv[1:])
    if argv[:1] == ["gpus"]:
        from app.gpus.cli import main as gpus

        return gpus(argv[1:])
    # Anything else but no argument at all is a command: an unknown one, or a stray argument, is an error
    # with the usage (exit 2), never a service started by mistake.
    args = parser().parse_args(argv)
    if args.command == "backup":
        return _backup(args.path)
    return serve()


def _backup(path: Path) -> int:
    from app.statedir import StateDir
    from app.store.backup import BackupError, backup

    try:
        done = backup(StateDir(load_settings().output_dir).db, path)
    except (SettingsError, BackupError) as exc:
        print(f"labrun: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {done.path}: {done.runs} runs, {done.bytes} bytes")
    return 0


def serve() -> int:
    try:
        settings = load_settings()
        from app.main import create_app

        app = create_app(settings)  # bad settings (ours or a launcher's) stop here, before serving
    except SettingsError as exc:
        print(f"labrun: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _log_auth(app, settings)
    # One worker on purpose: the run lifecycle and the store's single writer live in this process.
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=settings.access_log,
        # Client addresses are the peers': X-Forwarded-For counts only from the proxies the admin named
        # (LABRUN_TRUSTED_PROXIES, read by the login throttle), never from whoever sends it.
        proxy_headers=False,
        # Slow clients: a connection idle after a response closes after 5 s (uvicorn's keep-alive); one
        # whose request (head and body) takes longer than LABRUN_REQUEST_READ_TIMEOUT_S closes then.
        timeout_keep_alive=5,
        http=protocol_with_timeout(settings.request_read_timeout_s),
        log_level="info",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config, on_exit=app.state.manager.closing.set)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises a caught Ctrl-C again once it is down
        server.run()
    return 0 if server.started else 3  # 3: could not start (e.g. the port is taken), as uvicorn.run


def _log_auth(app: FastAPI, settings: Settings) -> None:
    log = logging.getLogger("labrun")
    users = app.state.manager.users.list()
    active = [u for u in users if u.active]
    if app.state.auth.required():
        log.info("auth on: %d active user(s); requests need 'Authorization: Bearer <token>'", len(active))
    elif users:  # an admin opened a server that has users: say it where nobody can miss it
        log.warning(
            "AUTH IS OFF (LABRUN_AUTH=off) although this store has %d user(s): every request on %s:%d acts "
            "as the admin-like 'local', tokens or not. Restart without LABRUN_AUTH=off to switch it on again.",
            len(users),
            settings.host,
            settings.port,
        )
    else:
        log.info(
            "auth off: no users yet, every request acts as 'local' (serving on %s only); "
            "create a user with: python -m app users add NAME --admin",
            settings.host,
        )


class _Server(uvicorn.Server):
    """Tells the app at the first Ctrl-C/SIGTERM, before uvicorn waits for open connections to close: log
    followers (``/logs?follow=true``) then end their streams instead of holding the shutdown for its
    timeout. The runs themselves carry on; the next start re-attaches them."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


if __name__ == "__main__":
    sys.exit(main())
