"""A run's directory as files to list, hand out and archive, without ever leaving it.

A run's code is untrusted and writes its own directory: it may leave a link to ``/proc/self/environ``, to
the store, or to a directory outside, in place of any file or folder, or a pipe that blocks a reader for
ever. Every path is therefore walked from a file descriptor of the output directory (the admin's, trusted)
one component at a time, each opened with ``O_NOFOLLOW`` relative to the one before (``openat``), and a
file is served only when ``fstat`` of the descriptor opened says it is a regular file: what is checked is
what is read, so swapping a link in between the check and the read gains nothing. Links, pipes, sockets and
devices are neither listed nor archived nor served; a listing counts them (``skipped``).

Memory stays flat whatever the directory holds: files are read and archived in chunks of ``CHUNK`` bytes,
the tar is written header by header (``tarfile.TarInfo.tobuf``) as the walk goes, and a listing stops at
``MAX_LISTED`` files. Checksums (sha256) are computed on request only, and kept per file version (device,
inode, size, mtime, ctime) so that a multi-GB checkpoint is hashed once, not at every listing.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from app.errors import InvalidPath, RunFileNotFound

CHUNK = 1 << 20
MAX_LISTED = 10_000  # files in one listing; a run with more is cut, and the listing says so
MAX_DEPTH = 64  # folders deeper than this are not walked (each level holds one descriptor open)
CKPT_DIR = "ckpt"  # the trainer's checkpoints (conf/globals.yaml: ckpt_dir), left out with ckpt=false
CKPT_SUFFIX = ".ckpt"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a pipe does not block the open
_TAR_BLOCK = tarfile.BLOCKSIZE
_TAR_RECORD = tarfile.RECORDSIZE


@dataclass(frozen=True)
class RunFile:
    path: str  # relative to the run's directory, "/"-separated
    size: int
    mtime_ns: int
    sha256: str | None = None


@dataclass(frozen=True)
class Listing:
    files: list[RunFile]
    skipped: int = 0  # entries that are not regular files (links, pipes, devices) or not UTF-8 names
    truncated: bool = False  # more than MAX_LISTED files, or folders deeper than MAX_DEPTH
    notes: list[str] = field(default_factory=list)


def plain_parts(path: str) -> list[str]:
    """The components of a relative path asked for; InvalidPath for anything else."""
    if "\0" in path:
        raise InvalidPath("a file path may not contain a NUL byte")
    if path.startswith("/"):
        raise InvalidPath(f"{path!r} is absolute: give the path relative to the run's directory")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidPath(
            f"{path!r} is not a plain relative path (no '..', '.' or empty parts): give it as listed by "
            "GET /runs/{name}/files"
        )
    return parts


def is_checkpoint(path: str) -> bool:
    return path.split("/", 1)[0] == CKPT_DIR or path.endswith(CKPT_SUFFIX)


class RunTree:
    """One run's directory: ``run_dir`` (relative, from the run's record) under ``output_dir``."""

    def __init__(self, output_dir: str | os.PathLike[str], run_dir: str, name: str) -> None:
        self.output_dir = Path(output_dir)
        self.run_dir = run_dir
        self.name = name

    # --- opening ---------------------------------------------------------------------------------------

    def open_root(self) -> int | None:
        """A descriptor of the run's directory, or None when there is none (not started, or gone)."""
        try:
            fd = os.open(self.output_dir, _DIR_FLAGS & ~os.O_NOFOLLOW)  # the admin's: may be a link
        except OSError:
            return None
        parts = [p for p in self.run_dir.split("/") if p not in ("", ".")]
        if ".." in parts:  # the service names run directories inside the output directory, never above it
            os.close(fd)
            return None
        try:
            return _walk_down(fd, parts)
        except OSError:
            return None

    def open_file(self, path: str) -> tuple[int, os.stat_result]:
        """A descriptor of the regular file at ``path`` in the run's directory and its ``fstat``; the caller
        closes it. RunFileNotFound naming why otherwise (missing, a link, a folder, not a regular file)."""
        parts = plain_parts(path)
        root = self.open_root()
        if root is None:
            raise RunFileNotFound(f"run {self.name!r} has no files (yet)")
        try:
            folder = _walk_down(root, parts[:-1])
        except OSError as exc:
            raise RunFileNotFound(self._refused(path, exc)) from None
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=folder)
        except OSError as exc:
            raise RunFileNotFound(self._refused(path, exc)) from None
        finally:
            os.close(folder)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            what = (
                f"a folder: GET /runs/{self.name}/files lists it"
                if stat.S_ISDIR(st.st_mode)
                else "not a file"
            )
            raise RunFileNotFound(f"{path!r} in run {self.name!r} is {what}")
        os.set_blocking(fd, True)
        return fd, st

    def _refused(self, path: str, exc: OSError) -> str:
        if exc.errno == errno.ELOOP or exc.errno == errno.ENOTDIR:
            return (
                f"{path!r} in run {self.name!r} passes through a symbolic link or a non-folder: only regular "
                "files inside the run's directory are served, and links are never followed"
            )
        return f"run {self.name!r} has no file {path!r}"

    # --- walking ---------------------------------------------------------------------------------------

    def walk(self, checkpoints: bool = True) -> Iterator[Entry]:
        """Every folder (before what it holds) and file under the run's directory, in the directories' own
        order; links, pipes and devices come as ``EntryKind.OTHER``, never followed nor opened."""
        root = self.open_root()
        if root is None:
            return
        try:
            yield from _walk(root, "", 0, checkpoints)
        finally:
            os.close(root)

    def listing(self, checkpoints: bool = True, checksums: bool = False, limit: int = MAX_LISTED) -> Listing:
        """The regular files (sorted by path), at most ``limit``; ``checksums``: with their sha256."""
        files: list[RunFile] = []
        skipped = 0
        notes: list[str] = []
        too_deep: str | None = None
        cut = False
        for entry in self.walk(checkpoints):
            if entry.kind is EntryKind.OTHER:
                skipped += 1
            elif entry.kind is EntryKind.TOO_DEEP:
                too_deep = too_deep or entry.path
            elif entry.kind is EntryKind.FILE:
                if len(files) == limit:
                    cut = True
                    notes.append(
                        f"only {limit} files are listed: the run has more (the archive holds them all)"
                    )
                    break
                listed = _checksummed(entry) if checksums else _listed(entry)
                if listed is None:
                    skipped += 1
                else:
                    files.append(listed)
        if too_deep is not None:
            notes.append(f"folders more than {MAX_DEPTH} levels deep are left out, e.g. {too_deep}/")
        if skipped:
            notes.append(
                f"{skipped} entries that are not regular files (links, pipes, devices) or whose names are "
                "not UTF-8 are neither listed nor served"
            )
        files.sort(key=lambda f: f.path)
        return Listing(files, skipped, cut or too_deep is not None, notes)

    # --- the archive -----------------------------------------------------------------------------------

    def archive(self, checkpoints: bool = True) -> Iterator[bytes]:
        """The directory as a tar (PAX), in chunks of at most CHUNK bytes; members are named
        ``<run name>/<path>``. A file that shrinks while it is read is padded with zeros to the size its
        header announced (the header went out first); one that grows is cut there."""
        top = self.run_dir.rstrip("/").rsplit("/", 1)[-1] or self.name
        written = 0
        for entry in self.walk(checkpoints):
            if entry.kind is EntryKind.DIR:
                assert entry.stat is not None
                header = _tar_header(f"{top}/{entry.path}", tarfile.DIRTYPE, 0, entry.stat)
                written += len(header)
                yield header
            elif entry.kind is EntryKind.FILE:
                for chunk in _tar_file(entry, f"{top}/{entry.path}"):
                    written += len(chunk)
                    yield chunk
        end = 2 * _TAR_BLOCK
        end += -(written + end) % _TAR_RECORD
        yield b"\0" * end


class EntryKind(StrEnum):
    FILE = "file"
    DIR = "dir"
    OTHER = "other"  # a link, pipe, socket, device, or a name that is not UTF-8: never followed nor read
    TOO_DEEP = "too_deep"


@dataclass(frozen=True)
class Entry:
    path: str
    kind: EntryKind
    parent: int  # a descriptor of its folder, valid until the walk moves on
    name: str
    stat: os.stat_result | None


def _listed(entry: Entry) -> RunFile:
    assert entry.stat is not None
    return RunFile(entry.path, entry.stat.st_size, entry.stat.st_mtime_ns)


def _checksummed(entry: Entry) -> RunFile | None:
    """The file as its descriptor says (size and time of the version hashed), with its sha256 (None: it
    changed while it was read); None when it was swapped for a link or something else since the scan."""
    try:
        fd = os.open(entry.name, _FILE_FLAGS, dir_fd=entry.parent)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        return RunFile(entry.path, st.st_size, st.st_mtime_ns, file_sha256(fd))
    finally:
        os.close(fd)


def _walk_down(fd: int, parts: list[str]) -> int:
    """The descriptor of the folder ``parts`` below ``fd`` (which it takes over and closes), each component
    opened with O_NOFOLLOW: a link anywhere on the way is ELOOP (or ENOTDIR)."""
    try:
        for part in parts:
            inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _walk(fd: int, prefix: str, depth: int, checkpoints: bool) -> Iterator[Entry]:
    with os.scandir(fd) as entries:  # in the directory's own order: nothing is gathered before it is given
        for item in entries:
            path = prefix + item.name
            if not checkpoints and is_checkpoint(path):
                continue
            try:
                item.name.encode("utf-8")
                st = item.stat(follow_symlinks=False)
            except (UnicodeEncodeError, OSError):
                yield Entry(path, EntryKind.OTHER, fd, item.name, None)
                continue
            if stat.S_ISREG(st.st_mode):
                yield Entry(path, EntryKind.FILE, fd, item.name, st)
            elif not stat.S_ISDIR(st.st_mode):
                yield Entry(path, EntryKind.OTHER, fd, item.name, st)
            elif depth >= MAX_DEPTH:
                yield Entry(path, EntryKind.TOO_DEEP, fd, item.name, st)
            else:
                yield from _walk_folder(fd, item.name, path, st, depth, checkpoints)


def _walk_folder(
    parent: int, name: str, path: str, st: os.stat_result, depth: int, checkpoints: bool
) -> Iterator[Entry]:
    try:  # swapped for a link since the scan: refused here, by O_NOFOLLOW
        inner = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError:
        yield Entry(path, EntryKind.OTHER, parent, name, None)
        return
    try:
        yield Entry(path, EntryKind.DIR, parent, name, st)
        yield from _walk(inner, path + "/", depth + 1, checkpoints)
    finally:
        os.close(inner)


def _tar_header(name: str, kind: bytes, size: int, st: os.stat_result) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mtime = st.st_mtime
    info.mode = st.st_mode & 0o7777 or (0o755 if kind == tarfile.DIRTYPE else 0o644)
    info.uid = info.gid = 0  # the service's own user and group are none of the reader's business
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def _tar_file(entry: Entry, name: str) -> Iterator[bytes]:
    try:
        fd = os.open(entry.name, _FILE_FLAGS, dir_fd=entry.parent)
    except OSError:
        return  # swapped for a link, or gone, since the scan: left out
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        os.set_blocking(fd, True)
        size = st.st_size
        yield _tar_header(name, tarfile.REGTYPE, size, st)
        left = size
        while left > 0:
            chunk = os.read(fd, min(CHUNK, left)) or b"\0" * min(CHUNK, left)  # shrunk: zeros
            left -= len(chunk)
            yield chunk
        if size % _TAR_BLOCK:
            yield b"\0" * (_TAR_BLOCK - size % _TAR_BLOCK)
    finally:
        os.close(fd)


# --- checksums ------------------------------------------------------------------------------------------

_CACHE_SIZE = 65_536
_sums: OrderedDict[tuple[int, ...], str] = OrderedDict()
_sums_lock = threading.Lock()


def file_sha256(fd: int) -> str | None:
    """sha256 of the open regular file ``fd``, read in chunks; kept per file version (device, inode, size,
    mtime, ctime: a write changes the last three, and nobody sets a ctime back), so that a listing asked
    again does not read a multi-GB checkpoint again. None for a file that changed while it was read."""
    before = os.fstat(fd)
    if not stat.S_ISREG(before.st_mode):
        return None
    key = _version(before)
    with _sums_lock:
        known = _sums.get(key)
        if known is not None:
            _sums.move_to_end(key)
            return known
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    if _version(os.fstat(fd)) != key or offset != before.st_size:
        return None
    value = digest.hexdigest()
    with _sums_lock:
        _sums[key] = value
        while len(_sums) > _CACHE_SIZE:
            _sums.popitem(last=False)
    return value


def _version(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
