"""``python -m app`` (``make run``): serve labrun on LABRUN_HOST:LABRUN_PORT (default 127.0.0.1:8000)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from app.core.config import SettingsError, load_settings


def main() -> int:
    try:
        settings = load_settings()
        from app.main import create_app

        app = create_app(settings)  # bad settings (ours or a launcher's) stop here, before serving
    except SettingsError as exc:
        print(f"labrun: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One worker on purpose: the run lifecycle and the store's single writer live in this process.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        access_log=settings.access_log,
        log_level="info",
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
