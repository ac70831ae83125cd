"""Whether a rerun ran the same code as its original: both runs' ``run.json`` say what code they ran
(``code_version``, written by the trainer: ``trainer/provenance.py``, ``trainer/codestate.py``), compared
once both exist.

Code is the same when it is known the same way for both runs and matches: from a working tree, the same
commit and the same uncommitted changes (the hash of the whole patch; a clean tree is the empty patch);
from an image without ``.git``, the same code hash baked in at build. Untracked files are listed in
run.json but not compared (build outputs and notes would make every run differ). Anything else (a run.json
not written yet or unreadable, one run from a tree and the other from an image, a record older than the
patch) is not known: None, never a guess."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from app.runpaths import open_run_file

# run.json holds the patch (at most 256 KiB, up to 6x that as JSON escapes); a larger file is not a run's.
MAX_RUN_JSON_BYTES = 4 * 1024 * 1024
EMPTY_PATCH_SHA256 = hashlib.sha256(b"").hexdigest()


def read_code(output_dir: str | os.PathLike[str], run_dir: str) -> Mapping[str, Any] | None:
    """The ``code_version`` block of a run's run.json; None when there is none (not started, deleted,
    unreadable, or a link the run left in its place)."""
    try:
        with open_run_file(os.path.join(output_dir, run_dir, "run.json")) as f:
            data = f.read(MAX_RUN_JSON_BYTES + 1)
        if len(data) > MAX_RUN_JSON_BYTES:
            return None
        record = json.loads(data)
    except (OSError, ValueError):
        return None
    code = record.get("code_version") if isinstance(record, dict) else None
    return code if isinstance(code, dict) else None


def identity(code: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """What names the code exactly: ("git", commit, patch hash) or ("image", "", code hash); None when
    run.json does not say enough."""
    if code.get("source") == "git" and isinstance(code.get("commit"), str):
        patch_hash = code.get("patch_sha256")
        if not isinstance(patch_hash, str):  # a record without the patch: only a clean tree is known
            patch_hash = EMPTY_PATCH_SHA256 if code.get("dirty") is False else None
        return ("git", code["commit"], patch_hash) if patch_hash else None
    if isinstance(code.get("code_hash"), str):
        return ("image", "", code["code_hash"])
    return None


def code_differs(output_dir: str | os.PathLike[str], run_dir: str, original_run_dir: str) -> bool | None:
    """True or False when both runs' code is known the same way; None otherwise (see the module)."""
    mine, theirs = read_code(output_dir, run_dir), read_code(output_dir, original_run_dir)
    if mine is None or theirs is None:
        return None
    a, b = identity(mine), identity(theirs)
    if a is None or b is None or a[0] != b[0]:
        return None
    return a != b
