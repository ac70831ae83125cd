"""A run's files over HTTP (issue 28): listing, download with ranges, the tar archive, and what a run's own
code cannot make them reveal: links it planted to /proc/self/environ, to the store, to a folder outside,
and a pipe. A real service process (real HTTP, real uvicorn), real files, two users."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_helpers import ServiceProcess, submit, wait_for

from app.statedir import StateDir
from app.store import RunStore
from app.users import Users

SECRET = "not-for-your-eyes-7f3a"  # in the service's environment and in a file outside the run
BIG = 3 * (1 << 20) + 123  # more than one chunk (CHUNK = 1 MiB), not a multiple of a tar block


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A service with auth on (alice owns the run, bob only reads it) and one finished run, into whose
    directory the run's 'code' planted links out and a pipe."""
    tmp = tmp_path_factory.mktemp("files")
    output_dir = tmp / "outputs"
    output_dir.mkdir()
    store = RunStore(StateDir(output_dir).db)
    try:
        tokens = {n: Users(store).add(n, admin=False) for n in ("alice", "bob")}
    finally:
        store.close()
    svc = ServiceProcess(output_dir, LAB_FILES_TEST_SECRET=SECRET).start()
    alice = httpx.Client(base_url=svc.url, timeout=30, headers=_bearer(tokens["alice"]))
    bob = httpx.Client(base_url=svc.url, timeout=30, headers=_bearer(tokens["bob"]))
    run = wait_for(alice, submit(alice, "+extra.fake_sleep=0")["name"])
    assert run["status"] == "succeeded", run
    run_dir = output_dir / run["run_dir"]
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (run_dir / "sub" / "deeper").mkdir(parents=True)
    (run_dir / "sub" / "deeper" / "note.txt").write_text("hello\n")
    (run_dir / "ckpt").mkdir(exist_ok=True)
    (run_dir / "ckpt" / "last.ckpt").write_bytes(os.urandom(BIG))
    (run_dir / "empty.bin").write_bytes(b"")
    os.symlink("/proc/self/environ", run_dir / "environ")
    os.symlink(StateDir(output_dir).db, run_dir / "runs.db")
    os.symlink(outside, run_dir / "outside")  # a folder outside the run
    os.symlink(outside, run_dir / "sub" / "escape")
    os.symlink("../../../outside/secret.txt", run_dir / "sub" / "relative")
    os.mkfifo(run_dir / "pipe")
    try:
        yield {"svc": svc, "alice": alice, "bob": bob, "run": run, "dir": run_dir, "tmp": tmp}
    finally:
        alice.close()
        bob.close()
        svc.stop()


PLANTED = ("environ", "runs.db", "outside", "sub/escape", "sub/relative", "pipe")


def _regular_files(root: Path) -> dict[str, bytes]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and not any(p.is_symlink() for p in path.parents):
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def _reveals(body: bytes) -> bool:
    return SECRET.encode() in body or b"SQLite format 3" in body or b"LAB_FILES_TEST_SECRET" in body


def test_any_reader_lists_the_regular_files_and_never_what_links_point_to(world):
    name = world["run"]["name"]
    assert world["svc"].http.get(f"/runs/{name}/files").status_code == 401  # a token is needed
    answer = world["bob"].get(f"/runs/{name}/files")  # not his run: reading is anyone's
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = _regular_files(world["dir"])
    assert [f["path"] for f in body["files"]] == sorted(expected)
    assert {f["path"]: f["size"] for f in body["files"]} == {p: len(b) for p, b in expected.items()}
    assert not set(PLANTED) & {f["path"] for f in body["files"]}
    assert body["skipped"] == len(PLANTED)
    assert body["count"] == len(expected)
    assert body["total_bytes"] == sum(map(len, expected.values()))
    assert not body["truncated"]
    assert all(f["sha256"] is None for f in body["files"])
    assert not _reveals(answer.content)


def test_checksums_are_the_files_sha256_and_ckpt_false_leaves_checkpoints_out(world):
    name = world["run"]["name"]
    body = world["alice"].get(f"/runs/{name}/files", params={"checksums": "true"}).json()
    expected = _regular_files(world["dir"])
    assert {f["path"]: f["sha256"] for f in body["files"]} == {
        p: hashlib.sha256(b).hexdigest() for p, b in expected.items()
    }
    light = world["alice"].get(f"/runs/{name}/files", params={"ckpt": "false"}).json()
    assert [f["path"] for f in light["files"]] == sorted(p for p in expected if not p.startswith("ckpt/"))


def test_a_download_is_the_file_and_resumes_with_a_range(world):
    name, client = world["run"]["name"], world["bob"]
    data = (world["dir"] / "ckpt" / "last.ckpt").read_bytes()
    whole = client.get(f"/runs/{name}/files/ckpt/last.ckpt")
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-length"] == str(BIG)
    etag = whole.headers["etag"]
    assert whole.headers["last-modified"].endswith("GMT")
    part = client.get(f"/runs/{name}/files/ckpt/last.ckpt", headers={"Range": f"bytes={BIG - 1000}-"})
    assert part.status_code == 206
    assert part.content == data[-1000:]
    assert part.headers["content-range"] == f"bytes {BIG - 1000}-{BIG - 1}/{BIG}"
    assert part.headers["content-length"] == "1000"
    middle = client.get(
        f"/runs/{name}/files/ckpt/last.ckpt", headers={"Range": "bytes=10-19", "If-Range": etag}
    )
    assert (middle.status_code, middle.content) == (206, data[10:20])
    suffix = client.get(f"/runs/{name}/files/ckpt/last.ckpt", headers={"Range": "bytes=-7"})
    assert (suffix.status_code, suffix.content) == (206, data[-7:])
    stale = client.get(
        f"/runs/{name}/files/ckpt/last.ckpt", headers={"Range": "bytes=10-", "If-Range": '"x"'}
    )
    assert (stale.status_code, len(stale.content)) == (200, BIG)  # changed since: the whole file
    past = client.get(f"/runs/{name}/files/ckpt/last.ckpt", headers={"Range": f"bytes={BIG}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{BIG}"
    assert "past the file's end" in past.json()["detail"]
    nested = client.get(f"/runs/{name}/files/sub/deeper/note.txt")
    assert (nested.status_code, nested.text) == (200, "hello\n")
    assert client.get(f"/runs/{name}/files/empty.bin").content == b""


@pytest.mark.parametrize("path", [*PLANTED, "outside/secret.txt", "sub/escape/secret.txt", "sub", "nothing"])
def test_links_pipes_folders_and_missing_files_are_404_and_reveal_nothing(world, path):
    answer = world["bob"].get(f"/runs/{world['run']['name']}/files/{path}", timeout=10)  # a pipe: no hang
    assert answer.status_code == 404, answer.text
    assert not _reveals(answer.content)
    assert world["run"]["name"] in answer.json()["detail"]


@pytest.mark.parametrize(
    "raw", ["../../../../etc/passwd", "..%2F..%2Fruns.db", "%2e%2e/x", "/etc/passwd", "a%00b", "./run.json"]
)
def test_paths_that_are_not_plain_and_relative_are_refused(world, raw):
    # Sent as they are (a client would take the dots out): the service sees them verbatim.
    port, token = world["svc"].port, world["bob"].headers["authorization"]
    request = (
        f"GET /runs/{world['run']['name']}/files/{raw} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((request + "Connection: close\r\n\r\n").encode())
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    status = reply.split(b" ", 2)[1]
    assert status == b"422", reply[:500]
    assert any(why in reply for why in (b"not a plain relative path", b"is absolute", b"NUL byte")), reply
    assert not _reveals(reply)


def test_the_archive_holds_the_regular_files_and_follows_no_link(world):
    name = world["run"]["name"]
    answer = world["bob"].get(f"/runs/{name}/archive", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-tar"
    assert not _reveals(answer.content)
    top = world["run"]["run_dir"].rsplit("/", 1)[-1]
    with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:") as tar:
        members = tar.getmembers()
        assert all(m.isfile() or m.isdir() for m in members)  # no link, no pipe
        got = {m.name[len(top) + 1 :]: tar.extractfile(m).read() for m in members if m.isfile()}
        dirs = {m.name for m in members if m.isdir()}
    assert got == _regular_files(world["dir"])
    assert f"{top}/sub/deeper" in dirs
    light = world["bob"].get(f"/runs/{name}/archive", params={"ckpt": "false"})
    with tarfile.open(fileobj=io.BytesIO(light.content), mode="r:") as tar:
        names = tar.getnames()
    assert f"{top}/run.json" in names or f"{top}/metrics.csv" in names
    assert not [n for n in names if "/ckpt" in n]


def test_a_run_directory_that_became_a_link_shows_nothing(world):
    alice = world["alice"]
    run = wait_for(alice, submit(alice, "+extra.fake_sleep=0")["name"])
    path = world["svc"].output_dir / run["run_dir"]
    os.rename(path, path.with_name("moved"))
    os.symlink(world["tmp"] / "outside", path)
    try:
        listed = alice.get(f"/runs/{run['name']}/files").json()
        assert listed["files"] == []
        assert alice.get(f"/runs/{run['name']}/files/secret.txt").status_code == 404
        assert not _reveals(alice.get(f"/runs/{run['name']}/archive").content)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.rename(path.with_name("moved"), path)


def test_a_deleted_runs_files_are_gone_and_an_unknown_run_is_404(world):
    alice = world["alice"]
    run = wait_for(alice, submit(alice, "+extra.fake_sleep=0")["name"])
    assert alice.get(f"/runs/{run['name']}/files/run.json").status_code in (200, 404)
    assert alice.delete(f"/runs/{run['name']}").status_code == 200
    for path in ("files", "files/metrics.csv", "archive"):
        answer = alice.get(f"/runs/{run['name']}/{path}")
        assert answer.status_code == 410, answer.text
        assert "deleted" in answer.json()["detail"]
    for path in ("files", "files/metrics.csv", "archive"):
        assert alice.get(f"/runs/no-such-run/{path}").status_code == 404


def test_a_listing_is_bounded_and_says_so(tmp_path):
    from app.runtree import MAX_DEPTH, RunTree

    run_dir = tmp_path / "day" / "run"
    run_dir.mkdir(parents=True)
    for i in range(5):
        (run_dir / f"f{i}").write_text(str(i))
    deep = run_dir.joinpath(*["d"] * (MAX_DEPTH + 2))
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_text("x")
    cut = RunTree(tmp_path, "day/run", "run").listing(limit=3)
    assert len(cut.files) == 3
    assert cut.truncated
    assert any("only 3 files are listed" in n for n in cut.notes)
    whole = RunTree(tmp_path, "day/run", "run").listing()
    assert [f.path for f in whole.files] == [f"f{i}" for i in range(5)]  # the deep file is left out...
    assert whole.truncated
    assert any(f"more than {MAX_DEPTH} levels deep" in n for n in whole.notes)  # ...and said to be


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-", (0, 100)),
        ("bytes=10-19", (10, 20)),
        ("bytes=90-500", (90, 100)),
        ("bytes=-5", (95, 100)),
        ("bytes=-500", (0, 100)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole file, as the RFC allows
        ("bytes=20-10", None),  # not a range: ignored
        ("items=0-1", None),
        ("bytes=-", None),
    ],
)
def test_one_range_is_read_as_the_rfc_says(header, expected):
    from app.api.byteranges import requested_range

    assert requested_range(header, 100) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0)])
def test_a_range_past_the_end_is_not_satisfiable(header, size):
    from app.api.byteranges import requested_range
    from app.errors import RangeNotSatisfiable

    with pytest.raises(RangeNotSatisfiable) as caught:
        requested_range(header, size)
    assert caught.value.size == size


def test_the_archive_is_made_in_chunks_of_at_most_a_mib_whatever_the_files_size(tmp_path):
    # Flat memory: no piece of the stream is bigger than one read, so a 10 GB file costs what a small one
    # does (bench/archive_bench.py measures the service's RSS).
    from app.runtree import CHUNK, RunTree

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "big.ckpt").write_bytes(os.urandom(5 * CHUNK + 7))
    (run_dir / "small.txt").write_text("x")
    pieces = list(RunTree(tmp_path, "run", "run").archive())
    assert max(map(len, pieces)) <= CHUNK
    with tarfile.open(fileobj=io.BytesIO(b"".join(pieces)), mode="r:") as tar:
        assert tar.extractfile("run/big.ckpt").read() == (run_dir / "big.ckpt").read_bytes()
        assert tar.extractfile("run/small.txt").read() == b"x"
    assert len(b"".join(pieces)) % tarfile.RECORDSIZE == 0
