"""What goes wrong is one line on stderr with a documented exit status, never a traceback."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest
from cli_helpers import fake, one_line, run_cli
from service_process import free_port


def test_invalid_overrides_exit_2_with_the_servers_message(labrun, service):
    overrides = ["model=nope", *fake(lines=1)]
    detail = service.http.post("/runs", json={"overrides": overrides}).json()["detail"]
    result = labrun("submit", *overrides)
    assert result.returncode == 2
    assert result.stdout == ""
    assert one_line(result.stderr) == f"labrun: {' '.join(detail.split())}"
    assert "model" in detail
    assert "fno" in detail


def test_unknown_run_exits_5_naming_it(labrun, service):
    for args in (["show", "nope"], ["logs", "nope"], ["logs", "-f", "nope"], ["rerun", "nope"]):
        result = labrun(*args)
        assert result.returncode == 5, (args, result.stderr)
        assert one_line(result.stderr) == f"labrun: no run named 'nope' on {service.url}"


def test_unreachable_server_is_one_line_with_the_url():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["ls"], ["submit", "model=fno"], ["gpus", "--json"]):
        result = run_cli(url, *args)
        assert result.returncode == 3, result.stderr
        line = one_line(result.stderr)
        assert line.startswith(f"labrun: cannot reach the server at {url} (")
        assert "LABRUN_URL" in line
    # --url wins over LABRUN_URL, before or after the command
    assert url in run_cli("http://127.0.0.1:1", "--url", url, "ls").stderr
    assert url in run_cli("http://127.0.0.1:1", "ls", "--url", url).stderr


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request with the status and body (JSON, or a str as it is) set on the server; records
    the path and headers of each request."""

    def do_GET(self) -> None:  # http.server's name
        self.server.seen.append({"path": self.path, **self.headers})  # type: ignore[attr-defined]
        status, body = self.server.answer  # type: ignore[attr-defined]
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[http.server.HTTPServer]:
    """A stand-in server for answers the real one does not give yet (it has no users today)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen, server.answer = [], (200, {})  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_token_is_sent_and_401_403_say_what_to_do(stub):
    url = f"http://127.0.0.1:{stub.server_port}"
    stub.answer = (401, {"detail": "a token is required"})
    result = run_cli(url, "ls")
    assert result.returncode == 4
    assert one_line(result.stderr) == (  # the hint once: ours (the server's own says how to send one too)
        f"labrun: {url} needs a token (HTTP 401): `labrun login`, or set LABRUN_TOKEN; an admin creates one "
        "with `python -m app users add NAME`"
    )
    assert "Authorization" not in stub.seen[-1]

    result = run_cli(url, "ls", LABRUN_TOKEN="s3cret")
    assert stub.seen[-1]["Authorization"] == "Bearer s3cret"
    assert result.returncode == 4
    assert "refused the token from LABRUN_TOKEN" in one_line(result.stderr)
    run_cli(url, "--token", "other", "ls", LABRUN_TOKEN="s3cret")
    assert stub.seen[-1]["Authorization"] == "Bearer other"

    stub.answer = (403, {"detail": "run x belongs to alice"})
    result = run_cli(url, "cancel", "x", LABRUN_TOKEN="s3cret")
    assert result.returncode == 4
    assert one_line(result.stderr).startswith("labrun: run x belongs to alice (HTTP 403)")


@pytest.mark.parametrize("status", [409, 415, 429, 503, 507])
def test_refusals_exit_6_with_the_servers_detail(stub, status):
    stub.answer = (status, {"detail": f"refused for a reason {status}"})
    result = run_cli(f"http://127.0.0.1:{stub.server_port}", "submit", "model=fno")
    assert result.returncode == 6
    assert one_line(result.stderr) == f"labrun: refused for a reason {status} (HTTP {status})"


def test_owner_filter_is_passed_to_the_server(stub):
    stub.answer = (200, {"data": [{"name": "r1", "status": "queued", "owner": "alice"}], "count": 1})
    result = run_cli(f"http://127.0.0.1:{stub.server_port}", "ls", "--owner", "me")
    assert result.returncode == 0, result.stderr
    assert stub.seen[-1]["path"] == "/runs?owner=me&limit=50"
    assert result.stdout.splitlines()[2].split()[:2] == ["r1", "alice"]  # the owner column, once reported
    result = run_cli(
        f"http://127.0.0.1:{stub.server_port}", "ls", "--owner", "bob", "--status", "queued", "--json"
    )
    assert stub.seen[-1]["path"] == "/runs?status=queued&owner=bob&limit=50"
    assert json.loads(result.stdout)["data"][0]["owner"] == "alice"  # the server's answer, verbatim


def test_not_a_labrun_server(stub):
    stub.answer = (200, "<html>hello</html>")
    url = f"http://127.0.0.1:{stub.server_port}"
    result = run_cli(url, "ls")
    assert result.returncode == 6
    assert one_line(result.stderr) == (
        f"labrun: the server at {url} did not answer with JSON (GET /runs: HTTP 200); "
        "is LABRUN_URL a labrun service?"
    )
