"""`labrun submit --priority`: the class goes to the server and shows in ls, show and gpus."""

from __future__ import annotations

from cli_helpers import fake
from service_process import wait_for


def test_submit_priority_shows_in_ls_show_and_gpus(labrun, service):
    result = labrun("submit", "--priority", "low", *fake(sleep=0.1, lines=1))
    assert result.returncode == 0, result.stderr
    name = result.stdout.splitlines()[0]
    assert service.http.get(f"/runs/{name}").json()["priority"] == "low"
    wait_for(service.http, name)
    listed = labrun("ls", "--limit", "5", COLUMNS="200")
    assert f"{name} [low]" in listed.stdout, listed.stdout
    shown = labrun("show", name, COLUMNS="200")
    assert "priority" in shown.stdout
    assert "low" in shown.stdout
    refused = labrun("submit", "--priority", "urgent", *fake())
    assert refused.returncode == 2
    assert "invalid choice: 'urgent'" in refused.stderr
