"""Runs found by what they were asked (``GET /runs?override=KEY=VALUE``, app/override_values.py,
app/store/run_overrides.py): values compared as values, the server's defaults a run got counted, every
filter must match, paging as usual, bad filters refused with the fix; the index filled at insert and, for
runs stored before it existed, at start-up."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import cancel_all, make_settings, queued_record, submit

from app.main import create_app
from app.override_values import asked, filters, normal_value
from app.store import RunStore, run_overrides
from trainer import overrides as overrides_parser


def names(client: TestClient, *lines: str, **params) -> tuple[list[str], int]:
    answer = client.get("/runs", params={"override": list(lines), **params})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return [r["name"] for r in body["data"]], body["count"]


def test_values_are_compared_as_values():
    assert normal_value(0.0001) == normal_value(1e-4)
    assert filters(["training.lr=1e-4"]) == asked(["training.lr=0.0001"], None)
    assert filters(["x=1"]) == asked(["x=1.0"], None)  # one number
    assert filters(["x=1"]) != asked(["x='1'"], None)  # a quoted string is another value
    assert filters(["model=fno"]) == asked(["model='fno'"], None)
    assert asked(["+a.b=[1, 2.0]"], None) == [("a.b", "[1,2]")]
    # The request's line wins over a default of the same key; a removed key is not asked.
    assert asked(["x=2", "~y"], ["x=1", "y=3", "z=4"]) == [("x", "2"), ("z", "4")]


def test_runs_found_by_their_overrides_and_the_defaults_they_got(output_dir: Path):
    settings = make_settings(output_dir, default_overrides="+extra.fake_lines=3")
    with TestClient(create_app(settings)) as client:
        try:
            slow = ["+extra.fake_sleep=60"]  # they stay queued or running: only their records matter
            a = submit(client, "model=fno", "training.lr=0.0001", *slow)["name"]
            b = submit(client, "model=sfno", "training.lr=1e-4", *slow)["name"]
            c = submit(client, "model=fno", "training.lr=0.001", *slow)["name"]
            d = submit(client, "model=fno", "training.lr=1e-4", "+extra.fake_lines=5", *slow)["name"]

            assert names(client, "model=fno", "training.lr=1e-4") == ([d, a], 2)
            assert names(client, "training.lr=0.0001") == ([d, b, a], 3)
            assert names(client, "model=fno") == ([d, c, a], 3)
            assert names(client, "+extra.fake_lines=3") == ([c, b, a], 3)  # the server's default, as got
            assert names(client, "extra.fake_lines=5") == ([d], 1)
            assert names(client, "model=fno", "model=sfno") == ([], 0)
            assert names(client, "model=resnet") == ([], 0)

            first = client.get("/runs", params={"override": "model=fno", "limit": 2}).json()
            assert [r["name"] for r in first["data"]] == [d, c]
            assert first["count"] == 3
            rest = names(client, "model=fno", limit=2, before=first["next_before"])
            assert rest == ([a], 3)
            assert names(client, "model=fno", status="succeeded") == ([], 0)

            for bad, says in (
                ("model", "KEY=VALUE"),
                ("training.lr=1,2", "one value per filter"),
                ("~x", "one KEY"),
            ):
                refused = client.get("/runs", params={"override": bad})
                assert refused.status_code == 422, refused.text
                assert says in refused.json()["detail"]
                assert repr(bad) in refused.json()["detail"]
        finally:
            cancel_all(client)


def test_runs_stored_before_the_index_are_filled_in_at_start_up(tmp_path, monkeypatch):
    monkeypatch.setattr(run_overrides, "BACKFILL_BATCH", 2)  # several batches
    db = tmp_path / "runs.db"
    store = RunStore(db)
    for i in range(5):
        store.insert(queued_record(f"r{i}", overrides=("model=fno", f"training.lr={i}e-4")))
    store.close()
    with closing(sqlite3.connect(db)) as conn, conn:  # as a store from before the index: no rows, all left
        conn.execute("DELETE FROM run_overrides")
        conn.execute("INSERT INTO run_overrides_backfill SELECT MAX(seq) + 1 FROM runs")
    store = RunStore(db)
    try:
        assert [r.name for r in store.list(asked=filters(["model=fno"]))] == ["r4", "r3", "r2", "r1", "r0"]
        assert [r.name for r in store.list(asked=filters(["training.lr=0.0002"]))] == ["r2"]
        assert store.count(asked=filters(["model=fno"])) == 5
        with closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM run_overrides_backfill").fetchone()[0] == 0
    finally:
        store.close()


@pytest.mark.parametrize("line", ["model=fno", "training.lr=1e-4"])
def test_the_polls_fast_path_leaves_a_filtered_list_to_the_route(client, line):
    submit(client, "+extra.fake_sleep=0")
    assert client.get("/runs", params={"override": line}).json()["count"] == 0


@pytest.mark.parametrize(
    "line",
    [
        "seed=1",
        "seed=-3",
        "seed=0",
        "seed=007",
        "model=fno",
        "x=True",
        "x=NaN",
        "+a.b=c",
        "++a_b.c=12",
        "x=1_000",
        "x=fno-2",
        "x=inf",
        "x=Null",
        "a.b=abc_def",
        "x=nullx",
        "x=99999999999999999999",
    ],
)
def test_the_plain_line_shortcut_reads_exactly_as_the_grammar(line):
    o = overrides_parser.parse_one(line)
    assert asked([line], None) == [(o.key_or_group, normal_value(o.value()))]
