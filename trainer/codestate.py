"""What code a run ran, beyond its commit: the uncommitted changes to tracked files (a patch) and the
untracked files of a working tree; in an image built without ``.git``, a hash of the code baked in at
build time (``docker/trainer.Dockerfile`` runs ``python -m trainer.codestate /opt/labrun``).

Git is run without a shell, with a timeout, and with nothing a repository's own config could turn into a
command (no external diff, no textconv). Everything is bounded: a run's record stays small.
Standard library only (written before the training stack is imported).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

MAX_PATCH_BYTES = 256 * 1024  # the patch kept in run.json; beyond, cut and marked truncated
MAX_UNTRACKED = 200  # untracked files listed; beyond, marked truncated
GIT_TIMEOUT_S = 10.0
CODE_HASH_FILE = "CODE_SHA256"  # at the root of the code in an image (next to trainer/ and conf/)
HASHED_DIRS = ("conf", "trainer")  # what the image holds of the repository


def git(root: Path, *args: str) -> bytes:
    """``git args`` in ``root``: its standard output (OSError, SubprocessError when it fails or hangs)."""
    done = subprocess.run(
        ["git", "-C", str(root), "-c", "core.fsmonitor=false", *args],
        capture_output=True,
        timeout=GIT_TIMEOUT_S,
        check=True,
    )
    return done.stdout


def working_tree(root: Path) -> dict[str, Any]:
    """The uncommitted changes to tracked files against HEAD (a patch, its hash over the whole of it, cut
    beyond ``MAX_PATCH_BYTES``) and the untracked files (not ignored), at most ``MAX_UNTRACKED`` named."""
    patch = git(root, "diff", "HEAD", "--no-ext-diff", "--no-textconv", "--no-color", "--binary")
    listed = git(root, "ls-files", "--others", "--exclude-standard", "-z").split(b"\0")
    untracked = sorted(p.decode("utf-8", "replace") for p in listed if p)
    return {
        "patch": patch[:MAX_PATCH_BYTES].decode("utf-8", "replace"),
        "patch_bytes": len(patch),
        "patch_truncated": len(patch) > MAX_PATCH_BYTES,
        # The whole patch's hash: two runs with the same commit and hash ran the same tracked code, even
        # when the patch kept here was cut.
        "patch_sha256": hashlib.sha256(patch).hexdigest(),
        "untracked": untracked[:MAX_UNTRACKED],
        "untracked_count": len(untracked),
        "untracked_truncated": len(untracked) > MAX_UNTRACKED,
    }


def tree_hash(root: Path, dirs: tuple[str, ...] = HASHED_DIRS) -> str:
    """sha256 over the source files under ``root``'s ``dirs``: each file's path (relative, ``/``) and
    content, in path order; byte-compiled files left out (they are made after the hash)."""
    digest = hashlib.sha256()
    files = sorted(
        p
        for d in dirs
        for p in (root / d).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    for path in files:
        name = path.relative_to(root).as_posix().encode()
        content = path.read_bytes()
        digest.update(b"%d:%s%d:" % (len(name), name, len(content)))
        digest.update(content)
    return digest.hexdigest()


def baked_hash(root: Path) -> str | None:
    """The code hash written into the image at build time; None when there is none (or it is unreadable)."""
    try:
        text = (root / CODE_HASH_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else None


if __name__ == "__main__":  # the image's build: python -m trainer.codestate /opt/labrun > CODE_SHA256
    print(tree_hash(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
