"""`labrun` against a real service: submit and wait (exit status = the run's outcome), ls, show, logs,
cancel, rerun, rm, gpus, usage."""

from __future__ import annotations

import json
import subprocess

from cli_helpers import cli_env, fake, labrun_command, one_line
from service_process import ROOT, wait_for


def submitted_name(result: subprocess.CompletedProcess[str]) -> str:
    """``submit`` prints the run's name, alone, as stdout's first line."""
    assert result.stdout, result.stderr
    return result.stdout.splitlines()[0]


def test_submit_prints_the_name_and_queues_the_overrides_verbatim(labrun, service):
    result = labrun("submit", *fake(lines=1), "seed=7")
    assert result.returncode == 0, result.stderr
    name = submitted_name(result)
    run = service.http.get(f"/runs/{name}").json()
    assert run["overrides"] == [*fake(lines=1), "seed=7"]
    # options may come between the overrides; their order is kept
    result = labrun("submit", "seed=8", "--idempotency-key", "k-1", *fake(lines=2))
    assert result.returncode == 0, result.stderr
    assert service.http.get(f"/runs/{submitted_name(result)}").json()["overrides"] == [
        "seed=8",
        *fake(lines=2),
    ]


def test_wait_exits_0_when_the_run_succeeds(labrun, service):
    result = labrun("submit", "--wait", "--interval", "0.1", *fake(sleep=0.5))
    assert result.returncode == 0, result.stderr
    name = submitted_name(result)
    assert result.stdout.strip() == name  # the progress goes to stderr: stdout stays a name for scripts
    assert f"{name} succeeded" in result.stderr
    assert service.http.get(f"/runs/{name}").json()["status"] == "succeeded"


def test_wait_exits_1_when_the_run_fails_and_says_why(labrun):
    result = labrun("submit", "--wait", "--interval", "0.1", *fake(exit=3))
    assert result.returncode == 1, result.stderr
    name = submitted_name(result)
    assert f"{name} failed" in result.stderr
    assert "exited with code 3" in result.stderr  # the server's reason
    assert "failing with exit code 3" in result.stderr  # and the log's tail


def test_wait_exits_130_when_the_run_is_cancelled_meanwhile(service):
    proc = subprocess.Popen(
        labrun_command("submit", "--wait", "--interval", "0.1", *fake(sleep=60)),
        cwd=ROOT,
        env=cli_env(service.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        name = proc.stdout.readline().strip()
        assert name, proc.stderr.read()
        wait_for(service.http, name, {"running"})
        assert service.http.post(f"/runs/{name}/cancel").status_code == 200  # someone else cancels it
        assert proc.wait(timeout=30) == 130
        assert f"{name} cancelled" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_submit_follow_streams_the_log_and_exits_with_the_outcome(labrun):
    result = labrun("submit", "--follow", *fake(lines=4, sleep=0.5))
    assert result.returncode == 0, result.stderr
    name = submitted_name(result)
    for i in range(1, 5):
        assert f"fake trainer {name}: line {i}" in result.stdout
    result = labrun("submit", "--follow", *fake(exit=2))
    assert result.returncode == 1, result.stderr
    assert "failing with exit code 2" in result.stdout


def test_idempotency_key_returns_the_same_run(labrun):
    first = labrun("submit", "--idempotency-key", "same-key", *fake(lines=1))
    second = labrun("submit", "--idempotency-key", "same-key", *fake(lines=1))
    assert first.returncode == second.returncode == 0, (first.stderr, second.stderr)
    assert submitted_name(first) == submitted_name(second)
    assert "used before" in second.stderr


def test_ls_shows_a_table_and_json(labrun, service):
    done = submitted_name(labrun("submit", "--wait", *fake(lines=1)))
    running = submitted_name(labrun("submit", *fake(sleep=60)))
    wait_for(service.http, running, {"running"})

    table = labrun("ls")
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == ["NAME", "OWNER", "STATUS", "GPUS", "PROGRESS", "START", "AGE", "VAL_LOSS"]
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[2:] if line.strip()}

    def owner(name: str) -> str:  # "-" while a server reports none
        return service.http.get(f"/runs/{name}").json().get("owner") or "-"

    assert rows[done][1:3] == [owner(done), "succeeded"]
    assert rows[running][1:3] == [owner(running), "running"]
    assert list(rows).index(running) < list(rows).index(done)  # newest first

    only_running = labrun("ls", "--status", "running", "--json")
    assert only_running.returncode == 0, only_running.stderr
    answer = json.loads(only_running.stdout)
    assert running in [r["name"] for r in answer["data"]]
    assert {r["status"] for r in answer["data"]} == {"running"}
    assert answer["count"] == len(answer["data"])

    first_page = json.loads(labrun("ls", "--limit", "1", "--json").stdout)
    assert len(first_page["data"]) == 1
    footer = labrun("ls", "--limit", "1").stderr.strip()
    assert footer.startswith("1 of ")
    assert footer.endswith(f"--before {first_page['next_before']}")
    second_page = json.loads(
        labrun("ls", "--limit", "1", "--before", str(first_page["next_before"]), "--json").stdout
    )
    assert second_page["data"][0]["name"] not in {first_page["data"][0]["name"]}

    bad = labrun("ls", "--status", "sleeping")
    assert bad.returncode == 2
    assert "unknown status 'sleeping'" in one_line(bad.stderr)
    service.http.post(f"/runs/{running}/cancel")


def test_show_one_run(labrun):
    name = submitted_name(labrun("submit", "--wait", *fake(exit=4)))
    shown = labrun("show", name)
    assert shown.returncode == 0, shown.stderr
    fields = dict(
        line.split(None, 1) for line in shown.stdout.splitlines() if line[:1].isalpha() and " " in line
    )
    assert fields["name"].strip() == name
    assert fields["status"].strip() == "failed"
    assert "exited with code 4" in shown.stdout
    as_json = json.loads(labrun("show", name, "--json").stdout)
    assert as_json["name"] == name
    assert as_json["exit_code"] == 4


def test_logs_print_tail_and_follow(labrun, service):
    name = submitted_name(labrun("submit", *fake(lines=5, sleep=1.5)))
    followed = labrun("logs", "-f", name)  # returns when the run ends
    assert followed.returncode == 0, followed.stderr
    assert [line for line in followed.stdout.splitlines() if line.startswith("fake trainer")] == [
        f"fake trainer {name}: line {i}" for i in range(1, 6)
    ]
    assert service.http.get(f"/runs/{name}").json()["status"] == "succeeded"

    tail = labrun("logs", name, "--tail", "1")
    assert tail.stdout.strip() == f"fake trainer {name}: line 5"
    as_json = json.loads(labrun("logs", name, "--json").stdout)
    assert as_json["text"] == followed.stdout
    assert as_json["truncated"] is False


def test_cancel_runs_and_report_each(labrun, service):
    queued_or_running = [submitted_name(labrun("submit", *fake(sleep=60))) for _ in range(2)]
    result = labrun("cancel", *queued_or_running)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{name}: cancelled" for name in queued_or_running]
    for name in queued_or_running:
        assert service.http.get(f"/runs/{name}").json()["status"] == "cancelled"

    again = labrun("cancel", queued_or_running[0], "no-such-run")
    assert again.returncode == 6  # the first error decides: 409, already finished
    first, second = again.stderr.strip().splitlines()
    assert "already finished" in first
    assert "(HTTP 409)" in first
    assert second == f"labrun: no run named 'no-such-run' on {service.url}"


def test_rerun_and_rm(labrun, service):
    original = submitted_name(labrun("submit", "--wait", *fake(lines=1)))
    rerun = labrun("rerun", original, "--wait")
    assert rerun.returncode == 0, rerun.stderr
    new = submitted_name(rerun)
    assert new != original
    assert service.http.get(f"/runs/{new}").json()["rerun_of"] == original

    removed = labrun("rm", original)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith(f"{original}: deleted")
    assert service.http.get(f"/runs/{original}").json()["deleted_at"] is not None

    running = submitted_name(labrun("submit", *fake(sleep=60)))
    refused = labrun("rm", running)
    assert refused.returncode == 6
    assert "cancel it first" in one_line(refused.stderr)
    labrun("cancel", running)


def test_gpus_and_usage(labrun, service):
    running = submitted_name(labrun("submit", *fake(sleep=60)))
    wait_for(service.http, running, {"running"})
    view = labrun("gpus", "--json")
    assert view.returncode == 0, view.stderr
    answer = json.loads(view.stdout)
    assert answer["gpus"] == []  # this service has none (LABRUN_GPUS="")
    assert running in [r["name"] for r in answer["cpu"]]
    text = labrun("gpus")
    assert text.returncode == 0
    assert running in text.stdout
    assert "cpu" in text.stdout
    labrun("cancel", running)

    usage = labrun("usage", "--json")
    assert usage.returncode == 0, usage.stderr
    assert {"disk_bytes", "free_bytes", "largest"} <= set(json.loads(usage.stdout))
    assert "disk free" in labrun("usage").stdout
