"""A run's files over HTTP: list them, download one (with ranges, so a big checkpoint can resume), or the
whole directory as a tar stream. Thin: ``app/runtree.py`` walks, opens and archives, never leaving the run's
directory (no link is followed; docs/run-files.md).

Reading a run's files follows the rule of reading the run: any caller (a token once auth is on; the router
is mounted with ``require_caller``). A deleted run's files are a 410, an unknown run a 404.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from email.utils import formatdate
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api.byteranges import content_range, requested_range
from app.api.deps import FilesDep, StoreDep, get_run
from app.api.run_files_public import RunFilesPublic, listing_public
from app.errors import RunGone
from app.runfiles import RunFiles
from app.runtree import CHUNK, RunTree
from app.store import RunStore

router = APIRouter(prefix="/runs", tags=["run files"])

_GONE: dict[int | str, dict[str, str]] = {
    404: {"description": "no run of that name"},
    410: {"description": "the run was deleted: its files are gone"},
}
_FILE: dict[int | str, dict[str, str]] = {
    200: {"description": "the whole file (application/octet-stream)"},
    206: {"description": "the range asked for, with Content-Range"},
    404: {"description": "no run of that name, or no regular file at that path inside its directory"},
    410: _GONE[410],
    416: {"description": "a range past the file's end (Content-Range: bytes */SIZE)"},
    422: {"description": "a path with '..', '.', empty parts, an absolute path or a NUL byte"},
}
CheckpointsQuery = Annotated[
    bool, Query(description="false: leave out the checkpoints (ckpt/ and *.ckpt files)")
]


def _tree(store: RunStore, files: RunFiles, name: str) -> RunTree:
    record = get_run(store, name)
    if record.deleted_at is not None:
        raise RunGone(f"run {name!r} was deleted (by {record.deleted_by or 'someone'}): its files are gone")
    return RunTree(files.output_dir, record.run_dir, name)


@router.get("/{name}/files", response_model=RunFilesPublic, responses=_GONE)
async def list_run_files(
    name: str,
    store: StoreDep,
    files: FilesDep,
    checksums: Annotated[
        bool, Query(description="each file's sha256 too (read once per file version, then remembered)")
    ] = False,
    ckpt: CheckpointsQuery = True,
) -> RunFilesPublic:
    """The run's regular files (relative paths, sizes, modification times), sorted by path; links are never
    followed, and are counted in ``skipped``. An empty list before the run has started."""
    tree = _tree(store, files, name)
    listing = await run_in_threadpool(tree.listing, ckpt, checksums)
    return listing_public(name, listing)


@router.get("/{name}/files/{path:path}", response_class=StreamingResponse, responses=_FILE)
async def download_run_file(
    name: str, path: str, request: Request, store: StoreDep, files: FilesDep
) -> Response:
    """One file, as it is now. ``Range: bytes=START-`` (one range) answers 206 with that part, 416 past the
    end; ``ETag`` and ``Last-Modified`` come with it (``If-Range`` too). 404 for anything that is not a
    regular file inside the run's directory (a link is never followed), 422 for ``..``, absolute paths or
    NUL bytes."""
    tree = _tree(store, files, name)
    fd, st = await run_in_threadpool(tree.open_file, path)
    try:
        etag = f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'
        modified = formatdate(st.st_mtime, usegmt=True)
        asked = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if if_range is not None and if_range not in (etag, modified):  # changed since: the whole of it
            asked = None
        span = requested_range(asked, st.st_size)
    except BaseException:
        os.close(fd)
        raise
    start, end = span if span is not None else (0, st.st_size)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": modified,
        "Content-Length": str(end - start),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
    }
    if span is not None:
        headers["Content-Range"] = content_range(start, end, st.st_size)
    return StreamingResponse(
        _Chunks(fd, start, end),
        status_code=206 if span is not None else 200,
        media_type="application/octet-stream",
        headers=headers,
    )


class _Chunks:
    """Bytes ``[start, end)`` of ``fd``, CHUNK at a time (Starlette calls ``next`` in its thread pool). It owns
    the descriptor: closed at the end, or when the answer is dropped unread (a generator that never started
    would not run its ``finally``). A file that shrank meanwhile ends early: the client sees fewer bytes than
    Content-Length said, and knows."""

    def __init__(self, fd: int, start: int, end: int) -> None:
        self.fd, self.start, self.end = fd, start, end

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        chunk = os.pread(self.fd, min(CHUNK, self.end - self.start), self.start) if self.fd >= 0 else b""
        if not chunk or self.start >= self.end:
            self.close()
            raise StopIteration
        self.start += len(chunk)
        return chunk

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


@router.get(
    "/{name}/archive",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}}, **_GONE},
)
async def run_archive(name: str, store: StoreDep, files: FilesDep, ckpt: CheckpointsQuery = True) -> Response:
    """The run's directory as a tar stream (``NAME/...``), written as it is read: the service's memory does
    not grow with the directory's size. Regular files and folders only; links are never followed."""
    tree = _tree(store, files, name)
    headers = {"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}.tar"}
    return StreamingResponse(tree.archive(ckpt), media_type="application/x-tar", headers=headers)
