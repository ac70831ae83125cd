"""The web dashboard: ``GET /`` serves ``app/web/index.html``, ``GET /web/<file>`` its scripts and styles
(files of ``app/web`` only, by name: nothing else on disk is reachable), ``GET /runs/<name>/view`` sends
the browser to the run's page (``/#/runs/<name>``).

No build step and no CDN: the page is plain HTML, CSS and JavaScript modules that talk to the public API,
so it works on a box without internet. Files are sent with an ``ETag`` and ``Cache-Control: no-cache``:
the browser revalidates (a 304) and sees a new version at once after an upgrade.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page loads nothing from elsewhere and runs no inline script: what it shows (run names, overrides,
# log lines) is user input, so the browser is told to refuse anything else.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["dashboard"], include_in_schema=False)
_cache: dict[str, tuple[tuple[int, int], bytes, str]] = {}
_lock = threading.Lock()


def _asset(name: str) -> tuple[bytes, str] | None:
    """(bytes, etag) of ``app/web/<name>``, re-read only when the file changed; None for anything else."""
    if "/" in name or name.startswith(".") or Path(name).suffix not in _TYPES:
        return None
    path = WEB_DIR / name
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        with _lock:
            hit = _cache.get(name)
        if hit is not None and hit[0] == stamp:
            return hit[1], hit[2]
        data = path.read_bytes()
    except OSError:
        return None
    etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
    with _lock:
        _cache[name] = (stamp, data, etag)
    return data, etag


def _send(request: Request, name: str) -> Response:
    found = _asset(name)
    if found is None:
        raise HTTPException(404, f"no such file: {name}")
    data, etag = found
    headers = {**_HEADERS, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=_TYPES[Path(name).suffix], headers=headers)


@router.get("/")
async def dashboard(request: Request) -> Response:
    return _send(request, "index.html")


@router.get("/web/{name}")
async def web_file(name: str, request: Request) -> Response:
    return _send(request, name)


@router.get("/runs/{name}/view")
async def run_view(name: str) -> RedirectResponse:
    return RedirectResponse("/#/runs/" + quote(name, safe=""), status_code=307)
