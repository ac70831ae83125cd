"""The wire format of a run's files (``GET /runs/{name}/files``; ``app/runtree.py`` walks them)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from app.runtree import Listing, RunFile


class RunFilePublic(BaseModel):
    path: str = Field(description="relative to the run's directory, '/'-separated")
    size: int
    modified_at: dt.datetime
    sha256: str | None = Field(
        None, description="with checksums=true; null otherwise, or when the file changed while it was read"
    )


class RunFilesPublic(BaseModel):
    name: str
    files: list[RunFilePublic] = Field(description="its regular files, sorted by path")
    count: int = Field(description="files listed")
    total_bytes: int = Field(description="their sizes added up")
    truncated: bool = Field(description="more files than one listing holds (notes say what was left out)")
    skipped: int = Field(
        description="entries neither listed nor served: links (never followed), pipes, devices, "
        "names that are not UTF-8"
    )
    notes: list[str] = Field(default_factory=list)


def file_public(f: RunFile) -> RunFilePublic:
    return RunFilePublic(
        path=f.path,
        size=f.size,
        modified_at=dt.datetime.fromtimestamp(f.mtime_ns / 1e9, dt.UTC),
        sha256=f.sha256,
    )


def listing_public(name: str, listing: Listing) -> RunFilesPublic:
    return RunFilesPublic(
        name=name,
        files=[file_public(f) for f in listing.files],
        count=len(listing.files),
        total_bytes=sum(f.size for f in listing.files),
        truncated=listing.truncated,
        skipped=listing.skipped,
        notes=listing.notes,
    )
