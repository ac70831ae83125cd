"""Destinations: checks at add time (422 with the reason), the safety policy at delivery time against a
real receiver, e-mail through Apprise to a real SMTP server, secrets sealed at rest, one user's
destinations invisible to another, Apprise kept out of the API's start-up."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from aiosmtpd.controller import Controller
from notify_helpers import LOOPBACK
from service_helpers import ROOT, make_settings
from service_process import free_port

from app.notify.destinations import Destinations
from app.notify.errors import InvalidDestination
from app.notify.message import probe_message
from app.notify.safety import NetworkPolicy
from app.notify.sealing import Sealer, SealingUnavailable
from app.notify.sending import Secret, send
from app.statedir import StateDir
from app.store import RunStore
from app.users import Users

SCHEMES = ("labrun+http", "mailto", "json", "slack")


@pytest.fixture
def store(output_dir):
    found = RunStore(StateDir(output_dir).db)
    yield found
    found.close()


def destinations(store, tmp_path, allow: str = "") -> Destinations:
    policy = NetworkPolicy(SCHEMES, [h for h in allow.split(",") if h])
    return Destinations(store.outbox, Sealer(tmp_path / "keys" / "secret.key"), policy, timeout=3)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("bogus://whatever", "not allowed"),
        ("json//no-scheme", "not allowed"),
        ("labrun+http://127.0.0.1:9/hook", "may not reach"),
        ("labrun+http://localhost:9/hook", "may not reach"),
        ("labrun+http://169.254.169.254/latest/meta-data", "may not reach"),
        ("labrun+http://10.1.2.3/hook", "may not reach"),
        ("json://[::1]:9/x", "may not reach"),
        ("mailto://127.0.0.1:25?from=a@b.example&to=c@d.example", "may not reach"),
        ("labrun+http://no-such-host.invalid/hook", "cannot be resolved"),
        ("slack://", "not one Apprise understands"),
        ("labrun+http://a b", "no spaces"),
    ],
)
def test_a_destination_that_cannot_be_used_is_refused_with_the_reason(store, tmp_path, url, why):
    with pytest.raises(InvalidDestination, match=why):
        destinations(store, tmp_path).add("alice", url)
    assert store.outbox.destinations("alice") == []


def test_loopback_is_refused_at_delivery_time_unless_allowed(store, tmp_path, receiver):
    allowed = destinations(store, tmp_path, allow=LOOPBACK)
    added = allowed.add("alice", receiver.url)
    receiver.secret = added.signing_secret
    assert allowed.test("alice", added.destination.id) is None
    assert [m["event"] for m in receiver.events()] == ["test"]
    # the same destination, once the admin takes the exception away: refused when sending, nothing sent
    strict = destinations(store, tmp_path)
    error = strict.test("alice", added.destination.id)
    assert error is not None
    assert "may not reach" in error
    assert "127.0.0.1" not in error
    assert len(receiver.events()) == 1
    # and an allowed network (not a name) works too
    assert (
        destinations(store, tmp_path, allow="127.0.0.0/8,::1/128").test("alice", added.destination.id) is None
    )


def test_an_email_goes_through_apprise_to_a_real_smtp_server():
    class Inbox:
        def __init__(self) -> None:
            self.messages: list[tuple[str, list[str], bytes]] = []

        async def handle_DATA(self, _server, _session, envelope):  # aiosmtpd's hook
            self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content))
            return "250 OK"

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        url = f"mailto://127.0.0.1:{port}?from=labrun@lab.example&to=alice@lab.example"
        policy = NetworkPolicy(SCHEMES, ["127.0.0.1"])
        assert send(Secret(url), probe_message("alice"), policy, timeout=5) is None
        [(sender, recipients, content)] = inbox.messages
        assert sender == "labrun@lab.example"
        assert recipients == ["alice@lab.example"]
        assert b"labrun: test" in content
        refused = send(Secret(url), probe_message("alice"), NetworkPolicy(SCHEMES, []), timeout=5)
        assert refused is not None
        assert "may not reach" in refused
        assert len(inbox.messages) == 1
    finally:
        controller.stop()


def test_secrets_are_sealed_at_rest_with_a_key_of_mode_0600_outside_the_store(store, tmp_path):
    secret_url = "json://user:hunter2-secret@192.0.32.10/path"
    added = destinations(store, tmp_path).add("alice", secret_url)
    key = tmp_path / "keys" / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert "hunter2" not in added.destination.label
    assert "192.0.32.10" in added.destination.label
    store.close()
    for path in store.path.parent.iterdir():
        assert b"hunter2" not in path.read_bytes(), path
    key.chmod(0o644)
    with pytest.raises(SealingUnavailable, match="chmod 600"):
        Sealer(key).open(added.destination.sealed)


def test_the_key_file_may_not_live_in_the_output_directory(output_dir):
    from app.core.config import SettingsError
    from app.main import create_app

    settings = make_settings(output_dir, secret_key_file=output_dir / "secret.key")
    with pytest.raises(SettingsError, match="LABRUN_SECRET_KEY_FILE"):
        create_app(settings)


def test_a_user_sees_and_changes_only_their_own_destinations(output_dir, tmp_path, make_client):
    store = RunStore(StateDir(output_dir).db)
    tokens = {name: Users(store).add(name, admin=name == "root") for name in ("alice", "bob", "root")}
    store.close()
    client = make_client(secret_key_file=tmp_path / "k" / "secret.key")
    alice, bob, root = ({"Authorization": f"Bearer {tokens[n]}"} for n in ("alice", "bob", "root"))
    added = client.post("/me/notify/destinations", json={"url": "slack://T1/B2/C3"}, headers=alice)
    assert added.status_code == 201, added.text
    id = added.json()["id"]
    assert "T1/B2/C3" not in added.json()["label"]
    assert added.json()["signing_secret"] is None
    for other in (bob, root):
        assert client.get("/me/notify/destinations", headers=other).json() == {"data": [], "count": 0}
        assert client.delete(f"/me/notify/destinations/{id}", headers=other).status_code == 404
        assert client.post(f"/me/notify/destinations/{id}/test", headers=other).status_code == 404
    assert client.get("/me/notify/destinations", headers=alice).json()["count"] == 1
    bad = client.post("/me/notify/destinations", json={"url": "gopher://x"}, headers=alice)
    assert bad.status_code == 422
    assert "gopher" in bad.json()["detail"]
    assert client.get("/me/notify/destinations").status_code == 401
    assert client.delete(f"/me/notify/destinations/{id}", headers=alice).status_code == 204
    assert client.get("/me/notify/destinations", headers=alice).json()["count"] == 0


def test_the_api_process_starts_without_apprise_or_the_key():
    code = (
        "import sys, app.main, app.__main__\n"
        "assert 'apprise' not in sys.modules and 'cryptography.fernet' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60, env={**os.environ})


def test_kept_connections_are_reused_and_still_never_reach_an_address_the_check_refuses():
    """The worker's kept connections: a burst to one receiver travels on one connection, and a name that
    resolves somewhere else (not allowed) is refused before any message goes, although a connection to
    the address it had is still open."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from app.notify.webhook import Connections

    peers: list[int] = []

    class KeepAlive(BaseHTTPRequestHandler):  # a receiver that keeps connections open, as most do
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # the standard library names it
            self.rfile.read(int(self.headers["Content-Length"]))
            peers.append(self.client_address[1])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    dns = {"hooks.lab.test": "127.0.0.1"}  # a name service that changes its mind

    def resolve(host, port, **_):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (dns[host], port))]

    policy = NetworkPolicy(SCHEMES, ["127.0.0.1/32"], resolve=resolve)
    secret = Secret(f"labrun+http://hooks.lab.test:{port}/hook", "whsec_test")
    connections = Connections()
    try:
        for _ in range(20):
            assert send(secret, probe_message("alice"), policy, 3, connections) is None
        assert len(peers) == 20
        assert len(set(peers)) == 1, set(peers)  # one connection for the whole burst
        for elsewhere in ("10.0.0.5", "127.0.0.2", "169.254.169.254"):
            dns["hooks.lab.test"] = elsewhere
            error = send(secret, probe_message("alice"), policy, 3, connections)
            assert error is not None
            assert "may not reach" in error
            assert elsewhere not in error
        assert len(peers) == 20  # nothing went out on the connection still open to 127.0.0.1
        dns["hooks.lab.test"] = "127.0.0.1"
        assert send(secret, probe_message("alice"), policy, 3, connections) is None
        assert len(peers) == 21
    finally:
        connections.close()
        server.shutdown()
        server.server_close()
