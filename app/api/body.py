"""What a request body may be: its size, its encoding and its type, checked before any route reads it."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1 << 20


class RequestBodyGuard:
    """Refuse, before any route reads it, a request body the API cannot take:
    - over MAX_BODY_BYTES: 413, unread when Content-Length says so, and as soon as a chunked body (no
      Content-Length) passes the limit;
    - compressed (Content-Encoding), or not JSON (Content-Type): 415 with what to send instead.
    Pure ASGI: no cost for GETs and HEADs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            refusal = _unsupported(headers) if length != b"0" else None
            if refusal:
                await JSONResponse({"detail": refusal}, status_code=415)(scope, receive, send)
                return
            body: Message | None = None
            if length is None:  # chunked: no size announced, so it is counted while read
                body = await _read_at_most(receive, MAX_BODY_BYTES)
                too_big = body is None
            else:
                too_big = not length.isdigit() or int(length) > MAX_BODY_BYTES
            if too_big:
                response = JSONResponse(
                    {"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413
                )
                await response(scope, receive, send)
                return
            if body is not None:  # chunked, and read whole: the app reads it again from here
                receive = _replay(body, receive)
        await self.app(scope, receive, send)


async def _read_at_most(receive: Receive, limit: int) -> Message | None:
    """The whole request body as one ASGI message, or None once it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: the app sees that
            return message
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return None
        if not message.get("more_body", False):
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}


def _replay(first: Message, receive: Receive) -> Receive:
    pending = [first]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


def _unsupported(headers: dict[bytes, bytes]) -> str | None:
    """Why a body with these headers cannot be read, or None."""
    encoding = headers.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
    if encoding not in ("", "identity"):
        return (
            f"request bodies compressed with Content-Encoding {encoding!r} are not accepted; send the JSON "
            "uncompressed (it is at most 1 MiB)"
        )
    content_type = headers.get(b"content-type")
    if content_type is None:
        return None  # no body announced as anything: FastAPI reads it as JSON or says what is missing
    media = content_type.decode("latin-1").split(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        return f"request bodies are JSON: send Content-Type: application/json (got {media or 'nothing'!r})"
    return None
