"""Destination URLs and signing secrets, encrypted at rest (Fernet: AES-128-CBC with an HMAC-SHA256).

The key lives in its own file (LABRUN_SECRET_KEY_FILE), by default in the service user's configuration
folder, outside the output directory: a copy or backup of the store (or of the whole output directory)
carries the destinations only as ciphertext. The file is created on first use, mode 0600, in a folder of
mode 0700; an existing file readable by others is refused. It is never mounted into a run's container nor
named in a run's environment. A run of the local launcher runs as the same Unix user as the service and
could read the file by its path: where that matters, use the Docker or Slurm launcher, or run the service
as a user of its own (docs/notifications.md).

Losing the key loses the destinations (users add them again); nothing else depends on it.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any

from app.errors import LabrunError


class SealingUnavailable(LabrunError):
    """The key file cannot be used (unreadable, readable by others, ...): destinations cannot be stored."""


class Sealer:
    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file.expanduser()
        self._fernet: Any = None
        self._lock = threading.Lock()

    def seal(self, text: str) -> bytes:
        token: bytes = self._key().encrypt(text.encode())
        return token

    def open(self, sealed: bytes) -> str:
        return str(self._key().decrypt(bytes(sealed)).decode())

    def _key(self) -> Any:
        with self._lock:
            if self._fernet is None:
                from cryptography.fernet import Fernet  # only once a destination is stored or sent to

                self._fernet = Fernet(self._load_or_create(Fernet))
            return self._fernet

    def _load_or_create(self, fernet: Any) -> bytes:
        path = self.key_file
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return self._read(path)
            with os.fdopen(fd, "wb") as f:
                f.write(fernet.generate_key())
            return self._read(path)
        except OSError as exc:
            raise SealingUnavailable(
                f"the notification key {path} cannot be used: {exc.strerror or exc}; set "
                "LABRUN_SECRET_KEY_FILE to a file the service may create and read"
            ) from None

    @staticmethod
    def _read(path: Path) -> bytes:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SealingUnavailable(
                f"the notification key {path} may be read by other users (mode {stat.S_IMODE(mode):o}); "
                f"run `chmod 600 {path}`"
            )
        return path.read_bytes().strip()
