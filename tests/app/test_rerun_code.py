"""``GET /runs/{name}`` of a rerun says whether its code differs from the original's (app/runcode.py), from
both runs' run.json. The fake trainer writes no run.json: the test writes them by hand, once both ran."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from service_helpers import submit, wait_for

COMMIT = "a" * 40


def write_code(output_dir: Path, run: dict, code: dict) -> None:
    (output_dir / run["run_dir"] / "run.json").write_text(
        json.dumps({"name": run["name"], "code_version": code})
    )


def tree(commit: str = COMMIT, patch: str = "") -> dict:
    return {
        "source": "git",
        "commit": commit,
        "dirty": bool(patch),
        "patch": patch,
        "patch_sha256": hashlib.sha256(patch.encode()).hexdigest(),
        "untracked": [],
    }


def test_a_rerun_says_whether_its_code_differs_from_the_originals(client, output_dir):
    original = wait_for(client, submit(client, "seed=1")["name"])
    assert client.get(f"/runs/{original['name']}").json()["code_differs"] is None  # no rerun
    rerun = wait_for(client, client.post(f"/runs/{original['name']}/rerun").json()["name"])

    def differs() -> bool | None:
        answer = client.get(f"/runs/{rerun['name']}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["rerun_of"] == original["name"]
        return answer.json()["code_differs"]

    assert differs() is None  # neither run.json says what code it ran: not known
    write_code(output_dir, original, tree())
    assert differs() is None  # the rerun's does not yet
    write_code(output_dir, rerun, tree())
    assert differs() is False  # same commit, both clean
    write_code(output_dir, rerun, tree(patch="-lr = 1e-3\n+lr = 1e-4\n"))
    assert differs() is True  # same commit, uncommitted changes
    write_code(output_dir, rerun, tree(commit="b" * 40))
    assert differs() is True  # another commit

    image = {"source": "env", "commit": "unknown", "dirty": None, "code_hash": "c" * 64}
    write_code(output_dir, rerun, image)
    assert differs() is None  # one from a tree, one from an image: not comparable
    write_code(output_dir, original, image)
    assert differs() is False  # the same code baked into both images
    write_code(output_dir, rerun, {**image, "code_hash": "d" * 64})
    assert differs() is True
    (output_dir / rerun["run_dir"] / "run.json").write_text("{not json")
    assert differs() is None
    listed = client.get("/runs").json()["data"]
    assert all(r["code_differs"] is None for r in listed)  # only a run's own answer compares
