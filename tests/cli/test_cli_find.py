"""`labrun ls --where` and `labrun diff` against a real service: runs found by what they were asked, and two
runs compared side by side."""

from __future__ import annotations

import json

from cli_helpers import fake, one_line
from service_process import wait_for


def test_ls_where_finds_runs_by_their_overrides_as_values(labrun, service):
    made = {}
    for label, lines in {
        "a": ["seed=1", "+extra.lr=0.0001"],
        "b": ["seed=2", "+extra.lr=1e-4"],
        "c": ["seed=1", "+extra.lr=0.001"],
    }.items():
        result = labrun("submit", *fake(sleep=0), *lines)
        assert result.returncode == 0, result.stderr
        made[label] = result.stdout.strip()

    listed = labrun("ls", "--json", "--where", "extra.lr=1e-4")
    assert listed.returncode == 0, listed.stderr
    assert [r["name"] for r in json.loads(listed.stdout)["data"]] == [made["b"], made["a"]]
    both = labrun("ls", "--json", "--where", "extra.lr=1e-4", "--where", "seed=1")
    assert [r["name"] for r in json.loads(both.stdout)["data"]] == [made["a"]]
    table = labrun("ls", "--where", "seed=1")
    assert made["a"] in table.stdout
    assert made["c"] in table.stdout
    assert made["b"] not in table.stdout

    bad = labrun("ls", "--where", "seed=1,2")
    assert bad.returncode == 2
    assert "one value per filter" in one_line(bad.stderr)
    for name in made.values():
        wait_for(service.http, name)


def test_diff_shows_what_differs_side_by_side(labrun):
    names = []
    for lines in (["seed=1", "+extra.fake_val_loss=0.25"], ["seed=2", "+extra.fake_val_loss=0.75"]):
        result = labrun("submit", "--wait", "--interval", "0.1", *fake(sleep=0), *lines)
        assert result.returncode == 0, result.stderr
        names.append(result.stdout.strip())

    shown = labrun("diff", *names)
    assert shown.returncode == 0, shown.stderr
    assert "overrides that differ" in shown.stdout
    seed_row = next(line for line in shown.stdout.splitlines() if line.strip().startswith("seed"))
    assert seed_row.split()[1:] == ["1", "2"]
    assert "val_loss" in shown.stdout
    assert "no .hydra/config.yaml" in shown.stdout  # the fake trainer writes none

    as_json = json.loads(labrun("diff", "--json", *names).stdout)
    assert as_json["names"] == names
    assert {d["key"] for d in as_json["overrides"]} == {"seed", "extra.fake_val_loss"}

    missing = labrun("diff", names[0], "no-such-run")
    assert missing.returncode == 5
    assert "no-such-run" in one_line(missing.stderr)
    assert labrun("diff", names[0]).returncode == 2
