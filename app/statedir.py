"""The service's own folder inside the output directory, spelled out here and nowhere else.

<output_dir>/.labrun/
├── runs.db            the run store (SQLite, WAL)
├── service.lock       one service per output directory (flock)
└── runs/<name>/       one folder per run: ``log`` (the run's stdout+stderr) and the launcher's own
                       files (the local launcher's pid and exit_code, ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateDir:
    output_dir: Path

    @property
    def root(self) -> Path:
        return self.output_dir / ".labrun"

    @property
    def db(self) -> Path:
        return self.root / "runs.db"

    @property
    def lock(self) -> Path:
        return self.root / "service.lock"

    def run(self, name: str) -> Path:
        """The run's own state folder (its log and the launcher's files)."""
        return self.root / "runs" / name

    def log(self, name: str) -> Path:
        return self.run(name) / "log"
