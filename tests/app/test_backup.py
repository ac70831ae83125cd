"""``python -m app backup PATH`` (a consistent copy of the store while the service runs), the store file
alone holding everything after a clean stop, and ``python -m app`` refusing what it does not know."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from service_helpers import ROOT, ServiceProcess, wait_for


def app_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def run_names(db: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {name for (name,) in conn.execute("SELECT name FROM runs")}
    finally:
        conn.close()


@pytest.mark.parametrize("args", [["backup"], ["bogus"], ["--bogus"], ["backup", "a", "b"], ["serve", "x"]])
def test_an_unknown_command_or_argument_is_an_error_not_a_service(output_dir: Path, args: list[str]) -> None:
    env = ServiceProcess(output_dir).env  # a free port: a service started by mistake would serve there
    try:
        done = app_command(env, *args)
    except subprocess.TimeoutExpired:
        pytest.fail(f"python -m app {' '.join(args)} started the service")
    assert done.returncode == 2, done
    assert done.stderr.startswith("usage: python -m app"), done.stderr


def test_backup_while_serving_and_a_whole_store_file_after_a_clean_stop(
    output_dir: Path, tmp_path: Path
) -> None:
    svc = ServiceProcess(output_dir).start()
    try:
        names = {svc.submit(["+extra.fake_sleep=0", f"seed={i}"])["name"] for i in range(5)}
        for name in names:
            assert wait_for(svc.http, name)["status"] == "succeeded"
        db = output_dir / ".labrun" / "runs.db"
        assert Path(f"{db}-wal").exists()  # recent writes are in the log beside the file

        target = tmp_path / "backup.db"
        done = app_command(svc.env, "backup", str(target))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"wrote {target}: 5 runs,"), done.stdout
        assert run_names(target) == names
        assert not Path(f"{target}-wal").exists()
        assert not list(tmp_path.glob(".*partial"))

        target.write_bytes(target.read_bytes())  # the same bytes, a later mtime
        before = target.stat().st_mtime_ns
        again = app_command(svc.env, "backup", str(target))
        assert again.returncode == 1, again
        assert "exists" in again.stderr, again
        assert target.stat().st_mtime_ns == before  # never overwritten
        missing = app_command(
            {**svc.env, "LABRUN_OUTPUT_DIR": str(tmp_path / "none")}, "backup", str(tmp_path / "b")
        )
        assert missing.returncode == 1, missing
        assert "no store" in missing.stderr, missing

        names.add(svc.submit(["+extra.fake_sleep=0", "seed=9"])["name"])
        for name in names:
            wait_for(svc.http, name)
    finally:
        svc.stop()
    assert "Application shutdown complete" in svc.log()  # a clean stop (SIGTERM), the lifespan's end run
    alone = tmp_path / "alone" / "runs.db"
    alone.parent.mkdir()
    shutil.copy(db, alone)  # the file only, without runs.db-wal/-shm: what a careless backup copies
    assert run_names(alone) == names
