"""``python -m app`` (``make run``): serve labrun on LABRUN_HOST:LABRUN_PORT (default 127.0.0.1:8000)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from types import FrameType

import uvicorn

from app.core.config import SettingsError, load_settings


def main() -> int:
    if sys.argv[1:2] == ["users"]:
        from app.admin import main as users

        return users(sys.argv[2:])
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
        log_level="info",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config, on_exit=app.state.manager.closing.set)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises a caught Ctrl-C again once it is down
        server.run()
    return 0 if server.started else 3  # 3: could not start (e.g. the port is taken), as uvicorn.run


def _log_auth(app, settings) -> None:  # noqa: ANN001
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
