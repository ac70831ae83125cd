"""`labrun pull` against a real service: the copy is identical (sha256), pulling again skips what is
identical and resumes a cut-off file, a file that changes on the server fails loudly by name, and a pulled
real trainer run resumes with `python -m trainer` on this machine (the command `pull` prints)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import fake, labrun_command, one_line
from service_process import ROOT, ServiceProcess, wait_for
from tiny_run import tiny_run

BIG = 5 * (1 << 20) + 17


def _finished_run(labrun, service) -> tuple[str, Path]:
    made = labrun("submit", *fake(sleep=0))
    assert made.returncode == 0, made.stderr
    run = wait_for(service.http, made.stdout.strip())
    assert run["status"] == "succeeded", run
    return run["name"], service.output_dir / run["run_dir"]


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every regular file under ``root``, by relative path (links not followed)."""
    out = {}
    for base, dirs, files in os.walk(root):
        for f in files:
            p = Path(base, f)
            if p.is_file() and not p.is_symlink():
                out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
        dirs[:] = [d for d in dirs if not Path(base, d).is_symlink()]
    return out


def test_pull_copies_the_run_identically_then_skips_and_resumes(labrun, service, tmp_path):
    name, run_dir = _finished_run(labrun, service)
    (run_dir / "ckpt").mkdir(exist_ok=True)
    (run_dir / "ckpt" / "last.ckpt").write_bytes(os.urandom(BIG))
    (run_dir / "sub" / "x").mkdir(parents=True)
    (run_dir / "sub" / "x" / "note.txt").write_text("hello")
    os.symlink("/proc/self/environ", run_dir / "environ")
    dest = tmp_path / "copy"

    first = labrun("pull", name, str(dest))
    assert first.returncode == 0, first.stderr
    assert _tree(dest) == _tree(run_dir)
    assert not (dest / "environ").exists()
    assert "1 entries that are not regular files" in first.stderr
    assert "resume it here with:" in first.stdout
    mtime = (run_dir / "ckpt" / "last.ckpt").stat().st_mtime
    assert abs((dest / "ckpt" / "last.ckpt").stat().st_mtime - mtime) < 1e-3

    again = labrun("pull", name, str(dest))
    assert again.returncode == 0, again.stderr
    assert f"0 files copied (0.0 MB), {len(_tree(run_dir))} already identical" in again.stdout

    # Cut off midway (Ctrl-C, a dropped connection): the part goes on with a Range request.
    ckpt = dest / "ckpt" / "last.ckpt"
    data = ckpt.read_bytes()
    ckpt.unlink()
    (dest / "ckpt" / "last.ckpt.labrun-part").write_bytes(data[: BIG // 2])
    resumed = labrun("pull", name, str(dest))
    assert resumed.returncode == 0, resumed.stderr
    assert f"ckpt/last.ckpt: going on from byte {BIG // 2}" in resumed.stderr
    assert f"1 files copied ({(BIG - BIG // 2) / 1e6:.1f} MB)" in resumed.stdout
    assert _tree(dest) == _tree(run_dir)
    assert not list(dest.rglob("*.labrun-part"))

    # A part that is not the server's file's beginning: found out by the checksum, fetched again whole.
    ckpt.unlink()
    (dest / "ckpt" / "last.ckpt.labrun-part").write_bytes(b"x" * 1000)
    fixed = labrun("pull", name, str(dest))
    assert fixed.returncode == 0, fixed.stderr
    assert _tree(dest) == _tree(run_dir)

    light = labrun("pull", name, str(tmp_path / "light"), "--no-ckpt")
    assert light.returncode == 0, light.stderr
    assert not (tmp_path / "light" / "ckpt").exists()
    assert "resume it here" not in light.stdout


def test_a_file_that_changes_on_the_server_fails_the_pull_naming_it(labrun, service, tmp_path):
    name, run_dir = _finished_run(labrun, service)
    moving = run_dir / "moving.bin"
    moving.write_bytes(b"0" * (32 << 20))
    # As a run writes it: another process rewrites its first MiB in place all the time, each time anew, so
    # that the version the listing hashes (a read of 32 MiB) is not the one the download reads (or changes
    # while it is hashed, and has no checksum): either way the pull fails, naming the file.
    rewrite = (
        "import itertools, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY)\n"
        "for n in itertools.count():\n"
        "    os.pwrite(fd, (str(n).encode() * (1 << 20))[: 1 << 20], 0)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", rewrite, str(moving)])
    try:
        result = labrun("pull", name, str(tmp_path / "copy"))
    finally:
        writer.kill()
        writer.wait()
    assert result.returncode == 7, result.stdout + result.stderr
    assert one_line(result.stderr).startswith("labrun: moving.bin: ")


def test_pull_of_unknown_and_deleted_runs_says_so(labrun, service, tmp_path):
    missing = labrun("pull", "no-such-run", str(tmp_path / "a"))
    assert missing.returncode == 5
    assert "no-such-run" in one_line(missing.stderr)
    name, _ = _finished_run(labrun, service)
    assert labrun("rm", name).returncode == 0
    gone = labrun("pull", name, str(tmp_path / "b"))
    assert gone.returncode == 6
    assert "was deleted" in one_line(gone.stderr)


@pytest.mark.slow
def test_a_pulled_real_run_resumes_with_the_trainer_here(tmp_path):
    """A real 1-epoch CPU run through a real service, pulled, then taken on for a second epoch here by the
    command `pull` printed: it resumes from the pulled checkpoint (not from scratch) as attempt 2."""
    output_dir = tmp_path / "outputs"
    output_dir.mkdir()
    wandb = {f"WANDB_{k}_DIR": str(tmp_path / f"wandb-{k.lower()}") for k in ("CACHE", "CONFIG", "DATA")}
    svc = ServiceProcess(output_dir, None, **wandb).start()  # None: the real `python -m trainer`
    try:
        run = svc.submit([*tiny_run(epochs=1), "deterministic=true"])
        run = svc.wait_for(run["name"], timeout=400)
        assert run["status"] == "succeeded", f"{run}\n{svc.log(4000)}"
        pulled = subprocess.run(
            [*labrun_command("pull", run["name"], str(tmp_path / "laptop" / run["name"]))],
            cwd=ROOT,
            env={**os.environ, "LABRUN_URL": svc.url},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        svc.stop()
    assert pulled.returncode == 0, pulled.stderr
    here = tmp_path / "laptop" / run["name"]
    assert _tree(here) == _tree(output_dir / run["run_dir"])
    for needed in ("ckpt/last.ckpt", ".hydra/config.yaml", "run.json", "metrics.csv"):
        assert (here / needed).is_file(), needed
    before = (here / "metrics.csv").read_text()
    command = pulled.stdout.split("resume it here with:\n", 1)[1].strip()
    env_part, _, trainer_args = command.partition(" python -m trainer ")
    env = {**os.environ, **wandb, **dict(kv.split("=", 1) for kv in env_part.split())}
    env = {
        k: v
        for k, v in env.items()
        if not k.startswith("LABRUN_") or k in ("LABRUN_RESUME", "LABRUN_ATTEMPT")
    }
    # The server's output directory is gone: everything comes from the pulled copy.
    resumed = subprocess.run(
        [sys.executable, "-m", "trainer", *shlex.split(trainer_args), "training.max_epochs=2"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    after = (here / "metrics.csv").read_text()
    assert after.startswith(before)  # epoch 0's rows as pulled, epoch 1's after them
    epochs = {row["epoch"] for row in csv.DictReader(io.StringIO(after))}
    assert epochs == {"0", "1"}, after
    manifest = json.loads((here / "run.json").read_text())
    assert [a["attempt"] for a in manifest["attempts"]] == [1, 2]
    assert manifest["status"] == "succeeded"


@pytest.mark.parametrize("value", ["plain/path_1.x", "2026-12-03_fno_data.num_examples=16", "it's", "a\\b c"])
def test_the_resume_command_quotes_values_as_the_trainer_does(value):
    from labrun.pull_cli import _hydra_quote
    from trainer.plan import hydra_quote

    assert _hydra_quote(value) == hydra_quote(value)
