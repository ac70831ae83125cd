"""What the commands draw, in process (no server): the formats, the progress bar on a terminal, and the
line-per-change progress elsewhere."""

from __future__ import annotations

import io

from labrun import render


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


RUNNING = {
    "name": "r1",
    "status": "running",
    "progress": {"epoch": 1, "max_epochs": 5, "step": 30, "total": 100, "fraction": 0.3},
    "metrics": {"train_loss": 0.123456, "val_loss": 0.5},
    "started_at": "2026-11-29T10:00:00Z",
}


def test_formats():
    assert [render.duration(s) for s in (None, 5, 75, 700, 3 * 3600 + 300, 2 * 86400 + 4 * 3600)] == [
        "-",
        "5s",
        "1m15s",
        "11m",
        "3h05m",
        "2d04h",
    ]
    assert render.progress_text(RUNNING) == "30% ep 2/5"  # the trainer counts epochs from 0
    assert render.progress_text({"status": "queued", "queue_position": 3}) == "#3 in queue"
    assert render.progress_text({"status": "failed"}) == "-"
    assert render.losses_text(RUNNING) == "step 30/100  train_loss 0.1235  val_loss 0.5"
    assert render.size(1536) == "1.5 KiB"
    assert render.size(None) == "-"
    done = {**RUNNING, "status": "succeeded", "finished_at": "2026-11-29T10:03:12Z"}
    assert render.outcome(done) == "r1 succeeded after 3m12s (val_loss 0.5)"
    failed = {**done, "status": "failed", "reason": "exited with code 1"}
    assert render.outcome(failed) == "r1 failed after 3m12s: exited with code 1"


def test_progress_bar_on_a_terminal():
    out = _Terminal()
    view = render.ProgressView("r1", out)
    view.update({"name": "r1", "status": "queued", "queue_position": 2, "waiting_reason": "[disk] full"})
    view.update(RUNNING)
    view.close()
    text = out.getvalue()
    assert "30%" in text
    assert "epoch 2/5" in text
    assert "train_loss 0.1235" in text
    assert "[disk] full" in text  # printed as it is, not taken for markup


def test_progress_lines_when_piped():
    out = io.StringIO()
    view = render.ProgressView("r1", out)
    for run in (
        {"status": "queued", "queue_position": 1},
        RUNNING,
        RUNNING,
        {**RUNNING, "status": "succeeded"},
    ):
        view.update(run)
    view.close()
    assert out.getvalue().splitlines() == ["r1: queued  #1 in queue", "r1: running epoch 2/5"]


def test_show_says_whether_a_reruns_code_differs(capsys):
    rerun = {"name": "r2", "status": "succeeded", "rerun_of": "r1", "created_at": "2026-11-29T10:00:00Z"}
    assert render.code_text({"name": "r1"}) is None  # no rerun: no line
    assert render.code_text({**rerun, "code_differs": None}).startswith("not known yet")
    assert render.code_text({**rerun, "code_differs": False}) == "same as the original's"
    render.run_details({**rerun, "code_differs": True})
    shown = capsys.readouterr().out
    assert "DIFFERS from the original's" in shown
    assert "rerun of" in shown


def test_ls_and_show_say_when_a_queued_run_starts_and_why(capsys):
    import datetime as dt

    now = dt.datetime(2026, 12, 3, 15, 0, tzinfo=dt.UTC)
    estimate = {
        "start_at": "2026-12-03T15:40:00Z",
        "reason": "waiting for run x ends in ~40 min",
        "sure": "high",
    }
    queued = {
        "name": "q1",
        "status": "queued",
        "estimate": estimate,
        "runs_as": "low",
        "runs_as_reason": "over",
    }
    assert render.start_text(queued, now) == "~40m"
    assert render.start_text({**queued, "estimate": {**estimate, "start_at": None}}, now) == "?"
    assert render.start_text({"status": "running"}, now) == "-"
    render.run_details(queued)
    shown = capsys.readouterr().out
    assert "high confidence: waiting for run x ends in ~40 min" in shown
    assert "low: over" in shown
    render.budgets_view(
        {
            "budgets": [
                {"pool": "gpu", "used_hours": 512.3, "budget_hours": 500, "window_days": 30, "over": True}
            ]
        }
    )
    assert "512.30 used in the last 30 days (budget 500)  over budget" in capsys.readouterr().out
