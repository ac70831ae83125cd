"""run.json's code block: the patch of uncommitted changes and the untracked files of a working tree, and
the code hash an image was built with (trainer/codestate.py, trainer/provenance.py)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from trainer import codestate, provenance


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@example.org")
    _git(root, "config", "user.name", "t")
    (root / "train.py").write_text("lr = 1e-3\n")
    (root / ".gitignore").write_text("*.log\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "first")
    return root


def test_a_working_tree_records_its_patch_and_untracked_files(repo: Path) -> None:
    (repo / "train.py").write_text("lr = 1e-4\n")
    (repo / "notes.txt").write_text("new\n")
    (repo / "out.log").write_text("ignored\n")
    found = provenance.code_version(repo)
    assert found["source"] == "git"
    assert len(found["commit"]) == 40
    assert found["dirty"] is True
    assert "-lr = 1e-3" in found["patch"]
    assert "+lr = 1e-4" in found["patch"]
    assert found["patch_truncated"] is False
    assert found["patch_sha256"] == hashlib.sha256(found["patch"].encode()).hexdigest()
    assert found["untracked"] == ["notes.txt"]  # ignored files are not listed
    assert found["untracked_count"] == 1
    assert found["untracked_truncated"] is False


def test_a_clean_tree_has_an_empty_patch(repo: Path) -> None:
    found = provenance.code_version(repo)
    assert found["dirty"] is False
    assert found["patch"] == ""
    assert found["untracked"] == []


def test_the_patch_and_the_list_are_bounded(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codestate, "MAX_PATCH_BYTES", 1000)
    monkeypatch.setattr(codestate, "MAX_UNTRACKED", 3)
    (repo / "train.py").write_text("".join(f"line {i}\n" for i in range(500)))
    for i in range(5):
        (repo / f"new{i}.txt").write_text("x\n")
    found = provenance.code_version(repo)
    assert len(found["patch"].encode()) <= 1000 < found["patch_bytes"]
    assert found["patch_truncated"] is True
    # The hash is the whole patch's, so that two runs' code compares even when their patches were cut.
    whole = subprocess.run(
        ["git", "-C", str(repo), "diff", "HEAD", "--binary"], capture_output=True, check=True
    ).stdout
    assert found["patch_sha256"] == hashlib.sha256(whole).hexdigest()
    assert found["untracked"] == ["new0.txt", "new1.txt", "new2.txt"]
    assert found["untracked_count"] == 5
    assert found["untracked_truncated"] is True


def test_an_image_without_git_records_the_code_hash_baked_at_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for d in ("trainer", "conf"):
        (tmp_path / d).mkdir()
    (tmp_path / "trainer" / "a.py").write_text("x = 1\n")
    (tmp_path / "conf" / "c.yaml").write_text("a: 1\n")
    baked = codestate.tree_hash(tmp_path)
    (tmp_path / "trainer" / "__pycache__").mkdir()
    (tmp_path / "trainer" / "__pycache__" / "a.cpython.pyc").write_bytes(b"compiled later")
    assert codestate.tree_hash(tmp_path) == baked  # byte-compiling after the hash does not change it
    (tmp_path / codestate.CODE_HASH_FILE).write_text(baked + "\n")
    monkeypatch.setenv("LABRUN_CODE_VERSION", "1a2b3c")
    assert provenance.code_version(tmp_path) == {
        "source": "env",
        "commit": "1a2b3c",
        "dirty": None,
        "code_hash": baked,
    }
    (tmp_path / "trainer" / "a.py").write_text("x = 2\n")
    assert codestate.tree_hash(tmp_path) != baked  # the hash follows the code


def test_a_malformed_code_hash_file_is_not_recorded(tmp_path: Path) -> None:
    (tmp_path / codestate.CODE_HASH_FILE).write_text("not a hash\n")
    assert "code_hash" not in provenance.code_version(tmp_path)
