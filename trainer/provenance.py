"""``run.json``: what ran, from which code, on what, and how it ended.

Light at import (no torch): it is written before the training stack is imported. Written when the run starts (status ``running``) and rewritten when it ends (``succeeded``, ``failed`` or
``cancelled``), so a run killed without a chance to clean up still says what it was.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from trainer import codestate
from trainer.atomic import write_atomic
from trainer.runenv import RunEnv

PACKAGES = ("torch", "lightning", "neuraloperator", "torch-harmonics", "hydra-core", "wandb")
REPO_ROOT = Path(__file__).resolve().parent.parent


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_json_atomic(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Readers (the service, a user) see the old file or the new one, never half of one."""
    write_atomic(path, json.dumps(payload, indent=2) + "\n", durable=False)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_version(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The git commit, whether the tree differs from it, and how (``trainer/codestate.py``: the patch of
    the uncommitted changes, the untracked files); in an image without ``.git``, the version the image was
    built with (``RunEnv.code_version``) and the hash of the code baked into it (``code_hash``)."""
    if (root / ".git").exists():
        try:
            commit = _git(root, "rev-parse", "HEAD")
            dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
        except (OSError, subprocess.SubprocessError):
            pass
        else:
            found: dict[str, Any] = {"source": "git", "commit": commit, "dirty": dirty}
            try:
                found.update(codestate.working_tree(root))
            except (OSError, subprocess.SubprocessError):
                found["patch"] = None  # unknown, which is not "no changes"
            return found
    found = {"source": "env", "commit": RunEnv.from_env().code_version, "dirty": None}
    code_hash = codestate.baked_hash(root)
    if code_hash is not None:
        found["code_hash"] = code_hash
    return found


def _git(root: Path, *args: str) -> str:
    return codestate.git(root, *args).decode("utf-8", "replace").strip()


def device_names(accelerator: str) -> list[str]:
    import torch

    if accelerator != "cpu" and torch.cuda.is_available():  # gpu, cuda or auto (trainer/schema.py)
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return [f"cpu ({os.cpu_count()} cores)"]


class RunManifest:
    """The content of run.json, kept in memory and written whole each time."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        name: str,
        overrides: list[str],
        config_name: str,
        seed: int,
        start_time: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {
            "name": name,
            "overrides": list(overrides),
            "config_name": config_name,
            "seed": seed,
            "code_version": code_version(),
            "versions": package_versions(),
            "hostname": socket.gethostname(),
            "devices": None,  # filled once torch is imported (see set_devices)
            "start_time": start_time or utc_now(),
            "end_time": None,
            "status": "running",
            "exception": None,
        }
        image = RunEnv.from_env().image_id
        if image:
            self.data["image"] = image

    def begin_attempt(self, number: int | None = None) -> None:
        """Record this attempt; a resumed run keeps the attempts its run.json already lists."""
        previous: list[dict[str, Any]] = []
        try:
            old = json.loads(self.path.read_text())
            previous = list(old.get("attempts") or [])
            self.data["start_time"] = old.get("start_time") or self.data["start_time"]
        except (OSError, ValueError):
            pass
        attempt = {
            "attempt": number or len(previous) + 1,
            "start": utc_now(),
            "end": None,
            "status": "running",
        }
        self.data["attempts"] = [*previous, attempt]

    def set_devices(self, accelerator: str) -> None:
        self.data["devices"] = device_names(accelerator)
        self.write()

    def write(self) -> None:
        write_json_atomic(self.path, self.data)

    def finish(self, status: str, exception: str | None = None) -> None:
        self.data.update(status=status, exception=exception, end_time=utc_now())
        if self.data.get("attempts"):
            self.data["attempts"][-1].update(end=self.data["end_time"], status=status, why=exception)
        self.write()
