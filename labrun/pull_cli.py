"""``labrun pull NAME [DIR] [--no-ckpt]``: a run's directory copied here, identical to the server's.

Every file is checked with the sha256 the server lists (``GET /runs/{name}/files?checksums=true``); a copy
that differs fails loudly, naming the file. Pulling again is cheap: a file already identical is skipped, and
one cut off midway (``FILE.labrun-part``) goes on from where it stopped with a Range request. Files here
that the server does not have are left alone (and counted). With the checkpoint, the copy resumes with
``python -m trainer`` on this machine: the command is printed at the end (docs/run-files.md).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from labrun import render
from labrun.client import EXIT_INVALID, EXIT_OK, Client, CliError

EXIT_MISMATCH = 7  # a copied file's checksum differs from the server's
PART_SUFFIX = ".labrun-part"
LAST_CKPT = "ckpt/last.ckpt"  # what the trainer resumes from (trainer/resume.py)


def add_command(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "pull",
        cmd_pull,
        "copy a run's directory here, identical to the server's (checked with sha256); pulling again "
        "skips identical files and resumes a cut-off one",
        epilog="then `python -m trainer` resumes it here: the command is printed at the end",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("dir", nargs="?", metavar="DIR", help="where to (default: ./NAME)")
    p.add_argument("--no-ckpt", action="store_true", help="leave out the checkpoints (ckpt/, *.ckpt)")


def cmd_pull(client: Client, args: argparse.Namespace) -> int:
    run = client.run(args.name)
    if run["status"] in ("queued", "running"):
        _note(f"{args.name} is {run['status']}: a file it writes while it is copied will fail its check")
    listing = client.run_files(args.name, checksums=True, ckpt=not args.no_ckpt)
    if listing["truncated"]:
        raise CliError(
            f"{args.name} has more files than one listing holds ({' '.join(listing['notes'])}); "
            f"fetch its archive instead: GET /runs/{args.name}/archive",
            EXIT_INVALID,
        )
    dest = Path(args.dir or args.name)
    dest.mkdir(parents=True, exist_ok=True)
    copied = same = copied_bytes = 0
    for item in listing["files"]:
        target = dest.joinpath(*_safe_parts(item["path"]))
        if _identical(target, item):
            same += 1
            continue
        copied_bytes += _pull_file(client, args.name, item, target)
        copied += 1
    extra = _extra_files(dest, {item["path"] for item in listing["files"]}, args.no_ckpt)
    note = f", {extra} files here that the server does not have were left" if extra else ""
    print(
        f"{render.safe(args.name)}: {copied} files copied ({_mb(copied_bytes)}), {same} already identical{note}, "
        f"in {dest}",
        flush=True,
    )
    if listing["skipped"]:
        _note(f"{listing['skipped']} entries that are not regular files (links, pipes) are not served")
    if any(item["path"] == LAST_CKPT for item in listing["files"]):
        print(f"resume it here with:\n  {render.safe(resume_command(run, dest))}", flush=True)
    return EXIT_OK


def resume_command(run: dict[str, Any], dest: Path) -> str:
    """The command line that continues the run in ``dest`` as its next attempt, as the service would
    (trainer/runenv.py: LABRUN_RESUME, LABRUN_ATTEMPT; the same overrides, name and directory)."""
    import shlex

    where = dest.resolve()
    args = [
        "--config-name",
        run["config_name"],
        *(run.get("default_overrides") or []),
        *run["overrides"],
        f"run_name={_hydra_quote(run['name'])}",
        f"log_dir={_hydra_quote(str(where.parent))}",
        f"output_dir_scheme={_hydra_quote(where.name)}",
    ]
    env = f"LABRUN_RESUME=1 LABRUN_ATTEMPT={int(run.get('attempts') or 1) + 1}"
    return f"{env} python -m trainer " + " ".join(shlex.quote(a) for a in args)


def _hydra_quote(value: str) -> str:
    """A path or name as one Hydra override value (as trainer/plan.py's ``hydra_quote``: the CLI does not
    import the trainer)."""
    if re.fullmatch(r"[A-Za-z0-9_./-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _safe_parts(path: str) -> list[str]:
    """The server lists plain relative paths; anything else is refused rather than written outside DIR."""
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in path:
        raise CliError(f"the server listed a path that is not plain and relative: {path!r}", EXIT_INVALID)
    return parts


def _identical(target: Path, item: dict[str, Any]) -> bool:
    try:
        if target.is_symlink() or not target.is_file() or target.stat().st_size != item["size"]:
            return False
    except OSError:
        return False
    return bool(_sha256(target) == item["sha256"])


def _pull_file(client: Client, name: str, item: dict[str, Any], target: Path) -> int:
    """Copies one file through ``FILE.labrun-part`` (continued where an earlier pull stopped), checks it,
    and puts it in place with the server's modification time; the bytes fetched."""
    path, want = item["path"], item["sha256"]
    if want is None:
        raise CliError(
            f"{path}: the server could not checksum it (it changed while it was read); pull again once "
            "the run stops writing it",
            EXIT_MISMATCH,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + PART_SUFFIX)
    fetched = 0
    for attempt in (1, 2):  # a part left by an earlier pull of another version: once more from scratch
        have = part.stat().st_size if part.is_file() else 0
        offset = have if 0 < have <= item["size"] and attempt == 1 else 0
        if offset:
            _note(f"{path}: going on from byte {offset}")
        fetched += _fetch(client, name, path, part, offset)
        got = _sha256(part)
        if got == want:
            break
        if not offset:
            raise CliError(
                f"{path}: the copy's sha256 {got[:16]}... differs from the server's {want[:16]}...; "
                "did the file change on the server meanwhile? pull again",
                EXIT_MISMATCH,
            )
    os.replace(part, target)
    mtime = int(datetime.fromisoformat(item["modified_at"]).timestamp() * 1e9)
    os.utime(target, ns=(mtime, mtime))
    return fetched


def _fetch(client: Client, name: str, path: str, part: Path, offset: int) -> int:
    fetched = 0
    with open(part, "r+b" if offset else "wb") as out:
        out.truncate(offset)
        for start, chunk in client.download(name, path, offset):
            if start != out.tell():  # the server sent the whole file, not the rest: start over
                out.seek(start)
                out.truncate()
            out.write(chunk)
            fetched += len(chunk)
    return fetched


def _sha256(path: Path) -> str:
    import hashlib  # here, not at the top: OpenSSL's loading would cost every `labrun --help` 4 ms

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _extra_files(dest: Path, listed: set[str], no_ckpt: bool) -> int:
    """Files in ``dest`` the listing does not name (checkpoints not counted with --no-ckpt)."""
    count = 0
    for p in dest.rglob("*"):
        rel = p.relative_to(dest).as_posix()
        if not p.is_file() or p.name.endswith(PART_SUFFIX) or rel in listed:
            continue
        count += not (no_ckpt and (rel.startswith("ckpt/") or rel.endswith(".ckpt")))
    return count


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _note(text: str) -> None:
    print(f"labrun: {render.safe(text)}", file=sys.stderr, flush=True)  # file names are the run's own
