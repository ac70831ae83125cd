"""`labrun submit --time-limit`, `labrun time-limit`, `labrun resume`: the limit goes to the server, shows in
show, and a run stopped at its limit continues (the server's side: tests/app/test_time_limits.py)."""

from __future__ import annotations

from cli_helpers import fake
from service_process import wait_for, wait_until


def test_a_time_limit_from_the_command_line_extended_then_reached_then_resumed(labrun, service):
    result = labrun("submit", "--time-limit", "1h", *fake(sleep=60))
    assert result.returncode == 0, result.stderr
    name = result.stdout.splitlines()[0]
    assert service.http.get(f"/runs/{name}").json()["time_limit_s"] == 3600
    wait_for(service.http, name, {"running"})
    shown = labrun("show", name, COLUMNS="200")
    assert "time limit" in shown.stdout, shown.stdout
    assert "1 h (" in shown.stdout, shown.stdout
    assert "left, at" in shown.stdout, shown.stdout

    more = labrun("time-limit", name, "+30m")
    assert more.returncode == 0, more.stderr
    assert more.stdout.startswith(f"{name}: time limit 1 h 30 min"), more.stdout
    # a limit that has passed already: the server's 422, as the CLI's error, naming why
    passed = labrun("time-limit", name, "0.01")
    assert passed.returncode != 0
    assert "has passed already" in passed.stderr, passed.stderr
    wait_until(lambda: ": line 1" in service.http.get(f"/runs/{name}/logs").text, what="its first line")
    # the default stop comes 60 s before the limit: a limit of 62 s from its start stops it now
    ran = service.http.get(f"/runs/{name}").json()
    assert labrun("time-limit", name, "62").returncode == 0
    ended = wait_for(service.http, name, timeout=30)
    assert ended["reason"].startswith("time limit of 1 min 2 s reached; resumable"), (ended, ran)

    resumed = labrun("resume", name, "--time-limit", "2h")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(f"{name}: queued as attempt 2, time limit 2 h"), resumed.stdout
    labrun("cancel", name)
    bad = labrun("submit", "--time-limit", "6 hours", *fake())
    assert bad.returncode == 2
    assert "not a duration" in bad.stderr, bad.stderr
