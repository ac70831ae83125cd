"""``labrun submit/sweep --after NAME[:ended] --init-from RUN`` and how ``show`` and ``ls`` say what a run
waits for and where it starts from (docs/run-chains.md). Real CLI processes against a real service."""

from __future__ import annotations

import json
import subprocess
import time

from cli_helpers import fake


def submitted_name(result: subprocess.CompletedProcess[str]) -> str:
    assert result.stdout, result.stderr
    return result.stdout.splitlines()[0]


def test_submit_after_waits_and_show_and_ls_say_for_what(labrun, service):
    first = submitted_name(labrun("submit", *fake(sleep=3)))
    second = labrun("submit", "--after", first, "--after", f"{first}:ended", *fake(lines=1))
    assert second.returncode == 0, second.stderr
    name = submitted_name(second)
    run = service.http.get(f"/runs/{name}").json()
    assert [(d["run"], d["when"]) for d in run["after"]] == [(first, "succeeded")]  # one entry per run
    deadline = time.monotonic() + 10
    while service.http.get(f"/runs/{name}").json()["waiting_reason"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    shown = labrun("show", name)
    assert shown.returncode == 0, shown.stderr
    flat = " ".join(shown.stdout.split())  # rich folds long lines
    assert f"after run {first} succeeded (" in flat
    assert f"waiting waiting for run {first} to succeed" in flat
    listed = labrun("ls", "--status", "queued", COLUMNS="400")
    assert f"waiting for run {first}" in " ".join(listed.stdout.split())
    done = labrun("submit", "--wait", "--after", f"{first}:ended", *fake(lines=2), timeout=120)
    assert done.returncode == 0, done.stderr
    assert service.http.get(f"/runs/{first}").json()["status"] == "succeeded"


def test_bad_after_and_init_from_are_refused_with_the_servers_reason(labrun):
    unknown = labrun("submit", "--after", "no-such-run", *fake(lines=1))
    assert unknown.returncode != 0
    assert "no run named 'no-such-run'" in unknown.stderr
    missing = labrun("sweep", "--init-from", "no-such-run", "seed=1,2")
    assert missing.returncode != 0
    assert "init_from='no-such-run': no run named 'no-such-run'" in missing.stderr


def test_init_from_is_passed_quoted_and_shown(labrun):
    source = submitted_name(labrun("submit", "--wait", *fake(lines=1)))
    chained = labrun("submit", "--json", "--init-from", source, "--after", source, *fake(lines=1))
    assert chained.returncode == 0, chained.stderr
    run = json.loads(chained.stdout)
    assert run["init_from"] == source
    assert f"init_from='{source}'" in run["overrides"]
