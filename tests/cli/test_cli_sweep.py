"""``labrun sweep``: the sweep's name on stdout, one progress line per run with --wait, the exit status."""

from __future__ import annotations

from cli_helpers import fake


def test_sweep_wait_prints_a_line_per_run_and_exits_1_when_one_failed(labrun, service):
    out = labrun(
        "sweep",
        "--wait",
        "--interval",
        "0.1",
        *fake(sleep=0.2),
        "+extra.fake_val_loss=0.3,0.1,0.2",
        "+extra.fake_exit_if_val_loss=0.1",
    )
    name = out.stdout.strip()
    assert out.returncode == 1, out.stderr
    sweep = service.http.get(f"/sweeps/{name}").json()
    assert sweep["counts"]["succeeded"] == 2
    assert sweep["counts"]["failed"] == 1
    lines = [line.removeprefix("labrun: ") for line in out.stderr.splitlines()]
    for run in sweep["runs"]:
        assert any(
            line.startswith(f"[{run['index'] + 1}/3] {run['name']} {run['status']}") for line in lines
        ), out.stderr
    assert "val_loss 0.2" in out.stderr
    assert lines[-1].startswith(f"{name}: 2 succeeded, 1 failed; best 2_")


def test_an_invalid_sweep_is_exit_2_and_names_the_combination(labrun):
    out = labrun("sweep", "training.lr=0.1,5")
    assert out.returncode == 2
    assert "run 1 of the sweep (training.lr=5)" in out.stderr
