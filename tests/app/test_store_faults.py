"""A store that is damaged, lost or read-only (issue 20, the store): the service refuses to start on a damaged
store or on an empty one where runs existed, says what to do, answers 503 (never 500) when the store fails
while it runs, and /healthz names a store that cannot be written. Real SQLite files throughout."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from service_helpers import make_settings, queued_record

from app.core.config import SettingsError
from app.errors import StoreUnavailable
from app.main import create_app
from app.statedir import StateDir
from app.store import RunStore
from app.store.db import Database

PAGE = 4096


def _store_with_runs(output_dir: Path, n: int = 300) -> Path:
    db = StateDir(output_dir).db
    store = RunStore(db)
    store.insert_runs([queued_record(f"run-{i:04d}", overrides=["model=fno", "x" * 200]) for i in range(n)])
    store.close()  # a clean close: everything is in the file itself
    return db


def _damage(db: Path) -> None:
    """Garbage over a leaf page in the middle of the runs table's b-tree (found through SQLite's dbstat:
    the middle of the file may be another table's, and migrations add tables)."""
    conn = sqlite3.connect(db)
    try:
        leaves = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'runs' AND pagetype = 'leaf' ORDER BY pageno"
        ).fetchall()
    finally:
        conn.close()
    (page,) = leaves[len(leaves) // 2]
    with open(db, "r+b") as f:
        f.seek((page - 1) * PAGE)  # pages are numbered from 1
        f.write(b"\xa5" * PAGE)


def _start(output_dir: Path) -> None:
    app = create_app(make_settings(output_dir))
    app.state.manager.store.close()


def test_a_damaged_store_is_refused_at_start_with_what_to_do(output_dir):
    db = _store_with_runs(output_dir)
    _damage(db)
    with pytest.raises(SettingsError) as refused:
        _start(output_dir)
    message = str(refused.value)
    assert f"the store {db} is damaged" in message
    assert "restore the latest backup" in message
    assert ".recover" in message


def test_an_empty_or_missing_store_is_not_taken_for_a_new_one_when_runs_existed(output_dir):
    db = _store_with_runs(output_dir, n=3)
    StateDir(output_dir).run("run-0000").mkdir(parents=True)  # what a run leaves in the state folder
    db.write_bytes(b"")
    with pytest.raises(SettingsError, match=r"is empty \(0 bytes\), but .* shows that runs existed"):
        _start(output_dir)
    assert db.stat().st_size == 0  # nothing was created in its place
    db.unlink()
    with pytest.raises(SettingsError, match="is missing, but"):
        _start(output_dir)
    assert not db.exists()


def test_a_new_output_directory_still_starts_with_a_new_store(output_dir):
    _start(output_dir)
    assert RunStore(StateDir(output_dir).db).count() == 0


def test_a_read_of_a_damaged_page_is_a_503_not_a_500(output_dir):
    db = _store_with_runs(output_dir)
    _damage(db)
    database = Database(db)  # opened without the start-up check, as if damaged while running
    try:
        with pytest.raises(StoreUnavailable, match="damaged"):
            list(database.rows("SELECT * FROM runs"))
    finally:
        database.close()


def test_a_clean_close_leaves_everything_in_the_store_file_alone(output_dir, tmp_path):
    db = _store_with_runs(output_dir, n=50)
    assert not db.with_name("runs.db-wal").exists()
    copy = tmp_path / "copy.db"
    shutil.copy(db, copy)  # the file alone, as a naive backup copies it
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (50,)
    conn.close()


def _chattr(flag: str, *paths: Path) -> bool:
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, check=False)
    return done.returncode == 0


def test_a_read_only_store_shows_in_health_and_in_the_503(output_dir, make_client):
    client = make_client()
    assert client.get("/healthz").json()["store_ok"] is True
    state = StateDir(output_dir)
    files = [p for p in state.root.iterdir() if p.name.startswith("runs.db")]
    if not _chattr("+i", *files):
        pytest.skip(
            "needs chattr +i (root with CAP_LINUX_IMMUTABLE): no other way makes a file read-only for root"
        )
    try:
        refused = client.post("/runs", json={"overrides": []})
        assert refused.status_code == 503
        assert "cannot be written" in refused.json()["detail"]
        assert "read-only" in refused.json()["detail"]
        health = client.get("/healthz")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "degraded"
        assert body["store_ok"] is False
        assert "read-only" in body["store_problem"]
        assert "run store cannot be written" in body["detail"]
    finally:
        _chattr("-i", *files)
    assert client.post("/runs", json={"overrides": ["+extra.fake_sleep=0"]}).status_code == 201
    assert client.get("/healthz").json()["store_ok"] is True
