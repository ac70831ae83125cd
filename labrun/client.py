"""The labrun HTTP API as Python calls, and the one place where its answers become errors.

    CliError(message, exit_code)      one line for stderr and the process's exit status
      server unreachable / timeout    EXIT_UNREACHABLE (3), naming the URL tried
      401, 403                        EXIT_AUTH (4), saying what to do about the token
      404                             EXIT_NOT_FOUND (5), naming the run
      422                             EXIT_INVALID (2), the server's detail (the override and the fix)
      409, 413, 415, 429, 503, 507... EXIT_REFUSED (6), the server's detail

httpx is imported when the first client is made, not when this module is: ``labrun --help`` never pays for
it (it costs about as much as the whole rest of the start-up).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
TOKEN_HINT = "`labrun login`, or set LABRUN_TOKEN; an admin creates one with `python -m app users add NAME`"

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_INVALID = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_NOT_FOUND = 5
EXIT_REFUSED = 6
EXIT_CANCELLED = 130


class CliError(Exception):
    """What went wrong, as one line, and the exit status it ends the command with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Client:
    """One connection to one labrun service; ``token`` goes in ``Authorization: Bearer`` when set."""

    def __init__(
        self, url: str, token: str | None = None, timeout: float = 30.0, token_from: str = "LABRUN_TOKEN"
    ) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.token = token or None
        self.token_from = token_from  # where the token came from, for a 401's message
        self.timeout = timeout
        headers = {"User-Agent": "labrun-cli"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # Plain http needs no certificates: loading the CA bundle would cost a third of `labrun ls`'s time.
        tls = self.url.startswith("https:")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, verify=tls)

    def close(self) -> None:
        self._http.close()

    # --- the API --------------------------------------------------------------------------------------

    def submit(
        self,
        overrides: list[str],
        config_name: str | None = None,
        idempotency_key: str | None = None,
        notify: list[str] | None = None,
        priority: str | None = None,
        time_limit: str | None = None,
        after: list[dict[str, str]] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The new run (or, for a repeated idempotency key, the first one: ``replayed`` True); ``after``:
        what it waits for (docs/run-chains.md)."""
        return self._create(
            "/runs", overrides, config_name, idempotency_key, notify, priority, time_limit, after
        )

    def submit_sweep(
        self,
        overrides: list[str],
        config_name: str | None = None,
        idempotency_key: str | None = None,
        notify: list[str] | None = None,
        priority: str | None = None,
        time_limit: str | None = None,
        after: list[dict[str, str]] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """POST /sweeps: the new sweep with its runs (or the first one for a repeated idempotency key)."""
        return self._create(
            "/sweeps", overrides, config_name, idempotency_key, notify, priority, time_limit, after
        )

    def _create(
        self,
        path: str,
        overrides: list[str],
        config_name: str | None,
        idempotency_key: str | None,
        notify: list[str] | None = None,
        priority: str | None = None,
        time_limit: str | None = None,
        after: list[dict[str, str]] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """POST a run's or a sweep's overrides; (what was made, whether it is a replay of the key's first)."""
        body: dict[str, Any] = {"overrides": overrides}
        if config_name:
            body["config_name"] = config_name
        if notify is not None:
            body["notify"] = notify
        if priority:
            body["priority"] = priority
        if time_limit:
            body["time_limit"] = time_limit
        if after:
            body["after"] = after
        response = self._request("POST", path, json=body, headers=_idempotency(idempotency_key))
        return self._json(response), response.headers.get("Idempotent-Replayed") == "true"

    def sweep(self, name: str) -> dict[str, Any]:
        return self._json(self._request("GET", f"/sweeps/{name}"))

    def runs(
        self,
        status: str | None = None,
        owner: str | None = None,
        limit: int | None = None,
        before: int | None = None,
        where: list[str] | None = None,
    ) -> dict[str, Any]:
        """``{"data": [...], "count": N, "next_before": S}``: newest first; ``before=S`` is the next page;
        ``where``: KEY=VALUE lines the runs were asked (repeated ``override=`` parameters, never joined)."""
        given = {"status": status, "owner": owner, "limit": limit, "before": before, "override": where}
        params = {k: v for k, v in given.items() if v}
        return self._json(self._request("GET", "/runs", params=params))

    def run(self, name: str) -> dict[str, Any]:
        return self._json(self._request("GET", f"/runs/{name}", run=name))

    def logs(self, name: str, tail: int | None = None) -> tuple[str, dict[str, str]]:
        """The log's text (its end, or the last ``tail`` lines) and its ``X-Log-*`` headers."""
        params = {"tail": tail} if tail is not None else {}
        response = self._request("GET", f"/runs/{name}/logs", run=name, params=params)
        return response.text, {
            k.lower(): v for k, v in response.headers.items() if k.lower().startswith("x-log")
        }

    def follow(self, name: str, tail: int | None = None) -> Iterator[str]:
        """The log as it grows, until the run ends (the server closes the stream then)."""
        import httpx

        params: dict[str, Any] = {"follow": "true"}
        if tail is not None:
            params["tail"] = tail
        timeout = httpx.Timeout(self.timeout, read=None)  # a quiet run writes nothing for minutes
        try:
            with self._http.stream("GET", f"/runs/{name}/logs", params=params, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response, name)
                yield from response.iter_text()
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def run_files(self, name: str, checksums: bool = False, ckpt: bool = True) -> dict[str, Any]:
        """GET /runs/{name}/files: ``{"files": [{"path", "size", "modified_at", "sha256"}...], ...}``."""
        params = {"checksums": str(checksums).lower(), "ckpt": str(ckpt).lower()}
        return self._json(self._request("GET", f"/runs/{_quote(name)}/files", run=name, params=params))

    def download(self, name: str, path: str, offset: int = 0) -> Iterator[tuple[int, bytes]]:
        """The run's file ``path`` from byte ``offset`` on (a Range request), in chunks: ``(start, chunk)``
        pairs, where ``start`` is where the server began (0 when it sent the whole file instead)."""
        import httpx

        headers = {"Range": f"bytes={offset}-"} if offset else {}
        url = f"/runs/{_quote(name)}/files/{_quote(path)}"
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, 300.0))  # a big file on a slow disk
        try:
            with self._http.stream("GET", url, headers=headers, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response, None)
                start = offset if response.status_code == 206 else 0
                for chunk in response.iter_bytes(1 << 20):
                    yield start, chunk
                    start += len(chunk)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def extend_stall(self, name: str, stall_after_s: float | None = None) -> dict[str, Any]:
        body = {"stall_after_s": stall_after_s} if stall_after_s is not None else {}
        return self._json(self._request("POST", f"/runs/{name}/extend-stall", run=name, json=body))

    def resume(self, name: str, time_limit: str | None = None) -> dict[str, Any]:
        body = {"time_limit": time_limit} if time_limit else {}
        return self._json(self._request("POST", f"/runs/{name}/resume", run=name, json=body))

    def set_time_limit(self, name: str, change: dict[str, Any]) -> dict[str, Any]:
        """POST /runs/{name}/time-limit with ``{"time_limit": ...}``, ``{"extend_by": ...}`` or ``{"no_limit": true}``."""
        return self._json(self._request("POST", f"/runs/{name}/time-limit", run=name, json=change))

    def cancel(self, name: str) -> dict[str, Any]:
        return self._json(self._request("POST", f"/runs/{name}/cancel", run=name))

    def rerun(self, name: str, idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
        response = self._request(
            "POST", f"/runs/{name}/rerun", run=name, headers=_idempotency(idempotency_key)
        )
        return self._json(response), response.headers.get("Idempotent-Replayed") == "true"

    def delete(self, name: str) -> dict[str, Any]:
        return self._json(self._request("DELETE", f"/runs/{name}", run=name))

    def usage(self) -> dict[str, Any]:
        return self._json(self._request("GET", "/usage"))

    def my_usage(self) -> dict[str, Any]:
        """GET /me/usage: the caller's GPU-hour and CPU-hour budgets and what they used."""
        return self._json(self._request("GET", "/me/usage"))

    def compare(self, names: list[str]) -> dict[str, Any]:
        """GET /runs/compare: each name its own ``name=`` parameter (names may contain commas)."""
        return self._json(self._request("GET", "/runs/compare", params=[("name", n) for n in names]))

    def me(self) -> dict[str, Any]:
        """GET /me: who the token says the caller is (``name``, ``admin``, ``auth_required``)."""
        return self._json(self._request("GET", "/me"))

    def health(self) -> dict[str, Any]:
        """/healthz's body; a 503 (engine down, disk full) is an answer too: runs stay queued meanwhile."""
        return self._json(self._request("GET", "/healthz", ok_statuses=(503,)))

    # --- errors ---------------------------------------------------------------------------------------

    # --- notifications (/me/notify) ---------------------------------------------------------------------

    # ``server``: the server-wide destinations of the server's own events (admins only), not the caller's

    def notify_destinations(self, server: bool = False) -> dict[str, Any]:
        return self._json(self._request("GET", f"{_notify(server)}/destinations"))

    def notify_add(self, url: str, server: bool = False, events: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"url": url}
        if events is not None:
            body["events"] = events
        return self._json(self._request("POST", f"{_notify(server)}/destinations", json=body))

    def notify_filter(self, id: int, events: list[str] | None, server: bool = False) -> dict[str, Any]:
        """A destination's own filter of events (None: all)."""
        path = f"{_notify(server)}/destinations/{id}/events"
        return self._json(self._request("PUT", path, json={"events": events}))

    def notify_test(self, id: int, server: bool = False) -> dict[str, Any]:
        return self._json(self._request("POST", f"{_notify(server)}/destinations/{id}/test"))

    def notify_remove(self, id: int, server: bool = False) -> None:
        self._request("DELETE", f"{_notify(server)}/destinations/{id}")

    def notify_events(self, events: list[str] | None = None) -> dict[str, Any]:
        """The caller's default events; sets them first when ``events`` is given."""
        if events is None:
            return self._json(self._request("GET", "/me/notify/events"))
        return self._json(self._request("PUT", "/me/notify/events", json={"events": events}))

    # --- the GPU guard's ignore rules (/gpus/ignores) ------------------------------------------------------

    def gpu_ignores(self) -> dict[str, Any]:
        return self._json(self._request("GET", "/gpus/ignores"))

    def gpu_ignore(self, pid: int | None, pattern: str | None, note: str | None = None) -> dict[str, Any]:
        body = {"pid": pid} if pid is not None else {"pattern": pattern}
        return self._json(self._request("POST", "/gpus/ignores", json={**body, "note": note}))

    def gpu_unignore(self, rule_id: int) -> None:
        self._request("DELETE", f"/gpus/ignores/{rule_id}")

    # --- reservations (/reservations) -----------------------------------------------------------------------

    def reserve(
        self, gpus: int | list[int], start: str, end: str, users: list[str] | None, note: str | None
    ) -> dict[str, Any]:
        body = {"gpus": gpus, "start": start, "end": end, "users": users, "note": note}
        return self._json(self._request("POST", "/reservations", json=body))

    def reservations(self, everything: bool = False) -> dict[str, Any]:
        return self._json(self._request("GET", "/reservations", params={"all": everything}))

    def end_reservation(self, id: int) -> dict[str, Any]:
        return self._json(self._request("POST", f"/reservations/{id}/end"))

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body: dict[str, Any] = response.json()  # every labrun endpoint answers with a JSON object
            return body
        except ValueError:
            raise CliError(
                f"the server at {self.url} did not answer with JSON ({response.request.method} "
                f"{response.request.url.path}: HTTP {response.status_code}); is LABRUN_URL a labrun service?",
                EXIT_REFUSED,
            ) from None

    def _request(
        self,
        method: str,
        path: str,
        *,
        run: str | None = None,
        ok_statuses: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400 and response.status_code not in ok_statuses:
            raise self._error(response, run)
        return response

    def _unreachable(self, exc: Exception) -> CliError:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return CliError(
                f"the server at {self.url} did not answer within {self.timeout:g} s", EXIT_UNREACHABLE
            )
        if isinstance(exc, httpx.ConnectError):
            why = str(exc).rsplit("] ", 1)[-1] or "connection failed"  # "[Errno 111] Connection refused"
            return CliError(
                f"cannot reach the server at {self.url} ({why}); is it running? (set LABRUN_URL or --url)",
                EXIT_UNREACHABLE,
            )
        return CliError(f"the connection to {self.url} broke: {exc or type(exc).__name__}", EXIT_UNREACHABLE)

    def _error(self, response: httpx.Response, run: str | None) -> CliError:
        code, detail = response.status_code, _detail(response)
        if code in (401, 403):
            if not self.token and code == 401:
                # The server's own message tells how to send a token too: one hint, ours, is enough.
                return CliError(f"{self.url} needs a token (HTTP 401): {TOKEN_HINT}", EXIT_AUTH)
            if not self.token:
                return CliError(f"{detail} (HTTP {code}): {TOKEN_HINT}", EXIT_AUTH)
            if code == 401:
                return CliError(
                    f"{detail} (HTTP 401): the server refused the token from {self.token_from}; check it, "
                    "or ask an admin for a new one (`python -m app users add NAME`) and `labrun login` again",
                    EXIT_AUTH,
                )
            return CliError(f"{detail} (HTTP 403): this token may not do that", EXIT_AUTH)
        if code == 404:
            if run is not None:
                return CliError(f"no run named {run!r} on {self.url}", EXIT_NOT_FOUND)
            return CliError(f"{detail} (HTTP 404: {response.request.url.path})", EXIT_NOT_FOUND)
        if code == 422:
            return CliError(detail, EXIT_INVALID)
        if code == 429 and response.headers.get("Retry-After"):
            detail += f" (retry after {response.headers['Retry-After']} s)"
        return CliError(f"{detail} (HTTP {code})", EXIT_REFUSED)


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


def _detail(response: httpx.Response) -> str:
    """The server's ``{"detail": ...}`` as one line (FastAPI's list form too); else the body's first line."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):
        detail = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', ()))}: {d.get('msg')}" if isinstance(d, dict) else str(d)
            for d in detail
        )
    if not detail:
        text = response.text.strip()
        detail = text.splitlines()[0][:200] if text else response.reason_phrase or "error"
    return " ".join(str(detail).split())


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")


def _notify(server: bool) -> str:
    return "/notify/server" if server else "/me/notify"
